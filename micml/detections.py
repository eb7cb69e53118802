"""Detections on disk: the record, and its .mat, COCO json and CSV readers and writers.

A detection is a row [x1, y1, x2, y2, score] (pixels, corners inclusive as in the reference);
the detections of a split are ``{video: {frame (1-based): N x 5 array}}`` (`Detections`).
`micml test` writes a prediction folder in three formats, the evaluators and plots read them:

```
<folder>/mat/<video>/<frame:06d>.mat   variable A, float32 N x 5, shape (0, 5) without detections
<folder>/detections.json               COCO results: image_id, category_id, bbox [x,y,w,h], score
<folder>/detections.csv                video, frame, x1, y1, x2, y2, score
<folder>/predict.json                  settings, weights digest and speed of the run that predicted
```

.mat files are DSFNet/MICML's ``testSaveMat.py`` layout in MATLAB-5 format as
``scipy.io.savemat`` writes by default, so the reference evaluator reads them unchanged. It
takes a missing file as "no detections", which hides a lost video, so
`micml.evaluation.evaluate.evaluate_predictions` refuses missing files instead. HiEUM's
evaluator also reads a variable ``Detect_Result`` (looked up before ``A``); when it has 4
columns they are [x, y, w, h] without scores, kept whatever the score threshold: we turn them
into [x1, y1, x2, y2, 1.0]. Boxes come back in the dtype stored (float32 for our files), so that
threshold comparisons behave as in the reference (see ``micml.evaluation.dsfnet``).

COCO rows round bbox and score to 2 decimals, as the reference's test.py; the CSV keeps full
float32 precision (9 significant digits). Needs no torch: evaluation reads these files too.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
from pathlib import Path
from typing import Callable, Hashable, Mapping

import numpy as np
import scipy.io

from micml.io import PARTIAL_SUFFIX, atomic_write, replace_folder, write_bytes

MAT_DIR = "mat"
COCO_RESULTS_FILE = "detections.json"
CSV_FILE = "detections.csv"
PREDICT_SUMMARY = "predict.json"
CSV_COLUMNS = ("video", "frame", "x1", "y1", "x2", "y2", "score")
MAT_VARIABLE = "A"
HIEUM_VARIABLE = "Detect_Result"
FRAME_FILE = re.compile(r"^(\d+)\.mat$")
SCORE_FOR_UNSCORED_ROWS = 1.0
COCO_DECIMALS = 2  # the reference's test.py rounds both bbox and score to 2 decimals
CATEGORY_ID = 1  # single-class detectors: the unified datasets' first (only) category

Detections = dict[str, dict[int, np.ndarray]]


class DetectionFileError(ValueError):
    """A detection file that cannot be read; the message names the file and the fix."""


def xyxy_to_xywh(boxes: np.ndarray) -> np.ndarray:
    """[x1, y1, x2, y2, ...] rows -> float64 [x, y, w, h] (COCO's bbox)."""
    xywh = np.asarray(boxes[:, :4], dtype=np.float64).copy()
    xywh[:, 2:] -= xywh[:, :2]
    return xywh


# --------------------------------------------------------------------------- .mat files


def frame_mat_path(mat_root: str | os.PathLike, video: str, frame: int) -> Path:
    return Path(mat_root) / str(video) / f"{frame:06d}.mat"


def write_frame_mat(path: str | os.PathLike, boxes) -> None:
    """Write one frame's detections as variable ``A``, float32 N x 5 (shape (0, 5) if none)."""
    array = np.asarray(boxes, dtype=np.float32)
    if array.size == 0:
        array = np.zeros((0, 5), np.float32)
    if array.ndim != 2 or array.shape[1] != 5:
        raise DetectionFileError(
            f"{path}: detections must be N x 5 [x1, y1, x2, y2, score], got shape {array.shape}"
        )
    atomic_write(path, lambda stream: scipy.io.savemat(stream, {MAT_VARIABLE: array}))


def read_frame_mat(path: str | os.PathLike) -> np.ndarray:
    """One frame's detections as N x 5 [x1, y1, x2, y2, score], in the stored dtype."""
    path = Path(path)
    try:
        content = scipy.io.loadmat(str(path))
    except Exception as error:  # scipy raises ValueError, MatReadError, TypeError... by case
        raise DetectionFileError(
            f"{path}: not a readable MATLAB .mat file ({type(error).__name__}: {error}); "
            "re-export this frame, or delete the file to count the frame as having no detections"
        ) from error
    if HIEUM_VARIABLE in content:
        return detections_from_array(content[HIEUM_VARIABLE], path, HIEUM_VARIABLE)
    if MAT_VARIABLE in content:
        return detections_from_array(content[MAT_VARIABLE], path, MAT_VARIABLE)
    found = sorted(name for name in content if not name.startswith("__"))
    raise DetectionFileError(
        f"{path}: expected a variable '{MAT_VARIABLE}' (or '{HIEUM_VARIABLE}'), found {found}; "
        "write frames with micml.detections.write_frame_mat"
    )


def detections_from_array(array: np.ndarray, path: Path, name: str) -> np.ndarray:
    if array.size == 0:  # MATLAB writes empty arrays as 0 x 0
        return np.zeros((0, 5), array.dtype if array.dtype.kind == "f" else np.float32)
    if array.ndim != 2 or array.dtype.kind not in "fiu" or array.shape[1] not in (4, 5):
        raise DetectionFileError(
            f"{path}: variable '{name}' must be a numeric N x 5 [x1, y1, x2, y2, score] "
            f"array, found shape {array.shape} dtype {array.dtype}"
        )
    if array.shape[1] == 5:
        return array
    # HiEUM's unscored [x, y, w, h] rows
    boxes = np.empty((len(array), 5), array.dtype if array.dtype.kind == "f" else np.float64)
    boxes[:, :2] = array[:, :2]
    boxes[:, 2:4] = array[:, :2] + array[:, 2:4]
    boxes[:, 4] = SCORE_FOR_UNSCORED_ROWS
    return boxes


def read_detection_dir(mat_root: str | os.PathLike) -> Detections:
    """``mat_root/<video>/<frame>.mat`` -> ``{video: {frame: N x 5 array}}``.

    Only sub-folders are videos and only files named by digits are frames (the reference
    writes its ``*.txt`` summary into the same root). Frames without a file are simply absent
    from the result; whether that is allowed is the caller's decision.
    """
    root = Path(mat_root)
    if not root.is_dir():
        raise DetectionFileError(f"{root}: detection folder not found; run `micml test` to export .mat files")
    detections: Detections = {}
    for video_dir in sorted(path for path in root.iterdir() if path.is_dir()):
        frames = {}
        for mat_path in sorted(video_dir.iterdir()):
            match = FRAME_FILE.match(mat_path.name)
            if match and mat_path.is_file():
                frames[int(match.group(1))] = read_frame_mat(mat_path)
        detections[video_dir.name] = frames
    return detections


def write_detection_dir(
    mat_root: str | os.PathLike, detections: Mapping[Hashable, Mapping[int, np.ndarray]]
) -> None:
    """Write every frame of ``detections`` as ``mat_root/<video>/<frame:06d>.mat``."""
    for video, frames in detections.items():
        for frame, boxes in frames.items():
            write_frame_mat(frame_mat_path(mat_root, str(video), frame), boxes)


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
    work = mat_root.with_name(mat_root.name + PARTIAL_SUFFIX)
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


# --------------------------------------------------------------------------- COCO results json


def coco_image_index(annotations: Mapping | str | os.PathLike) -> dict[tuple[str, int], int]:
    """(video name, frame index) -> image id, from a unified-layout COCO json (dict or path).

    The unified layout's images carry ``video_id`` and ``frame_index`` and its ``videos``
    table maps ``id`` to ``name``.
    """
    source = annotations if isinstance(annotations, Mapping) else None
    if source is None:
        with open(annotations) as stream:
            source = json.load(stream)
    try:
        names = {video["id"]: video["name"] for video in source["videos"]}
        return {
            (names[image["video_id"]], int(image["frame_index"])): image["id"] for image in source["images"]
        }
    except KeyError as error:
        where = "annotations" if isinstance(annotations, Mapping) else str(annotations)
        raise DetectionFileError(
            f"{where}: not a unified-layout COCO json (missing {error}); images need video_id and "
            "frame_index and a top-level 'videos' table; re-run `micml convert`"
        ) from error


def coco_rows(image_id: int, detections: np.ndarray, decimals: int | None = COCO_DECIMALS) -> list[dict]:
    """The COCO results records of one frame's N x 5 detections (bbox [x, y, w, h])."""
    array = np.asarray(detections, dtype=np.float64).reshape(-1, 5)
    boxes, scores = xyxy_to_xywh(array), array[:, 4]
    if decimals is not None:
        boxes, scores = np.round(boxes, decimals), np.round(scores, decimals)
    return [{"image_id": image_id, "category_id": CATEGORY_ID, "bbox": box, "score": score}
            for box, score in zip(boxes.tolist(), scores.tolist())]


def write_coco_results(
    path: str | os.PathLike,
    detections: Mapping[Hashable, Mapping[int, np.ndarray]],
    image_index: Mapping[tuple[Hashable, int], int],
    decimals: int | None = COCO_DECIMALS,
) -> int:
    """Write a COCO results json (bbox [x, y, w, h], 2 decimals like the reference); returns rows.

    Frames absent from ``image_index`` raise: a result for an unknown image would be
    refused by pycocotools later, far from its cause.
    """
    results = []
    for video, frames in detections.items():
        for frame, rows in frames.items():
            if (video, frame) not in image_index:
                raise DetectionFileError(
                    f"{path}: video {video!r} frame {frame} has no image id in the annotations; "
                    "check the video names and frame numbering (1-based)"
                )
            results += coco_rows(image_index[(video, frame)], rows, decimals)
    write_bytes(path, json.dumps(results).encode())
    return len(results)


def read_coco_results(
    path: str | os.PathLike, image_index: Mapping[tuple[Hashable, int], int]
) -> dict[Hashable, dict[int, np.ndarray]]:
    """COCO results json -> ``{video: {frame: N x 5 [x1, y1, x2, y2, score]}}`` (float64)."""
    try:
        with open(path) as stream:
            results = json.load(stream)
    except (OSError, json.JSONDecodeError) as error:
        raise DetectionFileError(f"{path}: cannot read COCO results json ({error})") from error
    frame_of = {image_id: key for key, image_id in image_index.items()}
    rows: dict[tuple[Hashable, int], list[list[float]]] = {}
    for number, result in enumerate(results):
        try:
            key = frame_of[result["image_id"]]
            x, y, w, h = result["bbox"]
            rows.setdefault(key, []).append([x, y, x + w, y + h, result["score"]])
        except (KeyError, TypeError, ValueError) as error:
            raise DetectionFileError(
                f"{path}: result #{number} is not {{image_id, bbox [x,y,w,h], score}} with a known "
                f"image id ({type(error).__name__}: {error})"
            ) from error
    detections: dict[Hashable, dict[int, np.ndarray]] = {}
    for (video, frame), frame_rows in rows.items():
        detections.setdefault(video, {})[frame] = np.asarray(frame_rows, dtype=np.float64)
    return detections


# --------------------------------------------------------------------------- CSV


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


# --------------------------------------------------------------------------- streaming writer


class DetectionWriter:
    """Write one run's detections into `folder` frame by frame, in all three formats; use as a
    context manager.

    Rows are written as frames arrive, so memory does not grow with the number of frames.
    `image_id(video, frame)` gives the COCO image id of a frame (a mapping keyed by (video,
    frame) works too); `write_mat=False` skips the .mat tree. The folder does not appear
    atomically: callers build it in a temporary place and rename it (`micml.inference.predict`).
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
        for record in coco_rows(image_id, detections):
            # ", " between records: the same text as json.dumps of the whole list
            self._json_file.write((", " if self._wrote_coco_row else "") + json.dumps(record))
            self._wrote_coco_row = True
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

    def close(self) -> None:
        if not self._json_file.closed:
            self._json_file.write("]")
            self._json_file.close()
        self._csv_file.close()

    def __enter__(self) -> "DetectionWriter":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
