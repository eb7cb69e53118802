from pathlib import Path

from micml.data.unified import UnifiedDataset
from micml.detections import export_mat_tree
from micml.workflow import logged

with logged(snakemake.log[0]):
    dataset = UnifiedDataset(Path(snakemake.input.meta).parent)
    frames = {video.record.name: video.record.n_frames for video in dataset.videos(snakemake.params.split)}
    export_mat_tree(snakemake.input.csv, frames, snakemake.output.mat)
