"""Where tracking reads its inputs: a run's detections and a dataset's ground truth.

The only module of micml.tracking that imports the readers of other packages, so that a move of
them changes one import here.
"""

from __future__ import annotations

import os

import numpy as np

from micml.data.unified import UnifiedDataset, Video
from micml.detections import Detections, read_detection_dir

EMPTY_DETECTIONS = np.zeros((0, 5))


def run_detections(mat_root: str | os.PathLike) -> Detections:
    """{video: {frame: N x 5 [x1, y1, x2, y2, score]}} of the .mat tree of one run's split."""
    return read_detection_dir(mat_root)


def split_videos(dataset_root: str | os.PathLike, split: str) -> list[Video]:
    return UnifiedDataset(dataset_root).videos(split)


def ground_truth_rows(video: Video) -> np.ndarray:
    """Rows (frame, id, x1, y1, x2, y2, score 1) of a video's annotations, by frame; id -1
    where the dataset has no track ids."""
    rows = [np.column_stack([np.full(len(boxes), frame), video.track_ids[frame], boxes, np.ones(len(boxes))])
            for frame, boxes in sorted(video.boxes.items()) if len(boxes)]
    return np.concatenate(rows).astype(np.float64) if rows else np.zeros((0, 7))


def frame_path(dataset_root: str | os.PathLike, video: str, frame: int):
    return UnifiedDataset(dataset_root).frame_path(video, frame)
