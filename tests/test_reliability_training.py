"""Attacks on and misuse of checkpoints and run folders: a checkpoint that names code to run, one
whose tensor bytes were flipped, and training reruns whose settings or data changed.

Each case must fail with one line naming the file and the fix, run nothing and delete nothing;
a rerun with the same settings must still resume.
"""

import json
import shutil
import struct
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

from micml.cli import main as micml
from micml.data.unified import UnifiedWriter
from micml.checkpoint import FORMAT, CheckpointError, load_checkpoint, model_from_checkpoint, save_checkpoint
from micml.engine.errors import StaleRunError
from micml.engine.train import train
from micml.inference.predict import load_detector
from test_engine import build_tiny, dataset_root, square_video, tiny_config  # noqa: F401 (fixture)

pytestmark = pytest.mark.reliability


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    return err


# --------------------------------------------------------------------------- checkpoints


@pytest.fixture
def evil_checkpoint(tmp_path) -> Path:
    """The issue's attack: a checkpoint whose model name is a function that runs a shell command."""
    path = tmp_path / "evil.pt"
    torch.save({"format": FORMAT, "model": {"name": "subprocess:check_call",
                                            "options": {"args": f"touch {tmp_path / 'OWNED'}", "shell": True}},
                "state_dict": {}}, path)
    return path


@pytest.fixture
def frames(tmp_path) -> Path:
    folder = tmp_path / "frames"
    folder.mkdir()
    for index in range(1, 4):
        cv2.imwrite(str(folder / f"{index:06d}.jpg"), np.full((32, 32, 3), 90, np.uint8))
    return folder


def test_a_checkpoint_naming_code_runs_nothing_in_detect(evil_checkpoint, frames, tmp_path, capsys):
    status = micml(["detect", str(frames), "--checkpoint", str(evil_checkpoint), "--out", str(tmp_path / "out"),
                    "--device", "cpu", "--no-video"])
    assert status != 0
    assert not (tmp_path / "OWNED").exists()
    error = one_line_error(capsys)
    assert "evil.pt" in error and "'subprocess:check_call'" in error and "dsfnet" in error  # the known models
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_checkpoint_naming_code_runs_nothing_through_the_engine(evil_checkpoint, tmp_path):
    with pytest.raises(CheckpointError, match="not a registered micml model"):
        model_from_checkpoint(evil_checkpoint)
    with pytest.raises(CheckpointError, match="not a registered micml model"):
        load_detector(evil_checkpoint)
    assert not (tmp_path / "OWNED").exists()


def flip_tensor_byte(path: Path, at: int = 7) -> None:
    """Flip one byte inside the first tensor's storage of a torch zip file (torch does not check
    the zip CRC, so such damage loads silently without a digest)."""
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        entry = next(info for info in archive.infolist() if "/data/" in info.filename and info.file_size > at)
    name_length, extra_length = struct.unpack("<HH", data[entry.header_offset + 26:entry.header_offset + 30])
    data[entry.header_offset + 30 + name_length + extra_length + at] ^= 0xFF
    path.write_bytes(bytes(data))


def test_flipped_bytes_in_a_tensor_are_a_corrupt_checkpoint(tmp_path):
    path = save_checkpoint(tmp_path / "model.pt", {"format": FORMAT, "model": {"name": "tiny", "options": {}},
                                                   "state_dict": build_tiny().state_dict()})
    assert load_checkpoint(path)["weights_sha256"]
    flip_tensor_byte(path)
    torch.load(path, weights_only=True)  # torch itself notices nothing
    with pytest.raises(CheckpointError, match="^checkpoint corrupt: .*model.pt.*SHA-256"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="^checkpoint corrupt: .*model.pt"):
        load_detector(path)


# --------------------------------------------------------------------------- run identity


@pytest.fixture(scope="module")
def finished_run(dataset_root, tmp_path_factory):  # noqa: F811 (the fixture imported above)
    out = tmp_path_factory.mktemp("run") / "train"
    train(tiny_config(val_interval=0), dataset_root, out)
    return out


CHANGED_SETTINGS = [
    ({"lr": 0.002}, "lr: 0.001 -> 0.002"),
    ({"epochs": 3}, "epochs: 2 -> 3"),
    ({"lr_steps": [2]}, "lr_steps: [1] -> [2]"),
    ({"crop_size": 48}, "crop_size: [32, 32] -> [48, 48]"),
    ({"batch_size": 1}, "batch_size: 2 -> 1"),
    ({"seed": 6}, "seed: 5 -> 6"),
    ({"augment": {"hflip": 0.0}}, "hflip"),
    ({"model_options": {"width": 4}}, "model_options.width: <unset> -> 4"),
]


@pytest.mark.parametrize("change, named", CHANGED_SETTINGS, ids=[next(iter(c)) for c, _ in CHANGED_SETTINGS])
def test_a_rerun_with_another_setting_never_resumes_and_deletes_nothing(finished_run, dataset_root, change,  # noqa: F811
                                                                        named):
    before = snapshot(finished_run)
    with pytest.raises(StaleRunError) as raised:
        train(tiny_config(val_interval=0, **change), dataset_root, finished_run)
    message = str(raised.value)
    assert named in message and "--fresh" in message and str(finished_run) in message
    assert snapshot(finished_run) == before


def test_a_rerun_on_other_data_never_resumes(finished_run, dataset_root, tmp_path):  # noqa: F811
    other = tmp_path / "other"
    writer = UnifiedWriter(other)
    for name, split in (("a", "train"), ("c", "val")):
        video_frames, boxes = square_video(np.random.default_rng(1), 8, (10, 10), (1, 1))
        writer.add_video(name, split, video_frames, boxes)
    writer.commit()
    with pytest.raises(StaleRunError, match="dataset: "):
        train(tiny_config(val_interval=0), other, finished_run)


def test_machine_settings_may_change_on_resume(finished_run, dataset_root):  # noqa: F811
    before = load_checkpoint(finished_run / "last.pt")
    train(tiny_config(val_interval=0, threads=2, log_interval=2, progress=False), dataset_root, finished_run)
    after = load_checkpoint(finished_run / "last.pt")
    assert after["global_step"] == before["global_step"] == 4  # resumed at the end: nothing trained again
    runs = json.loads((finished_run / "provenance.json").read_text())["runs"]
    assert runs[-1]["resumed_from"] == {"epoch": 2, "iteration": 0, "step": 4}


def test_a_last_checkpoint_copied_from_another_run_is_refused(finished_run, dataset_root, tmp_path):  # noqa: F811
    other = tmp_path / "other"
    train(tiny_config(val_interval=0, seed=9), dataset_root, other)
    target = tmp_path / "copy"
    shutil.copytree(finished_run, target)
    shutil.copyfile(other / "last.pt", target / "last.pt")
    with pytest.raises(StaleRunError, match="belongs to run"):
        train(tiny_config(val_interval=0), dataset_root, target)


def test_a_run_folder_without_identity_is_not_resumed(finished_run, dataset_root, tmp_path):  # noqa: F811
    target = tmp_path / "old"
    shutil.copytree(finished_run, target)
    (target / "run.json").unlink()
    with pytest.raises(StaleRunError, match="not recorded"):
        train(tiny_config(val_interval=0), dataset_root, target)
    assert (target / "last.pt").exists()


def test_micml_train_refuses_a_stale_run_in_one_line_and_fresh_keeps_it(finished_run, dataset_root, tmp_path,  # noqa: F811
                                                                        capsys):
    target = tmp_path / "run"
    shutil.copytree(finished_run, target)
    config = tmp_path / "workflow.yaml"
    machine = {"model", "plugins", "threads", "progress", "seed"}  # not training settings of a workflow config
    training = {key: value for key, value in tiny_config(val_interval=0).items() if key not in machine}
    config.write_text(yaml.safe_dump({"training": training, "seeds": [tiny_config()["seed"]]}))
    command = ["train", str(dataset_root), str(target), "--model", "tiny", "--config", str(config),
               "--set", 'plugins=["test_engine"]', "--set", "threads=1", "--set", "progress=false"]
    before = snapshot(target)
    assert micml([*command, "--set", "lr=0.002"]) != 0
    assert "lr: 0.001 -> 0.002" in one_line_error(capsys)
    assert snapshot(target) == before
    assert micml([*command, "--set", "lr=0.002", "--set", "epochs=1", "--fresh"]) == 0
    (kept,) = (target / "superseded").iterdir()
    assert snapshot(kept)["last.pt"] == before["last.pt"]
    assert load_checkpoint(target / "model.pt")["config"]["lr"] == 0.002
