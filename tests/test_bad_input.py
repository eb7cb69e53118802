"""Bad input, end to end through the `micml` command: each stops with one line that names the
file (or the option) and says what to do, and leaves no output behind. Hypothesis throws
random valid and invalid COCO json annotations, DroneCrowd .mat annotations and evaluator
inputs at the code: never a crash without a message, never a box silently lost.
(gt.txt parsing has its own hypothesis test in test_converters.py.)"""

from __future__ import annotations

import argparse
import ast
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from micml.cli import main as micml
from micml.data.converters import convert_dronecrowd, convert_rscar
from micml.data.stage import convert_prepared
from micml.data.unified import DatasetError, UnifiedDataset
from micml.checkpoint import FORMAT
from micml.evaluation import EvaluationInputError, dsfnet_f1
from micml.models import build as build_model

REPO = Path(__file__).resolve().parent.parent
# No shrinking: inputs are small, and a failure is then reported at once instead of after
# minutes of minimising it.
QUICK_PHASES = (Phase.explicit, Phase.reuse, Phase.generate)
TINY = yaml.safe_load((REPO / ".test" / "config.yaml").read_text())["synthetic"]["overrides"]
SIDE = TINY["width"]  # every synthetic frame is SIDE x SIDE (train and test sizes are equal)
FORMATS = ("rscar", "viso", "dronecrowd", "video")


def set_options(overrides: dict) -> list[str]:
    return [arg for key, value in overrides.items() for arg in ("--set", f"{key}={value}")]


def option_args(options: dict) -> list[str]:
    return [arg for key, value in options.items() for arg in ("-o", f"{key}={json.dumps(value)}")]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> dict[str, tuple[Path, dict]]:
    """{format: (native tree, the converter options its manifest names)}, rendered once."""
    trees = {}
    for native_format in FORMATS:
        root = tmp_path_factory.mktemp("pristine") / native_format
        assert micml(["synth", native_format, str(root), *set_options(TINY)]) == 0
        trees[native_format] = (root, json.loads((root / "synthetic_manifest.json").read_text())["converter_options"])
    return trees


@pytest.fixture
def tree(pristine, tmp_path):
    """A fresh copy of a pristine tree to damage: tree(format) -> (root, options)."""
    def copy(native_format: str) -> tuple[Path, list[str]]:
        root, options = pristine[native_format]
        return Path(shutil.copytree(root, tmp_path / native_format)), option_args(options)
    return copy


def one_line_error(capsys, *args) -> str:
    """Run `micml ARGS`: it must fail with a one-line error, the last line on stderr (warnings
    may come before it) and no traceback; return that line."""
    assert micml([str(arg) for arg in args]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in lines if line.startswith("micml ")]
    assert errors == lines[-1:] and "Traceback" not in "\n".join(lines), lines
    return lines[-1]


def convert_error(capsys, native_format: str, src: Path, options: list[str]) -> str:
    dst = src.parent / "unified"
    message = one_line_error(capsys, "convert", native_format, src, dst, *options)
    assert not dst.exists() and not dst.with_name("unified.partial").exists()
    return message


# --------------------------------------------------------------------------- damaged native files


def truncate(path: Path) -> Path:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def not_an_image(path: Path) -> Path:
    path.write_text("<html>404 Not Found</html>")
    return path


FRAMES = {
    "rscar": "images/train/004/img1/000005.jpg",
    "viso": "mot/car/003/img/000004.jpg",
    "dronecrowd": "test_data/images/img011003.jpg",
}


@pytest.mark.parametrize("damage", [truncate, not_an_image], ids=["truncated", "not-an-image"])
@pytest.mark.parametrize("native_format", sorted(FRAMES))
def test_damaged_frame_is_named(capsys, tree, native_format, damage):
    """A JPEG cut in half decodes in OpenCV without an error (grey rows): it must not pass."""
    src, options = tree(native_format)
    frame = damage(src / FRAMES[native_format])
    message = convert_error(capsys, native_format, src, options)
    assert f"{frame}: frame cannot be decoded as an image (truncated or not an image)" in message
    assert "re-extract it from the original archive" in message


def viso_gt_edit(src: Path, line: int, column: int, value: str) -> Path:
    """Set one field of gt.txt of test video 002 (line 1-based; columns frame,track,x,y,w,h,...)."""
    gt = src / "mot/car/002/gt/gt.txt"
    lines = gt.read_text().splitlines()
    fields = lines[line - 1].split(",")
    fields[column] = value
    lines[line - 1] = ",".join(fields)
    gt.write_text("\n".join(lines) + "\n")
    return gt


def rscar_bbox_edit(src: Path, annotation: int, index: int, value: float) -> Path:
    path = src / "annotations/instances_test2017_1024.json"
    document = json.loads(path.read_text())
    document["annotations"][annotation - 1]["bbox"][index] = value
    path.write_text(json.dumps(document))  # NaN is written as the (non-standard) NaN literal
    return path


def dronecrowd_anno_edit(src: Path, row: int, column: int, value: float) -> Path:
    path = src / "annotations/00011.mat"
    anno = scipy.io.loadmat(str(path))["anno"].astype(np.float64)
    anno[row - 1, column] = value
    scipy.io.savemat(str(path), {"anno": anno})
    return path


def x1_of_row(src: Path, row: int) -> float:
    return float(scipy.io.loadmat(str(src / "annotations/00011.mat"))["anno"][row - 1, 2])


BOX_CASES = {
    "viso zero width": ("viso", lambda src: (viso_gt_edit(src, 2, 4, "0"), "line 2: box has width 0")),
    "viso negative height": ("viso", lambda src: (viso_gt_edit(src, 3, 5, "-4"), "line 3: box has width")),
    "viso NaN": ("viso", lambda src: (viso_gt_edit(src, 4, 2, "nan"), "line 4 has a NaN or infinite value")),
    "rscar negative width": ("rscar", lambda src: (rscar_bbox_edit(src, 2, 2, -3), "annotation id 2: box has width -3")),
    "rscar zero height": ("rscar", lambda src: (rscar_bbox_edit(src, 3, 3, 0), "annotation id 3: box has width")),
    "rscar NaN": ("rscar", lambda src: (rscar_bbox_edit(src, 1, 1, float("nan")),
                                        "annotation id 1: box [")),
    "dronecrowd zero width": ("dronecrowd", lambda src: (dronecrowd_anno_edit(src, 2, 4, x1_of_row(src, 2)),
                                                         "anno row 2: box has width 0")),
    "dronecrowd inverted": ("dronecrowd", lambda src: (dronecrowd_anno_edit(src, 3, 4, x1_of_row(src, 3) - 5),
                                                       "anno row 3: box has width -5")),
    "dronecrowd NaN": ("dronecrowd", lambda src: (dronecrowd_anno_edit(src, 1, 3, float("nan")),
                                                  "anno row 1: box [")),
}


@pytest.mark.parametrize("case", sorted(BOX_CASES))
def test_box_without_size_or_with_nan_is_named_with_its_row(capsys, tree, case):
    native_format, damage = BOX_CASES[case]
    src, options = tree(native_format)
    path, fragment = damage(src)
    message = convert_error(capsys, native_format, src, options)
    assert message.startswith(f"micml convert: {path}: ") and fragment in message
    assert "fix" in message


def missing_middle_frame(src: Path) -> tuple[Path, str]:
    (src / "mot/car/002/img/000003.jpg").unlink()
    return src / "mot/car/002/img", "frame 3 is missing"


def viso_frame_beyond_video(src: Path) -> tuple[Path, str]:
    return viso_gt_edit(src, 1, 0, str(TINY["n_frames"] + 1)), "but video '002' has frames 1..6"


def rscar_image_without_file(src: Path) -> tuple[Path, str]:
    path = src / "annotations/instances_test2017_1024.json"
    document = json.loads(path.read_text())
    frame = TINY["n_frames"] + 1
    document["images"].append({"id": 999, "file_name": f"images/test1024/002/img1/{frame:06d}.jpg",
                               "width": SIDE, "height": SIDE})
    path.write_text(json.dumps(document))
    return src / f"images/test1024/002/img1/{frame:06d}.jpg", "frame is missing"


def dronecrowd_frame_beyond_images(src: Path) -> tuple[Path, str]:
    path = dronecrowd_anno_edit(src, 1, 0, TINY["n_frames"])  # 0-based: image n_frames + 1
    return path, f"refers to img011{TINY['n_frames'] + 1:03d}.jpg, but video '00011' has frames 1..6"


@pytest.mark.parametrize("native_format, damage", [
    ("viso", missing_middle_frame), ("viso", viso_frame_beyond_video), ("rscar", rscar_image_without_file),
    ("dronecrowd", dronecrowd_frame_beyond_images)], ids=lambda value: getattr(value, "__name__", value))
def test_frame_counts_that_disagree_are_named(capsys, tree, native_format, damage):
    src, options = tree(native_format)
    path, fragment = damage(src)
    message = convert_error(capsys, native_format, src, options)
    assert message.startswith(f"micml convert: {path}") and fragment in message


@pytest.mark.parametrize("damage", ["cut", "garbage"])
def test_video_that_cannot_be_decoded_is_named(capsys, tree, damage):
    src, _ = tree("video")
    video = src / "video.mp4"
    if damage == "cut":
        truncate(video)  # its index (moov) sits at the end, as in most files a camera writes
    else:
        video.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(200))
    message = convert_error(capsys, "video", video, [])
    assert f"{video}: OpenCV cannot open this file as a video" in message and "re-encode it" in message


# --------------------------------------------------------------------------- config values of the wrong type


def test_training_config_of_the_wrong_type_names_the_file_and_key(capsys, tmp_path):
    config = yaml.safe_load((REPO / ".test" / "config.yaml").read_text())
    config["training"]["epochs"] = "five"
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(config))
    message = one_line_error(capsys, "train", tmp_path / "data", tmp_path / "run", "--model", "dsfnet", "--config", path)
    assert f"{path}: invalid value at 'training.epochs': 'five' is not of type 'integer'" in message
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("setting, expected", [
    ("augment=nothing", "augment: expected a mapping like {hflip: 0.5, vflip: 0.5, photometric: false}, true or "
                        "false; got 'nothing'"),
    ('augment={"hflip": 2}', "augment.hflip: expected a probability in [0, 1], got 2"),
    ('augment={"photometric": "no"}', "augment.photometric: expected true or false, got 'no'")])
def test_augmentation_setting_of_the_wrong_kind_is_named(capsys, tmp_path, setting, expected):
    message = one_line_error(capsys, "train", tmp_path / "data", tmp_path / "run", "--model", "dsfnet",
                             "--config", REPO / ".test" / "config.yaml", "--set", setting)
    assert expected in message
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("option, expected", [
    ('val_videos="007"', "val_videos='007' has the wrong type: expected a list of strings"),
    ("val_videos=[7]", "val_videos=[7] has the wrong type"),
    ('fps="fast"', "fps='fast' has the wrong type: expected a number or null"),
    ("fps=-10", "fps=-10: expected a positive frame rate"),
    ("test_videos=2", "test_videos=2 has the wrong type")])
def test_converter_option_of_the_wrong_type_is_named(capsys, pristine, tmp_path, option, expected):
    src, _ = pristine["viso"]
    message = one_line_error(capsys, "convert", "viso", src, tmp_path / "unified", "-o", option)
    assert message.startswith(f"micml convert: {src}: viso converter option") and expected in message
    assert not (tmp_path / "unified").exists()


def test_workflow_converter_option_of_the_wrong_type_names_the_config_key(pristine, tmp_path):
    src, _ = pristine["viso"]
    manifest = tmp_path / "broken.manifest.json"
    manifest.write_text(json.dumps({"dataset": "broken", "format": "viso", "tree": str(src)}))
    with pytest.raises(DatasetError, match=r"^config datasets\.broken\.convert: viso converter option "
                                           r"test_videos='002' has the wrong type") as error:
        convert_prepared(manifest, tmp_path / "unified", {"format": "viso", "convert": {"test_videos": "002"}})
    assert len(str(error.value).splitlines()) == 1 and not (tmp_path / "unified").exists()


def test_synthetic_setting_of_the_wrong_type_is_named(capsys, tmp_path):
    message = one_line_error(capsys, "synth", "viso", tmp_path / "viso", "--set", "n_frames=many")
    assert "SyntheticSpec.n_frames: expected an integer, got 'many'" in message
    assert not (tmp_path / "viso").exists()


# --------------------------------------------------------------------------- checkpoints


@pytest.fixture(scope="module")
def dataset_and_checkpoint(pristine, tmp_path_factory) -> tuple[Path, Path]:
    """A converted tiny dataset and a (untrained) centernet checkpoint in the engine's format."""
    root = tmp_path_factory.mktemp("checkpoint")
    src, options = pristine["rscar"]
    assert micml(["convert", "rscar", str(src), str(root / "data"), *option_args(options)]) == 0
    torch.manual_seed(0)
    checkpoint = root / "centernet.pt"
    torch.save({"format": FORMAT, "model": {"name": "centernet", "options": {}},
                "state_dict": build_model("centernet").state_dict()}, checkpoint)
    return root / "data", checkpoint


def test_checkpoint_of_another_variant_is_refused(capsys, dataset_and_checkpoint, tmp_path):
    data, checkpoint = dataset_and_checkpoint
    message = one_line_error(capsys, "test", checkpoint, data, tmp_path / "out", "--variant", "micml", "--device", "cpu")
    assert f"{checkpoint}: checkpoint holds a 'centernet' model but 'micml' was asked for" in message
    assert not (tmp_path / "out").exists()


class NotAWeight(argparse.Namespace):
    """Any object a weights-only load must refuse to rebuild."""


@pytest.mark.parametrize("damage, expected", [
    ("truncated", "cannot be read as a checkpoint"), ("empty", "cannot be read as a checkpoint"),
    ("pickled object", "holds pickled Python objects besides tensors")])
def test_corrupt_or_foreign_checkpoint_is_refused(capsys, dataset_and_checkpoint, tmp_path, damage, expected):
    data, good = dataset_and_checkpoint
    checkpoint = tmp_path / "model.pt"
    if damage == "truncated":
        checkpoint.write_bytes(good.read_bytes()[:4096])
    elif damage == "empty":
        checkpoint.write_bytes(b"")
    else:
        torch.save({"state_dict": {}, "model": NotAWeight(name="centernet")}, checkpoint)
    message = one_line_error(capsys, "test", checkpoint, data, tmp_path / "out", "--device", "cpu")
    assert message.startswith(f"micml test: {checkpoint}: ") and expected in message
    assert "weights_only=False" not in message  # never the advice to run a file's pickled code


def torch_load_calls(path: Path) -> list:
    tree = ast.parse(path.read_text())
    return [node for node in ast.walk(tree) if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr == "load" and isinstance(node.func.value, ast.Name) and node.func.value.id == "torch"]


def test_every_checkpoint_read_refuses_pickled_code():
    """torch.load without weights_only=True would run whatever a downloaded .pt file pickles."""
    calls = {path: torch_load_calls(path) for path in sorted((REPO / "micml").rglob("*.py"))}
    assert sum(map(len, calls.values())) >= 2  # micml.checkpoint reads checkpoints, models pretrained weights
    for path, found in calls.items():
        for call in found:
            safe = [k for k in call.keywords if k.arg == "weights_only" and getattr(k.value, "value", None) is True]
            assert safe, f"{path.relative_to(REPO)}:{call.lineno}: torch.load without weights_only=True"


def test_training_refuses_a_corrupt_resume_checkpoint_in_one_line(dataset_and_checkpoint, tmp_path):
    from micml.config import load_config
    from micml.engine.launch import model_training_config
    from micml.engine.resume import run_identity, write_identity

    data, good = dataset_and_checkpoint
    run = tmp_path / "run"
    run.mkdir()
    test_config = REPO / ".test" / "config.yaml"
    config = load_config(test_config)
    training = model_training_config(config["training"], "centernet", overrides={"seed": config["seeds"][0]})
    write_identity(run, run_identity(training, data))
    (run / "last.pt").write_bytes(good.read_bytes()[:4096])  # no micml write leaves this: disk damage
    command = [sys.executable, "-m", "micml.cli", "train", str(data), str(run), "--model", "centernet",
               "--config", str(test_config)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert any(
        line.startswith(f"micml train: {run / 'last.pt'}: cannot be read as a checkpoint")
        and line.endswith("the file is corrupt or truncated: re-train or re-download it")
        for line in result.stderr.splitlines()), result.stderr[-3000:]

    (run / "run.json").unlink()  # a run of unknown settings is not resumed at all
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert f"micml train: {run}: holds last.pt of a run whose settings were not recorded" in result.stderr


def test_detect_on_a_video_that_cannot_be_decoded_is_named(capsys, dataset_and_checkpoint, tmp_path):
    _, checkpoint = dataset_and_checkpoint
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(200))
    message = one_line_error(capsys, "detect", video, "--checkpoint", checkpoint, "--out", tmp_path / "out")
    assert f"{video}: cannot be opened as a video" in message


def test_detect_on_a_folder_with_a_truncated_frame_names_it(capsys, pristine, dataset_and_checkpoint, tmp_path):
    _, checkpoint = dataset_and_checkpoint
    frames = Path(shutil.copytree(pristine["rscar"][0] / "images/test1024/002/img1", tmp_path / "frames"))
    damaged = truncate(frames / "000003.jpg")
    message = one_line_error(capsys, "detect", frames, "--checkpoint", checkpoint, "--out", tmp_path / "out",
                             "--tile", 0, "--device", "cpu")
    assert f"{damaged}: cannot be decoded as an image (truncated or not an image)" in message
    out = tmp_path / "out"
    assert not out.exists() or not any(out.iterdir())  # no half set of detections


# --------------------------------------------------------------------------- hypothesis: COCO json


# Quarter pixels: exact in float32 and in the 3 decimals of the unified json, so boxes compare exactly.
coordinate = st.integers(-80, 4 * (SIDE + 10)).map(lambda quarters: quarters / 4)
size = st.integers(1, 100).map(lambda quarters: quarters / 4)
valid_bbox = st.tuples(coordinate, coordinate, size, size).map(list)
INVALID_BBOXES = st.one_of(
    st.tuples(coordinate, coordinate, st.sampled_from([0, -1, -2.5]), size).map(list),  # no width
    st.tuples(coordinate, coordinate, size, st.sampled_from([0, -3])).map(list),  # no height
    st.tuples(st.sampled_from([float("nan"), float("inf")]), coordinate, size, size).map(list),
    st.tuples(coordinate, st.sampled_from([float("-inf"), float("nan")]), size, size).map(list),
    st.tuples(coordinate, coordinate, size).map(list),  # three numbers
    st.tuples(coordinate, st.sampled_from(["7", None, True]), size, size).map(list),  # not numbers
)


@st.composite
def coco_annotations(draw, image_ids: list[int]):
    """(annotations, ids of the invalid ones): each one valid, or broken in one way."""
    annotations, invalid = [], set()
    for annotation_id in range(1, draw(st.integers(0, 10)) + 1):
        annotation = {"id": annotation_id, "image_id": draw(st.sampled_from(image_ids)), "category_id": 1,
                      "bbox": draw(valid_bbox)}
        broken = draw(st.sampled_from(["no"] * 6 + ["bbox", "image", "category", "missing bbox"]))
        if broken == "bbox":
            annotation["bbox"] = draw(INVALID_BBOXES)
        elif broken == "image":
            annotation["image_id"] = max(image_ids) + 1000
        elif broken == "category":
            annotation["category_id"] = 2
        elif broken == "missing bbox":
            del annotation["bbox"]
        if broken != "no":
            invalid.add(annotation_id)
        annotations.append(annotation)
    return annotations, invalid


def clipped(x1: float, y1: float, x2: float, y2: float) -> tuple | None:
    """The box the converters keep: clipped to the frame, or None when fully outside (reported)."""
    if x1 >= SIDE or y1 >= SIDE or x2 <= 0 or y2 <= 0:
        return None
    return float(max(x1, 0)), float(max(y1, 0)), float(min(x2, SIDE)), float(min(y2, SIDE))


def unified_boxes(root: Path) -> list[tuple]:
    """(video, frame, x1, y1, x2, y2) of every box of every split, sorted."""
    dataset = UnifiedDataset(root)
    return sorted((video.record.name, frame, *map(float, box))
                  for split in ("train", "val", "test") for video in dataset.videos(split)
                  for frame, boxes in video.boxes.items() for box in boxes)


def assert_every_box_kept_or_reported(out: Path, expected: list[tuple]) -> None:
    """Each (video, frame, clipped box or None) is in the unified dataset, or listed in meta.json
    as outside its frame; boxes of the other videos are not looked at."""
    videos = {video for video, _, _ in expected}
    found = [box for box in unified_boxes(out) if box[0] in videos]
    dropped = json.loads((out / "meta.json").read_text())["dropped_outside_frame"]["boxes"]
    reported = sum(len(rows) for video, rows in dropped.items() if video in videos)
    assert len(found) + reported == len(expected)  # nothing lost without a word
    assert found == sorted((video, frame, *box) for video, frame, box in expected if box is not None)


@settings(max_examples=30, deadline=None, derandomize=True, phases=QUICK_PHASES,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_coco_annotations_are_all_kept_or_refused_with_their_id(pristine, data):
    src, options = pristine["rscar"]
    val_videos = options["val_videos"]
    json_path = src / "annotations/instances_test2017_1024.json"
    original = json_path.read_text()
    document = json.loads(original)
    images = {image["id"]: image["file_name"] for image in document["images"]}
    annotations, invalid = data.draw(coco_annotations(sorted(images)))
    document["annotations"] = annotations
    with tempfile.TemporaryDirectory() as tmp:
        native = Path(shutil.copytree(src, Path(tmp) / "rscar"))
        native_json = native / "annotations/instances_test2017_1024.json"
        native_json.write_text(json.dumps(document))
        if invalid:
            with pytest.raises(DatasetError) as error:
                convert_rscar(native, Path(tmp) / "out", val_videos=val_videos, xml_check="off")
            message = str(error.value)
            assert message.startswith(f"{native_json}: annotation id ") and len(message.splitlines()) == 1
            assert int(re.match(r".*?annotation id (\d+)", message).group(1)) in invalid
            assert not (Path(tmp) / "out").exists()
            return
        out = convert_rscar(native, Path(tmp) / "out", val_videos=val_videos, xml_check="off")
        expected = []
        for annotation in annotations:
            name = images[annotation["image_id"]]  # images/test1024/<video>/img1/<frame>.jpg
            x, y, w, h = annotation["bbox"]
            expected.append((name.split("/")[2], int(name[-10:-4]), clipped(x, y, x + w, y + h)))
        assert_every_box_kept_or_reported(out, expected)


# --------------------------------------------------------------------------- hypothesis: DroneCrowd .mat


N_FRAMES = TINY["n_frames"]


@st.composite
def anno_rows(draw):
    """(anno matrix, 1-based rows that are invalid, whether the matrix as a whole is)."""
    rows, invalid = [], set()
    for row in range(1, draw(st.integers(0, 10)) + 1):
        frame, track = draw(st.integers(0, N_FRAMES - 1)), draw(st.integers(0, 30))
        x1, y1 = draw(coordinate), draw(coordinate)
        values = [frame, track, x1, y1, x1 + draw(size), y1 + draw(size)]
        broken = draw(st.sampled_from(["no"] * 6 + ["nan", "size", "frame", "beyond"]))
        if broken == "nan":
            values[draw(st.integers(1, 5))] = draw(st.sampled_from([float("nan"), float("inf")]))
        elif broken == "size":
            column = draw(st.sampled_from([4, 5]))  # x2 <= x1 or y2 <= y1
            values[column] = values[column - 2] - draw(st.sampled_from([0, 3]))
        elif broken == "frame":
            values[0] = draw(st.sampled_from([-1, 1.5]))
        elif broken == "beyond":
            values[0] = N_FRAMES  # image N_FRAMES + 1, which does not exist
        if broken != "no":
            invalid.add(row)
        rows.append(values)
    matrix = np.array(rows, np.float64).reshape(-1, 6)
    if draw(st.booleans()) and np.isfinite(matrix).all() and (matrix >= 0).all():
        matrix = matrix.round().astype(np.uint16)  # as DroneCrowd stores them; rounding decides validity
        invalid = {row for row in range(1, len(matrix) + 1) if not valid_row(matrix[row - 1])}
    if len(matrix) and draw(st.integers(0, 9)) == 0:
        return matrix[:, :5], invalid, True  # five columns
    return matrix, invalid, False


def valid_row(row: np.ndarray) -> bool:
    frame, _, x1, y1, x2, y2 = row.astype(np.float64)
    return bool(np.isfinite(row.astype(np.float64)).all() and frame == int(frame) and 0 <= frame < N_FRAMES
                and x2 > x1 and y2 > y1)


@settings(max_examples=30, deadline=None, derandomize=True, phases=QUICK_PHASES,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(drawn=anno_rows())
def test_dronecrowd_anno_rows_are_all_kept_or_refused_with_their_row(pristine, drawn):
    matrix, invalid, bad_shape = drawn
    src, options = pristine["dronecrowd"]
    val_videos = options["val_videos"]
    with tempfile.TemporaryDirectory() as tmp:
        native = Path(shutil.copytree(src, Path(tmp) / "dronecrowd"))
        mat = native / "annotations/00011.mat"
        scipy.io.savemat(str(mat), {"anno": matrix})
        if invalid or bad_shape:
            with pytest.raises(DatasetError) as error:
                convert_dronecrowd(native, Path(tmp) / "out", val_videos=val_videos)
            message = str(error.value)
            assert message.startswith(f"{mat}: ") and len(message.splitlines()) == 1
            if not bad_shape:
                assert int(re.match(r".*?anno row (\d+)", message).group(1)) in invalid
            assert not (Path(tmp) / "out").exists()
            return
        out = convert_dronecrowd(native, Path(tmp) / "out", val_videos=val_videos)
        assert_every_box_kept_or_reported(out, [("00011", int(row[0]) + 1, clipped(*row[2:6].astype(np.float64)))
                                                for row in matrix])


# --------------------------------------------------------------------------- hypothesis: dsfnet_f1


finite = st.floats(-50, 150, allow_nan=False, width=32)
score = st.floats(0, 1, allow_nan=False, width=32)


def box_rows(columns: int):
    row = st.tuples(finite, finite, st.floats(0.5, 30, width=32), st.floats(0.5, 30, width=32), score).map(
        lambda r: [r[0], r[1], r[0] + r[2], r[1] + r[3], r[4]][:columns])
    return st.lists(row, max_size=6).map(lambda rows: np.array(rows, np.float64).reshape(-1, columns))


@st.composite
def frame_array(draw, columns: int):
    """(array, is_invalid): a valid N x columns array, or one broken in one way (an empty
    array with too few columns holds no box and stays valid)."""
    array = draw(box_rows(columns))
    broken = draw(st.sampled_from(["no"] * 5 + ["nan", "columns", "text", "flat"]))
    if broken == "nan" and len(array):
        array[draw(st.integers(0, len(array) - 1)), draw(st.integers(0, columns - 1))] = draw(
            st.sampled_from([float("nan"), float("inf"), float("-inf")]))
        return array, True
    if broken == "columns" and len(array):
        return array[:, : columns - 2], True
    if broken == "text":
        return np.array([["a"] * columns]), True
    if broken == "flat":
        return np.arange(columns + 1, dtype=np.float64), True
    return array, False


@st.composite
def evaluation_inputs(draw):
    detections, ground_truth, invalid = {}, {}, set()
    for video in range(draw(st.integers(1, 3))):
        name = f"{video + 1:03d}"
        ground_truth[name], detections[name] = {}, {}
        for frame in range(1, draw(st.integers(1, 3)) + 1):
            gt, gt_bad = draw(frame_array(4))
            ground_truth[name][frame] = gt
            if draw(st.booleans()):  # a frame without detections may also be left out
                detections[name][frame], det_bad = draw(frame_array(5))
                gt_bad = gt_bad or det_bad
            if gt_bad:
                invalid.add((name, frame))
    return detections, ground_truth, invalid


@settings(max_examples=100, deadline=None, derandomize=True, phases=QUICK_PHASES)
@given(drawn=evaluation_inputs())
def test_dsfnet_f1_counts_every_box_or_names_the_bad_frame(drawn):
    detections, ground_truth, invalid = drawn
    if invalid:
        with pytest.raises(EvaluationInputError) as error:
            dsfnet_f1(detections, ground_truth)
        where = re.match(r"video '(\d+)' frame (\d+)", str(error.value))
        assert where and (where.group(1), int(where.group(2))) in invalid, str(error.value)
        return
    table = dsfnet_f1(detections, ground_truth)
    for video, frames in ground_truth.items():
        row = table.loc[video]
        kept = sum(int((detections[video][f][:, 4] > 0.3).sum()) for f in frames if f in detections[video])
        assert row["tp"] + row["fp"] == kept and row["tp"] + row["fn"] == sum(len(gt) for gt in frames.values())
        assert 0 <= row["precision"] <= 1 and 0 <= row["recall"] <= 1 and 0 <= row["f1"] <= 1
