from pathlib import Path

from micml.tracking.report import write_run_tracking
from micml.workflow import logged

with logged(snakemake.log[0]):
    write_run_tracking(snakemake.input.tracks, Path(snakemake.input.meta).parent, snakemake.params.split,
                       snakemake.params.tracking["iou_threshold"], snakemake.output.csv, snakemake.output.md,
                       title=f"Tracking: {snakemake.wildcards.dataset} / {snakemake.wildcards.model} / "
                             f"seed {snakemake.wildcards.seed}")
