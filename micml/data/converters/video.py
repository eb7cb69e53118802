"""A user's own video file (.mp4, .avi, anything OpenCV decodes) -> unified layout.

The frames are decoded once, streamed into the writer, and form one unannotated video in the
"test" split, so `micml detect` can run on it like on any converted dataset.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from ..unified import DatasetError, UnifiedWriter, partial_path
from .common import check_destination, check_name_options, sha256_file


def convert_video(src: Path | str, dst: Path | str, *, name: str | None = None, fps: float | None = None) -> Path:
    """Decode `src` into `dst`; `name` defaults to the file stem, `fps` to the file's own rate.

    `name` becomes the folder `frames/<name>/`, so it must be a plain name.
    """
    path = Path(src)
    check_name_options("video", name=name if name is not None else path.stem)
    check_destination(path, dst)
    capture = open_video(path)
    try:
        rate = frame_rate(capture, path, fps)
        reported = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        writer = UnifiedWriter(dst, classes=(), protocols=(), annotated=False)
        try:
            frames = decoded_frames(capture, path)
            video = writer.add_video(name or path.stem, "test", frames, fps=rate, source=str(path))
            meta = {"native_format": "video", "source": str(path.resolve()), "options": {"name": name, "fps": fps},
                    "counts": {"test": {"videos": 1, "frames": video.record.n_frames, "boxes": 0}},
                    "dropped_outside_frame": {"count": 0, "boxes": {}},  # same keys as annotated datasets
                    "frames_reported_by_container": reported}
            return writer.commit(sources={path.name: sha256_file(path)}, extra=meta)
        except BaseException:
            shutil.rmtree(partial_path(Path(dst)), ignore_errors=True)
            raise
    finally:
        capture.release()


def open_video(path: Path) -> cv2.VideoCapture:
    if not path.is_file():
        raise DatasetError(f"{path}: video file not found; give the path of an .mp4/.avi file")
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        capture.release()
        raise DatasetError(f"{path}: OpenCV cannot open this file as a video (not a video, cut short, or a codec "
                           "this OpenCV build lacks); copy it again, or re-encode it, e.g. "
                           "`ffmpeg -i in -c:v libx264 out.mp4`")
    return capture


def frame_rate(capture: cv2.VideoCapture, path: Path, fps: float | None) -> float:
    if fps is not None:
        if not (math.isfinite(fps) and fps > 0):
            raise DatasetError(f"fps={fps}: expected a positive frame rate")
        return float(fps)
    rate = capture.get(cv2.CAP_PROP_FPS)
    if not (math.isfinite(rate) and rate > 0):
        raise DatasetError(f"{path}: the file does not state a frame rate; pass fps explicitly")
    return float(rate)


def decoded_frames(capture: cv2.VideoCapture, path: Path) -> Iterator[np.ndarray]:
    """Frames until the decoder stops; a file that opens but yields no frame is refused."""
    ok, frame = capture.read()
    if not ok:
        raise DatasetError(f"{path}: OpenCV opened the file but decoded no frame (empty, truncated or an "
                           "unsupported codec); re-encode it, e.g. `ffmpeg -i in -c:v libx264 out.mp4`")
    yield frame
    while True:
        ok, frame = capture.read()
        if not ok:
            return
        yield frame
