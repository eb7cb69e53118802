"""Clip pipeline, loss, training loop, checkpoints/resume and DDP on tiny generated videos.

The tiny `TinyDetector` below has the models' contract ((B,3,5,H,W) -> hm/wh/reg at stride 1)
and is registered as model 'tiny' when this module is imported; the training config names this
module in `plugins`, so subprocesses import it too (this folder is put on PYTHONPATH there).
"""

import atexit
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from micml.data.clips import ClipDataset, clip_frame_indices, normalise, photometric_distort
from micml.data.unified import UnifiedDataset, UnifiedWriter, read_image
from micml.checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint
from micml.engine.distributed import launch_command
from micml.engine.losses import CenterNetLoss, focal_loss, reg_l1_loss
from micml.models import register
from micml.engine.config import lr_at_epoch, resolve_config
from micml.engine.errors import NonFiniteLossError
from micml.engine.sampling import EpochSampler
from micml.engine.train import train
from micml.engine.validation import decode_detections, pooled_f1

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
FRAME = 64
SQUARE = 5  # odd, so a mirrored square keeps an integer-aligned centre pixel


# --------------------------------------------------------------------------- stand-in model


class TinyDetector(nn.Module):
    """The detector contract in a few hundred parameters: a 3-D conv over the five frames, heads."""

    def __init__(self, width: int = 8, sleep_s: float = 0.0, nan_at_call: int | None = None):
        super().__init__()
        self.temporal = nn.Conv3d(3, width, (5, 3, 3), padding=(0, 1, 1))
        self.hm, self.wh, self.reg = nn.Conv2d(width, 1, 1), nn.Conv2d(width, 2, 1), nn.Conv2d(width, 2, 1)
        nn.init.constant_(self.hm.bias, -2.19)
        self.sleep_s, self.nan_at_call, self.calls = sleep_s, nan_at_call, 0
        self.variant, self.config = "tiny", {"width": width}

    def forward(self, clip):
        assert clip.shape[1:3] == (3, 5) and clip.shape[-1] % 16 == 0 and clip.shape[-2] % 16 == 0
        features = torch.relu(self.temporal(clip)).squeeze(2)
        output = {"hm": self.hm(features), "wh": self.wh(features), "reg": self.reg(features)}
        if self.training:
            self.calls += 1
            time.sleep(self.sleep_s)  # lets the resume test kill a run mid-way
            if self.calls == self.nan_at_call:
                output["hm"] = output["hm"] * float("nan")
        return output


BUILT: list[nn.Module] = []


def build_tiny(**options):
    """Builder for the loop; records the instance so a DDP rank can dump its weights at exit."""
    torch.manual_seed(0)
    model = TinyDetector(**options)
    BUILT.append(model)
    dump_dir = os.environ.get("MICML_TEST_DUMP_DIR")
    if dump_dir:
        path = Path(dump_dir) / f"rank{os.environ.get('RANK', '0')}.pt"
        atexit.register(lambda: torch.save(model.state_dict(), path))
    return model


TINY = "tiny"
register(TINY, build_tiny)


# --------------------------------------------------------------------------- tiny dataset


def square_video(rng, n_frames, start, velocity):
    """Frames of a bright SQUARE x SQUARE block moving on a dark noisy ground, and its boxes."""
    frames, boxes = [], {}
    for f in range(1, n_frames + 1):
        image = (40 + rng.integers(0, 12, (FRAME, FRAME, 3))).astype(np.uint8)
        x, y = start[0] + velocity[0] * (f - 1), start[1] + velocity[1] * (f - 1)
        image[y:y + SQUARE, x:x + SQUARE] = 230
        frames.append(image)
        boxes[f] = np.array([[x, y, x + SQUARE, y + SQUARE]], np.float32)
    return frames, boxes


@pytest.fixture(scope="module")
def dataset_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data") / "squares"
    rng = np.random.default_rng(7)
    writer = UnifiedWriter(root)
    for name, split, start, velocity in [("a", "train", (6, 10), (3, 2)), ("b", "train", (50, 40), (-2, -3)),
                                         ("c", "val", (20, 30), (2, 0))]:
        frames, boxes = square_video(rng, 8 if split == "train" else 4, start, velocity)
        writer.add_video(name, split, frames, boxes)
    return writer.commit()


def tiny_config(**overrides):
    config = {"model": TINY, "plugins": ["test_engine"], "crop_size": 32, "batch_size": 2, "epochs": 2,
              "iters_per_epoch": 2, "lr": 1e-3, "lr_steps": [1], "val_interval": 1, "num_workers": 0, "seed": 5,
              "progress": False, "threads": 1}
    return {**config, **overrides}


# --------------------------------------------------------------------------- clips


def test_clip_index_rule_clamps_to_the_first_frame():
    assert clip_frame_indices(3) == [3, 2, 1, 1, 1]
    assert clip_frame_indices(8) == [8, 7, 6, 5, 4]


def test_val_clip_holds_frames_t_to_t_minus_4_in_order(dataset_root):
    clips = ClipDataset(dataset_root, "val", train=False)
    sample = clips[2]  # video c, frame 3
    assert (sample["video"], sample["frame"]) == ("c", 3)
    assert sample["input"].shape == (3, 5, FRAME, FRAME)
    data = UnifiedDataset(dataset_root)
    for k, frame in enumerate([3, 2, 1, 1, 1]):
        expected = normalise(read_image(data.frame_path("c", frame))).transpose(2, 0, 1)
        np.testing.assert_array_equal(sample["input"][:, k].numpy(), expected)


def test_horizontal_flip_moves_pixels_and_peak_together(dataset_root):
    common = dict(train=True, crop_size=FRAME, seed=1, object_crop_prob=1.0)
    plain = ClipDataset(dataset_root, "train", augment={"hflip": 0.0, "vflip": 0.0, "photometric": False}, **common)[3]
    flipped = ClipDataset(dataset_root, "train", augment={"hflip": 1.0, "vflip": 0.0, "photometric": False}, **common)[3]
    assert torch.equal(flipped["input"], plain["input"].flip(-1))
    assert torch.equal(flipped["hm"], plain["hm"].flip(-1))
    y, x = np.unravel_index(int(plain["hm"][0].argmax()), (FRAME, FRAME))
    assert plain["input"][0, 0, y, x] > 2  # bright square under the peak ...
    assert flipped["input"][0, 0, y, FRAME - 1 - x] > 2 and flipped["hm"][0, y, FRAME - 1 - x] == 1  # ... mirrored


def test_random_crops_and_flips_keep_every_peak_on_the_object(dataset_root):
    clips = ClipDataset(dataset_root, "train", train=True, crop_size=32, seed=3, object_crop_prob=0.7,
                        augment={"hflip": 0.5, "vflip": 0.5, "photometric": False})
    with_object = 0
    for index in range(len(clips)):
        sample = clips[index]
        peaks = torch.nonzero(sample["hm"][0] == 1)
        with_object += len(peaks) > 0
        for y, x in peaks.tolist():
            assert sample["input"][:, 0, y, x].min() > 2, f"sample {index}: peak at ({x}, {y}) is not on the square"
        if len(peaks):
            index_y, index_x = divmod(int(sample["ind"][0]), 32)
            assert (index_y, index_x) == tuple(peaks[0].tolist())
    assert with_object >= len(clips) // 2  # the object bias puts most crops on the square


def test_samples_repeat_for_same_seed_epoch_index_and_change_with_epoch(dataset_root):
    clips = ClipDataset(dataset_root, "train", train=True, crop_size=32, seed=3)
    first = clips[5]["input"]
    assert torch.equal(first, clips[5]["input"])
    clips.set_epoch(1)
    assert not torch.equal(first, clips[5]["input"])


def test_photometric_distortion_happens_before_normalisation(dataset_root):
    rng = np.random.default_rng(0)
    frames = np.full((5, 8, 8, 3), 128, np.float32)
    for _ in range(50):
        out = photometric_distort(rng, frames)
        assert out.min() >= 0 and out.max() <= 255
    clips = ClipDataset(dataset_root, "train", train=True, crop_size=32, seed=0)
    low, high = normalise(np.array([0.0])), normalise(np.array([255.0]))
    for index in range(6):
        values = clips[index]["input"]
        assert values.min() >= low[0] - 1e-5 and values.max() <= high[0] + 1e-5


# --------------------------------------------------------------------------- loss


def test_regression_losses_vanish_when_prediction_equals_target():
    target_wh = torch.tensor([[[5.0, 4.0], [0.0, 0.0]]])
    wh_map = torch.zeros(1, 2, 4, 4)
    wh_map[0, :, 2, 3] = torch.tensor([5.0, 4.0])
    ind, mask = torch.tensor([[2 * 4 + 3, 0]]), torch.tensor([[1, 0]], dtype=torch.uint8)
    assert reg_l1_loss(wh_map, mask, ind, target_wh).item() == 0.0
    wh_map[0, 0, 2, 3] = 7.0  # width off by 2, height exact: mean absolute error per coordinate = 1
    assert reg_l1_loss(wh_map, mask, ind, target_wh).item() == pytest.approx(1.0, rel=1e-3)


def test_focal_loss_hand_value_and_decrease_towards_target():
    target = torch.zeros(1, 1, 4, 4)
    target[0, 0, 1, 1] = 1.0
    target[0, 0, 1, 2] = 0.5
    logits = torch.full((1, 1, 4, 4), -20.0)
    logits[0, 0, 1, 1] = 0.0  # p = 0.5 on the only positive
    expected_positive = -np.log(0.5) * 0.25
    assert focal_loss(logits, target).item() == pytest.approx(expected_positive, rel=1e-3)
    losses = [focal_loss(logits + step * (2 * target - 1), target).item() for step in range(4)]
    assert all(a > b for a, b in zip(losses, losses[1:]))


def test_loss_returns_named_parts_and_leaves_the_output_untouched():
    output = {"hm": torch.randn(2, 1, 8, 8), "wh": torch.randn(2, 2, 8, 8), "reg": torch.randn(2, 2, 8, 8)}
    before = {key: value.clone() for key, value in output.items()}
    batch = {"hm": torch.zeros(2, 1, 8, 8), "wh": torch.ones(2, 3, 2), "reg": torch.zeros(2, 3, 2),
             "ind": torch.zeros(2, 3, dtype=torch.long), "reg_mask": torch.ones(2, 3, dtype=torch.uint8)}
    losses = CenterNetLoss()(output, batch)
    assert set(losses) == {"hm", "wh", "reg", "total"}
    assert losses["total"].item() == pytest.approx((losses["hm"] + 0.1 * losses["wh"] + losses["reg"]).item())
    for key in output:
        assert torch.equal(output[key], before[key])


# --------------------------------------------------------------------------- schedule, sampling, decoding


def test_lr_steps_after_the_listed_epochs():
    config = {"lr": 1.0, "lr_steps": [30, 45], "lr_factor": 0.1}
    assert [lr_at_epoch(config, e) for e in (1, 30, 31, 45, 46)] == pytest.approx([1, 1, 0.1, 0.1, 0.01])


def test_sampler_shards_batches_and_resumes_mid_epoch():
    whole = list(EpochSampler(10, batch_size=4, iterations=3, seed=1, epoch=2))
    assert len(whole) == 12 and set(whole) == set(range(10))  # more than a pass: a second permutation
    ranks = [list(EpochSampler(10, batch_size=2, iterations=3, seed=1, epoch=2, rank=r, world_size=2)) for r in (0, 1)]
    assert sorted(ranks[0][:2] + ranks[1][:2]) == sorted(whole[:4])
    assert list(EpochSampler(10, batch_size=4, iterations=3, seed=1, epoch=2, start_iteration=1)) == whole[4:]


def test_decode_and_f1_on_a_perfect_prediction():
    output = {"hm": torch.full((1, 1, 16, 16), -10.0), "wh": torch.zeros(1, 2, 16, 16), "reg": torch.zeros(1, 2, 16, 16)}
    output["hm"][0, 0, 5, 9] = 5.0
    output["wh"][0, :, 5, 9] = torch.tensor([4.0, 2.0])
    output["reg"][0, :, 5, 9] = torch.tensor([0.5, 0.25])
    detections = decode_detections(output, top_k=10)[0]
    np.testing.assert_allclose(detections[0], [7.5, 4.25, 11.5, 6.25, torch.sigmoid(torch.tensor(5.0)).item()], rtol=1e-6)
    gt = {"v": {1: np.array([[7.5, 4.25, 11.5, 6.25]])}}
    metrics = pooled_f1({"v": {1: detections}}, gt)
    assert metrics["f1"] == pytest.approx(1.0, abs=1e-6)
    assert pooled_f1({"v": {}}, gt)["f1"] == 0.0


# --------------------------------------------------------------------------- the training loop


def read_log(out_dir):
    with open(out_dir / "log.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def weights(path):
    return load_checkpoint(path)["state_dict"]


def test_short_run_writes_checkpoints_logs_provenance_and_repeats(dataset_root, tmp_path):
    best = train(tiny_config(), dataset_root, tmp_path / "a")
    out = tmp_path / "a"
    assert best == out / "best.pt"
    last = torch.load(out / "last.pt", weights_only=True)
    assert (last["epoch"], last["iteration"], last["global_step"]) == (2, 0, 4)
    assert last["model"]["name"] == TINY and last["lr"] == pytest.approx(1e-4)
    assert all(state["step"].item() == 4 for state in last["optimizer"]["state"].values())
    assert last["best"]["metric"] == "f1" and last["best"]["epoch"] in (1, 2)
    best_checkpoint = torch.load(best, weights_only=True)
    assert "optimizer" not in best_checkpoint
    # The run's whole budget (what models are compared at), and the step of the best weights.
    budget = best_checkpoint["training"]
    assert (budget["seed"], budget["steps"], budget["samples"]) == (5, 4, 8) and budget["seconds"] > 0
    assert budget["best_step"] == 2 * best_checkpoint["best"]["epoch"] and budget["threads"] == 1
    rows = read_log(out)
    assert [(r["kind"], r["epoch"], r["step"]) for r in rows] == [
        ("train", "1", "1"), ("train", "1", "2"), ("val", "1", "2"),
        ("train", "2", "3"), ("train", "2", "4"), ("val", "2", "4")]
    assert all(np.isfinite(float(r["total"])) for r in rows if r["kind"] == "train")
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["seed"] == 5 and provenance["config"]["crop_size"] == [32, 32]
    assert {"torch", "torchvision", "numpy", "python"} <= set(provenance["runs"][0]["versions"])
    assert provenance["runs"][0]["device"] == "cpu" and "git_commit" in provenance["runs"][0]
    assert isinstance(model_from_checkpoint(best), TinyDetector)

    train(tiny_config(), dataset_root, tmp_path / "b")
    assert [r["total"] for r in read_log(tmp_path / "b")] == [r["total"] for r in rows]
    for key, value in weights(out / "last.pt").items():
        assert torch.equal(value, weights(tmp_path / "b" / "last.pt")[key]), key


def test_non_finite_loss_stops_and_names_the_step(dataset_root, tmp_path):
    config = tiny_config(model_options={"nan_at_call": 3}, val_interval=0)
    with pytest.raises(NonFiniteLossError, match=r"epoch 2, iteration 1 \(global step 3\).*hm=nan"):
        train(config, dataset_root, tmp_path)
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 1  # the last good state is kept


def test_fresh_start_moves_the_earlier_run_aside_and_never_returns_its_best(dataset_root, tmp_path):
    train(tiny_config(epochs=2, val_interval=1), dataset_root, tmp_path)
    earlier = load_checkpoint(tmp_path / "best.pt")
    train(tiny_config(epochs=1, val_interval=0), dataset_root, tmp_path, fresh=True)
    best = load_checkpoint(tmp_path / "best.pt")
    assert best["epoch"] == 1 and best["best"]["value"] is None  # not the earlier run's best.pt
    (kept,) = (tmp_path / "superseded").iterdir()
    assert load_checkpoint(kept / "best.pt")["weights_sha256"] == earlier["weights_sha256"]
    assert {"last.pt", "log.csv", "provenance.json", "run.json"} <= {p.name for p in kept.iterdir()}


def test_config_errors_name_the_key():
    with pytest.raises(ValueError, match="unknown keys \\['crop'\\]"):
        resolve_config({"crop": 96})
    with pytest.raises(ValueError, match="crop_size must be a positive multiple of 16"):
        resolve_config({"crop_size": 100})
    assert resolve_config({})["iters_per_epoch"] is None


def test_resume_after_sigkill_continues_like_an_uninterrupted_run(dataset_root, tmp_path):
    config = tiny_config(epochs=4, lr_steps=[2], checkpoint_every=1, val_interval=2)
    train(config, dataset_root, tmp_path / "straight")

    out = tmp_path / "killed"
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps({**config, "model_options": {"sleep_s": 0.4}}))
    command = launch_command(1, ["--config", config_file, "--data", dataset_root, "--out", out])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), str(REPO)])}
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not (out / "last.pt").exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process.poll() is None, process.communicate()[1].decode()[-2000:]
    process.send_signal(signal.SIGKILL)
    process.wait()
    interrupted = load_checkpoint(out / "last.pt")
    assert interrupted["global_step"] < 8

    finished = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert finished.returncode == 0, finished.stderr[-2000:]
    resumed = load_checkpoint(out / "last.pt")
    assert (resumed["epoch"], resumed["global_step"]) == (4, 8)
    assert all(state["step"].item() == 8 for state in resumed["optimizer"]["state"].values())
    straight = load_checkpoint(tmp_path / "straight" / "last.pt")
    assert resumed["lr"] == straight["lr"] == pytest.approx(1e-4)
    for key, value in straight["state_dict"].items():
        assert torch.equal(value, resumed["state_dict"][key]), key
    assert [r["step"] for r in read_log(out) if r["kind"] == "train"] == [str(s) for s in range(1, 9)]
    runs = json.loads((out / "provenance.json").read_text())["runs"]
    assert len(runs) == 2 and runs[1]["resumed_from"]["step"] == interrupted["global_step"]


def test_two_gloo_processes_end_with_identical_weights(dataset_root, tmp_path):
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps(tiny_config(epochs=1, val_interval=0, device="cpu")))
    command = launch_command(2, ["--config", config_file, "--data", dataset_root, "--out", tmp_path / "out"])
    assert command[1:5] == ["--standalone", "--nproc-per-node", "2", "-m"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), str(REPO)]),
           "MICML_TEST_DUMP_DIR": str(tmp_path)}
    finished = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    assert finished.returncode == 0, finished.stderr[-3000:]
    rank0, rank1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    initial = build_tiny().state_dict()
    assert any(not torch.equal(rank0[k], initial[k]) for k in rank0)  # it trained ...
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key  # ... in lock step
    assert load_checkpoint(tmp_path / "out" / "last.pt")["global_step"] == 2
    assert len([r for r in read_log(tmp_path / "out") if r["kind"] == "train"]) == 2  # rank 0 logs alone


def test_launch_command_without_torchrun_for_one_process():
    command = launch_command(1, ["--config", "c.yaml"], python="/env/bin/python")
    assert command == ["/env/bin/python", "-m", "micml.engine.train", "--config", "c.yaml"]


def test_one_process_trains_in_this_process_with_the_settings_checked_once(dataset_root, tmp_path, monkeypatch):
    """No subprocess for one process, and the settings are checked where the run is asked for,
    not again by the loop."""
    from micml.engine import launch
    from micml.engine.config import TrainingConfig

    checked = []
    check = TrainingConfig.from_mapping.__func__
    monkeypatch.setattr(TrainingConfig, "from_mapping", classmethod(lambda cls, s: checked.append(s) or check(cls, s)))
    monkeypatch.setattr(launch, "_run_logged", lambda *args: pytest.fail("one process must not start a subprocess"))
    settings = {key: value for key, value in tiny_config(epochs=1, val_interval=0).items() if key != "model"}
    model = launch.run_training(settings, TINY, dataset_root, tmp_path / "run", tmp_path / "model.pt", nproc=1)
    assert len(checked) == 1 and load_checkpoint(model)["global_step"] == 2


def test_cpu_training_keeps_freed_memory_for_reuse(dataset_root, tmp_path, monkeypatch):
    """Every step allocates and frees the same large buffers: on CPU the train job tells the
    allocator to keep them (micml.allocator), as CPU inference does."""
    import micml.engine.train as train_module

    calls = []
    monkeypatch.setattr(train_module, "keep_freed_memory", lambda: calls.append(True) or True)
    train(tiny_config(epochs=1, val_interval=0), dataset_root, tmp_path)
    assert calls == [True]


# --------------------------------------------------------------------------- the real model


def test_dsfnet_trains_a_few_steps_and_rebuilds_from_its_checkpoint(dataset_root, tmp_path):
    pytest.importorskip("micml.models")
    config = tiny_config(model="dsfnet", epochs=1, iters_per_epoch=2, val_crop_size=32, val_max_frames=2)
    best = train(config, dataset_root, tmp_path)
    rows = [r for r in read_log(tmp_path) if r["kind"] == "train"]
    assert len(rows) == 2 and all(np.isfinite(float(r["total"])) for r in rows)
    checkpoint = load_checkpoint(best)
    assert checkpoint["model"]["name"] == "dsfnet" and checkpoint["model"]["config"]["variant"] == "dsfnet"
    model = model_from_checkpoint(best)
    assert model.variant == "dsfnet"
    clip = ClipDataset(dataset_root, "val", train=False, crop_size=32)[1]["input"][None]
    with torch.inference_mode():
        output = model(clip)
    assert output["hm"].shape == (1, 1, 32, 32) and torch.isfinite(output["hm"]).all()
