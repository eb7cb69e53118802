"""Choosing the tracker's settings: a grid over them on a run's val-split detections, ranked by
HOTA (then IDF1). The test split is refused, so that the tracking table stays an unbiased test."""

from __future__ import annotations

import itertools
import os
from dataclasses import replace
from typing import Mapping, Sequence

import pandas as pd

from micml.tracking.metrics import MOT_THRESHOLD, evaluate_sequences, sequence_data
from micml.tracking.sources import EMPTY_DETECTIONS, ground_truth_rows, run_detections, split_videos
from micml.tracking.tracker import TrackerSettings, track_frames

TUNING_SPLIT = "val"
DEFAULT_GRID: dict[str, Sequence] = {
    "max_distance": (6.0, 9.0, 12.0, 16.0, 24.0),
    "min_hits": (1, 2, 3),
    "max_misses": (1, 2, 3, 5),
    "position_gain": (0.6, 0.8),
    "velocity_gain": (0.2, 0.4),
}


class TuningError(ValueError):
    """Tuning that would not be a fair choice of settings; the message says why."""


def tune(mat_root: str | os.PathLike, dataset_root: str | os.PathLike, split: str = TUNING_SPLIT,
         grid: Mapping[str, Sequence] = DEFAULT_GRID, base: TrackerSettings = TrackerSettings(),
         threshold: float = MOT_THRESHOLD) -> pd.DataFrame:
    """Every combination of `grid` over `base`, scored on the split; best first."""
    if split == "test":
        raise TuningError(f"{mat_root}: tuning on the test split would choose the tracker on the data it is "
                          "scored on; predict the val split (`micml test ... --split val`) and tune on that")
    detections = run_detections(mat_root)
    videos = split_videos(dataset_root, split)
    truth = {video.record.name: ground_truth_rows(video) for video in videos}
    if any((rows[:, 1] < 0).any() for rows in truth.values()):
        raise TuningError(f"{dataset_root}: the {split} annotations have no track ids; tune on a dataset that has them")
    rows = []
    for values in itertools.product(*grid.values()):
        settings = replace(base, **dict(zip(grid, values)))
        sequences = {}
        for video in videos:
            frames = detections.get(video.record.name, {})
            tracks = track_frames([(frame, frames.get(frame, EMPTY_DETECTIONS))
                                   for frame in range(1, video.record.n_frames + 1)], settings)
            sequences[video.record.name] = sequence_data(truth[video.record.name], tracks, video.record.n_frames)
        rows.append({**dict(zip(grid, values)), **evaluate_sequences(sequences, threshold)["COMBINED"]})
    return pd.DataFrame(rows).sort_values(["HOTA", "IDF1"], ascending=False, ignore_index=True)
