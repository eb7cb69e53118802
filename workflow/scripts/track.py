from pathlib import Path

from micml.io import atomic_folder
from micml.tracking import TrackerSettings
from micml.tracking.pipeline import track_split
from micml.workflow import logged

with logged(snakemake.log[0]):
    with atomic_folder(snakemake.output.tracks, overwrite=True) as folder:
        found = track_split(snakemake.input.mat, Path(snakemake.input.meta).parent, snakemake.params.split,
                            TrackerSettings.from_mapping(snakemake.params.tracking), folder)
    print(f"tracks per video: {found}")
