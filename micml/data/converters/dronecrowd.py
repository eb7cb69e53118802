"""DroneCrowd (full version) -> unified layout.

Native tree (reference/DATASET_FORMATS.md section 3):
```
{train,val,test}_data/images/img<SSS><FFF>.jpg   SSS = sequence 001-112, FFF = frame 001-300
annotations/<SSSSS>.mat                           anno: N x 6 [frame 0-based, track 0-based, x1, y1, x2, y2]
testlist.txt, trainlist.txt                       sequence ids, one per line (CRLF or LF)
```
The per-sequence `annotations/*.mat` are the ground truth (the per-frame ground_truth/*.mat
differ between splits in ways no source pins down). anno frame f is image FFF = f + 1, as in
the official toolkit. Which sequences sit in val_data is not published and val_data may be a
part of the test set, so the images folders say nothing about splits here: images are found
by name in any of them, and the splits come from the lists.

The anno boxes are drawn around head points, and the toolkit scores against their centres as
annotated; a box crossing the frame's edge is clipped like any other, and its annotated centre
is kept as the annotation's `point` (see micml.data.unified).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Sequence

import numpy as np
import scipy.io

from ...catalog import PROTOCOLS as PROTOCOLS_BY_FORMAT
from ..unified import DatasetError
from .common import (DEFAULT_VAL_FRACTION, BoxTable, NativeVideo, check_name_options, contiguous_frames,
                     hold_out_val, sha256_file, write_unified)

# testlist of the DroneCrowd toolkit (gt/dronecrowd_testlist.txt), also in STNNet mytest.py.
DRONECROWD_TEST_SEQUENCES = (
    "00011", "00015", "00016", "00017", "00018", "00022", "00023", "00024", "00034", "00035",
    "00042", "00043", "00044", "00061", "00062", "00063", "00065", "00069", "00070", "00074",
    "00075", "00082", "00088", "00095", "00101", "00103", "00105", "00108", "00111", "00112",
)
IMAGE_FOLDERS = ("train_data", "val_data", "test_data")
IMAGE_NAME = re.compile(r"img(\d{3})(\d{3})\.jpg", re.IGNORECASE)
ANNO_COLUMNS = 6
ASSUMED_FPS = 25.0  # not published for DroneCrowd; only recorded, nothing depends on it
PROTOCOLS = PROTOCOLS_BY_FORMAT["dronecrowd"]


def convert_dronecrowd(src: Path | str, dst: Path | str, *, test_list: str | Path | Sequence[str] | None = None,
                       train_list: str | Path | Sequence[str] | None = None,
                       val_videos: Sequence[str] | None = None, val_fraction: float = DEFAULT_VAL_FRACTION,
                       fps: float = ASSUMED_FPS) -> Path:
    """Convert the DroneCrowd tree at `src` (the folder holding `annotations/`).

    test_list: a list file or sequence ids; default `<src>/testlist.txt`, or the toolkit's 30
        test ids when that file is absent.
    train_list: likewise; default `<src>/trainlist.txt`, or every other annotated sequence.
        Annotated sequences in neither list are not converted and are listed in meta.json.
    val_videos / val_fraction: training sequences held out for validation (`hold_out_val`).
    fps: recorded for every video; DroneCrowd does not publish its frame rate.
    """
    check_name_options("dronecrowd", val_videos=val_videos)
    root = Path(src)
    anno_dir = root / "annotations"
    if not anno_dir.is_dir():
        raise DatasetError(f"{anno_dir}: not found; expected DroneCrowd's annotations/<SSSSS>.mat "
                           "(pass the folder that holds annotations/ and train_data/ as the source)")
    annotated = {sequence_id(p.stem, p): p for p in sorted(anno_dir.glob("*.mat"))}
    test, test_origin = read_id_list(test_list, root / "testlist.txt", DRONECROWD_TEST_SEQUENCES)
    train, train_origin = read_id_list(train_list, root / "trainlist.txt", sorted(set(annotated) - set(test)))
    check_lists(test, test_origin, train, train_origin, annotated, anno_dir)
    images = index_images(root)
    val = set(hold_out_val(train, val_videos, val_fraction, source=f"{root} (train list: {train_origin})"))
    splits = {**{s: "train" for s in train}, **{s: "val" for s in val}, **{s: "test" for s in test}}
    videos = [read_sequence(name, split, annotated[name], images, root, fps) for name, split in sorted(splits.items())]
    options = {"test_list": test_list, "train_list": train_list, "val_videos": val_videos,
               "val_fraction": val_fraction, "fps": fps}
    sources = {str(annotated[name].relative_to(root)): sha256_file(annotated[name]) for name in sorted(splits)}
    sources.update({name: sha256_file(root / name) for name in ("testlist.txt", "trainlist.txt")
                    if (root / name).is_file()})
    extra = {"split_lists": {"test": test_origin, "train": train_origin},
             "unlisted_sequences": sorted(set(annotated) - set(splits)),
             "images_without_annotations": sorted(f"{seq:05d}" for seq in images if f"{seq:05d}" not in annotated)}
    return write_unified(dst, videos, native_format="dronecrowd", src=root, classes=("human",),
                         protocols=PROTOCOLS, options=options, sources=sources, extra=extra)


def sequence_id(text: str, where: Path | str) -> str:
    """'11', '011' and '00011' all name sequence 00011 (annotations use 5 digits, images 3)."""
    cleaned = text.strip().lstrip("\ufeff")
    if not cleaned.isdigit():
        raise DatasetError(f"{where}: {cleaned!r} is not a DroneCrowd sequence id (expected digits such as 00011)")
    return f"{int(cleaned):05d}"


def read_id_list(option, default_file: Path, fallback: Sequence[str]) -> tuple[list[str], str]:
    """Sequence ids and where they came from (a file path or a description)."""
    if option is None and default_file.is_file():
        option = default_file
    if option is None:
        return sorted(fallback), "default"
    if isinstance(option, (str, Path)):
        path = Path(option)
        if not path.is_file():
            raise DatasetError(f"{path}: list file not found; give a file of sequence ids, one per line")
        lines = [(n, line) for n, line in enumerate(path.read_text().splitlines(), 1) if line.strip()]
        return sorted({sequence_id(line, f"{path}: line {n}") for n, line in lines}), str(path)
    return sorted({sequence_id(str(item), "the given list") for item in option}), "option"


def check_lists(test: list[str], test_origin: str, train: list[str], train_origin: str,
                annotated: dict[str, Path], anno_dir: Path) -> None:
    overlap = sorted(set(test) & set(train))
    if overlap:
        raise DatasetError(f"{train_origin}: sequences {', '.join(overlap)} are also test sequences "
                           f"(test list: {test_origin}); a sequence belongs to one split")
    for ids, origin in ((test, test_origin), (train, train_origin)):
        missing = [s for s in ids if s not in annotated]
        if missing:
            raise DatasetError(f"{anno_dir / (missing[0] + '.mat')}: not found, but sequence {missing[0]} is listed "
                               f"({origin} list; {len(missing)} listed sequences lack annotations); "
                               "restore the annotation files, or fix the list (option test_list/train_list)")
    if not test and not train:
        raise DatasetError(f"{anno_dir}: no annotated sequences to convert")


def index_images(root: Path) -> dict[int, dict[int, Path]]:
    """{sequence: {frame (1-based): path}} over all images folders, one directory scan each.

    The same image name in two folders is accepted when the files have the same size (a
    copy), and refused otherwise because the converter could not tell which one is right.
    """
    found: dict[int, dict[int, Path]] = {}
    folders = [root / f / "images" for f in IMAGE_FOLDERS if (root / f / "images").is_dir()]
    if not folders:
        raise DatasetError(f"{root}: none of {', '.join(f + '/images' for f in IMAGE_FOLDERS)} exists; "
                           "expected DroneCrowd's img<SSS><FFF>.jpg frames there")
    for folder in folders:
        with os.scandir(folder) as entries:
            for entry in entries:
                match = IMAGE_NAME.fullmatch(entry.name)
                if not match:
                    continue  # not a DroneCrowd frame
                frames = found.setdefault(int(match.group(1)), {})
                frame, path = int(match.group(2)), Path(entry.path)
                if frame in frames and frames[frame].stat().st_size != path.stat().st_size:
                    raise DatasetError(f"{path}: differs from {frames[frame]} of the same name; "
                                       "keep the right one only")
                frames.setdefault(frame, path)
    return found


def read_sequence(name: str, split: str, anno_path: Path, images: dict[int, dict[int, Path]], root: Path,
                  fps: float) -> NativeVideo:
    sequence = int(name)
    if sequence not in images:
        raise DatasetError(f"{anno_path}: no images img{sequence:03d}<FFF>.jpg found in "
                           f"{', '.join(f + '/images' for f in IMAGE_FOLDERS)} under {root}; restore them")
    frames = contiguous_frames(images[sequence], root / f"*_data/images/img{sequence:03d}*.jpg")
    return NativeVideo(name=name, split=split, frames=frames, boxes=read_anno(anno_path), source=str(anno_path),
                       fps=fps, missing_frame_hint=f"img{sequence:03d}{{frame:03d}}.jpg")


def read_anno(path: Path) -> BoxTable:
    """`anno` rows [frame 0-based, track 0-based, x1, y1, x2, y2] -> 1-based frames."""
    try:
        content = scipy.io.loadmat(str(path))
    except Exception as error:  # scipy raises many types (ValueError, MatReadError, OSError...)
        raise DatasetError(f"{path}: unreadable as a MATLAB .mat file ({type(error).__name__}: {error}); "
                           "restore it from the DroneCrowd archive") from None
    if "anno" not in content:
        names = sorted(k for k in content if not k.startswith("__"))
        raise DatasetError(f"{path}: no variable 'anno' (found {names}); expected DroneCrowd's per-sequence "
                           "annotation with anno N x 6 [frame, track, x1, y1, x2, y2]")
    anno = np.asarray(content["anno"])
    if anno.size == 0:
        return BoxTable.empty("anno row")
    if anno.ndim != 2 or anno.shape[1] != ANNO_COLUMNS or not np.issubdtype(anno.dtype, np.number):
        raise DatasetError(f"{path}: 'anno' is {anno.dtype} {anno.shape}, expected a numeric N x {ANNO_COLUMNS} "
                           "matrix [frame, track, x1, y1, x2, y2]")
    anno = anno.astype(np.float64)
    ids = anno[:, :2]
    bad = ~(np.isfinite(ids).all(axis=1) & (ids == np.round(ids)).all(axis=1) & (ids[:, 0] >= 0))
    if bad.any():
        row = int(np.argmax(bad)) + 1
        raise DatasetError(f"{path}: anno row {row}: frame {anno[row - 1, 0]:g} and track {anno[row - 1, 1]:g} "
                           "must be integers with frame >= 0 (0-based)")
    return BoxTable(ids[:, 0].astype(np.int64) + 1, ids[:, 1].astype(np.int64), anno[:, 2:6],
                    np.arange(1, len(anno) + 1), "anno row")
