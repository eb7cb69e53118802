"""Streaming export of detections: the reference's .mat tree, a COCO results json and a CSV.

```
<folder>/mat/<video>/<frame:06d>.mat   variable A, float32 N x 5 [x1,y1,x2,y2,score], one per frame
<folder>/detections.json               COCO results: image_id, category_id, bbox [x,y,w,h], score
<folder>/detections.csv                video, frame, x1, y1, x2, y2, score
```
Rows are written as frames arrive, so memory does not grow with the number of frames. The .mat
files and the COCO rows are made by `micml.evaluation.matfiles` conventions (its
`write_frame_mat`; bbox and score rounded to 2 decimals as the reference's test.py), so the
evaluators read them unchanged. The CSV keeps full float32 precision (9 significant digits).
The writer does not make the folder appear atomically: callers build it in a temporary place
and rename it (see `micml.inference.predict`).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from micml.evaluation.coco import xyxy_to_xywh
from micml.evaluation.matfiles import DetectionFileError, frame_mat_path, write_frame_mat

MAT_DIR = "mat"
COCO_RESULTS_FILE = "detections.json"
CSV_FILE = "detections.csv"
CSV_COLUMNS = ("video", "frame", "x1", "y1", "x2", "y2", "score")
COCO_DECIMALS = 2  # the reference's test.py rounds both bbox and score to 2 decimals
CATEGORY_ID = 1  # single-class detectors: the unified datasets' first (only) category


class DetectionWriter:
    """Write one run's detections into `folder` frame by frame; use as a context manager.

    `image_id(video, frame)` gives the COCO image id of a frame (a mapping keyed by
    (video, frame) works too); `write_mat=False` skips the .mat tree.
    """

    def __init__(self, folder: Path | str, image_id: Callable[[str, int], int] | Mapping[tuple[str, int], int],
                 *, write_mat: bool = True):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._image_ids = image_id
        self.write_mat = write_mat
        self.frames = self.rows = 0
        self._csv_file = open(self.folder / CSV_FILE, "w", newline="")
        self._csv = csv.writer(self._csv_file)
        self._csv.writerow(CSV_COLUMNS)
        self._json_file = open(self.folder / COCO_RESULTS_FILE, "w")
        self._json_file.write("[")
        self._wrote_coco_row = False

    @property
    def mat_root(self) -> Path:
        return self.folder / MAT_DIR

    def add(self, video: str, frame: int, detections: np.ndarray) -> None:
        """Record frame `frame` (1-based) of `video`: N x 5 [x1, y1, x2, y2, score], N may be 0."""
        detections = np.asarray(detections, dtype=np.float32).reshape(-1, 5)
        image_id = self._image_id(video, frame)  # before writing anything: an unknown frame is an error
        if self.write_mat:
            write_frame_mat(frame_mat_path(self.mat_root, video, frame), detections)
        for row in detections.tolist():
            self._csv.writerow([video, frame, *(f"{value:.9g}" for value in row)])
        self._write_coco_rows(image_id, detections)
        self.frames += 1
        self.rows += len(detections)

    def _image_id(self, video: str, frame: int) -> int:
        if not isinstance(self._image_ids, Mapping):
            return self._image_ids(video, frame)
        try:
            return self._image_ids[(video, frame)]
        except KeyError:
            raise DetectionFileError(f"{self.folder}: video {video!r} frame {frame} has no image id in the "
                                     "annotations; check the video name and the 1-based frame numbering") from None

    def _write_coco_rows(self, image_id: int, detections: np.ndarray) -> None:
        as_float64 = detections.astype(np.float64)
        boxes = np.round(xyxy_to_xywh(as_float64), COCO_DECIMALS)
        scores = np.round(as_float64[:, 4], COCO_DECIMALS)
        for box, score in zip(boxes.tolist(), scores.tolist()):
            # ", " between records: the same text as json.dumps of the whole list
            separator = ", " if self._wrote_coco_row else ""
            record = {"image_id": image_id, "category_id": CATEGORY_ID, "bbox": box, "score": score}
            self._json_file.write(separator + json.dumps(record))
            self._wrote_coco_row = True

    def close(self) -> None:
        if not self._json_file.closed:
            self._json_file.write("]")
            self._json_file.close()
        self._csv_file.close()

    def __enter__(self) -> "DetectionWriter":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
