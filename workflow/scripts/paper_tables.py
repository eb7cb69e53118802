from pathlib import Path

from micml.evaluation.paper import write_paper_tables
from micml.workflow import logged

with logged(snakemake.log[0]):
    write_paper_tables(Path(snakemake.input.models).parent.parent, snakemake.params.datasets,
                       snakemake.params.models, Path(snakemake.output.csv).parent, split=snakemake.params.split)
