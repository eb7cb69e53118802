"""Detection files: the per-frame .mat files of DSFNet/MICML, and COCO results json.

.mat layout (``testSaveMat.py``): ``<mat_root>/<video>/<frame:06d>.mat`` holding one variable
``A``, float32 N x 5 [x1, y1, x2, y2, score], shape (0, 5) when a frame has no detection,
MATLAB-5 format as ``scipy.io.savemat`` writes by default. The reference evaluator reads
these files unchanged; it takes a missing file as "no detections", which hides a lost video, so
`micml.evaluation.report_tables.evaluate_predictions` refuses missing files instead.

HiEUM's evaluator also reads a variable ``Detect_Result`` (looked up before ``A``); when it
has 4 columns they are [x, y, w, h] without scores and every row is kept whatever the
score threshold. We turn such rows into [x1, y1, x2, y2, 1.0]: kept at any threshold below 1.

Scores and boxes are returned in the dtype stored in the file (float32 for our files), so
that threshold comparisons behave as in the reference (see ``micml.evaluation.dsfnet``).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Hashable, Mapping

import numpy as np
import scipy.io

from micml.evaluation.coco import xyxy_to_xywh

MAT_VARIABLE = "A"
PREDICT_SUMMARY = "predict.json"  # beside mat/: settings, weights digest and speed of the run that predicted
HIEUM_VARIABLE = "Detect_Result"
FRAME_FILE = re.compile(r"^(\d+)\.mat$")
SCORE_FOR_UNSCORED_ROWS = 1.0

Detections = dict[str, dict[int, np.ndarray]]


class DetectionFileError(ValueError):
    """A detection file that cannot be read; the message names the file and the fix."""


def frame_mat_path(mat_root: str | os.PathLike, video: str, frame: int) -> Path:
    return Path(mat_root) / str(video) / f"{frame:06d}.mat"


def atomic_write(path: Path, write) -> None:
    """Write through ``write(file_object)`` into a temp file beside ``path``, then rename.

    A killed export leaves either the old file or the new one, never a truncated .mat that
    the reference evaluator would choke on.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            write(stream)
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def write_frame_mat(path: str | os.PathLike, boxes) -> None:
    """Write one frame's detections as variable ``A``, float32 N x 5 (shape (0, 5) if none)."""
    array = np.asarray(boxes, dtype=np.float32)
    if array.size == 0:
        array = np.zeros((0, 5), np.float32)
    if array.ndim != 2 or array.shape[1] != 5:
        raise DetectionFileError(
            f"{path}: detections must be N x 5 [x1, y1, x2, y2, score], got shape {array.shape}"
        )
    atomic_write(Path(path), lambda stream: scipy.io.savemat(stream, {MAT_VARIABLE: array}))


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
        "write frames with micml.evaluation.write_frame_mat"
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


# --- COCO results json --------------------------------------------------------------------


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


def write_coco_results(
    path: str | os.PathLike,
    detections: Mapping[Hashable, Mapping[int, np.ndarray]],
    image_index: Mapping[tuple[Hashable, int], int],
    decimals: int | None = 2,
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
            array = np.asarray(rows, dtype=np.float64).reshape(-1, 5)
            boxes, scores = xyxy_to_xywh(array), array[:, 4]
            if decimals is not None:
                boxes, scores = np.round(boxes, decimals), np.round(scores, decimals)
            for box, score in zip(boxes.tolist(), scores.tolist()):
                results.append(
                    {"image_id": image_index[(video, frame)], "category_id": 1, "bbox": box, "score": score}
                )
    text = json.dumps(results).encode()
    atomic_write(Path(path), lambda stream: stream.write(text))
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
