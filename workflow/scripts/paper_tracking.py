from micml.tracking.report import write_paper_tracking
from micml.workflow import logged

with logged(snakemake.log[0]):
    write_paper_tracking(snakemake.params.results, snakemake.params.datasets, snakemake.params.models,
                         snakemake.params.seeds, snakemake.output.csv, snakemake.output.md)
