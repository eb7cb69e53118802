"""Tracking a run's split and scoring it: what the workflow's track and evaluate_tracking rules
and `micml detect --track` do, as functions."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from micml.tracking.counting import counting_errors, has_ids
from micml.tracking.mot import read_mot, write_mot
from micml.tracking.sources import EMPTY_DETECTIONS, ground_truth_rows, run_detections, split_videos
from micml.tracking.tracker import TrackerSettings, track_frames

TRACKS_SUFFIX = ".txt"
NO_IDS_NOTE = "ground truth has no track ids: association metrics (HOTA, AssA, MOTA, IDF1, IDSW) skipped"


def track_split(mat_root: str | os.PathLike, dataset_root: str | os.PathLike, split: str,
                settings: TrackerSettings, out_dir: str | os.PathLike) -> dict[str, int]:
    """Track every video of the split; writes out_dir/<video>.txt; returns {video: tracks}."""
    detections = run_detections(mat_root)
    found = {}
    for video in split_videos(dataset_root, split):
        frames = detections.get(video.record.name, {})
        tracks = track_frames([(frame, frames.get(frame, EMPTY_DETECTIONS))
                               for frame in range(1, video.record.n_frames + 1)], settings)
        write_mot(Path(out_dir) / f"{video.record.name}{TRACKS_SUFFIX}", tracks)
        found[video.record.name] = len(np.unique(tracks[:, 1]))
    return found


def evaluate_split(tracks_dir: str | os.PathLike, dataset_root: str | os.PathLike, split: str,
                   threshold: float) -> tuple[pd.DataFrame, str]:
    """Per-video and combined ('COMBINED') tracking and counting metrics of a tracks folder,
    and a note (empty, or why the association metrics are missing)."""
    videos = {video.record.name: (ground_truth_rows(video),
                                  read_mot(Path(tracks_dir) / f"{video.record.name}{TRACKS_SUFFIX}"),
                                  video.record.n_frames)
              for video in split_videos(dataset_root, split)}
    with_ids = all(has_ids(gt) for gt, _, _ in videos.values())
    rows = {name: counting_errors({name: entry}) for name, entry in videos.items()}
    rows["COMBINED"] = counting_errors(videos)
    if with_ids:
        from micml.tracking.metrics import evaluate_sequences, sequence_data  # needs TrackEval

        scores = evaluate_sequences({name: sequence_data(gt, tracks, n_frames)
                                     for name, (gt, tracks, n_frames) in videos.items()}, threshold)
        rows = {name: {**scores.get(name, {}), **counts} for name, counts in rows.items()}
    table = pd.DataFrame.from_dict(rows, orient="index").rename_axis("video").reset_index()
    return table, "" if with_ids else NO_IDS_NOTE
