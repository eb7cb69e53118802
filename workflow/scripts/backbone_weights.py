from micml.weights import fetch_imagenet_weights
from micml.workflow import logged

with logged(snakemake.log[0]):
    # Downloads when online (resumable), else says which file to fetch and where to place it;
    # the file's sha256 is pinned in the manifest beside it on first use.
    print(fetch_imagenet_weights(snakemake.output.weights))
