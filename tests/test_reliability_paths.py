"""Overlapping paths and names that leave their folder (issue 20, items 3 and 4), tried through the
`micml` command as a careless user or an attacker would: every case stops with exit status 1 and
one line, the inputs keep every byte, and nothing appears outside the destination."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from micml.cli import main as micml
from micml.data.converters import convert_viso
from micml.data.download import fetch_dataset
from micml.data.unified import UnifiedDataset
from micml.paths import UnsafePathError, check_output_apart, plain_name
from test_bad_input import dataset_and_checkpoint, one_line_error, option_args, pristine, tree  # noqa: F401 (fixtures)
from test_download import RSCAR_TREE, file_spec, sources, write_zip

pytestmark = pytest.mark.reliability


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under `root` (folders as None, files with their bytes): equal snapshots mean
    nothing was added, removed or changed."""
    return {str(path.relative_to(root)): None if path.is_dir() else path.read_bytes()
            for path in sorted(root.rglob("*"))}


def refused(capsys, *args) -> str:
    """`micml ARGS` must stop with one line and no traceback; returns that line."""
    return one_line_error(capsys, *args)


# --------------------------------------------------------------------------- the one check


@pytest.mark.parametrize("output, relation", [("data", "is the same path as"), ("data/out", "lies inside"),
                                              (".", "contains"), ("data.partial/..", "contains")])
def test_check_output_apart_names_both_paths_and_how_they_overlap(tmp_path, output, relation):
    (tmp_path / "data").mkdir()
    with pytest.raises(UnsafePathError, match=f"{relation} input"):
        check_output_apart(tmp_path / output, tmp_path / "data", what="output folder")
    check_output_apart(tmp_path / "elsewhere", tmp_path / "data", what="output folder")  # apart: accepted


def test_check_output_apart_sees_through_symlinks_and_work_folders(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "data")
    with pytest.raises(UnsafePathError, match="is the same path as"):
        check_output_apart(tmp_path / "link", tmp_path / "data", what="output folder")
    # the writer builds <out>.partial and retires <out>.old: an input there is deleted as well
    with pytest.raises(UnsafePathError, match=r"output folder's work folder .*out\.partial"):
        check_output_apart(tmp_path / "out", tmp_path / "out.partial", what="output folder",
                           scratch_suffixes=(".partial", ".old"))


@pytest.mark.parametrize("value", ["../..", "..", ".", "", "a/b", "a\\b", "/tmp/x"])
def test_plain_name_refuses_anything_but_one_name(value):
    with pytest.raises(UnsafePathError, match=r"must be a plain file or folder name"):
        plain_name(value, option="video converter option name")
    assert plain_name("site_a.v2", option="name") == "site_a.v2"


@pytest.mark.parametrize("value", ["../x.json", "/etc/passwd", "annotations/../../x.json", ""])
def test_relative_option_paths_stay_below_their_folder(value):
    with pytest.raises(UnsafePathError, match="a relative path inside the folder"):
        plain_name(value, option="rscar converter option test_json", subfolders=True)
    assert plain_name("annotations/a.json", option="test_json", subfolders=True) == "annotations/a.json"


# --------------------------------------------------------------------------- micml convert


def overlapping_convert_paths(workdir: Path, native: Path) -> dict[str, tuple[Path, Path, Path]]:
    """case -> (source, destination, the folder whose snapshot must not change)."""
    holder = workdir / "holder"
    holder.mkdir()
    inner = Path(shutil.copytree(native, holder / "native"))
    spare = Path(shutil.copytree(native, workdir / "spare.partial"))
    return {
        "equal": (native, native, native),
        "inside": (native, native / "unified", native),
        "containing": (inner, holder, holder),
        "work folder": (spare, workdir / "spare", spare),
    }


@pytest.mark.parametrize("case", ["equal", "inside", "containing", "work folder"])
def test_convert_onto_its_own_input_stops_before_writing(capsys, tree, tmp_path, case):
    native, options = tree("rscar")
    src, dst, guarded = overlapping_convert_paths(tmp_path, native)[case]
    before = snapshot(guarded)
    message = refused(capsys, "convert", "rscar", src, dst, *options)
    assert "converted dataset" in message and "input" in message and "nothing was written" in message
    assert snapshot(guarded) == before
    if case != "equal":  # in the equal case dst is the untouched input itself
        assert not dst.exists() or dst == guarded


def test_convert_into_a_symlink_to_its_input_is_refused(capsys, tree, tmp_path):
    native, options = tree("rscar")
    (tmp_path / "alias").symlink_to(native)
    before = snapshot(native)
    assert "is the same path as" in refused(capsys, "convert", "rscar", native, tmp_path / "alias", *options)
    assert snapshot(native) == before


# --------------------------------------------------------------------------- micml test and detect


@pytest.fixture
def own_copy(dataset_and_checkpoint, tmp_path):  # noqa: F811 (fixture imported above)
    """A private copy of the converted dataset and the checkpoint, under tmp_path/holder/."""
    data, checkpoint = dataset_and_checkpoint
    holder = tmp_path / "holder"
    return Path(shutil.copytree(data, holder / "data")), Path(shutil.copy(checkpoint, holder / "model.pt"))


@pytest.mark.parametrize("case", ["equal", "inside", "containing", "holds the checkpoint"])
def test_test_onto_its_own_input_stops_before_writing(capsys, own_copy, case):
    data, checkpoint = own_copy
    holder = data.parent
    out = {"equal": data, "inside": data / "predictions", "containing": holder,
           "holds the checkpoint": holder}[case]
    before = snapshot(holder)
    message = refused(capsys, "test", checkpoint, data, out, "--device", "cpu")
    assert "prediction folder" in message and "nothing was written" in message
    assert snapshot(holder) == before
    UnifiedDataset(data)  # still a whole dataset


def test_test_refuses_a_dataset_at_the_outputs_work_folder(capsys, own_copy, tmp_path):
    data, checkpoint = own_copy
    parked = Path(shutil.move(data, tmp_path / "predictions.partial"))  # what the writer would clear first
    before = snapshot(parked)
    assert "work folder" in refused(capsys, "test", checkpoint, parked, tmp_path / "predictions", "--device", "cpu")
    assert snapshot(parked) == before


def frame_folder(data: Path) -> Path:
    """The frames of the converted dataset's first test video: a folder `micml detect` reads."""
    video = UnifiedDataset(data).videos("test")[0].record.name
    return data / "frames" / video


@pytest.mark.parametrize("case", ["equal", "inside", "containing"])
def test_detect_onto_its_own_input_stops_before_writing(capsys, own_copy, case):
    data, checkpoint = own_copy
    frames = frame_folder(data)
    out = {"equal": frames, "inside": frames / "detections", "containing": data}[case]
    before = snapshot(data.parent)
    message = refused(capsys, "detect", frames, "--checkpoint", checkpoint, "--out", out, "--device", "cpu")
    assert "detection folder" in message
    assert snapshot(data.parent) == before


def detect_args(source: Path, checkpoint: Path, out: Path, *extra: str) -> list[str]:
    return ["detect", str(source), "--checkpoint", str(checkpoint), "--out", str(out), "--tile", "0",
            "--device", "cpu", *extra]


def test_detect_into_a_reused_folder_never_mixes_two_runs(capsys, own_copy, tmp_path):
    data, checkpoint = own_copy
    frames, out = frame_folder(data), tmp_path / "detections"
    assert micml(detect_args(frames, checkpoint, out)) == 0
    assert (out / "annotated.mp4").is_file()
    assert micml(detect_args(frames, checkpoint, out, "--no-video")) == 0
    assert sorted(path.name for path in out.iterdir()) == ["detections.csv", "detections.json"]  # no stale video

    assert micml(detect_args(frames, checkpoint, out)) == 0
    broken = Path(shutil.copytree(frames, tmp_path / "broken"))
    last = sorted(broken.iterdir())[-1]
    last.write_bytes(last.read_bytes()[:200])  # a cut JPEG: found only when the run reaches it
    refused(capsys, *detect_args(broken, checkpoint, out))
    assert list(out.iterdir()) == []  # the failed run removed the earlier run's files and left none of its own


def test_fetch_refuses_to_unpack_where_its_archives_lie(tmp_path):
    """Unpacking clears <dest>.partial first: archives kept in that folder would be deleted."""
    raw = tmp_path / "toy.partial"
    raw.mkdir()
    write_zip(raw / "RsCarData.zip", RSCAR_TREE)
    before = snapshot(tmp_path)
    with pytest.raises(UnsafePathError, match="unpacked tree's work folder .*toy.partial contains input"):
        fetch_dataset("toy", sources(file_spec("RsCarData.zip")), raw, tmp_path / "toy")
    assert snapshot(tmp_path) == before


# --------------------------------------------------------------------------- converter options


@pytest.mark.parametrize("value", ["../..", "..", "a/b"])
def test_video_name_option_cannot_write_outside_the_destination(capsys, tree, tmp_path, value):
    native, _ = tree("video")
    before = snapshot(tmp_path)
    message = refused(capsys, "convert", "video", native / "video.mp4", tmp_path / "out", "-o", f"name={value}")
    assert f"video converter option name={value!r}: it becomes a file or folder name, so it must be a plain" in message
    assert snapshot(tmp_path) == before


def test_video_name_option_cannot_be_an_absolute_path(capsys, tree, tmp_path):
    native, _ = tree("video")
    target = tmp_path / "elsewhere"
    before = snapshot(tmp_path)
    assert "must be a plain file or folder name" in refused(
        capsys, "convert", "video", native / "video.mp4", tmp_path / "out", "-o", f"name={target}")
    assert snapshot(tmp_path) == before and not target.exists()


@pytest.mark.parametrize("native_format, option, value", [
    ("viso", "classes", ["../../car"]), ("viso", "test_videos", ["../001"]),
    ("rscar", "test_json", "../../escape.json"), ("rscar", "train_json", "/etc/hostname"),
    ("dronecrowd", "val_videos", ["../00001"])])
def test_every_converter_refuses_name_options_that_leave_their_folder(capsys, tree, tmp_path, native_format,
                                                                      option, value):
    native, _ = tree(native_format)
    before = snapshot(tmp_path)
    message = refused(capsys, "convert", native_format, native, tmp_path / "out",
                      *option_args({option: value}))
    assert f"{native_format} converter option {option}=" in message
    assert snapshot(tmp_path) == before


# --------------------------------------------------------------------------- converter input


def test_viso_gt_txt_with_a_byte_order_mark_converts_like_without(tree, tmp_path):
    native, options = tree("viso")
    plain = convert_viso(native, tmp_path / "plain", **json_options(options))
    for gt in native.rglob("gt.txt"):
        gt.write_bytes(b"\xef\xbb\xbf" + gt.read_bytes())  # what Windows Notepad writes
    marked = convert_viso(native, tmp_path / "marked", **json_options(options))
    assert ((marked / "annotations" / "test.json").read_bytes() == (plain / "annotations" / "test.json").read_bytes())
    assert ((marked / "annotations" / "train.json").read_bytes() == (plain / "annotations" / "train.json").read_bytes())


def json_options(args: list[str]) -> dict:
    """`-o key=json` pairs back to keyword options."""
    pairs = [args[i + 1].partition("=") for i in range(0, len(args), 2)]
    return {key: json.loads(value) for key, _, value in pairs}
