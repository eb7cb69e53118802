"""VISO, MOT part -> unified layout.

Native tree (reference/DATASET_FORMATS.md section 2.3):
```
mot/<class>/<NNN>/img/<FFFFFF>.jpg     (img1/ accepted too), 1-based frames
mot/<class>/<NNN>/gt/gt.txt            frame,track,x,y,w,h,1,1,1 (9 columns, comma-separated)
```
gt.txt is sorted by track in some files and by frame in others, and boxes cross the frame
border; boxes are clipped to the frame size read from the first image, and the few that lie
entirely outside the frame are listed in meta.json (`dropped_outside_frame`).
"""

from __future__ import annotations

import configparser
import math
import re
from pathlib import Path
from typing import Sequence

import numpy as np

from ...catalog import PROTOCOLS as PROTOCOLS_BY_FORMAT
from ..unified import DatasetError
from .common import (DEFAULT_VAL_FRACTION, BoxTable, NativeVideo, check_name_options, contiguous_frames,
                     hold_out_val, sha256_file, write_unified)

# The seven test videos that DSFNet, HiEUM and CFTracker evaluate (DSFNet evaluation.py dataName).
DSFNET_TEST_VIDEOS = ("002", "003", "005", "006", "008", "009", "010")
FRAME_FOLDERS = ("img", "img1")
GT_COLUMNS = 9
FRAME_NUMBER = re.compile(r"\d+")
JILIN_FPS = 10.0  # frameRate in the third-party seqinfo.ini files; Jilin-1 video is 10 FPS
PROTOCOLS = PROTOCOLS_BY_FORMAT["viso"]


def convert_viso(src: Path | str, dst: Path | str, *, test_videos: Sequence[str] = DSFNET_TEST_VIDEOS,
                 val_videos: Sequence[str] | None = None, val_fraction: float = DEFAULT_VAL_FRACTION,
                 classes: Sequence[str] = ("car",), fps: float | None = None) -> Path:
    """Convert the VISO MOT tree at `src` (the VISO folder holding `mot/`, or `mot/` itself).

    test_videos: the test split; the default is DSFNet's seven (the paper's own MOT test list
        is not published). Every name must exist, so a typo cannot shrink the test set.
    val_videos / val_fraction: validation videos held out of the remaining ones (see
        `hold_out_val`; default a tenth, chosen deterministically).
    classes: class folders under `mot/` to read. The detector is class-agnostic, so several
        classes are merged into one category named "a+b"; video names must stay unique.
    fps: default None reads `frameRate` from a video's seqinfo.ini when there is one, else 10.
    """
    check_name_options("viso", test_videos=test_videos, val_videos=val_videos, classes=classes)
    root = Path(src)
    mot = root / "mot" if (root / "mot").is_dir() else root
    folders = video_folders(mot, classes)
    missing = sorted(set(test_videos) - set(folders))
    if missing:
        raise DatasetError(f"{mot}: test video(s) {', '.join(missing)} not found under "
                           f"{'/'.join(classes)}; present: {', '.join(sorted(folders)) or 'none'}; "
                           "fix the test_videos option or restore those videos")
    train_names = [name for name in folders if name not in set(test_videos)]
    val = set(hold_out_val(train_names, val_videos, val_fraction, source=mot))
    videos = [read_video(name, folder, split_of(name, test_videos, val), fps)
              for name, folder in sorted(folders.items())]
    options = {"test_videos": test_videos, "val_videos": val_videos, "val_fraction": val_fraction,
               "classes": classes, "fps": fps}
    sources = {str(Path(v.source).relative_to(root)): sha256_file(Path(v.source)) for v in videos}
    extra = {"native_classes": {name: folder.parent.name for name, folder in sorted(folders.items())}}
    return write_unified(dst, videos, native_format="viso", src=root, classes=["+".join(classes)],
                         protocols=PROTOCOLS, options=options, sources=sources, extra=extra)


def split_of(name: str, test_videos: Sequence[str], val: set[str]) -> str:
    return "test" if name in test_videos else "val" if name in val else "train"


def video_folders(mot: Path, classes: Sequence[str]) -> dict[str, Path]:
    """{video name: folder} over the requested classes (names must be unique across them)."""
    if not classes:
        raise DatasetError("classes=(): name at least one VISO class folder, e.g. ('car',)")
    folders: dict[str, Path] = {}
    for cls in classes:
        class_dir = mot / cls
        if not class_dir.is_dir():
            raise DatasetError(f"{class_dir}: not found; expected the VISO MOT layout "
                               f"mot/{cls}/<NNN>/img/<F>.jpg + gt/gt.txt (pass the VISO folder as the source)")
        for folder in sorted(p for p in class_dir.iterdir() if p.is_dir() and not p.name.startswith((".", "__"))):
            if folder.name in folders:
                raise DatasetError(f"{folder}: video name {folder.name!r} also exists as {folders[folder.name]}; "
                                   "convert those classes separately")
            folders[folder.name] = folder
    if not folders:
        raise DatasetError(f"{mot}: no video folders under {', '.join(classes)}")
    return folders


def read_video(name: str, folder: Path, split: str, fps: float | None) -> NativeVideo:
    frame_dir = frame_folder(folder)
    gt_path = folder / "gt" / "gt.txt"
    if not gt_path.is_file():
        raise DatasetError(f"{gt_path}: not found; every VISO MOT video needs gt/gt.txt beside {frame_dir.name}/")
    return NativeVideo(name=name, split=split, frames=numbered_jpgs(frame_dir), boxes=read_mot_gt(gt_path),
                       source=str(gt_path), fps=fps if fps is not None else seqinfo_fps(folder),
                       missing_frame_hint=f"{frame_dir}/{{frame:06d}}.jpg")


def frame_folder(folder: Path) -> Path:
    present = [folder / name for name in FRAME_FOLDERS if (folder / name).is_dir()]
    if len(present) != 1:
        found = "both " + " and ".join(p.name for p in present) if present else "neither"
        raise DatasetError(f"{folder}: expected one frame folder, img/ or img1/, found {found}; "
                           "keep exactly one")
    return present[0]


def numbered_jpgs(frame_dir: Path) -> list[Path]:
    numbered: dict[int, Path] = {}
    for path in frame_dir.iterdir():
        if path.suffix.lower() not in (".jpg", ".jpeg"):
            continue  # not a frame (thumbnails databases and the like)
        if not FRAME_NUMBER.fullmatch(path.stem):
            raise DatasetError(f"{path}: frame file name is not a frame number (expected e.g. 000001.jpg); "
                               "rename or remove it")
        numbered[int(path.stem)] = path
    return contiguous_frames(numbered, frame_dir)


def seqinfo_fps(folder: Path) -> float:
    """frameRate from a MOT-style seqinfo.ini when present (CFTracker ships them), else 10."""
    path = folder / "seqinfo.ini"
    if not path.is_file():
        return JILIN_FPS
    parser = configparser.ConfigParser()
    try:
        parser.read(path)
        return float(parser["Sequence"]["frameRate"])
    except (configparser.Error, KeyError, ValueError) as error:
        raise DatasetError(f"{path}: no readable [Sequence] frameRate ({error}); fix it, delete it, "
                           "or pass fps explicitly") from None


def read_mot_gt(path: Path) -> BoxTable:
    """Parse a VISO gt.txt: `frame,track,x,y,w,h,1,1,1` per line, frame 1-based.

    Columns 7-9 (MOT conf/class/visibility) are always 1 in VISO and are not interpreted.
    Coordinates may be fractional; frame and track must be integers. Blank lines are skipped.
    A UTF-8 byte-order mark (Windows editors write one) is dropped.
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise DatasetError(f"{path}: cannot be read as text ({error}); restore it from the archive") from None
    rows, lines = [], []
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            rows.append(parse_gt_line(line, number, path))
            lines.append(number)
    table = np.array(rows, np.float64).reshape(-1, GT_COLUMNS)
    xyxy = table[:, 2:6].copy()
    xyxy[:, 2:] += xyxy[:, :2]
    return BoxTable(table[:, 0].astype(np.int64), table[:, 1].astype(np.int64), xyxy,
                    np.array(lines, np.int64), "line")


def parse_gt_line(line: str, number: int, path: Path) -> list[float]:
    fields = line.split(",")
    if len(fields) != GT_COLUMNS:
        raise DatasetError(f"{path}: line {number} has {len(fields)} columns, expected {GT_COLUMNS} "
                           f"(frame,track,x,y,w,h,1,1,1): {line.strip()[:80]!r}; fix that line")
    try:
        values = [float(field) for field in fields]
    except ValueError:
        raise DatasetError(f"{path}: line {number} has a non-numeric column: {line.strip()[:80]!r}; "
                           "expected comma-separated numbers frame,track,x,y,w,h,1,1,1") from None
    if not all(map(math.isfinite, values)):
        raise DatasetError(f"{path}: line {number} has a NaN or infinite value: {line.strip()[:80]!r}; fix that line")
    frame, track = values[0], values[1]
    if not (frame.is_integer() and frame >= 1 and track.is_integer()):
        raise DatasetError(f"{path}: line {number}: frame {fields[0].strip()!r} and track {fields[1].strip()!r} "
                           "must be integers with frame >= 1 (1-based); fix that line")
    return values
