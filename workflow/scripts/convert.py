from pathlib import Path

from micml.data.stage import convert_prepared
from micml.workflow import logged

with logged(snakemake.log[0]):
    convert_prepared(snakemake.input.manifest, Path(snakemake.output.meta).parent, snakemake.params.entry)
