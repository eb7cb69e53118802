from pathlib import Path

from micml.evaluation.paper import write_paper_tables
from micml.workflow import logged

with logged(snakemake.log[0]):
    write_paper_tables(snakemake.params.results, snakemake.params.datasets, snakemake.params.models,
                       Path(snakemake.output.csv).parent, seeds=snakemake.params.seeds, split=snakemake.params.split)
