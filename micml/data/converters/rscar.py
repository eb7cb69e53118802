"""RsCarData (DSFNet / MICML "rsdata") -> unified layout.

Native tree (reference/DATASET_FORMATS.md section 1):
```
annotations/instances_train2017.json          train, 512x512 crops
annotations/instances_test2017_1024.json      test, 1024x1024 frames
images/<split>/<VVV>/img1/<FFFFFF>.jpg        (or images/<split>/<VVV>/<FFFFFF>.jpg)
images/test1024/<VVV>/xml_det/<FFFFFF>.xml    VOC boxes used by DSFNet's evaluator
```
The jsons are the source of truth. Images are grouped into videos by the folder in their
`file_name`; DSFNet finds previous frames by file-name arithmetic, so each folder must hold
frames 000001..n without a gap. Frame sizes are whatever the images are: DSFNet's loader
needs 512/1024 squares, our pipeline tiles any size, so no size is imposed here.
"""

from __future__ import annotations

import json
import re
import warnings
import xml.etree.ElementTree as ElementTree
from pathlib import Path, PurePosixPath
from typing import Sequence

import numpy as np

from ...catalog import PROTOCOLS as PROTOCOLS_BY_FORMAT
from ..unified import DatasetError
from ...paths import plain_name
from .common import (DEFAULT_VAL_FRACTION, BoxTable, NativeVideo, check_name_options, contiguous_frames,
                     hold_out_val, sha256_file, write_unified)

TRAIN_JSON = "annotations/instances_train2017.json"
TEST_JSON = "annotations/instances_test2017_1024.json"
FRAME_FILE = re.compile(r"(\d{6})\.jpg")
# The folder between a video and its frames; DSFNet's code implies exactly one, HiEUM names it img1.
FRAME_SUBFOLDERS = ("img1",)
CAR_CATEGORY = 1
XML_CHECKS = ("warn", "error", "off")
JILIN_FPS = 10.0  # RsCarData is cut from VISO's Jilin-1 videos (10 FPS, VISO seqinfo.ini)
PROTOCOLS = PROTOCOLS_BY_FORMAT["rscar"]


def convert_rscar(src: Path | str, dst: Path | str, *, val_videos: Sequence[str] | None = None,
                  val_fraction: float = DEFAULT_VAL_FRACTION, train_json: str = TRAIN_JSON,
                  test_json: str = TEST_JSON, xml_check: str = "warn", fps: float = JILIN_FPS) -> Path:
    """Convert an RsCarData tree at `src` into the unified layout at `dst`.

    val_videos: training videos held out for validation, by folder name (`train_<VVV>` for a
        train folder that shares a test video's name, see `give_unique_names`); default:
        `val_fraction` of them, chosen deterministically (see `hold_out_val`).
    train_json, test_json: paths relative to `src`; the test default is the 1024 json that
        DSFNet and MICML always end up using.
    xml_check: compare the per-frame box counts of the json against test1024 `xml_det/*.xml`
        where those exist. The json stays the source of truth, so a disagreement is a "warn"ing
        (recorded in meta.json) by default; "error" refuses it, "off" skips the reads.
    fps: frame rate recorded for every video (not stored in the native format).
    """
    check_name_options("rscar", val_videos=val_videos)
    for option, value in (("train_json", train_json), ("test_json", test_json)):
        plain_name(value, option=f"rscar converter option {option}", subfolders=True)  # read below `src` only
    root = Path(src)
    if xml_check not in XML_CHECKS:
        raise DatasetError(f"xml_check={xml_check!r}: expected one of {XML_CHECKS}")
    train_path, test_path = root / train_json, root / test_json
    train = read_split(root, train_path, "train", fps)
    test = read_split(root, test_path, "test", fps)
    renamed = give_unique_names(train, test)
    val = set(hold_out_val([v.name for v in train], val_videos, val_fraction, source=train_path))
    for video in train:
        video.split = "val" if video.name in val else "train"
    xml_report = cross_check_xml(test, xml_check) if xml_check != "off" else {"checked": False}
    options = {"val_videos": val_videos, "val_fraction": val_fraction, "train_json": train_json,
               "test_json": test_json, "xml_check": xml_check, "fps": fps}
    sources = {str(p.relative_to(root)): sha256_file(p) for p in (train_path, test_path)}
    return write_unified(dst, sorted(train + test, key=lambda v: v.name), native_format="rscar", src=root,
                         classes=("car",), protocols=PROTOCOLS, options=options, sources=sources,
                         extra={"xml_check": xml_report, "renamed_videos": renamed})


def read_split(root: Path, json_path: Path, split: str, fps: float) -> list[NativeVideo]:
    doc = load_coco(json_path)
    frames_by_folder, frame_of_image = index_images(doc["images"], root, json_path)
    boxes_by_folder = read_boxes(doc["annotations"], frame_of_image, json_path)
    videos = []
    names: dict[str, str] = {}
    for folder, frames in sorted(frames_by_folder.items()):
        name = video_name(folder)
        if name in names:
            raise DatasetError(f"{json_path}: folders {names[name]} and {folder} both give video name {name!r}; "
                               "each video needs its own folder name")
        names[name] = folder
        videos.append(NativeVideo(
            name=name, split=split, frames=contiguous_frames(frames, root / folder, listed_in=json_path),
            boxes=boxes_by_folder.get(folder, BoxTable.empty("annotation id")), source=str(json_path), fps=fps,
            missing_frame_hint=f"{root / folder}/{{frame:06d}}.jpg"))
    if not videos:
        raise DatasetError(f"{json_path}: no images listed; expected a COCO json with an `images` list")
    return videos


def load_coco(path: Path) -> dict:
    if not path.is_file():
        raise DatasetError(f"{path}: not found; expected the RsCarData COCO json there "
                           "(or pass train_json/test_json relative to the source folder)")
    try:
        doc = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DatasetError(f"{path}: malformed json ({error}); re-extract it from the original archive") from None
    for key in ("images", "annotations"):
        if not isinstance(doc, dict) or not isinstance(doc.get(key), list):
            raise DatasetError(f"{path}: expected a COCO json object with an {key!r} list; found "
                               f"{type(doc).__name__ if not isinstance(doc, dict) else 'no such list'}")
    return doc


def index_images(images: list, root: Path, json_path: Path):
    """Frames per video folder ({folder: {frame number: path}}) and image id -> (folder, frame)."""
    frames_by_folder: dict[str, dict[int, Path]] = {}
    frame_of_image: dict[int, tuple[str, int]] = {}
    for image in images:
        if not isinstance(image, dict) or "id" not in image or not isinstance(image.get("file_name"), str):
            raise DatasetError(f"{json_path}: image entry {str(image)[:80]} lacks an `id` or a `file_name`")
        file_name = PurePosixPath(image["file_name"].removeprefix("./"))
        match = FRAME_FILE.fullmatch(file_name.name)
        if not match:
            raise DatasetError(f"{json_path}: image {image['id']} file_name {image['file_name']!r}: expected a "
                               "6-digit 1-based frame file such as images/train/001/img1/000001.jpg")
        folder, frame = str(file_name.parent), int(match.group(1))
        if image["id"] in frame_of_image:
            raise DatasetError(f"{json_path}: image id {image['id']} appears twice; image ids must be unique")
        frames = frames_by_folder.setdefault(folder, {})
        if frame in frames:
            raise DatasetError(f"{json_path}: {file_name} is listed twice; each frame must appear once")
        frames[frame] = root / file_name
        frame_of_image[image["id"]] = (folder, frame)
    return frames_by_folder, frame_of_image


def video_name(folder: str) -> str:
    path = PurePosixPath(folder)
    return path.parent.name if path.name in FRAME_SUBFOLDERS else path.name


def read_boxes(annotations: list, frame_of_image: dict, json_path: Path) -> dict[str, BoxTable]:
    """Boxes per video folder; category and shape are checked here, sizes in `validate_boxes`."""
    columns: dict[str, list[tuple[int, int, list[float], int]]] = {}
    for ann in annotations:
        ann_id = ann.get("id", "?") if isinstance(ann, dict) else "?"
        if not isinstance(ann, dict) or ann.get("image_id") not in frame_of_image:
            raise DatasetError(f"{json_path}: annotation id {ann_id} refers to image_id "
                               f"{ann.get('image_id') if isinstance(ann, dict) else '?'} which is not in `images`")
        if ann.get("category_id") != CAR_CATEGORY:
            raise DatasetError(f"{json_path}: annotation id {ann_id} has category_id {ann.get('category_id')!r}; "
                               "RsCarData has only category 1 (car), which DSFNet's loader requires")
        bbox = ann.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox)):
            raise DatasetError(f"{json_path}: annotation id {ann_id}: bbox {bbox!r} is not 4 numbers [x, y, w, h]")
        folder, frame = frame_of_image[ann["image_id"]]
        x, y, w, h = (float(v) for v in bbox)
        track = ann.get("track_id", -1)
        if not isinstance(track, int):
            raise DatasetError(f"{json_path}: annotation id {ann_id}: track_id {track!r} is not an integer")
        columns.setdefault(folder, []).append((frame, track, [x, y, x + w, y + h],
                                               ann_id if isinstance(ann_id, int) else -1))
    return {folder: BoxTable(np.array([r[0] for r in rows], np.int64), np.array([r[1] for r in rows], np.int64),
                             np.array([r[2] for r in rows], np.float64).reshape(-1, 4),
                             np.array([r[3] for r in rows], np.int64), "annotation id")
            for folder, rows in columns.items()}


def give_unique_names(train: list[NativeVideo], test: list[NativeVideo]) -> dict[str, str]:
    """Train folders are not named in any public source, so a train video may share a test
    video's number; keep the test name (the evaluator's `%03d`) and rename the train one."""
    test_names = {v.name for v in test}
    renamed = {}
    for video in train:
        if video.name in test_names:
            renamed[video.name] = f"train_{video.name}"
            video.name = renamed[video.name]
    return renamed


def cross_check_xml(test: list[NativeVideo], mode: str) -> dict:
    """Compare per-frame box counts of the json with test1024 `xml_det/<F>.xml`."""
    checked, mismatches = 0, []
    for video in test:
        xml_dir = xml_folder(video.frames[0].parent)
        if not xml_dir.is_dir():
            continue
        json_counts = np.bincount(video.boxes.frames, minlength=len(video.frames) + 1)
        for frame, frame_path in enumerate(video.frames, 1):
            xml_path = xml_dir / (frame_path.stem + ".xml")
            xml_count = count_xml_boxes(xml_path, mode)
            checked += 1
            if xml_count != json_counts[frame]:
                mismatches.append({"xml": str(xml_path), "xml_boxes": xml_count, "json_boxes": int(json_counts[frame])})
    if mismatches:
        first = mismatches[0]
        found = "missing or unreadable" if first["xml_boxes"] is None else f"{first['xml_boxes']} boxes"
        message = (f"{first['xml']}: {found} but the json has {first['json_boxes']} boxes for that "
                   f"frame ({len(mismatches)} of {checked} frames differ); the json is used")
        if mode == "error":
            raise DatasetError(message + "; pass xml_check='warn' to accept the json anyway")
        warnings.warn(message, stacklevel=3)
    return {"checked": True, "frames_checked": checked, "frames_differing": len(mismatches),
            "differences": mismatches[:100]}


def xml_folder(frame_folder: Path) -> Path:
    video_folder = frame_folder.parent if frame_folder.name in FRAME_SUBFOLDERS else frame_folder
    return video_folder / "xml_det"


def count_xml_boxes(path: Path, mode: str) -> int | None:
    """Number of object/bndbox elements (what DSFNet's getGtFromXml reads); None if unreadable."""
    try:
        return len(ElementTree.parse(path).getroot().findall("object/bndbox"))
    except (OSError, ElementTree.ParseError) as error:
        if mode == "error":
            raise DatasetError(f"{path}: cannot read VOC xml ({error}); restore it or pass xml_check='warn'") from None
        return None
