from pathlib import Path

from micml.data.stage import prepare_placed
from micml.workflow import logged

with logged(snakemake.log[0]):
    prepare_placed(snakemake.wildcards.dataset, snakemake.params.entry, snakemake.params.sources,
                   raw_dir=Path(snakemake.output.manifest).parent, tree=snakemake.params.tree,
                   manifest_path=snakemake.output.manifest)
