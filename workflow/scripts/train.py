from micml.openmp import own_cores

own_cores(snakemake.threads)  # first: the job has its cores to itself (before torch loads)

from pathlib import Path

from micml.engine.launch import run_training
from micml.workflow import logged

with logged(snakemake.log[0]):
    run_training(snakemake.params.training, snakemake.wildcards.model, Path(snakemake.input.meta).parent,
                 snakemake.params.out_dir, snakemake.output.model, nproc=snakemake.resources.gpu,
                 threads=snakemake.threads, log_path=snakemake.log[0])
