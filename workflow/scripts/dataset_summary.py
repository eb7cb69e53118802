from pathlib import Path

from micml.data.summary import summarize_dataset
from micml.workflow import logged

with logged(snakemake.log[0]):
    summarize_dataset(Path(snakemake.input.meta).parent, snakemake.output.csv, snakemake.output.md,
                      snakemake.output.png)
