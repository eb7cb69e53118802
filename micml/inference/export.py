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
import shutil
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from micml.data.unified import partial_path, replace_folder
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


# --------------------------------------------------------------------------- CSV -> .mat tree


def read_detections_csv(csv_path: Path | str) -> dict[tuple[str, int], np.ndarray]:
    """(video, frame) -> float32 N x 5 from a `detections.csv` written by `DetectionWriter`."""
    csv_path = Path(csv_path)
    try:
        with open(csv_path, newline="") as stream:
            reader = csv.reader(stream)
            header = tuple(next(reader, ()))
            if header != CSV_COLUMNS:
                raise DetectionFileError(f"{csv_path}: expected the columns {', '.join(CSV_COLUMNS)}, found "
                                         f"{', '.join(header) or 'an empty file'}; give a detections.csv of `micml test`")
            rows: dict[tuple[str, int], list[list[float]]] = {}
            for line_number, row in enumerate(reader, start=2):
                try:
                    video, frame, values = row[0], int(row[1]), [float(value) for value in row[2:]]
                except (IndexError, ValueError):
                    values = []
                if len(values) != 5 or not np.all(np.isfinite(values)):
                    raise DetectionFileError(f"{csv_path}: line {line_number} is not video, frame and five finite "
                                             f"numbers ({','.join(row)}); re-run `micml test` to rewrite the file")
                rows.setdefault((video, frame), []).append(values)
    except FileNotFoundError:
        raise DetectionFileError(f"{csv_path}: not found; run `micml test` (or the workflow's test rule) first") from None
    return {key: np.asarray(values, np.float32) for key, values in rows.items()}


def export_mat_tree(csv_path: Path | str, frames: Mapping[str, int], mat_root: Path | str) -> int:
    """Write `mat_root/<video>/<frame:06d>.mat` for every frame of `frames` (video -> frame count)
    from a detections.csv; a frame without rows gets a 0 x 5 `A`, as the reference's test.py.

    The tree is built beside `mat_root` and swapped in whole. A CSV row of a video or frame that
    `frames` does not hold is an error naming it (a CSV of another split or dataset), never dropped.
    Returns the number of files written.
    """
    detections = read_detections_csv(csv_path)
    unknown = sorted(key for key in detections if not 1 <= key[1] <= frames.get(key[0], 0))
    if unknown:
        video, frame = unknown[0]
        raise DetectionFileError(f"{csv_path}: {len(unknown)} row group(s) name frames outside the split, first "
                                 f"video {video!r} frame {frame}; the CSV belongs to another split or dataset")
    mat_root = Path(mat_root)
    work = partial_path(mat_root)
    if work.exists():
        shutil.rmtree(work)  # left by a killed export: never trusted
    empty = np.zeros((0, 5), np.float32)
    written = 0
    for video, n_frames in frames.items():
        for frame in range(1, n_frames + 1):
            write_frame_mat(frame_mat_path(work, video, frame), detections.get((video, frame), empty))
            written += 1
    replace_folder(work, mat_root)
    return written
