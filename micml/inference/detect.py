"""`micml detect`: run a trained detector on a user's own video or folder of frames.

Input: an .mp4/.avi (anything OpenCV can decode) or a folder of images taken in natural name
order (frame2 before frame10), of any size; large frames are tiled (`micml.inference.tiling`).
Output, in `out_dir`:
```
detections.csv    video, frame, x1, y1, x2, y2, score   (frames numbered from 1)
detections.json   COCO results, image_id = frame number
annotated.mp4     the input with boxes of score >= score_threshold drawn (optional; H.264, plays in browsers)
```
With tracking (`track=TrackerSettings(...)`, CLI `--track`), detections.csv gains a `track_id`
column (-1: in no confirmed track), and these are added:
```
tracks.txt        the tracks in MOTChallenge columns (frame, id, x, y, w, h, score, -1, -1, -1)
counts.csv        frame, objects (tracked in it), new (tracks starting), distinct_so_far
```
and the annotated video draws each track's id and the trail of its recent centres.
Files are written under temporary names and renamed when complete. Once the detector is loaded,
the files an earlier run left in `out_dir` are removed, so the folder never mixes two runs: after
a success it holds this run's files only (no stale annotated.mp4 beside a --no-video run), after
a failure none.
"""

from __future__ import annotations

import csv
import logging
import os
import re
import shutil
import tempfile
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import cv2
import numpy as np
from tqdm import tqdm

from micml.data.unified import decode_image
from micml.detections import COCO_RESULTS_FILE, CSV_FILE, DetectionWriter
from micml.inference.decode import REFERENCE_TOP_K
from micml.inference.predict import load_detector, rolling_clips
from micml.inference.tiling import DEFAULT_OVERLAP, DEFAULT_TILE, TiledDetector
from micml.inference.video_out import open_video_writer
from micml.paths import check_output_apart
from micml.tracking import Tracker, TrackerSettings
from micml.tracking.counting import count_table
from micml.tracking.mot import write_mot
from micml.tracking.trails import TrailPainter

log = logging.getLogger(__name__)

ANNOTATED_VIDEO_FILE = "annotated.mp4"
TRACKS_FILE = "tracks.txt"
COUNTS_FILE = "counts.csv"
TRACK_ID_COLUMN = "track_id"
OUTPUT_FILES = (CSV_FILE, COCO_RESULTS_FILE, ANNOTATED_VIDEO_FILE, TRACKS_FILE, COUNTS_FILE)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
DEFAULT_FPS = 10.0  # for frame folders, and videos that do not state a rate
DEFAULT_SCORE_THRESHOLD = 0.3  # the reference's --show_results and evaluation threshold
BOX_COLOUR = (0, 255, 0)  # BGR


class InputError(ValueError):
    """A video or frame folder that cannot be read; the message names the file and the fix."""


@dataclass
class FrameSource:
    name: str
    frames: Iterator[np.ndarray]  # uint8 BGR (H, W, 3), decoded lazily
    n_frames: int | None  # None when the container does not say
    fps: float


@dataclass
class DetectSummary:
    out_dir: Path
    frames: int
    detections: int
    seconds: float
    frames_per_second: float


# --------------------------------------------------------------------------- reading the input


def open_frames(source: str | os.PathLike) -> FrameSource:
    """Frames of a video file or of a folder of images, decoded one at a time."""
    path = Path(source)
    if path.is_dir():
        return _folder_source(path)
    if not path.is_file():
        raise InputError(f"{path}: no such video file or frame folder; check the path")
    return _video_source(path)


def natural_key(name: str) -> list:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def _folder_source(folder: Path) -> FrameSource:
    files = sorted((p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES),
                   key=lambda p: natural_key(p.name))
    if not files:
        raise InputError(f"{folder}: contains no image frames ({', '.join(IMAGE_SUFFIXES)}); "
                         "give a folder of frames or a video file")
    return FrameSource(folder.name, _folder_frames(files), len(files), DEFAULT_FPS)


def _folder_frames(files: Sequence[Path]) -> Iterator[np.ndarray]:
    first_shape = None
    for path in files:
        image = decode_image(path)  # also refuses a truncated JPEG, which OpenCV decodes without error
        if image is None:
            raise InputError(f"{path}: cannot be decoded as an image (truncated or not an image); "
                             "replace or remove the file")
        if first_shape is None:
            first_shape = image.shape
        elif image.shape != first_shape:
            raise InputError(f"{path}: frame is {image.shape[1]}x{image.shape[0]} but the first frame of the "
                             f"folder is {first_shape[1]}x{first_shape[0]}; all frames must have one size")
        yield image


def _video_source(path: Path) -> FrameSource:
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise InputError(f"{path}: cannot be opened as a video (not a video, or a codec this OpenCV build "
                         "lacks); convert it to .mp4 (H.264) or extract its frames into a folder")
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    fps = capture.get(cv2.CAP_PROP_FPS)
    fps = fps if np.isfinite(fps) and fps > 0 else DEFAULT_FPS
    return FrameSource(path.stem, _video_frames(capture, path), count if count > 0 else None, fps)


def _video_frames(capture: cv2.VideoCapture, path: Path) -> Iterator[np.ndarray]:
    decoded = 0
    try:
        while True:
            ok, image = capture.read()
            if not ok:
                break
            decoded += 1
            yield image
    finally:
        capture.release()
    if decoded == 0:
        raise InputError(f"{path}: opened as a video but no frame could be decoded; the file is empty or "
                         "damaged: re-export it, or extract its frames into a folder")


# --------------------------------------------------------------------------- detect


def detect(source: str | os.PathLike, checkpoint: str | os.PathLike, out_dir: str | os.PathLike, *,
           tile: int | None = DEFAULT_TILE, overlap: int = DEFAULT_OVERLAP, batch_size: int = 1,
           top_k: int = REFERENCE_TOP_K, soft_nms: bool = True, score_threshold: float = DEFAULT_SCORE_THRESHOLD,
           expected_variant: str | None = None, device: str = "cpu", amp: str = "off", annotate: bool = True,
           fps: float | None = None, progress: bool = True, track: TrackerSettings | None = None) -> DetectSummary:
    """Detect moving objects in every frame of `source` and write `out_dir` (module docstring).

    `tile=None` runs whole frames; `expected_variant` refuses a checkpoint of another model;
    `track` also tracks and counts them.
    """
    # outputs replace files in `out_dir`: an input named like one of them there would be lost
    check_output_apart(out_dir, source, checkpoint, what="detection folder")
    frames_in = open_frames(source)  # fails on a bad input before the model is loaded
    detector = TiledDetector(load_detector(checkpoint, expected_variant, device), tile=tile, overlap=overlap,
                             batch_size=batch_size, top_k=top_k, soft_nms=soft_nms, device=device, amp=amp)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_outputs(out_dir)
    work = Path(tempfile.mkdtemp(prefix=".detect-", suffix=".partial", dir=out_dir))
    try:
        started = time.perf_counter()
        tracker = Tracker(track) if track is not None else None
        with DetectionWriter(work, lambda video, frame: frame, write_mat=False) as writer:
            _run(detector, frames_in, writer, work / ANNOTATED_VIDEO_FILE if annotate else None,
                 fps or frames_in.fps, score_threshold, progress, tracker)
        if tracker is not None:
            _write_tracking(work, tracker, writer.frames)
        seconds = time.perf_counter() - started
        for name in OUTPUT_FILES:
            if (work / name).exists():
                os.replace(work / name, out_dir / name)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summary = DetectSummary(out_dir, writer.frames, writer.rows, seconds, writer.frames / max(seconds, 1e-9))
    log.info("%s: %d frames in %.1f s, %.2f frames/s, %d detections", source, summary.frames, seconds,
             summary.frames_per_second, summary.detections)
    return summary


def remove_outputs(out_dir: Path) -> None:
    """Delete the files an earlier run wrote, so that none is mistaken for this run's."""
    for name in OUTPUT_FILES:
        (out_dir / name).unlink(missing_ok=True)


def _run(detector: TiledDetector, frames_in: FrameSource, writer: DetectionWriter, video_path: Path | None,
         fps: float, score_threshold: float, progress: bool, tracker: Tracker | None = None) -> None:
    current_frames: deque[np.ndarray] = deque()  # frames whose detections are still being computed

    def remembered(frames: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
        for image in frames:
            current_frames.append(image)
            yield image

    clips = rolling_clips(remembered(frames_in.frames))
    painter = TrailPainter() if tracker is not None else None
    video_out = None
    try:
        with tqdm(total=frames_in.n_frames, unit="frame", desc=f"detect {frames_in.name}",
                  disable=not progress) as bar:
            for number, detections in enumerate(detector.detect_clips(clips), start=1):
                image = current_frames.popleft()
                writer.add(frames_in.name, number, detections)
                ids = tracker.update(number, detections) if tracker is not None else None
                if video_path is not None:
                    video_out = video_out or open_video_writer(video_path, image.shape, fps)
                    video_out.write(draw_detections(image, detections, score_threshold) if painter is None else
                                    draw_tracks(painter, image, detections, ids, score_threshold))
                bar.update()
    finally:
        if video_out is not None:
            video_out.release()


def draw_tracks(painter: TrailPainter, image: np.ndarray, detections: np.ndarray, ids: np.ndarray,
                score_threshold: float) -> np.ndarray:
    """`image` with the tracks confirmed so far (ids and trails) and the other boxes scoring >=
    `score_threshold` as plain boxes."""
    detections = np.asarray(detections).reshape(-1, 5)
    shown = (detections[:, 4] >= score_threshold) | (ids >= 0)
    return painter.paint(image, detections[shown, :4], ids[shown])


def _write_tracking(folder: Path, tracker: Tracker, n_frames: int) -> None:
    """tracks.txt, counts.csv, and the final track id of each row of detections.csv (a track's
    first frames get its id once it is confirmed, later than they were drawn)."""
    tracks = tracker.tracks()
    write_mot(folder / TRACKS_FILE, tracks)
    count_table(tracks, n_frames).to_csv(folder / COUNTS_FILE, index=False)
    ids = tracker.detection_ids()
    with open(folder / CSV_FILE, newline="") as stream:
        header, *rows = list(csv.reader(stream))
    seen: dict[int, int] = {}  # frame -> rows of it so far: rows are in detection order per frame
    with open(folder / CSV_FILE, "w", newline="") as stream:
        out = csv.writer(stream)
        out.writerow([*header, TRACK_ID_COLUMN])
        for row in rows:
            frame = int(row[1])
            index = seen[frame] = seen.get(frame, -1) + 1
            out.writerow([*row, int(ids[frame][index])])


def draw_detections(image: np.ndarray, detections: np.ndarray, score_threshold: float) -> np.ndarray:
    """A copy of `image` with the boxes scoring >= `score_threshold` drawn one pixel wide (the
    objects are a few pixels: a thicker line would hide them)."""
    canvas = image.copy()
    for x1, y1, x2, y2, score in np.asarray(detections).reshape(-1, 5):
        if score >= score_threshold:
            cv2.rectangle(canvas, (int(round(x1)), int(round(y1))), (int(round(x2)), int(round(y2))), BOX_COLOUR, 1)
    return canvas
