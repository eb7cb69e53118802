from micml.openmp import own_cores

own_cores(snakemake.threads)  # first: the job has its cores to itself (before torch loads)

from pathlib import Path

from micml.engine.launch import run_training
from micml.workflow import logged

with logged(snakemake.log[0]):
    # Snakemake reruns this job when the training settings changed: a run of other settings in
    # the run folder is moved to train/superseded/<fingerprint>/, a killed one of the same resumes.
    run_training(snakemake.params.training, snakemake.wildcards.model, Path(snakemake.input.meta).parent,
                 snakemake.params.out_dir, snakemake.output.model, nproc=snakemake.resources.gpu,
                 threads=snakemake.threads, overrides=snakemake.params.overrides, log_path=snakemake.log[0],
                 supersede_other=True)
