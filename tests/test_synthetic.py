"""The synthetic generator (micml.data.synthetic) and its native-format writers (synthetic.native, .native_trees)."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from xml.dom import minidom

import cv2
import numpy as np
import pytest
import scipy.io

from micml.data.synthetic import (DIFFICULTY_PRESETS, MIN_VISIBLE_FRACTION, SyntheticSpec, generate_video,
                                  spec_from_settings, split_videos)
from micml.data.synthetic import native, native_trees
from micml.data.synthetic.geometry import LUMA
from micml.data.synthetic.scenery import build_layout
from micml.data.synthetic.videos import SCENE_MARGIN

# Small enough for the whole file to run in seconds, large enough for several roads and vehicles.
TINY = dict(train_width=80, train_height=64, train_frames=8, width=96, height=96, n_frames=8,
            n_train=2, n_val=1, n_test=2, vehicle_length_px=(3.0, 10.0), moving_per_video=(6, 10),
            parked_per_video=(3, 6), roads_per_video=(1, 2))


def tiny_spec(**changes) -> SyntheticSpec:
    return SyntheticSpec.from_config({**TINY, **changes})


def assert_same_video(a, b) -> None:
    np.testing.assert_array_equal(a.frames, b.frames)
    assert a.boxes.keys() == b.boxes.keys()
    for frame in a.boxes:
        np.testing.assert_array_equal(a.boxes[frame][0], b.boxes[frame][0])
        np.testing.assert_array_equal(a.boxes[frame][1], b.boxes[frame][1])


def labelled_rows(video):
    """(frame, track id, clipped box, unclipped box) of every label."""
    for frame, (boxes, ids) in video.boxes.items():
        for box, track, full in zip(boxes, ids, video.unclipped_boxes[frame]):
            yield frame, int(track), box, full


# ---------------------------------------------------------------------------------------------
# The generator
# ---------------------------------------------------------------------------------------------

def test_same_seed_gives_the_same_video_and_another_seed_a_different_one():
    spec = tiny_spec(seed=7)
    first = generate_video(spec, "test", 1)
    assert_same_video(first, generate_video(spec, "test", 1))
    other = generate_video(tiny_spec(seed=8), "test", 1)
    assert not np.array_equal(first.frames, other.frames)


def test_a_video_does_not_depend_on_the_other_videos_of_the_dataset():
    few, many = tiny_spec(n_train=2, n_test=1), tiny_spec(n_train=5, n_test=4)
    assert_same_video(generate_video(few, "train", 1), generate_video(many, "train", 1))
    assert_same_video(generate_video(few, "test", 0), split_videos(many, "test")[0])
    # Same geometry, same index, another split: another video.
    assert not np.array_equal(generate_video(few, "train", 0).frames, generate_video(few, "val", 0).frames)


def test_video_geometry_and_frame_keys_follow_the_spec():
    spec = tiny_spec()
    train, test = generate_video(spec, "train", 0), generate_video(spec, "test", 0)
    assert train.frames.shape == (8, 64, 80, 3) and train.frames.dtype == np.uint8
    assert test.frames.shape == (8, 96, 96, 3)
    assert sorted(test.boxes) == list(range(1, 9)) == sorted(test.unclipped_boxes)
    assert test.fps == spec.fps and test.name == "test_000"
    with pytest.raises(ValueError, match="no index 2"):
        generate_video(spec, "test", 2)


def test_boxes_lie_in_the_frame_and_match_the_vehicle_sizes():
    spec = tiny_spec()
    low, high = spec.vehicle_length_px
    rows = 0
    for split in ("train", "test"):
        for video in split_videos(spec, split):
            for _, track, box, full in labelled_rows(video):
                rows += 1
                x1, y1, x2, y2 = box
                assert 0 <= x1 < x2 <= video.width and 0 <= y1 < y2 <= video.height
                vehicle = video.tracks[track]
                assert low <= vehicle.length <= high
                assert vehicle.width <= vehicle.length * spec.vehicle_width_ratio[1] + 1e-9
                # A rotated body's extent lies between L/sqrt(2) and its diagonal.
                extent = max(full[2] - full[0], full[3] - full[1])
                diagonal = math.hypot(vehicle.length, vehicle.width)
                assert vehicle.length / math.sqrt(2) - 1e-6 <= extent <= diagonal + 1e-6
    assert rows > 50


def test_parked_vehicles_are_drawn_but_never_labelled():
    empty = generate_video(tiny_spec(moving_per_video=(0, 0), parked_per_video=(0, 0)), "test", 0)
    parked = generate_video(tiny_spec(moving_per_video=(0, 0), parked_per_video=(6, 6)), "test", 0)
    assert all(len(ids) == 0 for _, ids in parked.boxes.values())
    assert len(parked.parked_boxes) > 0 and len(empty.parked_boxes) == 0
    changed = np.any(parked.frames != empty.frames, axis=(0, 3))
    assert changed.any()
    # Pixels change only around the parked vehicles (shadows and jitter reach a few px).
    near_parked = np.zeros_like(changed)
    for x1, y1, x2, y2 in parked.parked_boxes:
        near_parked[max(int(y1) - 4, 0):int(y2) + 5, max(int(x1) - 4, 0):int(x2) + 5] = True
    assert not (changed & ~near_parked).any()


def test_a_scene_without_movers_shake_or_noise_is_still():
    video = generate_video(tiny_spec(moving_per_video=(0, 0), parked_per_video=(5, 5), jitter_px=0.0,
                                     noise_sigma=0.0), "test", 0)
    assert len(video.parked_boxes) > 0
    assert (video.frames == video.frames[0]).all()


def test_moving_vehicles_advance_by_their_speed_every_frame():
    spec = tiny_spec(jitter_px=0.0, speed_px_per_frame=(0.3, 2.0))
    checked = 0
    for video in split_videos(spec, "test"):
        centres = {}
        for frame, track, _, full in labelled_rows(video):
            centres[track, frame] = (full[:2] + full[2:]) / 2
        for (track, frame), centre in centres.items():
            if (track, frame + 1) not in centres:
                continue
            speed = video.tracks[track].speed
            assert spec.speed_px_per_frame[0] <= speed <= spec.speed_px_per_frame[1]
            step = np.linalg.norm(centres[track, frame + 1] - centre)
            # Along a straight lane the step equals the speed; across a bend the chord is a bit shorter.
            assert 0.9 * speed - 1e-6 <= step <= speed + 1e-6, (track, frame, step, speed)
            checked += 1
    assert checked > 20


def test_camera_shake_moves_the_whole_frame_and_its_labels():
    steady = generate_video(tiny_spec(jitter_px=0.0, noise_sigma=0.0, scenery="rich"), "test", 0)
    shaken = generate_video(tiny_spec(jitter_px=1.5, noise_sigma=0.0, scenery="rich"), "test", 0)
    offsets = shaken.camera_offsets
    assert np.all(np.abs(offsets) <= 1.5) and np.ptp(offsets, axis=0).min() > 0.5
    assert not steady.camera_offsets.any()
    for frame in range(1, 9):
        dx, dy = offsets[frame - 1]
        # Labels: the same vehicles, shifted by minus the camera offset.
        same = np.intersect1d(steady.boxes[frame][1], shaken.boxes[frame][1])
        for track in same:
            a = steady.unclipped_boxes[frame][list(steady.boxes[frame][1]).index(track)]
            b = shaken.unclipped_boxes[frame][list(shaken.boxes[frame][1]).index(track)]
            np.testing.assert_allclose(b, a - [dx, dy, dx, dy], atol=1e-9)
        # Pixels: the whole steady frame resampled at the offset gives the shaken frame.
        warp = np.float64([[1, 0, dx], [0, 1, dy]])
        expected = cv2.warpAffine(steady.frames[frame - 1].astype(np.float32), warp, (96, 96),
                                  flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
        inner = (slice(3, -3), slice(3, -3))
        error = np.abs(expected[inner] - shaken.frames[frame - 1][inner]).mean()
        unshifted = np.abs(steady.frames[frame - 1][inner].astype(np.float32) - shaken.frames[frame - 1][inner]).mean()
        assert error < 2.0 and error < unshifted / 3


def test_vehicles_under_an_occluder_are_dropped_from_the_labels():
    hidden = 0
    for seed in range(6):
        clear = generate_video(tiny_spec(seed=seed, occlusion_probability=0.0, jitter_px=0.0), "test", 0)
        covered = generate_video(tiny_spec(seed=seed, occlusion_probability=1.0, jitter_px=0.0), "test", 0)
        for frame in clear.boxes:
            kept_clear, kept_covered = set(clear.boxes[frame][1]), set(covered.boxes[frame][1])
            assert kept_covered <= kept_clear  # occluders only ever remove labels
            hidden += len(kept_clear - kept_covered)
        if hidden:
            break
    assert hidden > 0
    assert 0 < MIN_VISIBLE_FRACTION < 1


# ---------------------------------------------------------------------------------------------
# The specification
# ---------------------------------------------------------------------------------------------

def test_unknown_keys_and_wrong_types_name_the_key():
    with pytest.raises(ValueError, match="'widht'"):
        SyntheticSpec.from_config({"widht": 100})
    with pytest.raises(TypeError, match="width"):
        SyntheticSpec.from_config({"width": "big"})
    with pytest.raises(TypeError, match="width"):
        SyntheticSpec.from_config({"width": 100.5})
    with pytest.raises(TypeError, match="speed_px_per_frame"):
        SyntheticSpec.from_config({"speed_px_per_frame": "fast"})
    with pytest.raises(ValueError, match="width"):  # also a ValueError, which `micml` reports cleanly
        spec_from_settings({"overrides": {"width": [256]}})
    with pytest.raises(TypeError, match="dense_traffic"):
        SyntheticSpec.from_config({"dense_traffic": 1})
    with pytest.raises(ValueError, match="contrast"):
        SyntheticSpec.from_config({"contrast": [0.5, 0.1]})
    with pytest.raises(ValueError, match="occlusion_probability"):
        SyntheticSpec(occlusion_probability=1.5)
    with pytest.raises(ValueError, match="vehicle_length_px"):
        SyntheticSpec(width=20, height=20)
    with pytest.raises(ValueError, match="scenery"):
        SyntheticSpec(scenery="urban")
    with pytest.raises(TypeError, match="scenery"):
        SyntheticSpec.from_config({"scenery": 1})
    with pytest.raises(ValueError, match="preset 'medium'"):
        spec_from_settings({"preset": "medium"})
    with pytest.raises(ValueError, match="'sead'"):
        spec_from_settings({"sead": 1})


def test_presets_settings_and_round_trip():
    assert SyntheticSpec() == SyntheticSpec.from_config(DIFFICULTY_PRESETS["default"])
    assert set(DIFFICULTY_PRESETS) == {"easy", "default", "moderate", "hard"}
    hard = spec_from_settings({"preset": "hard", "seed": 3, "overrides": {"n_frames": 12, "contrast": [0.1, 0.2]}})
    assert hard.seed == 3 and hard.n_frames == 12 and hard.contrast == (0.1, 0.2) and hard.dense_traffic
    assert SyntheticSpec.from_config(json.loads(json.dumps(hard.to_dict()))) == hard
    assert {f.name for f in dataclasses.fields(SyntheticSpec)} >= set(DIFFICULTY_PRESETS["easy"])


def test_plain_scenery_is_ground_and_roads_only():
    def layout(scenery, index):
        spec = tiny_spec(scenery=scenery, width=160, height=160)
        return build_layout(np.random.default_rng(index), spec, spec.width, spec.height, spec.n_frames,
                            margin=SCENE_MARGIN)

    rich = [layout("rich", index) for index in range(6)]
    plain = [layout("plain", index) for index in range(6)]
    assert any(scene.obstacle_mask.any() for scene in rich)
    assert all(scene.roads for scene in plain)
    assert not any(scene.obstacle_mask.any() or scene.parking_slots for scene in plain)
    # Without lane markings a road's surface is smooth: few pixels stand out of their
    # neighbourhood the way the 1-px bright dashes do on a rich road (crossings aside).
    def road_detail(scene):
        luma = scene.canvas @ LUMA
        inner = cv2.erode(scene.lane_mask, np.ones((5, 5), np.uint8)) > 0
        return np.percentile(np.abs(luma - cv2.blur(luma, (3, 3)))[inner], 99)
    assert max(map(road_detail, plain)) < 0.04 < min(map(road_detail, rich))


def test_dense_traffic_fills_the_lanes():
    sparse = generate_video(tiny_spec(moving_per_video=(2, 2)), "test", 0)
    dense = generate_video(tiny_spec(moving_per_video=(2, 2), dense_traffic=True), "test", 0)
    assert len(sparse.tracks) <= 2 < len(dense.tracks)


# ---------------------------------------------------------------------------------------------
# Native formats
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def videos():
    spec = tiny_spec()
    return spec, {split: list(split_videos(spec, split)) for split in ("train", "val", "test")}


def test_rscar_tree(tmp_path, videos):
    spec, by_split = videos
    written = native_trees.write_rscar_tree(tmp_path / "RsCarData", by_split)
    root = tmp_path / "RsCarData"
    assert written["converter_options"]["val_videos"] == ["007"]
    train = json.loads((root / "annotations/instances_train2017.json").read_text())
    test = json.loads((root / "annotations/instances_test2017_1024.json").read_text())
    assert train["categories"] == test["categories"] == [{"id": 1, "name": "car", "supercategory": "car"}]
    train_folders = {re.fullmatch(r"images/train/(\d{3})/img1/\d{6}\.jpg", i["file_name"]).group(1)
                     for i in train["images"]}
    assert train_folders == {"001", "004", "007"}  # val videos sit among the train videos
    assert len(train["images"]) == 3 * 8 and len(test["images"]) == 2 * 8
    for doc in (train, test):
        for image in doc["images"]:
            assert set(image) == {"id", "file_name", "width", "height"} and (root / image["file_name"]).is_file()
        for ann in doc["annotations"]:
            assert set(ann) == {"id", "image_id", "category_id", "bbox", "area", "iscrowd", "track_id"}
            assert ann["category_id"] == 1 and ann["iscrowd"] == 0
            assert all(isinstance(v, int) for v in ann["bbox"]) and ann["bbox"][2] >= 1 and ann["bbox"][3] >= 1
            assert ann["area"] == ann["bbox"][2] * ann["bbox"][3]
    assert len(train["annotations"]) == sum(v.n_labelled_boxes() for s in ("train", "val") for v in by_split[s])
    # The later release's track ids ride along (the tracking ground truth); DSFNet's readers ignore them.
    test_tracks = {int(t) for v in by_split["test"] for _, ids in v.boxes.values() for t in ids}
    assert {ann["track_id"] for ann in test["annotations"]} == test_tracks
    # Test frames: the DSFNet evaluator's folders, and a VOC xml per frame with integer corners.
    first = {i["id"]: i for i in test["images"] if i["file_name"] == "images/test1024/002/img1/000001.jpg"}
    assert first and cv2.imread(str(root / "images/test1024/002/img1/000001.jpg")).shape == (96, 96, 3)
    xml_files = sorted((root / "images/test1024").glob("*/xml_det/*.xml"))
    assert [p.parent.parent.name for p in xml_files[::8]] == ["002", "003"] and len(xml_files) == 16
    json_boxes = sorted(tuple(a["bbox"]) for a in test["annotations"] if a["image_id"] in first)
    xml_boxes = []
    for bndbox in minidom.parse(str(root / "images/test1024/002/xml_det/000001.xml")).getElementsByTagName("bndbox"):
        x1, y1, x2, y2 = (int(bndbox.getElementsByTagName(tag)[0].firstChild.data)
                          for tag in ("xmin", "ymin", "xmax", "ymax"))
        xml_boxes.append((x1, y1, x2 - x1, y2 - y1))
    assert sorted(xml_boxes) == json_boxes and len(json_boxes) == by_split["test"][0].boxes[1][1].size


def test_viso_tree(tmp_path, videos):
    spec, by_split = videos
    written = native_trees.write_viso_tree(tmp_path / "VISO", by_split)
    assert written["converter_options"] == {"test_videos": ["002", "003"], "val_videos": ["007"], "fps": 10.0}
    orders, past_border = [], False
    for name, video in (("001", by_split["train"][0]), ("004", by_split["train"][1]), ("007", by_split["val"][0]),
                        ("002", by_split["test"][0]), ("003", by_split["test"][1])):
        folder = tmp_path / "VISO/mot/car" / name
        assert sorted(p.name for p in (folder / "img").iterdir()) == [f"{f:06d}.jpg" for f in range(1, 9)]
        raw = (folder / "gt/gt.txt").read_bytes()
        assert b"\r" not in raw and raw.endswith(b"\n")
        rows = np.array([[int(v) for v in line.split(",")] for line in raw.decode().splitlines()])
        assert rows.shape == (video.n_labelled_boxes(), 9) and (rows[:, 6:] == 1).all()
        assert (rows[:, 4:6] >= 1).all()
        orders.append("frame" if list(rows[:, 0]) == sorted(rows[:, 0]) else "track")
        past_border |= bool((rows[:, 2] < 0).any() or (rows[:, 2] + rows[:, 4] > video.width).any()
                            or (rows[:, 3] < 0).any() or (rows[:, 3] + rows[:, 5] > video.height).any())
    assert set(orders) == {"frame", "track"}
    assert past_border  # boxes of vehicles entering or leaving are not clipped, as in the real files


def test_dronecrowd_tree(tmp_path, videos):
    spec, by_split = videos
    written = native_trees.write_dronecrowd_tree(tmp_path / "DroneCrowd", by_split)
    root = tmp_path / "DroneCrowd"
    assert written["converter_options"]["val_videos"] == ["00003"]
    assert (root / "testlist.txt").read_bytes() == b"00011\r\n00015\r\n"
    assert (root / "trainlist.txt").read_bytes() == b"00001\r\n00002\r\n00003\r\n"
    assert sorted(p.name for p in (root / "val_data/images").iterdir()) == [f"img003{f:03d}.jpg" for f in range(1, 9)]
    assert len(list((root / "train_data/images").iterdir())) == 16
    assert len(list((root / "test_data/images").iterdir())) == 16
    video = by_split["test"][0]
    content = scipy.io.loadmat(str(root / "annotations/00011.mat"))
    anno = content["anno"]
    assert anno.dtype == np.uint16 and anno.shape == (video.n_labelled_boxes(), 6)
    assert anno[:, 0].min() == 0 and anno[:, 0].max() <= 7  # frames 0-based
    assert (np.lexsort((anno[:, 0], anno[:, 1])) == np.arange(len(anno))).all()  # by track, then frame
    assert set(anno[:, 1]) == set(range(int(content["countNum"][0, 0])))
    assert content["countNum"].shape == (1, 1) and list(content["label"]) == ["human"]
    assert (anno[:, 4] > anno[:, 2]).all() and (anno[:, 5] > anno[:, 3]).all()


def test_video_file_reads_back(tmp_path, videos):
    spec, by_split = videos
    video = by_split["test"][0]
    path = native.write_video_file(tmp_path / "clip.mp4", video)
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    assert len(frames) == video.n_frames and frames[0].shape == (96, 96, 3)
    assert np.abs(frames[0].astype(int) - video.frames[0]).mean() < 12  # lossy, but the same picture
    with pytest.raises(FileExistsError):
        native.write_video_file(path, video)


def test_synthesize_writes_the_manifest_and_refuses_to_overwrite(tmp_path):
    spec = tiny_spec(n_train=1, n_val=1, n_test=1)
    root = tmp_path / "viso"
    manifest = native.synthesize("viso", root, spec)
    assert json.loads((root / native.MANIFEST_NAME).read_text()) == manifest
    assert manifest["converter_options"] == {"test_videos": ["002"], "val_videos": ["004"], "fps": 10.0}
    assert manifest["totals"]["test"]["frames"] == 8 and SyntheticSpec.from_config(manifest["spec"]) == spec
    assert manifest["labelled_boxes"] == sum(t["labelled_boxes"] for t in manifest["totals"].values())
    with pytest.raises(FileExistsError, match="overwrite"):
        native.synthesize("viso", root, spec)
    (root / "stale.txt").write_text("from an older run")
    native.synthesize("viso", root, spec, overwrite=True)
    assert not (root / "stale.txt").exists() and (root / "mot/car/002/gt/gt.txt").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["viso"]  # no .partial or .old left behind


def test_synthesize_video_and_a_failed_write_leaves_nothing(tmp_path):
    spec = tiny_spec(n_train=0, n_val=0, n_test=1)
    manifest = native.synthesize("video", tmp_path / "clip", spec)
    assert native.native_input("video", tmp_path / "clip") == tmp_path / "clip" / native.VIDEO_FILE_NAME
    assert manifest["annotations_written"] is False and (tmp_path / "clip" / "video.mp4").stat().st_size > 0
    with pytest.raises(ValueError, match="unknown split"):
        native_trees.write_rscar_tree(tmp_path / "broken", {"training": []})
    with pytest.raises(ValueError, match="n_test = 0"):
        native.synthesize("video", tmp_path / "none", tiny_spec(n_test=0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip"]
    with pytest.raises(ValueError, match="native format"):
        native.synthesize("mot17", tmp_path / "x", spec)
