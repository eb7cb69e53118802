from micml.diagnostics import write_model_table
from micml.workflow import logged

with logged(snakemake.log[0]):
    write_model_table(snakemake.params.variants, snakemake.params.sizes, snakemake.output.csv,
                      snakemake.output.md)
