"""The annotated native trees: RsCarData (DSFNet), VISO MOT and DroneCrowd.

Naming: test videos take the real benchmark's test names first (RsCarData/VISO folders
002 003 005 006 008 009 010, DroneCrowd sequences 00011 00015 ...), so that the converters'
defaults find them; train videos, then val videos, take the remaining numbers in order
(001 004 007 011 ...). No format has a native val split that the converters read, so val
videos are written among the training videos and named in the returned `converter_options`.

Boxes are written as integers (every real file holds integers): each edge rounded to the
nearest pixel edge, keeping at least 1 px of width and height and at least 1 px inside the
frame. RsCarData's COCO json and VOC xml hold the boxes clipped to the frame; VISO's gt.txt
and DroneCrowd's anno keep boxes running past the border as the real files do (DroneCrowd's
uint16 cannot hold negative values, so its boxes are clipped at 0 only). DroneCrowd boxes are
each vehicle's own box, not the fixed 20x20 head boxes of the real data.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import cv2
import numpy as np
import scipy.io

from micml.catalog import SPLITS
from micml.data.synthetic.videos import SyntheticVideo
from micml.data.unified import JPEG_QUALITY
from micml.io import atomic_folder

# The test folders DSFNet's evaluator hard-codes (also VISO's MOT test videos).
DSFNET_TEST_NUMBERS = (2, 3, 5, 6, 8, 9, 10)
# DroneCrowd's 30 test sequences (the toolkit's testlist).
DRONECROWD_TEST_NUMBERS = (11, 15, 16, 17, 18, 22, 23, 24, 34, 35, 42, 43, 44, 61, 62, 63, 65, 69, 70, 74,
                           75, 82, 88, 95, 101, 103, 105, 108, 111, 112)

VideosBySplit = Mapping[str, Sequence[SyntheticVideo]]


# ---------------------------------------------------------------------------------------------
# RsCarData (DSFNet): COCO json + images/<split>/<VVV>/img1/<FFFFFF>.jpg + test VOC xml
# ---------------------------------------------------------------------------------------------

def write_rscar_tree(root: Path | str, videos_by_split: VideosBySplit, *, overwrite: bool = False) -> dict:
    """RsCarData tree: train and val videos under images/train, test under images/test1024.

    Returns {"splits": {split: [video records]}, "converter_options": {"val_videos", "fps"}}.
    """
    with atomic_folder(Path(root), overwrite) as partial:
        return _write_rscar(partial, videos_by_split)


def _write_rscar(root: Path, videos_by_split: VideosBySplit) -> dict:
    videos = _checked_splits(videos_by_split)
    numbers = _native_numbers({s: len(v) for s, v in videos.items()}, DSFNET_TEST_NUMBERS, 999)
    train_doc, test_doc = _CocoDocument(), _CocoDocument()
    records: dict[str, list[dict]] = {split: [] for split in SPLITS}
    for split in SPLITS:
        for video, number in zip(videos[split], numbers[split]):
            name = f"{number:03d}"
            folder = f"images/test1024/{name}/img1" if split == "test" else f"images/train/{name}/img1"
            doc = test_doc if split == "test" else train_doc
            for frame in range(1, video.n_frames + 1):
                file_name = f"{folder}/{frame:06d}.jpg"
                _write_jpeg(root / file_name, video.frames[frame - 1])
                image_id = doc.add_image(file_name, video.width, video.height)
                boxes, tracks = video.boxes[frame]
                for box, track in zip(_integer_boxes(boxes, video.width, video.height, clip=True), tracks):
                    doc.add_box(image_id, box, int(track))
                if split == "test":
                    _write_voc_xml(root / f"images/test1024/{name}/xml_det/{frame:06d}.xml", name, frame, video)
            records[split].append(video_record(name, video))
    (root / "annotations").mkdir()
    (root / "annotations/instances_train2017.json").write_text(json.dumps(train_doc.document()))
    (root / "annotations/instances_test2017_1024.json").write_text(json.dumps(test_doc.document()))
    return {"splits": records, "converter_options": {"val_videos": [r["name"] for r in records["val"]],
                                                     **_fps_option(records)}}


class _CocoDocument:
    """DSFNet's COCO fields: images {id, file_name, width, height}; annotations {id, image_id,
    category_id 1, bbox [x, y, w, h], area, iscrowd 0}; the single category car. Each annotation
    also carries `track_id`, as the later RsCarData release (HiEUM's `*_mot.json`) does: DSFNet's
    readers ignore the field, and it gives tracking evaluation its ground-truth identities."""

    def __init__(self):
        self.images: list[dict] = []
        self.annotations: list[dict] = []

    def add_image(self, file_name: str, width: int, height: int) -> int:
        self.images.append({"id": len(self.images) + 1, "file_name": file_name, "width": width, "height": height})
        return len(self.images)

    def add_box(self, image_id: int, box: Sequence[int], track_id: int) -> None:
        x1, y1, x2, y2 = box
        self.annotations.append({"id": len(self.annotations) + 1, "image_id": image_id, "category_id": 1,
                                 "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1),
                                 "iscrowd": 0, "track_id": track_id})

    def document(self) -> dict:
        return {"images": self.images, "annotations": self.annotations,
                "categories": [{"id": 1, "name": "car", "supercategory": "car"}]}


def _write_voc_xml(path: Path, folder: str, frame: int, video: SyntheticVideo) -> None:
    """VOC xml as DSFNet's evaluator reads it: integer xmin..ymax inside object/bndbox."""
    objects = "".join(
        f"  <object><name>car</name><difficult>0</difficult>"
        f"<bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>\n"
        for x1, y1, x2, y2 in _integer_boxes(video.boxes[frame][0], video.width, video.height, clip=True))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"<annotation>\n  <folder>{folder}</folder><filename>{frame:06d}.jpg</filename>\n"
                    f"  <size><width>{video.width}</width><height>{video.height}</height><depth>3</depth></size>\n"
                    f"{objects}</annotation>\n")


# ---------------------------------------------------------------------------------------------
# VISO MOT: mot/car/<NNN>/img/<FFFFFF>.jpg + mot/car/<NNN>/gt/gt.txt
# ---------------------------------------------------------------------------------------------

def write_viso_tree(root: Path | str, videos_by_split: VideosBySplit, *, overwrite: bool = False) -> dict:
    """VISO MOT tree. VISO has no split folders: the returned `converter_options` name the
    test and val videos. gt.txt rows are `frame,id,x,y,w,h,1,1,1` with integer, unclipped
    boxes; the 1st, 3rd, ... written video is sorted by frame, the 2nd, 4th, ... by track id, as
    both orders occur in the real files.
    """
    with atomic_folder(Path(root), overwrite) as partial:
        return _write_viso(partial, videos_by_split)


def _write_viso(root: Path, videos_by_split: VideosBySplit) -> dict:
    videos = _checked_splits(videos_by_split)
    numbers = _native_numbers({s: len(v) for s, v in videos.items()}, DSFNET_TEST_NUMBERS, 999)
    records: dict[str, list[dict]] = {split: [] for split in SPLITS}
    written = 0
    for split in SPLITS:
        for video, number in zip(videos[split], numbers[split]):
            name = f"{number:03d}"
            folder = root / "mot" / "car" / name
            for frame in range(1, video.n_frames + 1):
                _write_jpeg(folder / "img" / f"{frame:06d}.jpg", video.frames[frame - 1])
            (folder / "gt").mkdir(parents=True)
            rows = _mot_rows(video, by_track=written % 2 == 1)
            with open(folder / "gt" / "gt.txt", "w", newline="\n") as gt:
                gt.writelines(f"{f},{t},{x1},{y1},{x2 - x1},{y2 - y1},1,1,1\n" for f, t, x1, y1, x2, y2 in rows)
            records[split].append(video_record(name, video))
            written += 1
    return {"splits": records,
            "converter_options": {"test_videos": [r["name"] for r in records["test"]],
                                  "val_videos": [r["name"] for r in records["val"]], **_fps_option(records)}}


def _mot_rows(video: SyntheticVideo, *, by_track: bool) -> list[tuple[int, ...]]:
    """(frame, track, x1, y1, x2, y2) integer rows, sorted by frame or by track id."""
    rows = []
    for frame in range(1, video.n_frames + 1):
        boxes = _integer_boxes(video.unclipped_boxes[frame], video.width, video.height, clip=False)
        rows.extend((frame, int(track), *box) for track, box in zip(video.boxes[frame][1], boxes))
    return sorted(rows, key=lambda row: (row[1], row[0]) if by_track else (row[0], row[1]))


# ---------------------------------------------------------------------------------------------
# DroneCrowd: <split>_data/images/img<SSS><FFF>.jpg + annotations/<SSSSS>.mat + lists
# ---------------------------------------------------------------------------------------------

def write_dronecrowd_tree(root: Path | str, videos_by_split: VideosBySplit, *, overwrite: bool = False) -> dict:
    """DroneCrowd tree: frames in train_data/val_data/test_data, one annotations/<SSSSS>.mat
    per sequence (anno uint16 [frame 0-based, track 0-based, x1, y1, x2, y2] sorted by track
    then frame, countNum, label ['human']), trainlist.txt (train and val sequences, as the real
    list holds every non-test sequence) and testlist.txt, both CRLF like the real list.
    """
    with atomic_folder(Path(root), overwrite) as partial:
        return _write_dronecrowd(partial, videos_by_split)


def _write_dronecrowd(root: Path, videos_by_split: VideosBySplit) -> dict:
    videos = _checked_splits(videos_by_split)
    numbers = _native_numbers({s: len(v) for s, v in videos.items()}, DRONECROWD_TEST_NUMBERS, 999)
    records: dict[str, list[dict]] = {split: [] for split in SPLITS}
    (root / "annotations").mkdir()
    for split in SPLITS:
        for video, number in zip(videos[split], numbers[split]):
            if video.n_frames > 999:
                raise ValueError(f"{video.name}: {video.n_frames} frames; DroneCrowd names frames with 3 digits "
                                 "(img<SSS><FFF>.jpg), so at most 999 fit")
            for frame in range(1, video.n_frames + 1):
                _write_jpeg(root / f"{split}_data" / "images" / f"img{number:03d}{frame:03d}.jpg",
                            video.frames[frame - 1])
            anno, n_tracks = _dronecrowd_anno(video)
            scipy.io.savemat(str(root / "annotations" / f"{number:05d}.mat"),
                             {"anno": anno, "countNum": np.array([[n_tracks]], _smallest_uint(n_tracks)),
                              "label": np.array(["human"])})
            records[split].append(video_record(f"{number:05d}", video))
    for list_name, splits in (("trainlist.txt", ("train", "val")), ("testlist.txt", ("test",))):
        names = sorted(r["name"] for split in splits for r in records[split])
        (root / list_name).write_bytes("".join(f"{name}\r\n" for name in names).encode())
    return {"splits": records,
            "converter_options": {"val_videos": [r["name"] for r in records["val"]], **_fps_option(records)}}


def _dronecrowd_anno(video: SyntheticVideo) -> tuple[np.ndarray, int]:
    """anno rows with 0-based frames and tracks renumbered 0..K-1, and K."""
    rows = []
    for frame in range(1, video.n_frames + 1):
        boxes = _integer_boxes(video.unclipped_boxes[frame], video.width, video.height, clip=False)
        rows.extend((frame - 1, int(track), *box) for track, box in zip(video.boxes[frame][1], boxes))
    anno = np.array(rows, np.int64).reshape(-1, 6)
    anno[:, 2:4] = anno[:, 2:4].clip(0)  # uint16 holds no negative coordinates
    anno[:, 4:6] = np.maximum(anno[:, 4:6], anno[:, 2:4] + 1)
    tracks, anno[:, 1] = np.unique(anno[:, 1], return_inverse=True)
    anno = anno[np.lexsort((anno[:, 0], anno[:, 1]))]
    return anno.astype(np.uint16), len(tracks)


def _smallest_uint(value: int) -> type:
    """The dtype MATLAB gave countNum in the real files (uint8 for 145 tracks, uint16 for 270)."""
    return np.uint8 if value <= np.iinfo(np.uint8).max else np.uint16


# What `native.synthesize` calls, by native format, to write a tree into the folder it made.
TREE_WRITERS = {"rscar": _write_rscar, "viso": _write_viso, "dronecrowd": _write_dronecrowd}


# ---------------------------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------------------------

def _checked_splits(videos_by_split: VideosBySplit) -> dict[str, Sequence[SyntheticVideo]]:
    unknown = sorted(set(videos_by_split) - set(SPLITS))
    if unknown:
        raise ValueError(f"videos_by_split: unknown split(s) {', '.join(map(repr, unknown))}; "
                         f"expected {', '.join(SPLITS)}")
    return {split: videos_by_split.get(split, ()) for split in SPLITS}


def _native_numbers(counts: Mapping[str, int], test_numbers: Sequence[int], largest: int) -> dict[str, list[int]]:
    """Video numbers per split: test takes `test_numbers` first, then train and val take the
    other numbers in increasing order (so no train video carries a real test name)."""
    free = iter([n for n in range(1, largest + 1) if n not in set(test_numbers)])
    try:
        test = list(test_numbers[:counts["test"]])
        test += [next(free) for _ in range(counts["test"] - len(test))]
        return {"test": test, "train": [next(free) for _ in range(counts["train"])],
                "val": [next(free) for _ in range(counts["val"])]}
    except StopIteration:
        raise ValueError(f"{sum(counts.values())} videos do not fit the native names 001..{largest}") from None


def _integer_boxes(boxes: np.ndarray, width: int, height: int, *, clip: bool) -> list[tuple[int, int, int, int]]:
    """Edges rounded to whole pixels, each box keeping >= 1 px of size and >= 1 px in the frame."""
    rounded = np.round(np.asarray(boxes, np.float64)).astype(np.int64).reshape(-1, 4)
    x1, y1, x2, y2 = rounded.T
    x1, y1 = np.minimum(x1, width - 1), np.minimum(y1, height - 1)
    x2, y2 = np.maximum(x2, np.maximum(x1 + 1, 1)), np.maximum(y2, np.maximum(y1 + 1, 1))
    if clip:
        x1, y1 = x1.clip(0), y1.clip(0)
        x2, y2 = np.minimum(x2, width), np.minimum(y2, height)
    return [tuple(int(v) for v in box) for box in np.stack([x1, y1, x2, y2], axis=1)]


def _write_jpeg(path: Path, frame: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), frame, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]):
        raise OSError(f"{path}: OpenCV could not write this JPEG (disk full or folder not writable?)")


def video_record(native_name: str, video: SyntheticVideo) -> dict[str, Any]:
    tracks = {int(t) for _, ids in video.boxes.values() for t in ids}
    return {"name": native_name, "source": video.name, "n_frames": video.n_frames, "fps": float(video.fps),
            "width": video.width, "height": video.height, "labelled_boxes": video.n_labelled_boxes(),
            "labelled_tracks": len(tracks)}


def _fps_option(records: Mapping[str, list[dict]]) -> dict[str, float]:
    """The converters record a frame rate the native formats do not store; pass the spec's."""
    for split_records in records.values():
        for record in split_records:
            return {"fps": record["fps"]}
    return {}
