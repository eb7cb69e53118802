"""What a first GPU run relies on, checked on CPU: torch.compile in training and inference, DDP
without `find_unused_parameters`, cuDNN autotuning only on CUDA, and benchmarks/gpu_check.py
failing clearly where there is no GPU.

torch.compile's default backend (inductor) needs a C compiler and takes seconds per graph, so
most wiring tests switch `micml.precision.COMPILE_BACKEND` to "eager" (same graph capture, no
code generation); one test runs inductor itself when a compiler is there.
"""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

import micml.precision
from micml.checkpoint import load_checkpoint
from micml.engine.distributed import launch_command
from micml.engine.config import DEFAULTS
from micml.engine.train import train
from micml.inference.tiling import TiledDetector
from micml.models import VARIANTS, build
from micml.precision import channels_last_weights, compiled, tune_cudnn
from test_engine import REPO, TESTS, build_tiny, dataset_root, tiny_config  # noqa: F401 (fixture)

GPU_CHECK = REPO / "benchmarks" / "gpu_check.py"


@pytest.fixture
def eager_compile(monkeypatch):
    monkeypatch.setattr(micml.precision, "COMPILE_BACKEND", "eager")


def random_clips(n: int, size: int = 64, seed: int = 0) -> list[list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [[rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(5)] for _ in range(n)]


# --------------------------------------------------------------------------- defaults


def test_gpu_options_default_off():
    assert DEFAULTS["compile"] is False
    assert DEFAULTS["find_unused_parameters"] is False


def test_cudnn_autotuning_is_left_alone_on_cpu():
    before = torch.backends.cudnn.benchmark
    tune_cudnn("cpu")
    assert torch.backends.cudnn.benchmark == before


def test_compiled_returns_the_model_itself_when_off():
    model = build_tiny()
    assert compiled(model, False) is model


# --------------------------------------------------------------------------- compile


def test_compiled_tiled_detector_matches_eager(eager_compile):
    model = build_tiny()
    clips = random_clips(2)
    plain = [TiledDetector(model, tile=None).detect_clip(clip) for clip in clips]
    detector = TiledDetector(model, tile=None, compile=True)
    assert detector.network is not detector.model  # the compiled wrapper runs
    for clip, expected in zip(clips, plain):
        np.testing.assert_allclose(detector.detect_clip(clip), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(shutil.which(os.environ.get("CC", "cc")) is None,
                    reason="torch.compile's inductor backend needs a C compiler; none on PATH")
def test_inductor_compiled_tiled_detector_matches_eager():
    model = build_tiny()
    clip = random_clips(1)[0]
    expected = TiledDetector(model, tile=None).detect_clip(clip)
    found = TiledDetector(model, tile=None, compile=True).detect_clip(clip)
    np.testing.assert_allclose(found, expected, rtol=1e-4, atol=1e-4)  # fused kernels round differently


def test_training_with_compile_trains_and_checkpoints_the_plain_model(eager_compile, dataset_root, tmp_path):
    best = train(tiny_config(compile=True, val_interval=0), dataset_root, tmp_path / "run")
    state = load_checkpoint(best)["state_dict"]
    assert not any(key.startswith("_orig_mod.") for key in state)  # loadable without compile
    initial = build_tiny().state_dict()
    assert any(not torch.equal(state[key], initial[key]) for key in initial)
    assert json.loads((tmp_path / "run" / "provenance.json").read_text())["config"]["compile"] is True


# --------------------------------------------------------------------------- DDP without unused-parameter search


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_trainable_parameter_gets_a_gradient(variant):
    """Plain DDP (find_unused_parameters=False) waits forever for a trainable parameter that
    gets no gradient; every variant must therefore give one to each."""
    torch.manual_seed(0)
    model = build(variant).train()
    outputs = model(torch.randn(1, 3, 5, 32, 32))
    sum(value.float().sum() for value in outputs.values()).backward()
    missing = [name for name, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == []


def test_two_gloo_processes_train_micml_without_unused_parameter_search(dataset_root, tmp_path):
    # Two steps: DDP reports a parameter left without a gradient when the next step starts.
    config = tiny_config(model="micml", plugins=[], epochs=1, iters_per_epoch=2, val_interval=0, device="cpu")
    assert "find_unused_parameters" not in config  # the default, False, is what runs
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps(config))
    command = launch_command(2, ["--config", config_file, "--data", dataset_root, "--out", tmp_path / "out"])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), str(REPO)])}
    finished = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert load_checkpoint(tmp_path / "out" / "last.pt")["global_step"] == 2


# --------------------------------------------------------------------------- benchmarks/gpu_check.py


def run_gpu_check(*args: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), **(env_extra or {})}
    return subprocess.run([sys.executable, str(GPU_CHECK), *args], env=env, capture_output=True, text=True,
                          timeout=120)


def test_gpu_check_help_works():
    finished = run_gpu_check("--help")
    assert finished.returncode == 0, finished.stderr
    assert "--out" in finished.stdout


def test_gpu_check_without_cuda_exits_with_one_clear_line(tmp_path):
    finished = run_gpu_check("--out", str(tmp_path / "gpu.json"), env_extra={"CUDA_VISIBLE_DEVICES": ""})
    assert finished.returncode != 0
    lines = finished.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("no CUDA device: "), finished.stderr
    assert not (tmp_path / "gpu.json").exists()


# --------------------------------------------------------------------------- channels_last


def test_channels_last_weights_accepts_a_detector_with_3d_convolutions():
    torch.manual_seed(0)
    model = build("micml").eval()
    clip = torch.randn(1, 3, 5, 32, 32)
    with torch.inference_mode():
        expected = model(clip)
    channels_last_weights(model)  # model.to(memory_format=channels_last) raises on the Conv3d weights
    conv3d = next(m for m in model.modules() if isinstance(m, torch.nn.Conv3d))
    assert conv3d.weight.is_contiguous(memory_format=torch.channels_last_3d)
    with torch.inference_mode():
        found = model(clip)
    for head in expected:
        torch.testing.assert_close(found[head], expected[head], rtol=1e-4, atol=1e-4)


def test_gpu_check_runs_every_part_on_the_cpu_at_tiny_sizes(tmp_path):
    """The hidden --device cpu runs the GPU script's own code (DDP over gloo), so a first GPU run
    fails only on what is specific to CUDA. The compiled eval setting is left out (inductor
    needs minutes for micml on a CPU)."""
    out = tmp_path / "gpu.json"
    finished = run_gpu_check("--device", "cpu", "--out", str(out), "--eval-size", "64", "--frames", "1",
                             "--train-size", "32", "--batch", "1", "--train-steps", "2", "--skip", "compile")
    assert finished.returncode == 0, finished.stderr[-3000:]
    document = json.loads(out.read_text())
    assert document["complete"] and document["failed"] == []
    assert set(document["parts"]) == {"dcn", "eval", "train", "ddp"}
    assert set(document["parts"]["eval"]["settings"]) == {"fp32", "bf16", "bf16_channels_last"}
    assert document["parts"]["train"]["steps"] == 2
    assert document["parts"]["ddp"]["weights_equal"] is True
