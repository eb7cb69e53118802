from micml.openmp import own_cores

own_cores(snakemake.threads)  # first: the job has its cores to itself (before torch loads)

from pathlib import Path

from micml.inference.predict import predict_split
from micml.workflow import logged

testing = snakemake.params.testing
with logged(snakemake.log[0]):
    predict_split(snakemake.input.model, Path(snakemake.input.meta).parent, testing["split"],
                  Path(snakemake.output.summary).parent, expected_variant=snakemake.wildcards.model,
                  tile=testing["tile"], overlap=testing["overlap"], batch_size=testing["batch_size"],
                  top_k=testing["top_k"], soft_nms=testing["soft_nms"],
                  device="cuda" if snakemake.resources.gpu > 0 else "cpu", amp=testing["amp"],
                  compile=testing["compile"], progress=False, write_mat=False)
