from micml.data.stage import prepare_synthetic
from micml.workflow import logged

with logged(snakemake.log[0]):
    prepare_synthetic(snakemake.wildcards.dataset, snakemake.params.entry, snakemake.params.synthetic,
                      tree=snakemake.params.tree, manifest_path=snakemake.output.manifest)
