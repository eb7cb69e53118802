"""Converters from native formats to the unified layout.

Real annotation files (VISO gt.txt of videos 002/003, DroneCrowd 00001.mat/00011.mat) are
converted around generated constant frames and checked against values computed here
independently with numpy/scipy; small generated trees cover RsCarData, img1/ variants, video
files, every bad-input message, and (with hypothesis) the gt.txt parser.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.io
from scipy.optimize import linear_sum_assignment
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fixtures_real import (build_dronecrowd_tree, build_viso_tree, constant_jpeg, link_frames, load_real_anno,
                           real_fixtures)
from micml.data.converters import (CONVERTERS, DRONECROWD_TEST_SEQUENCES, DSFNET_TEST_VIDEOS, convert,
                                   convert_dronecrowd, convert_rscar, convert_video, convert_viso)
from micml.data.synthetic import SyntheticSpec, split_videos
from micml.data.synthetic.native import native_input, synthesize
from micml.data.unified import DatasetError, UnifiedDataset, UnifiedWriter


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def videos_by_name(root: Path, split: str) -> dict:
    return {v.record.name: v for v in UnifiedDataset(root).videos(split)}


def boxes_with_tracks(video, frame: int) -> dict[int, list[float]]:
    return dict(zip(video.track_ids[frame].tolist(), video.boxes[frame].tolist()))


# --------------------------------------------------------------------------- VISO, real gt

def real_gt(video: str) -> np.ndarray:
    """Independent reading of a real gt.txt: rows [frame, track, x, y, w, h, 1, 1, 1]."""
    return np.loadtxt(real_fixtures() / "viso_mot_gt" / video / "gt.txt", delimiter=",", dtype=np.int64)


def fully_outside(gt: np.ndarray, size: int = 1024) -> np.ndarray:
    x, y, w, h = gt[:, 2], gt[:, 3], gt[:, 4], gt[:, 5]
    return (x >= size) | (y >= size) | (x + w <= 0) | (y + h <= 0)


@pytest.fixture(scope="module")
def viso_real(tmp_path_factory) -> Path:
    root = build_viso_tree(tmp_path_factory.mktemp("viso_native"))
    return convert("viso", root, tmp_path_factory.mktemp("viso") / "unified", test_videos=("002",), val_fraction=0)


def test_viso_real_videos_frames_and_meta(viso_real):
    meta = read_json(viso_real / "meta.json")
    assert meta["videos"] == {"train": ["003"], "val": [], "test": ["002"]}
    assert meta["native_format"] == "viso"
    assert meta["protocols"] == ["dsfnet_f1", "coco_ap50", "centre_distance"]
    assert meta["options"]["test_videos"] == ["002"] and meta["classes"] == ["car"]
    assert set(meta["sources"]) == {"mot/car/002/gt/gt.txt", "mot/car/003/gt/gt.txt"}
    test = videos_by_name(viso_real, "test")["002"].record
    train = videos_by_name(viso_real, "train")["003"].record
    assert (test.n_frames, test.width, test.height, test.fps) == (326, 1024, 1024, 10.0)
    assert (train.n_frames, train.width, train.height) == (325, 1024, 1024)
    assert len(list((viso_real / "frames" / "002").iterdir())) == 326


@pytest.mark.parametrize("video, split", [("002", "test"), ("003", "train")])
def test_viso_real_boxes_per_frame_match_gt(viso_real, video, split):
    gt = real_gt(video)
    kept = gt[~fully_outside(gt)]
    converted = videos_by_name(viso_real, split)[video]
    expected = np.bincount(kept[:, 0], minlength=converted.record.n_frames + 1)[1:]
    found = np.array([len(converted.frame_boxes(f)) for f in range(1, converted.record.n_frames + 1)])
    np.testing.assert_array_equal(found, expected)
    assert found.sum() == len(kept) == read_json(viso_real / "meta.json")["counts"][split]["boxes"]


def test_viso_real_specific_rows_and_border_clipping(viso_real):
    video = videos_by_name(viso_real, "test")["002"]
    # the first line of 002/gt.txt: 1,1,377,970,9,7,1,1,1
    assert boxes_with_tracks(video, 1)[1] == [377, 970, 386, 977]
    # 186,3,1017,662,8,7 ends at x=1025 and 111,20,291,1018,7,7 at y=1025: clipped to 1024
    assert boxes_with_tracks(video, 186)[3] == [1017, 662, 1024, 669]
    assert boxes_with_tracks(video, 111)[20] == [291, 1018, 298, 1024]
    all_boxes = np.concatenate([video.frame_boxes(f) for f in range(1, 327)])
    assert all_boxes[:, [2, 3]].max() == 1024 and all_boxes.min() >= 0


def test_viso_real_rows_outside_the_frame_are_reported_not_dropped_silently(viso_real):
    gt = real_gt("002")
    outside_lines = (np.flatnonzero(fully_outside(gt)) + 1).tolist()
    assert len(outside_lines) == 3  # e.g. 60,6,1050,647,... starts right of the 1024 border
    report = read_json(viso_real / "meta.json")["dropped_outside_frame"]
    assert report["count"] == 3
    assert sorted(row["line"] for row in report["boxes"]["002"]) == sorted(outside_lines)
    frame_60 = boxes_with_tracks(videos_by_name(viso_real, "test")["002"], 60)
    assert 6 not in frame_60


def test_viso_real_unsorted_gt_is_sorted_by_frame_then_track(viso_real):
    gt = real_gt("003")
    assert (np.diff(gt[:, 0]) < 0).any(), "003/gt.txt is sorted by track, which makes this test meaningful"
    doc = read_json(viso_real / "annotations" / "train.json")
    frame_of = {im["id"]: im["frame_index"] for im in doc["images"]}
    keys = [(frame_of[a["image_id"]], a["track_id"]) for a in doc["annotations"]]
    assert keys == sorted(keys)
    converted = sorted((f, t, *np.round(a["bbox"]).astype(int).tolist())
                       for (f, t), a in zip(keys, doc["annotations"]))
    assert converted == sorted(map(tuple, gt[:, :6].tolist()))  # 003 lies inside the frame: nothing clipped


# --------------------------------------------------------------------------- DroneCrowd, real .mat

@pytest.fixture(scope="module")
def dronecrowd_real(tmp_path_factory) -> Path:
    root = build_dronecrowd_tree(tmp_path_factory.mktemp("dc_native"), {"00001": "train_data", "00011": "test_data"})
    (root / "testlist.txt").write_bytes(b"00011\r\n")  # the toolkit's list has CRLF endings
    return convert("dronecrowd", root, tmp_path_factory.mktemp("dc") / "unified")


def test_dronecrowd_real_splits_and_meta(dronecrowd_real):
    meta = read_json(dronecrowd_real / "meta.json")
    assert meta["videos"] == {"train": ["00001"], "val": [], "test": ["00011"]}
    assert meta["protocols"] == ["dronecrowd_lmap", "dsfnet_f1"] and meta["classes"] == ["human"]
    assert meta["split_lists"]["test"].endswith("testlist.txt")
    assert set(meta["sources"]) == {"annotations/00001.mat", "annotations/00011.mat", "testlist.txt"}
    record = videos_by_name(dronecrowd_real, "test")["00011"].record
    assert (record.n_frames, record.width, record.height) == (300, 1920, 1080)


@pytest.mark.parametrize("sequence, split", [("00001", "train"), ("00011", "test")])
def test_dronecrowd_real_frame_f_is_image_f_plus_1(dronecrowd_real, sequence, split):
    anno = load_real_anno(sequence)
    video = videos_by_name(dronecrowd_real, split)[sequence]
    expected = np.bincount(anno[:, 0], minlength=300)  # anno frames are 0-based
    found = np.array([len(video.frame_boxes(f)) for f in range(1, 301)])
    np.testing.assert_array_equal(found, expected)
    for row in anno[[0, len(anno) // 2, -1]]:
        frame, track, x1, y1, x2, y2 = row.tolist()
        assert boxes_with_tracks(video, frame + 1)[track] == [x1, y1, min(x2, 1920), min(y2, 1080)]


def test_dronecrowd_real_boxes_past_the_border_are_clipped(dronecrowd_real):
    anno = load_real_anno("00011")
    past = anno[(anno[:, 4] > 1920) | (anno[:, 5] > 1080)]
    assert len(past) == 29  # x2 up to 1927, y2 up to 1087 in the real file
    video = videos_by_name(dronecrowd_real, "test")["00011"]
    for frame, track, x1, y1, x2, y2 in past.tolist():
        assert boxes_with_tracks(video, frame + 1)[track] == [x1, y1, min(x2, 1920), min(y2, 1080)]
        # where the head was annotated (the toolkit's ground truth) survives the clipping
        index = video.track_ids[frame + 1].tolist().index(track)
        assert video.frame_points(frame + 1)[index].tolist() == [(x1 + x2) / 2, (y1 + y2) / 2]
    meta = read_json(dronecrowd_real / "meta.json")
    assert meta["dropped_outside_frame"]["count"] == 0
    assert meta["clipped_to_frame"] == {"train": 0, "val": 0, "test": 29}
    with_point = [a for a in read_json(dronecrowd_real / "annotations/test.json")["annotations"] if "point" in a]
    assert len(with_point) == 29  # only where clipping moved the box centre


# --------------------------------------------------------------------------- small generated trees

def write_viso(root: Path, videos: dict[str, tuple[int, str]], *, size=(40, 30), frame_folder="img") -> Path:
    """VISO MOT tree: {name: (number of frames, gt.txt text)} with small constant frames."""
    template = constant_jpeg(root / "template.jpg", *size)
    for name, (n_frames, gt_text) in videos.items():
        folder = root / "mot" / "car" / name
        (folder / "gt").mkdir(parents=True)
        (folder / "gt" / "gt.txt").write_text(gt_text)
        link_frames(template, [folder / frame_folder / f"{f:06d}.jpg" for f in range(1, n_frames + 1)])
        (folder / frame_folder).mkdir(exist_ok=True)
    return root


def test_viso_img1_folder_default_test_list_and_validation_hold_out(tmp_path):
    gt = "1,1,3,4,5,6,1,1,1\n"
    names = [f"{i:03d}" for i in range(1, 13)]
    src = write_viso(tmp_path / "VISO", {name: (2, gt) for name in names}, frame_folder="img1")
    out = convert_viso(src, tmp_path / "out")
    meta = read_json(out / "meta.json")
    assert meta["videos"]["test"] == list(DSFNET_TEST_VIDEOS)
    rest = ["001", "004", "007", "011", "012"]
    assert sorted(meta["videos"]["train"] + meta["videos"]["val"]) == rest
    assert len(meta["videos"]["val"]) == 1  # round(0.1 * 5) = 0, but at least one is held out
    assert convert_viso(src, tmp_path / "again")  # same choice every time
    assert read_json(tmp_path / "again" / "meta.json")["videos"] == meta["videos"]
    explicit = convert_viso(src, tmp_path / "explicit", val_videos=["011", "012"])
    assert read_json(explicit / "meta.json")["videos"]["val"] == ["011", "012"]
    box = videos_by_name(out, "test")["002"].frame_boxes(1)
    np.testing.assert_array_equal(box, [[3, 4, 8, 10]])


def test_viso_reads_the_frame_rate_of_seqinfo(tmp_path):
    src = write_viso(tmp_path / "VISO", {"002": (2, "1,1,3,4,5,6,1,1,1\n")})
    (src / "mot" / "car" / "002" / "seqinfo.ini").write_text("[Sequence]\nname=002\nframeRate=7\n")
    out = convert_viso(src / "mot", tmp_path / "out", test_videos=("002",))  # mot/ itself as source
    assert videos_by_name(out, "test")["002"].record.fps == 7.0


def test_viso_missing_test_video_is_named(tmp_path):
    src = write_viso(tmp_path / "VISO", {"001": (2, "")})
    with pytest.raises(DatasetError, match=r"test video\(s\) 002, 003"):
        convert_viso(src, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()


@pytest.mark.parametrize("gt_line, expected", [
    ("1,1,3,4,5,6,1,1", r"line 2 has 8 columns, expected 9"),
    ("1,1,3,4,5,6,1,1,1,1", r"line 2 has 10 columns"),
    ("1,1,3,four,5,6,1,1,1", r"line 2 has a non-numeric column"),
    ("1,1,3,4,nan,6,1,1,1", r"line 2 has a NaN or infinite value"),
    ("1,1,3,4,-3,6,1,1,1", r"line 2: box has width -3 and height 6"),
    ("1,1,3,4,5,0,1,1,1", r"line 2: box has width 5 and height 0"),
    ("1.5,1,3,4,5,6,1,1,1", r"line 2: frame '1.5'"),
    ("0,1,3,4,5,6,1,1,1", r"line 2: frame '0'"),
    ("5,1,3,4,5,6,1,1,1", r"line 2 refers to .*img/000005\.jpg.*has frames 1\.\.3"),
])
def test_viso_bad_gt_rows_name_the_file_and_line(tmp_path, gt_line, expected):
    src = write_viso(tmp_path / "VISO", {"002": (3, f"1,1,3,4,5,6,1,1,1\n{gt_line}\n")})
    with pytest.raises(DatasetError, match=expected) as error:
        convert_viso(src, tmp_path / "out", test_videos=("002",))
    assert str(src / "mot/car/002/gt/gt.txt") in str(error.value)


def test_viso_frame_sizes_that_differ_within_a_video_are_refused(tmp_path):
    src = write_viso(tmp_path / "VISO", {"002": (3, "1,1,3,4,5,6,1,1,1\n")})
    odd = src / "mot/car/002/img/000002.jpg"
    odd.unlink()
    constant_jpeg(odd, 41, 30)
    with pytest.raises(DatasetError, match=r"000002\.jpg: frame is 41x30 but earlier frames .* are 40x30"):
        convert_viso(src, tmp_path / "out", test_videos=("002",))


def test_viso_empty_video_and_frame_gap_name_the_folder(tmp_path):
    src = write_viso(tmp_path / "VISO", {"002": (0, "")})
    with pytest.raises(DatasetError, match=r"mot/car/002/img: no frames found \(empty video\)"):
        convert_viso(src, tmp_path / "out", test_videos=("002",))
    src = write_viso(tmp_path / "V2", {"002": (3, "")})
    (src / "mot/car/002/img/000002.jpg").unlink()
    with pytest.raises(DatasetError, match=r"mot/car/002/img: .*frame 2 is missing \(after frame 1 comes 3\)"):
        convert_viso(src, tmp_path / "out", test_videos=("002",))


def test_viso_undecodable_frame_is_named(tmp_path):
    src = write_viso(tmp_path / "VISO", {"002": (2, "")})
    broken = src / "mot/car/002/img/000002.jpg"
    broken.unlink()
    broken.write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(DatasetError, match=r"000002\.jpg: frame cannot be decoded"):
        convert_viso(src, tmp_path / "out", test_videos=("002",))


# hypothesis: random gt.txt rows, valid and invalid, against an independent expectation
SIZE = (40, 30)
N_FRAMES = 3
number_text = st.one_of(st.integers(-15, 55).map(str), st.integers(-60, 220).map(lambda k: str(k / 4)))
valid_row = st.tuples(st.integers(1, N_FRAMES).map(str), st.integers(0, 20).map(str), number_text, number_text,
                      st.integers(1, 48).map(lambda k: str(k / 4)), st.integers(1, 12).map(str))


def gt_line(fields) -> str:
    return ",".join(fields) + ",1,1,1"


def with_field(index: int, choices: list[str]):
    """A valid row with column `index` replaced by one of `choices`."""
    return st.tuples(valid_row, st.sampled_from(choices)).map(
        lambda pair: gt_line(pair[0][:index] + (pair[1],) + pair[0][index + 1:]))


invalid_row = st.one_of(
    valid_row.map(lambda r: ",".join(r) + ",1,1"),  # 8 columns
    valid_row.map(lambda r: gt_line(r) + ",1"),  # 10 columns
    with_field(2, ["x", "", "1;2"]),  # not a number
    with_field(3, ["inf", "-inf", "NaN"]),
    with_field(4, ["0", "-2", "-0.5"]),  # no width
    with_field(5, ["0", "-1"]),  # no height
    with_field(0, ["0", "1.5", str(N_FRAMES + 1)]),  # not a frame of the video
    with_field(1, ["2.5", "nan"]),  # track id not an integer
)


def expected_boxes(rows: list[tuple[str, ...]]) -> tuple[list[tuple], int]:
    """(frame, track, clipped x1, y1, x2, y2) of rows that overlap the frame, and how many do not."""
    width, height = SIZE
    kept, outside = [], 0
    for frame, track, x, y, w, h in rows:
        x1, y1 = float(x), float(y)
        x2, y2 = x1 + float(w), y1 + float(h)
        if x1 >= width or y1 >= height or x2 <= 0 or y2 <= 0:
            outside += 1
            continue
        kept.append((int(frame), int(track), max(x1, 0), max(y1, 0), min(x2, width), min(y2, height)))
    return sorted(kept), outside


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(valid_row, max_size=12), bad=st.none() | invalid_row, position=st.integers(0, 12),
       crlf=st.booleans())
def test_gt_parsing_never_drops_or_crashes_silently(rows, bad, position, crlf):
    lines = [gt_line(r) for r in rows]
    if bad is not None:
        position = min(position, len(lines))
        lines.insert(position, bad)
    with tempfile.TemporaryDirectory() as tmp:
        src = write_viso(Path(tmp) / "VISO", {"002": (N_FRAMES, ("\r\n" if crlf else "\n").join(lines) + "\n")},
                         size=SIZE)
        if bad is not None:
            with pytest.raises(DatasetError) as error:
                convert_viso(src, Path(tmp) / "out", test_videos=("002",))
            assert str(src / "mot/car/002/gt/gt.txt") in str(error.value)
            assert f"line {position + 1}" in str(error.value)
            return
        out = convert_viso(src, Path(tmp) / "out", test_videos=("002",))
        video = videos_by_name(out, "test")["002"]
        found = sorted((f, t, *b) for f in video.boxes for t, b in zip(video.track_ids[f].tolist(),
                                                                      video.boxes[f].tolist()))
        kept, outside = expected_boxes(rows)
        assert len(found) + read_json(out / "meta.json")["dropped_outside_frame"]["count"] == len(rows)
        assert outside == len(rows) - len(kept)
        assert [f[:2] for f in found] == [k[:2] for k in kept]
        np.testing.assert_allclose(np.reshape([f[2:] for f in found], (-1, 4)),
                                   np.reshape([k[2:] for k in kept], (-1, 4)), atol=1e-3)


# --------------------------------------------------------------------------- RsCarData

def write_rscar(root: Path, *, train: dict, test: dict, xml: dict | None = None) -> Path:
    """RsCarData tree. `train`/`test`: {folder relative to root: (n_frames, size, boxes)} with
    boxes [(frame, x, y, w, h)]; `xml`: {frame number: number of objects} for the test video."""
    docs = {}
    for split, videos in (("train", train), ("test", test)):
        doc = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "car"}]}
        for folder, (n_frames, size, boxes) in videos.items():
            template = constant_jpeg(root / "templates" / f"{size}.jpg", size, size)
            ids = {}
            for frame in range(1, n_frames + 1):
                file_name = f"{folder}/{frame:06d}.jpg"
                link_frames(template, [root / file_name])
                ids[frame] = len(doc["images"]) + 1
                doc["images"].append({"id": ids[frame], "file_name": file_name, "width": size, "height": size})
            for frame, x, y, w, h in boxes:
                doc["annotations"].append({"id": len(doc["annotations"]) + 1, "image_id": ids[frame],
                                           "category_id": 1, "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0})
        docs[split] = doc
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "annotations/instances_train2017.json").write_text(json.dumps(docs["train"]))
    (root / "annotations/instances_test2017_1024.json").write_text(json.dumps(docs["test"]))
    for frame, count in (xml or {}).items():
        path = root / f"images/test1024/002/xml_det/{frame:06d}.xml"
        path.parent.mkdir(parents=True, exist_ok=True)
        objects = "".join("<object><name>car</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>3</xmax>"
                          "<ymax>3</ymax></bndbox></object>" for _ in range(count))
        path.write_text(f"<annotation><folder>002</folder>{objects}</annotation>")
    return root


RSCAR_TRAIN = {
    "images/train/001/img1": (4, 64, [(1, 10, 12, 5, 4), (1, 60, 20, 8, 6), (4, 70, 5, 3, 3)]),
    "images/train/004": (3, 64, [(2, 1.5, 2.5, 3, 4)]),  # no img1/ level
}
RSCAR_TEST = {"images/test1024/002/img1": (3, 96, [(1, 377 - 300, 970 - 900, 9, 7), (3, 90, 90, 9, 7)])}


def test_rscar_layout_with_and_without_img1(tmp_path):
    src = write_rscar(tmp_path / "RsCarData", train=RSCAR_TRAIN, test=RSCAR_TEST, xml={1: 1, 2: 0, 3: 1})
    out = convert("rscar", src, tmp_path / "out")
    meta = read_json(out / "meta.json")
    # two training videos, default val_fraction 0.1: one held out, at the middle of the sorted names
    assert meta["videos"] == {"train": ["001"], "val": ["004"], "test": ["002"]}
    assert meta["protocols"] == ["dsfnet_f1", "coco_ap50", "centre_distance"] and meta["native_format"] == "rscar"
    assert meta["xml_check"]["frames_checked"] == 3 and meta["xml_check"]["frames_differing"] == 0
    train = videos_by_name(out, "train")["001"]
    assert train.record.n_frames == 4 and train.record.width == 64
    np.testing.assert_array_equal(train.frame_boxes(1), [[10, 12, 15, 16], [60, 20, 64, 26]])  # clipped at x=64
    assert meta["clipped_to_frame"] == {"train": 1, "val": 0, "test": 1}
    assert meta["dropped_outside_frame"]["boxes"]["001"] == [{"annotation id": 3, "frame": 4,
                                                             "xyxy": [70.0, 5.0, 73.0, 8.0]}]
    np.testing.assert_allclose(videos_by_name(out, "val")["004"].frame_boxes(2), [[1.5, 2.5, 4.5, 6.5]])
    test = videos_by_name(out, "test")["002"]
    np.testing.assert_array_equal(test.frame_boxes(1), [[77, 70, 86, 77]])
    np.testing.assert_array_equal(test.frame_boxes(3), [[90, 90, 96, 96]])
    assert test.record.width == 96 and len(test.frame_boxes(2)) == 0


def test_rscar_explicit_val_and_train_name_shared_with_a_test_video(tmp_path):
    train = {**RSCAR_TRAIN, "images/train/002/img1": (2, 64, [])}
    src = write_rscar(tmp_path / "RsCarData", train=train, test=RSCAR_TEST)
    out = convert_rscar(src, tmp_path / "out", val_videos=["001"])
    meta = read_json(out / "meta.json")
    assert meta["videos"] == {"train": ["004", "train_002"], "val": ["001"], "test": ["002"]}
    assert meta["renamed_videos"] == {"002": "train_002"}
    with pytest.raises(DatasetError, match=r"val_videos \['999'\] are not training videos"):
        convert_rscar(src, tmp_path / "bad", val_videos=["999"])


def test_rscar_xml_disagreement_warns_or_errors(tmp_path):
    src = write_rscar(tmp_path / "RsCarData", train=RSCAR_TRAIN, test=RSCAR_TEST, xml={1: 2, 2: 0, 3: 1})
    with pytest.warns(UserWarning, match=r"xml_det/000001\.xml: 2 boxes but the json has 1"):
        out = convert_rscar(src, tmp_path / "out")
    assert read_json(out / "meta.json")["xml_check"]["frames_differing"] == 1
    with pytest.raises(DatasetError, match=r"xml_det/000001\.xml: 2 boxes"):
        convert_rscar(src, tmp_path / "strict", xml_check="error")
    next(src.rglob("xml_det/000001.xml")).write_text("<annotation><object>")  # cut short
    with pytest.warns(UserWarning, match=r"xml_det/000001\.xml: missing or unreadable but the json has 1 boxes"):
        convert_rscar(src, tmp_path / "unreadable")


def rscar_error(tmp_path, edit) -> str:
    src = write_rscar(tmp_path / "RsCarData", train=RSCAR_TRAIN, test=RSCAR_TEST)
    edit(src)
    with pytest.raises(DatasetError) as error:
        convert_rscar(src, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()
    return str(error.value)


def edit_train_json(change):
    def edit(src):
        path = src / "annotations/instances_train2017.json"
        doc = json.loads(path.read_text())
        change(doc)
        path.write_text(json.dumps(doc))
    return edit


def test_rscar_malformed_json_is_named(tmp_path):
    message = rscar_error(tmp_path, lambda src: (src / "annotations/instances_test2017_1024.json").write_text("{oops"))
    assert "instances_test2017_1024.json: malformed json" in message


def test_rscar_other_category_is_named(tmp_path):
    message = rscar_error(tmp_path, edit_train_json(lambda doc: doc["annotations"][1].update(category_id=2)))
    assert "instances_train2017.json: annotation id 2 has category_id 2" in message


def test_rscar_frame_gap_names_folder_and_first_gap(tmp_path):
    message = rscar_error(tmp_path, edit_train_json(lambda doc: doc["images"].pop(2)))  # 001's frame 3
    assert "images/train/001/img1" in message and "frame 3 is missing (after frame 2 comes 4)" in message


def test_rscar_missing_frame_file_is_named(tmp_path):
    message = rscar_error(tmp_path, lambda src: (src / "images/train/004/000002.jpg").unlink())
    assert "images/train/004/000002.jpg: frame is missing" in message


@pytest.mark.parametrize("bbox, expected", [
    ([10, 12, 0, 4], "box has width 0 and height 4"),
    ([10, 12, 5, -1], "box has width 5 and height -1"),
    ([float("nan"), 12, 5, 4], "NaN or infinite"),
    ([10, 12, 5], "is not 4 numbers"),
])
def test_rscar_bad_boxes_are_named(tmp_path, bbox, expected):
    message = rscar_error(tmp_path, edit_train_json(lambda doc: doc["annotations"][0].update(bbox=bbox)))
    assert "instances_train2017.json: annotation id 1" in message and expected in message


# --------------------------------------------------------------------------- DroneCrowd, generated

def write_dronecrowd(root: Path, sequences: dict[str, np.ndarray], *, n_frames=2, size=(32, 18)) -> Path:
    template = constant_jpeg(root / "template.jpg", *size)
    (root / "annotations").mkdir(parents=True)
    for name, anno in sequences.items():
        scipy.io.savemat(str(root / "annotations" / f"{name}.mat"), {"anno": anno, "label": np.array(["human"])})
        folder = "test_data" if name in DRONECROWD_TEST_SEQUENCES else "train_data"
        link_frames(template, [root / folder / "images" / f"img{int(name):03d}{f:03d}.jpg"
                               for f in range(1, n_frames + 1)])
    return root


ANNO = np.array([[0, 0, 2, 3, 12, 13], [1, 0, 3, 3, 13, 13]], np.uint16)


def test_dronecrowd_default_test_list_is_the_toolkit_30(tmp_path):
    names = list(DRONECROWD_TEST_SEQUENCES) + ["00001", "00002", "00003"]
    src = write_dronecrowd(tmp_path / "dc", {name: ANNO for name in names})
    out = convert_dronecrowd(src, tmp_path / "out")
    meta = read_json(out / "meta.json")
    assert meta["videos"]["test"] == list(DRONECROWD_TEST_SEQUENCES) and "00011" in meta["videos"]["test"]
    assert meta["videos"]["train"] == ["00001", "00003"] and meta["videos"]["val"] == ["00002"]
    assert meta["split_lists"] == {"test": "default", "train": "default"}


def test_dronecrowd_lists_with_crlf_and_unlisted_sequences(tmp_path):
    src = write_dronecrowd(tmp_path / "dc", {"00001": ANNO, "00002": ANNO, "00007": ANNO})
    (src / "testlist.txt").write_bytes(b"00002\r\n\r\n")
    (src / "trainlist.txt").write_bytes(b"1\r\n")  # also accepted without zero padding
    out = convert_dronecrowd(src, tmp_path / "out")
    meta = read_json(out / "meta.json")
    assert meta["videos"] == {"train": ["00001"], "val": [], "test": ["00002"]}
    assert meta["unlisted_sequences"] == ["00007"]
    video = videos_by_name(out, "test")["00002"]
    np.testing.assert_array_equal(video.frame_boxes(2), [[3, 3, 13, 13]])  # anno frame 1 -> image 002


def test_dronecrowd_boxes_crossing_the_edge_are_counted_and_keep_their_centre(tmp_path):
    crossing = np.array([[0, 0, 2, 3, 12, 13],  # inside the 32 x 18 frame
                         [0, 1, 25, 3, 35, 13],  # past the right edge: centre 30 -> 28.5
                         [1, 1, 26, 10, 36, 20]], np.uint16)  # past the right and bottom edges
    src = write_dronecrowd(tmp_path / "dc", {"00001": crossing, "00002": ANNO[:1], "00003": crossing[1:2]})
    out = convert_dronecrowd(src, tmp_path / "out", test_list=["00001"], train_list=["00002", "00003"],
                             val_videos=["00003"])
    meta = read_json(out / "meta.json")
    assert meta["clipped_to_frame"] == {"train": 0, "val": 1, "test": 2}
    assert meta["dropped_outside_frame"]["count"] == 0
    video = videos_by_name(out, "test")["00001"]
    np.testing.assert_array_equal(video.frame_boxes(1), [[2, 3, 12, 13], [25, 3, 32, 13]])
    np.testing.assert_array_equal(video.frame_points(1), [[7, 8], [30, 8]])
    np.testing.assert_array_equal(video.frame_boxes(2), [[26, 10, 32, 18]])
    np.testing.assert_array_equal(video.frame_points(2), [[31, 15]])
    points = [a.get("point") for a in read_json(out / "annotations/test.json")["annotations"]]
    assert points == [None, [30, 8], [31, 15]]  # written only where clipping moved the centre


def dronecrowd_error(tmp_path, anno=ANNO, edit=None) -> str:
    src = write_dronecrowd(tmp_path / "dc", {"00001": anno, "00002": ANNO})
    if edit:
        edit(src)
    with pytest.raises(DatasetError) as error:
        convert_dronecrowd(src, tmp_path / "out", test_list=["00002"])
    return str(error.value)


def test_dronecrowd_unreadable_mat_is_named(tmp_path):
    message = dronecrowd_error(tmp_path, edit=lambda src: (src / "annotations/00001.mat").write_bytes(b"garbage"))
    assert "annotations/00001.mat: unreadable as a MATLAB .mat file" in message


def test_dronecrowd_mat_without_anno_is_named(tmp_path):
    edit = lambda src: scipy.io.savemat(str(src / "annotations/00001.mat"), {"points": np.ones((2, 2))})
    assert "annotations/00001.mat: no variable 'anno' (found ['points'])" in dronecrowd_error(tmp_path, edit=edit)


def test_dronecrowd_anno_of_wrong_shape_is_named(tmp_path):
    message = dronecrowd_error(tmp_path, anno=np.ones((3, 4), np.uint16))
    assert "annotations/00001.mat: 'anno' is uint16 (3, 4), expected a numeric N x 6" in message


def test_dronecrowd_anno_frame_without_image_is_named(tmp_path):
    anno = np.array([[0, 0, 2, 3, 12, 13], [2, 0, 2, 3, 12, 13]], np.uint16)  # frame 2 -> img001003.jpg
    message = dronecrowd_error(tmp_path, anno=anno)
    assert "annotations/00001.mat: anno row 2 refers to img001003.jpg" in message


def test_dronecrowd_inverted_box_is_named(tmp_path):
    message = dronecrowd_error(tmp_path, anno=np.array([[0, 0, 12, 3, 2, 13]], np.uint16))
    assert "annotations/00001.mat: anno row 1: box has width -10" in message


def test_dronecrowd_missing_annotation_for_a_listed_sequence_is_named(tmp_path):
    src = write_dronecrowd(tmp_path / "dc", {"00001": ANNO})
    with pytest.raises(DatasetError, match=r"annotations/00011\.mat: not found, but sequence 00011 is listed"):
        convert_dronecrowd(src, tmp_path / "out")


def test_dronecrowd_frame_sizes_that_differ_are_refused(tmp_path):
    def resize_one(src):
        path = src / "train_data/images/img001002.jpg"
        path.unlink()
        constant_jpeg(path, 33, 18)
    assert "img001002.jpg: frame is 33x18" in dronecrowd_error(tmp_path, edit=resize_one)


# --------------------------------------------------------------------------- video files

def write_video(path: Path, n_frames=6, size=(64, 48), fps=12.0) -> list[np.ndarray]:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    frames = [np.full((size[1], size[0], 3), 20 * i + 40, np.uint8) for i in range(n_frames)]
    for frame in frames:
        writer.write(frame)
    writer.release()
    return frames


def test_video_file_becomes_one_unannotated_test_video(tmp_path):
    frames = write_video(tmp_path / "clip.mp4")
    out = convert("video", tmp_path / "clip.mp4", tmp_path / "out")
    meta = read_json(out / "meta.json")
    assert meta["videos"] == {"train": [], "val": [], "test": ["clip"]}
    assert meta["annotated"] is False and meta["protocols"] == [] and meta["native_format"] == "video"
    record = videos_by_name(out, "test")["clip"].record
    assert (record.n_frames, record.width, record.height, record.fps) == (6, 64, 48, 12.0)
    decoded = cv2.imread(str(UnifiedDataset(out).frame_path("clip", 4)))
    assert abs(float(decoded.mean()) - float(frames[3].mean())) < 4
    named = convert_video(tmp_path / "clip.mp4", tmp_path / "named", name="site_a", fps=5)
    assert videos_by_name(named, "test")["site_a"].record.fps == 5.0


def test_video_that_cannot_be_decoded_is_named(tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42 this is no video" * 10)
    with pytest.raises(DatasetError, match=r"broken\.mp4: OpenCV (cannot open|opened the file but decoded no)"):
        convert_video(broken, tmp_path / "out")
    with pytest.raises(DatasetError, match=r"absent\.mp4: video file not found"):
        convert_video(tmp_path / "absent.mp4", tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()


# --------------------------------------------------------------------------- synthetic native trees

TINY_SPEC = SyntheticSpec(train_width=48, train_height=40, train_frames=3, width=64, height=56, n_frames=3,
                          n_train=2, n_val=1, n_test=2, vehicle_length_px=(4.0, 10.0), seed=3)


def generated_videos(spec: SyntheticSpec, manifest: dict) -> dict:
    """{native name: the generator's video}, independently of the renderer's files."""
    by_source = {v.name: v for split in ("train", "val", "test") for v in split_videos(spec, split)}
    return {record["name"]: by_source[record["source"]]
            for records in manifest["splits"].values() for record in records}


def assert_boxes_close(found: np.ndarray, expected: np.ndarray, where: str) -> None:
    """Same number of boxes, each within a pixel of the generator's (the native files hold
    whole pixels); pairs are matched by assignment since the orders differ by format."""
    assert len(found) == len(expected), where
    if len(found):
        cost = np.abs(found[:, None, :] - expected[None, :, :]).max(axis=2)
        rows, cols = linear_sum_assignment(cost)
        assert cost[rows, cols].max() <= 1.0, where


@pytest.mark.parametrize("native_format", ["rscar", "viso", "dronecrowd"])
def test_converter_reads_the_synthetic_renderer_tree(tmp_path, native_format):
    manifest = synthesize(native_format, tmp_path / "native", TINY_SPEC)
    out = convert(native_format, native_input(native_format, tmp_path / "native"), tmp_path / "unified",
                  **manifest["converter_options"])
    meta = read_json(out / "meta.json")
    assert meta["videos"] == {split: sorted(r["name"] for r in records)
                              for split, records in manifest["splits"].items()}
    assert meta["dropped_outside_frame"]["count"] == 0
    generated = generated_videos(TINY_SPEC, manifest)
    for split in ("train", "val", "test"):
        assert meta["counts"][split]["boxes"] == manifest["totals"][split]["labelled_boxes"]
        for name, video in videos_by_name(out, split).items():
            source = generated[name]
            record = video.record
            assert (record.n_frames, record.width, record.height) == (source.n_frames, source.width, source.height)
            for frame in range(1, record.n_frames + 1):
                assert_boxes_close(video.frame_boxes(frame), source.boxes[frame][0], f"{name} frame {frame}")


def test_video_converter_reads_the_synthetic_renderer_file(tmp_path):
    manifest = synthesize("video", tmp_path / "native", TINY_SPEC)
    out = convert("video", native_input("video", tmp_path / "native"), tmp_path / "unified")
    source = split_videos(TINY_SPEC, "test")[0]
    (video,) = UnifiedDataset(out).videos("test")
    record = video.record
    assert (record.n_frames, record.width, record.height, record.fps) == (
        source.n_frames, source.width, source.height, manifest["splits"]["test"][0]["fps"])
    decoded = cv2.imread(str(UnifiedDataset(out).frame_path(record.name, 2))).astype(np.float32)
    assert np.abs(decoded - source.frames[1]).mean() < 8  # mp4v is lossy; the picture is the generator's


# --------------------------------------------------------------------------- dispatch

def test_convert_dispatch_names_formats_and_options(tmp_path):
    assert CONVERTERS == ("rscar", "viso", "dronecrowd", "video")
    with pytest.raises(ValueError, match="unknown native format 'mot'; expected one of rscar, viso"):
        convert("mot", tmp_path, tmp_path / "out")
    with pytest.raises(ValueError, match=r"viso: unknown option\(s\) test_list; accepted: test_videos"):
        convert("viso", tmp_path, tmp_path / "out", test_list=["002"])


def test_writer_refuses_track_ids_that_do_not_match_the_boxes(tmp_path):
    frame = np.zeros((8, 8, 3), np.uint8)
    writer = UnifiedWriter(tmp_path / "out")
    with pytest.raises(DatasetError, match=r"native\.txt: frame 1 of video 'v': 2 boxes but 1 track ids"):
        writer.add_video("v", "test", [frame], {1: np.array([[0, 0, 2, 2], [1, 1, 3, 3]])}, {1: np.array([7])},
                         source="native.txt")
