from pathlib import Path

from micml.tracking.report import write_trails_figure
from micml.workflow import logged

with logged(snakemake.log[0]):
    write_trails_figure(snakemake.params.results, Path(snakemake.input.meta).parent, snakemake.wildcards.dataset,
                        snakemake.params.models, snakemake.params.seed, snakemake.params.split, snakemake.output.png)
