"""Tracking metrics through TrackEval: HOTA, DetA, AssA (HOTA family), MOTA and ID switches
(CLEAR MOT), IDF1 (identity).

TrackEval is the HOTA authors' evaluation code (MOTChallenge's and KITTI's official one). Its
PyPI package `trackeval` (1.3.0) is a packaging of that code: author Jonathon Luiten, repository
kovalp/TrackEval; its metric modules (hota, clear, identity) differ from upstream's last commit
only by numpy-2 fixes (np.float, np.int) and type hints, while upstream itself no longer runs
with numpy >= 1.24. Only the metric classes are used here: each sequence is handed over in
TrackEval's own per-sequence form (ids relabelled 0..n-1 and a similarity matrix per frame), the
form its MOTChallenge loader produces after preprocessing; similarity is box IoU, computed by
TrackEval's own function. A match for MOTA and IDF1 needs IoU >= `threshold` (0.5 as in
MOTChallenge); HOTA integrates over IoU thresholds 0.05..0.95.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
from trackeval.datasets._base_dataset import _BaseDataset
from trackeval.metrics import CLEAR, HOTA, Identity

from micml.tracking.mot import frames_of

MOT_THRESHOLD = 0.5  # MOTChallenge's IoU for a CLEAR / identity match
# Reported fields: name in our tables -> (TrackEval metric, its field)
FIELDS = {"HOTA": ("HOTA", "HOTA"), "DetA": ("HOTA", "DetA"), "AssA": ("HOTA", "AssA"),
          "MOTA": ("CLEAR", "MOTA"), "IDF1": ("Identity", "IDF1"), "IDSW": ("CLEAR", "IDSW")}


def sequence_data(gt: np.ndarray, tracks: np.ndarray, n_frames: int) -> dict:
    """TrackEval's per-sequence data of one video: rows (frame, id, x1, y1, x2, y2, ...) of the
    ground truth and of the tracker, frames 1..n_frames."""
    gt_frames, track_frames = frames_of(np.asarray(gt)[:, :7]), frames_of(np.asarray(tracks)[:, :7])
    gt_index = _relabel(gt)
    track_index = _relabel(tracks)
    data = {"num_timesteps": n_frames, "gt_ids": [], "tracker_ids": [], "similarity_scores": [],
            "num_gt_ids": len(gt_index), "num_tracker_ids": len(track_index),
            "num_gt_dets": len(gt), "num_tracker_dets": len(tracks)}
    empty = np.zeros((0, 7))
    for frame in range(1, n_frames + 1):
        frame_gt, frame_tracks = gt_frames.get(frame, empty), track_frames.get(frame, empty)
        data["gt_ids"].append(np.array([gt_index[i] for i in frame_gt[:, 1]], np.int64))
        data["tracker_ids"].append(np.array([track_index[i] for i in frame_tracks[:, 1]], np.int64))
        data["similarity_scores"].append(
            _BaseDataset._calculate_box_ious(frame_gt[:, 2:6], frame_tracks[:, 2:6], box_format="x0y0x1y1"))
    return data


def _relabel(rows: np.ndarray) -> dict[float, int]:
    return {track: index for index, track in enumerate(np.unique(np.asarray(rows)[:, 1]))}


def evaluate_sequences(sequences: Mapping[str, dict], threshold: float = MOT_THRESHOLD) -> dict[str, dict]:
    """{video: sequence_data} -> {video and 'COMBINED': {HOTA, DetA, AssA, MOTA, IDF1, IDSW}};
    the combined row is TrackEval's over all videos (not a mean of the per-video values)."""
    metrics = {"HOTA": HOTA(), "CLEAR": CLEAR({"THRESHOLD": threshold, "PRINT_CONFIG": False}),
               "Identity": Identity({"THRESHOLD": threshold, "PRINT_CONFIG": False})}
    raw = {name: {video: metric.eval_sequence(data) for video, data in sequences.items()}
           for name, metric in metrics.items()}
    combined = {name: metric.combine_sequences(raw[name]) for name, metric in metrics.items()} if sequences else {}
    table = {video: _summary({name: raw[name][video] for name in metrics}) for video in sequences}
    if combined:
        table["COMBINED"] = _summary(combined)
    return table


def _summary(results: Mapping[str, Mapping]) -> dict[str, float]:
    """Our fields of one TrackEval result; HOTA-family arrays averaged over the IoU thresholds
    as TrackEval reports them."""
    summary = {}
    for name, (metric, field) in FIELDS.items():
        value = results[metric][field]
        summary[name] = float(np.mean(value)) if np.ndim(value) else float(value)
    summary["IDSW"] = int(summary["IDSW"])
    return summary
