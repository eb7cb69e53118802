"""The unified dataset layout every converter writes and every later stage reads.

```
<root>/frames/<video>/<000001>.jpg      1-based, continuous per video
<root>/annotations/<split>.json         COCO plus a `videos` table
<root>/meta.json                        classes, protocols, sources, counts
```

An annotation's `bbox` lies inside its frame (converters clip it). Where clipping moved the
box's centre, the annotation also holds `point` [x, y], the centre as annotated: where the
object is, for point protocols such as DroneCrowd's L-mAP (`Video.frame_points`).

A dataset is built in ``<root>.partial`` and renamed into place only when complete, so a
killed conversion never leaves a folder that later rules would accept.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import cv2
import numpy as np

from micml.catalog import DSFNET_F1, COCO_AP50, SPLITS
from micml.io import PARTIAL_SUFFIX, RETIRED_SUFFIX, replace_folder, write_text

FRAME_DIGITS = 6
JPEG_QUALITY = 95
META_FILE = "meta.json"
JPEG_START, JPEG_END = b"\xff\xd8", b"\xff\xd9"
# Some encoders pad a JPEG after its end marker; a cut file has no end marker at all.
JPEG_TAIL_BYTES = 64


class DatasetError(ValueError):
    """Input that cannot become a valid unified dataset; the message names the file and the fix."""


@dataclass(frozen=True)
class VideoRecord:
    name: str
    split: str
    n_frames: int
    width: int
    height: int
    fps: float


@dataclass
class Video:
    """One video of a unified dataset: its record and its boxes per 1-based frame index."""

    record: VideoRecord
    boxes: dict[int, np.ndarray] = field(default_factory=dict)  # frame -> N x 4 [x1,y1,x2,y2]
    track_ids: dict[int, np.ndarray] = field(default_factory=dict)  # frame -> N (-1 = unknown)
    # frame -> N x 2 [x, y] as annotated, NaN where that is the box centre (frames without any: absent)
    points: dict[int, np.ndarray] = field(default_factory=dict)

    def frame_boxes(self, frame: int) -> np.ndarray:
        return self.boxes.get(frame, np.zeros((0, 4), np.float32))

    def frame_points(self, frame: int) -> np.ndarray:
        """N x 2 float64: where each object of the frame was annotated (its box centre unless
        clipping to the frame moved that)."""
        boxes = self.frame_boxes(frame).astype(np.float64)
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2
        annotated = self.points.get(frame)
        return centres if annotated is None else np.where(np.isnan(annotated), centres, annotated)


def frame_name(frame: int) -> str:
    return f"{frame:0{FRAME_DIGITS}d}.jpg"


def frame_relpath(video: str, frame: int) -> str:
    return f"frames/{video}/{frame_name(frame)}"


def partial_path(root: Path) -> Path:
    return root.with_name(root.name + PARTIAL_SUFFIX)


def read_image(path: Path, *, what: str = "frame") -> np.ndarray:
    """Decode an image fully (a truncated JPEG fails here, not during training)."""
    image = decode_image(path)
    if image is None:
        if not Path(path).exists():
            raise DatasetError(f"{path}: {what} is missing; restore the file or remove its annotations")
        raise DatasetError(
            f"{path}: {what} cannot be decoded as an image (truncated or not an image); "
            "re-extract it from the original archive"
        )
    return image


def decode_image(path: Path | str) -> np.ndarray | None:
    """BGR image, or None when the file is missing, not an image, or a truncated JPEG.

    OpenCV decodes a JPEG cut short without an error: libjpeg only prints "Premature end of
    JPEG file" and fills the missing rows with grey, so the end marker is checked here.
    """
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None or truncated_jpeg(Path(path)):
        return None
    return image


def truncated_jpeg(path: Path) -> bool:
    """Whether `path` is a JPEG (by its first bytes) without an end-of-image marker near its end."""
    with open(path, "rb") as handle:
        if handle.read(2) != JPEG_START:
            return False
        handle.seek(0, os.SEEK_END)
        handle.seek(max(2, handle.tell() - JPEG_TAIL_BYTES))
        return JPEG_END not in handle.read()


class UnifiedWriter:
    """Builds one unified dataset in ``<root>.partial``; `commit` renames it to ``<root>``.

    Frames are given per video as image paths (JPEG files are copied byte for byte after a
    full decode check) or as HxWx3 uint8 BGR arrays (encoded as JPEG).
    """

    def __init__(self, root: Path | str, *, classes: Sequence[str] = ("car",),
                 protocols: Sequence[str] = (DSFNET_F1, COCO_AP50), annotated: bool = True):
        self.root = Path(root)
        self.work = partial_path(self.root)
        if self.work.exists():
            shutil.rmtree(self.work)  # left by a killed run: never trusted
        (self.work / "frames").mkdir(parents=True)
        self.classes = list(classes)
        self.protocols = list(protocols)
        self.annotated = annotated
        self.videos: list[Video] = []

    def add_video(self, name: str, split: str, frames: Iterable[Path | np.ndarray],
                  boxes: Mapping[int, np.ndarray] | None = None,
                  track_ids: Mapping[int, np.ndarray] | None = None, *,
                  points: Mapping[int, np.ndarray] | None = None,
                  fps: float = 10.0, source: str = "") -> Video:
        """Write the frames of one video (1-based, in order) and record its boxes.

        `boxes[f]` is N x 4 [x1,y1,x2,y2] in pixels, already clipped to the frame; `points[f]`,
        where given, N x 2 [x, y] where each object was annotated, NaN where that is its box's
        centre; `source` names the native file the boxes came from, for error messages.
        """
        if split not in SPLITS:
            raise DatasetError(f"video {name!r}: split {split!r} is not one of {SPLITS}")
        if any(v.record.name == name for v in self.videos):
            raise DatasetError(f"video {name!r} appears twice in {source or 'the source'}; names must be unique")
        size, n_frames = self._write_frames(name, frames)
        if n_frames == 0:
            raise DatasetError(f"{source or name}: video {name!r} has no frames; "
                               "check that its image folder is present and not empty")
        width, height = size
        record = VideoRecord(name, split, n_frames, width, height, float(fps))
        video = Video(record)
        for frame, frame_boxes in (boxes or {}).items():
            video.boxes[int(frame)], video.track_ids[int(frame)] = _checked_boxes(
                frame_boxes, (track_ids or {}).get(frame), record, int(frame), source)
            annotated = (points or {}).get(frame)
            if annotated is not None and not np.isnan(annotated).all():
                video.points[int(frame)] = _checked_points(annotated, len(video.boxes[int(frame)]), record,
                                                           int(frame), source)
        self.videos.append(video)
        return video

    def _write_frames(self, name: str, frames: Iterable[Path | np.ndarray]) -> tuple[tuple[int, int], int]:
        out_dir = self.work / "frames" / name
        out_dir.mkdir(parents=True)
        size = None
        count = 0
        for count, frame in enumerate(frames, start=1):
            target = out_dir / frame_name(count)
            if isinstance(frame, np.ndarray):
                image = frame
                if not cv2.imwrite(str(target), image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]):
                    raise DatasetError(f"{target}: could not write frame (disk full or not writable?)")
                origin = f"frame {count} of video {name!r}"
            else:
                image = read_image(Path(frame))
                origin = str(frame)
                if Path(frame).suffix.lower() in (".jpg", ".jpeg"):
                    shutil.copyfile(frame, target)
                elif not cv2.imwrite(str(target), image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]):
                    raise DatasetError(f"{target}: could not write frame (disk full or not writable?)")
            frame_size = (image.shape[1], image.shape[0])
            if size is None:
                size = frame_size
            elif frame_size != size:
                raise DatasetError(
                    f"{origin}: frame is {frame_size[0]}x{frame_size[1]} but earlier frames of video "
                    f"{name!r} are {size[0]}x{size[1]}; all frames of a video must have one size"
                )
        return size or (0, 0), count

    def commit(self, *, sources: Mapping[str, object] | None = None, extra: Mapping[str, object] | None = None) -> Path:
        """Write annotations and meta.json, then atomically replace ``root``."""
        if not self.videos:
            raise DatasetError(f"{self.root}: no videos were converted; check the source folder")
        (self.work / "annotations").mkdir()
        for split in SPLITS:
            coco = coco_document([v for v in self.videos if v.record.split == split], self.classes)
            _write_json(self.work / "annotations" / f"{split}.json", coco)
        meta = {
            "classes": self.classes,
            "protocols": self.protocols,
            "annotated": self.annotated,
            "videos": {split: [v.record.name for v in self.videos if v.record.split == split] for split in SPLITS},
            "sources": dict(sources or {}),
            **dict(extra or {}),
        }
        _write_json(self.work / META_FILE, meta)
        replace_folder(self.work, self.root)
        return self.root


def _checked_boxes(boxes, track_ids, record: VideoRecord, frame: int, source: str):
    where = f"{source or record.name}: frame {frame} of video {record.name!r}"
    array = np.asarray(boxes, dtype=np.float64).reshape(-1, 4) if len(boxes) else np.zeros((0, 4))
    if not 1 <= frame <= record.n_frames:
        raise DatasetError(f"{where}: annotation refers to a frame that does not exist "
                           f"(video has {record.n_frames} frames); fix the annotation or restore the frames")
    if not np.isfinite(array).all():
        raise DatasetError(f"{where}: box coordinates contain NaN or infinity; fix the annotation file")
    degenerate = (array[:, 2] <= array[:, 0]) | (array[:, 3] <= array[:, 1])
    if degenerate.any():
        bad = array[np.argmax(degenerate)].tolist()
        raise DatasetError(f"{where}: box {bad} has zero or negative size after clipping to "
                           f"{record.width}x{record.height}; fix or remove it in the annotation file")
    ids = np.full(len(array), -1, np.int64) if track_ids is None else np.asarray(track_ids, np.int64).reshape(-1)
    if len(ids) != len(array):
        # coco_document zips boxes with ids: a shorter id list would drop boxes without a word
        raise DatasetError(f"{where}: {len(array)} boxes but {len(ids)} track ids; give one id per box")
    return array.astype(np.float32), ids


def _checked_points(points, n_boxes: int, record: VideoRecord, frame: int, source: str) -> np.ndarray:
    array = np.asarray(points, dtype=np.float64)
    if array.shape != (n_boxes, 2):
        raise DatasetError(f"{source or record.name}: frame {frame} of video {record.name!r}: {n_boxes} boxes but "
                           f"points of shape {array.shape}; give one [x, y] (or NaN, NaN) per box")
    return array


def coco_document(videos: Sequence[Video], classes: Sequence[str]) -> dict:
    """COCO detection json with a `videos` table; image and annotation ids are 1-based."""
    doc = {
        "info": {"description": "micml unified dataset"},
        "videos": [],
        "images": [],
        "annotations": [],
        "categories": [{"id": i, "name": name, "supercategory": name} for i, name in enumerate(classes, 1)],
    }
    image_id = annotation_id = 0
    for video_id, video in enumerate(videos, 1):
        record = video.record
        doc["videos"].append({"id": video_id, **asdict(record)})
        for frame in range(1, record.n_frames + 1):
            image_id += 1
            doc["images"].append({
                "id": image_id, "video_id": video_id, "frame_index": frame,
                "file_name": frame_relpath(record.name, frame),
                "width": record.width, "height": record.height,
            })
            boxes = video.frame_boxes(frame)
            ids = video.track_ids.get(frame, np.full(len(boxes), -1))
            points = video.points.get(frame, np.full((len(boxes), 2), np.nan))
            for (x1, y1, x2, y2), track, point in zip(boxes.tolist(), ids.tolist(), points.tolist()):
                annotation_id += 1
                w, h = x2 - x1, y2 - y1
                doc["annotations"].append({
                    "id": annotation_id, "image_id": image_id, "category_id": 1,
                    "bbox": [round(x1, 3), round(y1, 3), round(w, 3), round(h, 3)],
                    "area": round(w * h, 3), "iscrowd": 0, "track_id": int(track),
                    **({} if np.isnan(point).any() else {"point": [round(point[0], 3), round(point[1], 3)]}),
                })
    return doc


def update_meta(root: Path | str, **fields: object) -> dict:
    """Add fields to a committed dataset's meta.json (atomically)."""
    path = Path(root) / META_FILE
    meta = {**json.loads(path.read_text()), **fields}
    _write_json(path, meta)
    return meta


def _write_json(path: Path, document: object) -> None:
    # compact: annotation files of real datasets hold millions of boxes
    write_text(path, json.dumps(document, indent=None, separators=(",", ":")))


class UnifiedDataset:
    """Read access to a committed unified dataset."""

    def __init__(self, root: Path | str):
        self.root = Path(root)
        meta_path = self.root / META_FILE
        if not meta_path.is_file():
            raise DatasetError(f"{meta_path}: not found; {self.root} is not a converted dataset "
                               "(run `micml convert` or the workflow's convert rule first)")
        self.meta = json.loads(meta_path.read_text())

    def annotation_file(self, split: str) -> Path:
        return self.root / "annotations" / f"{split}.json"

    def videos(self, split: str) -> list[Video]:
        path = self.annotation_file(split)
        try:
            doc = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise DatasetError(f"{path}: unreadable annotation file ({error}); re-run the conversion") from None
        return videos_from_coco(doc)

    def frame_path(self, video: str, frame: int) -> Path:
        return self.root / frame_relpath(video, frame)

    def fingerprint(self) -> str:
        """SHA-256 of meta.json, every split's annotations and the name and size of every frame.

        Frame bytes are not read (a real dataset is tens of GB); a re-encoded or replaced frame
        changes its size in practice, a re-conversion with other settings its annotations or meta.
        """
        digest = hashlib.sha256()
        for path in [self.root / META_FILE, *(self.annotation_file(split) for split in SPLITS)]:
            digest.update(f"{path.name}\0".encode())
            digest.update(path.read_bytes() if path.exists() else b"<absent>")
        frames = self.root / "frames"
        for path in sorted(frames.rglob("*")) if frames.is_dir() else []:
            if path.is_file():
                digest.update(f"{path.relative_to(frames).as_posix()}\0{path.stat().st_size}\0".encode())
        return digest.hexdigest()


def videos_from_coco(doc: Mapping) -> list[Video]:
    """Inverse of `coco_document`."""
    videos = {v["id"]: Video(VideoRecord(v["name"], v["split"], v["n_frames"], v["width"], v["height"], v["fps"]))
              for v in doc["videos"]}
    frame_of_image = {im["id"]: (im["video_id"], im["frame_index"]) for im in doc["images"]}
    grouped: dict[tuple[int, int], list[tuple[list[float], int, list[float]]]] = {}
    for ann in doc["annotations"]:
        grouped.setdefault(frame_of_image[ann["image_id"]], []).append(
            (ann["bbox"], ann.get("track_id", -1), ann.get("point", [math.nan, math.nan])))
    for (video_id, frame), items in grouped.items():
        xywh = np.array([bbox for bbox, _, _ in items], np.float32)
        xywh[:, 2:] += xywh[:, :2]
        videos[video_id].boxes[frame] = xywh
        videos[video_id].track_ids[frame] = np.array([track for _, track, _ in items], np.int64)
        points = np.array([point for _, _, point in items], np.float64)
        if not np.isnan(points).all():
            videos[video_id].points[frame] = points
    return list(videos.values())
