"""What every converter shares: a table of native boxes, validation and clipping, contiguous
frame numbering, the held-out validation split, and the atomic write of a unified dataset.

A converter's job is then only to read its native files into `NativeVideo`s with a split each.
"""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from ...paths import check_output_apart, plain_name
from ..unified import PARTIAL_SUFFIX, RETIRED_SUFFIX, DatasetError, UnifiedWriter, partial_path, read_image

DEFAULT_VAL_FRACTION = 0.1


@dataclass
class BoxTable:
    """Boxes of one native annotation file, one row per box, as read (before clipping).

    `rows` holds what a user would look for in the source file (a line number, a row of a
    matrix, an annotation id) and `row_kind` says which, so messages can point at the row.
    """

    frames: np.ndarray  # int64, 1-based frame index of the unified video
    tracks: np.ndarray  # int64, -1 where the format has no track ids
    xyxy: np.ndarray  # float64, N x 4 [x1, y1, x2, y2] in pixels
    rows: np.ndarray  # int64
    row_kind: str = "row"
    # float64, N x 2 [x, y] where each object was annotated, NaN where that is its box's centre
    # (`clip_to_frame` fills it for the boxes whose centre clipping moved); None: all box centres
    points: np.ndarray | None = None

    @classmethod
    def empty(cls, row_kind: str = "row") -> "BoxTable":
        return cls(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 4)), np.zeros(0, np.int64), row_kind)

    def __len__(self) -> int:
        return len(self.frames)

    def select(self, mask: np.ndarray) -> "BoxTable":
        points = None if self.points is None else self.points[mask]
        return BoxTable(self.frames[mask], self.tracks[mask], self.xyxy[mask], self.rows[mask], self.row_kind, points)


@dataclass
class NativeVideo:
    """One video found in a native tree, ready to be written: frames in order, raw boxes."""

    name: str
    split: str
    frames: list[Path]
    boxes: BoxTable
    source: str  # the annotation file, named in error messages
    fps: float
    missing_frame_hint: str = ""  # how the native format names frame f, for messages


def check_name_options(native_format: str, **options: str | Sequence[str] | None) -> None:
    """Refuse option values that name files or folders (video names, class folders) unless each
    is a plain name: joined to the output or source folder, `../..` would lead out of it."""
    for option, value in options.items():
        for name in ([] if value is None else [value] if isinstance(value, str) else value):
            plain_name(name, option=f"{native_format} converter option {option}")


def check_destination(src: Path | str, dst: Path | str) -> None:
    """Refuse a destination that is, lies inside or holds the source, or whose work folders
    (`<dst>.partial`, `<dst>.old`) do: the atomic swap would delete the source."""
    check_output_apart(dst, src, what="converted dataset", scratch_suffixes=(PARTIAL_SUFFIX, RETIRED_SUFFIX))


def validate_boxes(table: BoxTable, source: Path | str) -> None:
    """Refuse NaN/infinite coordinates and boxes without positive width and height."""
    finite = np.isfinite(table.xyxy).all(axis=1)
    if not finite.all():
        i = int(np.argmin(finite))
        raise DatasetError(f"{source}: {table.row_kind} {table.rows[i]}: box {table.xyxy[i].tolist()} "
                           "has NaN or infinite coordinates; fix or remove that row")
    positive = (table.xyxy[:, 2] > table.xyxy[:, 0]) & (table.xyxy[:, 3] > table.xyxy[:, 1])
    if not positive.all():
        i = int(np.argmin(positive))
        x1, y1, x2, y2 = table.xyxy[i].tolist()
        raise DatasetError(f"{source}: {table.row_kind} {table.rows[i]}: box has width {x2 - x1:g} and height "
                           f"{y2 - y1:g}, expected both > 0; fix or remove that row")


def clip_to_frame(table: BoxTable, width: int, height: int) -> tuple[BoxTable, BoxTable, int]:
    """Clip boxes to the frame; return (kept, fully_outside, how many kept boxes were clipped).

    A box with positive size that overlaps the frame keeps a positive size after clipping, so
    the only boxes that would become empty are those entirely outside the frame. Those carry
    no visible object; they are returned so the caller can report them instead of dropping
    them silently.

    Clipping moves the centre of a box that crosses the edge, but not where the object was
    annotated (DroneCrowd's boxes are drawn around head points, and its toolkit scores against
    their unclipped centres): `kept.points` keeps the centre as annotated for those boxes.
    """
    x1, y1, x2, y2 = table.xyxy.T
    outside = (x1 >= width) | (y1 >= height) | (x2 <= 0) | (y2 <= 0)
    kept = table.select(~outside)
    annotated = kept.xyxy
    kept.xyxy = np.clip(annotated, 0, [width, height, width, height])
    clipped = np.any(kept.xyxy != annotated, axis=1)
    centre = (annotated[:, :2] + annotated[:, 2:]) / 2
    moved = np.any(centre != (kept.xyxy[:, :2] + kept.xyxy[:, 2:]) / 2, axis=1)
    if kept.points is None:  # a converter that read points itself keeps them
        kept.points = np.where(moved[:, None], centre, np.nan)
    return kept, table.select(outside), int(clipped.sum())


def group_by_frame(table: BoxTable) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray], dict[int, np.ndarray]]:
    """Boxes, track ids and annotated points (`BoxTable.points`) per frame, ordered by frame,
    then track id, then source row."""
    order = np.lexsort((table.rows, table.tracks, table.frames))
    frames = table.frames[order]
    points = np.full((len(table), 2), np.nan) if table.points is None else table.points
    starts = np.flatnonzero(np.r_[True, frames[1:] != frames[:-1]]) if len(frames) else np.zeros(0, int)
    ends = np.r_[starts[1:], len(frames)]
    boxes, tracks, frame_points = {}, {}, {}
    for start, end in zip(starts.tolist(), ends.tolist()):
        frame, rows = int(frames[start]), order[start:end]
        boxes[frame], tracks[frame], frame_points[frame] = table.xyxy[rows], table.tracks[rows], points[rows]
    return boxes, tracks, frame_points


def contiguous_frames(numbered: Mapping[int, Path], folder: Path | str, *, listed_in: Path | str = "") -> list[Path]:
    """Frames ordered by number; they must be numbered 1, 2, ..., n without a gap.

    `listed_in` names the file that lists the frames when they do not come from the folder.
    """
    if not numbered:
        raise DatasetError(f"{folder}: no frames found (empty video); "
                           "check that the folder holds the video's .jpg frames")
    numbers = sorted(numbered)
    expected = np.arange(1, len(numbers) + 1)
    wrong = np.flatnonzero(np.asarray(numbers) != expected)
    if len(wrong):
        missing = int(expected[wrong[0]])
        found = f"after frame {missing - 1} comes {numbers[wrong[0]]}" if missing > 1 else f"first is {numbers[0]}"
        origin = f" (frames as listed in {listed_in})" if listed_in else ""
        raise DatasetError(f"{folder}{origin}: frames must be numbered contiguously from 1, but frame {missing} is "
                           f"missing ({found}); restore the missing frames from the original archive")
    return [numbered[n] for n in numbers]


def require_frames_exist(video: NativeVideo) -> None:
    """Every annotated frame must be one of the video's frames."""
    if not len(video.boxes):
        return
    bad = (video.boxes.frames < 1) | (video.boxes.frames > len(video.frames))
    if bad.any():
        i = int(np.argmax(bad))
        frame = int(video.boxes.frames[i])
        hint = video.missing_frame_hint.format(frame=frame) if video.missing_frame_hint else f"frame {frame}"
        raise DatasetError(f"{video.source}: {video.boxes.row_kind} {video.boxes.rows[i]} refers to {hint}, "
                           f"but video {video.name!r} has frames 1..{len(video.frames)}; "
                           "restore the missing frames or fix the annotation")


def hold_out_val(train: Sequence[str], val_videos: Sequence[str] | None, val_fraction: float,
                 *, source: Path | str) -> list[str]:
    """Names of the training videos held out as the validation split.

    Explicit `val_videos` win. Otherwise round(val_fraction * n) videos (at least one when
    val_fraction > 0 and two or more training videos exist, always leaving one to train on) at
    evenly spaced positions of the sorted names: deterministic, no random generator whose
    stream could change between library versions, and spread over the numbering, since
    neighbouring numbers are often cut from the same scene.
    """
    names = sorted(train)
    if val_videos is not None:
        unknown = sorted(set(val_videos) - set(names))
        if unknown:
            raise DatasetError(f"{source}: val_videos {unknown} are not training videos of this dataset "
                               f"(training videos: {', '.join(names) or 'none'}); fix the val_videos option")
        return sorted(set(val_videos))
    if not 0 <= val_fraction < 1:
        raise DatasetError(f"val_fraction={val_fraction}: expected a number in [0, 1)")
    if val_fraction == 0 or len(names) < 2:
        return []
    count = min(max(1, round(val_fraction * len(names))), len(names) - 1)
    return [names[int((i + 0.5) * len(names) / count)] for i in range(count)]


def frame_size(path: Path) -> tuple[int, int]:
    """(width, height) of one frame; boxes are clipped to it before the frames are copied."""
    image = read_image(path)
    return image.shape[1], image.shape[0]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def jsonable(value: object) -> object:
    """Options as meta.json can hold them (tuples become lists, paths strings)."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value) if isinstance(value, (set, frozenset)) else value
        return [jsonable(v) for v in items]
    if isinstance(value, Path):
        return str(value)
    return value


def write_unified(dst: Path | str, videos: Iterable[NativeVideo], *, native_format: str, src: Path,
                  classes: Sequence[str], protocols: Sequence[str], options: Mapping[str, object],
                  sources: Mapping[str, str], extra: Mapping[str, object] | None = None) -> Path:
    """Validate, clip and write `videos` into the unified layout at `dst` (atomically).

    meta.json records the native format, the source path, the options, checksums of the
    annotation files, box counts per split, how many boxes were clipped to their frame per split
    and every box dropped for lying outside its frame.
    """
    check_destination(src, dst)
    writer = UnifiedWriter(dst, classes=classes, protocols=protocols, annotated=True)
    outside: dict[str, list[dict]] = {}
    counts = {split: {"videos": 0, "frames": 0, "boxes": 0} for split in ("train", "val", "test")}
    clipped = dict.fromkeys(("train", "val", "test"), 0)
    try:
        for video in videos:
            plain_name(video.name, option=f"{video.source}: video name")  # becomes frames/<name>/
            require_frames_exist(video)
            validate_boxes(video.boxes, video.source)
            width, height = frame_size(video.frames[0])
            kept, dropped, n_clipped = clip_to_frame(video.boxes, width, height)
            if len(dropped):
                outside[video.name] = [{video.boxes.row_kind: int(r), "frame": int(f), "xyxy": b.tolist()}
                                       for r, f, b in zip(dropped.rows, dropped.frames, dropped.xyxy)]
            boxes, tracks, points = group_by_frame(kept)
            writer.add_video(video.name, video.split, video.frames, boxes, tracks, points=points, fps=video.fps,
                             source=video.source)
            clipped[video.split] += n_clipped
            split_counts = counts[video.split]
            split_counts["videos"] += 1
            split_counts["frames"] += len(video.frames)
            split_counts["boxes"] += len(kept)
        meta = {
            "native_format": native_format,
            "source": str(Path(src).resolve()),
            "options": jsonable(options),
            "counts": counts,
            "clipped_to_frame": clipped,  # boxes crossing the frame's edge, cut at it (per split)
            "dropped_outside_frame": {"count": sum(map(len, outside.values())), "boxes": outside},
            **dict(extra or {}),
        }
        return writer.commit(sources=sources, extra=meta)
    except BaseException:
        # A failed conversion leaves nothing behind: the next run starts clean anyway, and a
        # half-written copy of a 40k-frame dataset only wastes disk.
        shutil.rmtree(partial_path(Path(dst)), ignore_errors=True)
        raise
