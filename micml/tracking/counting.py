"""Counting the moving objects: how many are in each frame, and how many passed in all.

Per frame, the count is the number of boxes (ground truth) or of confirmed tracks' boxes
(tracker); the errors are the MAE and RMSE of the tracker's count over all frames of all videos.
The distinct count is the number of different ids over a video: the objects that moved through
the scene. Ground truth without ids (track id -1) has no distinct count.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd

UNKNOWN_ID = -1  # the unified annotations' track id when the dataset has none

COUNT_COLUMNS = ("frame", "objects", "new", "distinct_so_far")


def per_frame_counts(rows: np.ndarray, n_frames: int) -> np.ndarray:
    """Boxes in each of frames 1..n_frames, from rows (frame, id, ...)."""
    frames = np.asarray(rows, np.float64).reshape(-1, 7)[:, 0].astype(np.int64)
    return np.bincount(frames, minlength=n_frames + 1)[1:n_frames + 1]


def has_ids(rows: np.ndarray) -> bool:
    rows = np.asarray(rows).reshape(-1, 7)
    return len(rows) == 0 or bool((rows[:, 1] != UNKNOWN_ID).all())


def distinct_objects(rows: np.ndarray) -> int:
    return int(len(np.unique(np.asarray(rows).reshape(-1, 7)[:, 1])))


def counting_errors(videos: Mapping[str, tuple[np.ndarray, np.ndarray, int]]) -> dict[str, float]:
    """{video: (ground-truth rows, track rows, n_frames)} -> count MAE and RMSE per frame over all
    frames, and distinct objects tracked vs in the ground truth (NaN where the ground truth has
    no ids)."""
    errors, found, truth = [], 0, 0
    ids_known = True
    for gt, tracks, n_frames in videos.values():
        errors.append(per_frame_counts(tracks, n_frames) - per_frame_counts(gt, n_frames))
        found += distinct_objects(tracks)
        truth += distinct_objects(gt)
        ids_known &= has_ids(gt)
    error = np.concatenate(errors).astype(np.float64) if errors else np.zeros(0)
    return {"count_MAE": float(np.abs(error).mean()) if len(error) else float("nan"),
            "count_RMSE": float(np.sqrt((error ** 2).mean())) if len(error) else float("nan"),
            "objects_found": found,
            "objects_true": truth if ids_known else float("nan")}


def count_table(tracks: np.ndarray, n_frames: int) -> pd.DataFrame:
    """One row per frame 1..n_frames: tracked objects in it, tracks that start in it, and
    distinct tracks seen up to it (the running total of objects that passed)."""
    tracks = np.asarray(tracks, np.float64).reshape(-1, 7)
    objects = per_frame_counts(tracks, n_frames)
    first_frames = [tracks[tracks[:, 1] == track, 0].min() for track in np.unique(tracks[:, 1])]
    new = np.bincount(np.asarray(first_frames, np.int64), minlength=n_frames + 1)[1:n_frames + 1]
    return pd.DataFrame({"frame": np.arange(1, n_frames + 1), "objects": objects, "new": new,
                         "distinct_so_far": np.cumsum(new)}, columns=list(COUNT_COLUMNS))
