from pathlib import Path

from micml.evaluation.plots import plot_qualitative
from micml.workflow import logged

with logged(snakemake.log[0]):
    plot_qualitative(Path(snakemake.input.meta).parent, Path(snakemake.input.predictions).parent,
                     snakemake.params.split, snakemake.output.png,
                     title=f"{snakemake.wildcards.dataset} / {snakemake.wildcards.model} / seed {snakemake.wildcards.seed}")
