"""ImageNet-initialised DLA-34 (`training.pretrained`): timm's weights load exactly, bad files are
one-line errors, the ImageNet file is fetched and pinned, normalisation follows the weights into
the checkpoint and into inference, and reference checkpoints convert. `pytest -k pretrained`.

timm (a test dependency) builds randomly initialised dla34 models: nothing is downloaded."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

timm = pytest.importorskip("timm")

from micml.cli import main  # noqa: E402
from micml.data import download  # noqa: E402
from micml.data.clips import (IMAGENET_NORMALISATION, REFERENCE_NORMALISATION, Normalisation,  # noqa: E402
                              normalisation_for_weights, pad_to_multiple)
from micml.checkpoint import load_checkpoint  # noqa: E402
from micml.engine.launch import model_training_config  # noqa: E402
from micml.engine.train import train  # noqa: E402
from micml.inference import CheckpointError, TiledDetector, load_detector  # noqa: E402
from micml.models import DLA34, build  # noqa: E402
from micml.models.backbone import PretrainedWeightsError, load_imagenet_weights  # noqa: E402
from micml import weights  # noqa: E402

from test_engine import dataset_root  # noqa: E402,F401  (the tiny squares dataset fixture)

REPO = Path(__file__).resolve().parent.parent
DEAD_PROJECT_KEYS = 12  # level3/level4 `project`: conv weight + BN weight, bias, mean, var, counter


def random_timm_dla34(seed: int = 0) -> torch.nn.Module:
    """timm's dla34, random weights and random BatchNorm statistics (so eval mode uses them)."""
    torch.manual_seed(seed)
    model = timm.create_model("dla34", pretrained=False)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.normal_(1, 0.1)
                module.bias.normal_(0, 0.1)
    return model.eval()


@pytest.fixture(scope="module")
def timm_file(tmp_path_factory) -> tuple[Path, torch.nn.Module]:
    model = random_timm_dla34()
    path = tmp_path_factory.mktemp("weights") / "dla34_in1k.safetensors"
    save_file({name: tensor.contiguous() for name, tensor in model.state_dict().items()}, str(path))
    return path, model


def one_line(error: BaseException) -> str:
    message = str(error)
    assert len(message.splitlines()) == 1, message
    return message


# --------------------------------------------------------------------------- loading


def test_timm_dla34_safetensors_gives_exactly_timms_feature_maps(timm_file):
    path, timm_model = timm_file
    backbone = DLA34()
    report = load_imagenet_weights(backbone, path)
    features = timm.create_model("dla34", pretrained=False, features_only=True, out_indices=(0, 1, 2, 3, 4))
    features.load_state_dict({k: v for k, v in timm_model.state_dict().items()
                              if not k.startswith(("level5.", "fc."))})
    x = torch.randn(2, 3, 64, 48, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours, theirs = backbone.eval()(x), features.eval()(x)
    assert len(ours) == len(theirs) == 5
    for mine, reference in zip(ours, theirs):
        assert mine.dtype == torch.float32 and torch.equal(mine, reference)
    assert all(key.startswith(("level5.", "fc.")) for key in report.skipped) and "fc.weight" in report.skipped
    assert len(report.kept_initial) == DEAD_PROJECT_KEYS
    assert all(key.startswith(("level3.project.", "level4.project.")) for key in report.kept_initial)


def test_pth_and_detector_prefixed_files_load_the_same(tmp_path, timm_file):
    path, timm_model = timm_file
    pth = tmp_path / "dla34.pth"
    torch.save({"state_dict": {f"module.base.{k}": v for k, v in timm_model.state_dict().items()}}, pth)
    from_safetensors, from_pth = DLA34(), DLA34()
    load_imagenet_weights(from_safetensors, path)
    load_imagenet_weights(from_pth, pth)
    for (name, a), b in zip(from_safetensors.state_dict().items(), from_pth.state_dict().values()):
        if not name.startswith(("level3.project.", "level4.project.")):
            assert torch.equal(a, b), name


def test_wrong_shapes_truncated_and_foreign_files_are_one_line_errors(tmp_path, timm_file):
    path, timm_model = timm_file
    state = {k: v.contiguous() for k, v in timm_model.state_dict().items()}
    state["level2.root.conv.weight"] = torch.zeros(7, 7, 1, 1)
    wrong = tmp_path / "wrong_shape.safetensors"
    save_file(state, str(wrong))
    with pytest.raises(PretrainedWeightsError) as info:
        build("centernet", pretrained=wrong)
    assert "wrong_shape.safetensors" in one_line(info.value) and "level2.root.conv.weight (7, 7, 1, 1)" in str(info.value)

    del state["level2.root.conv.weight"]
    missing = tmp_path / "missing_key.safetensors"
    save_file(state, str(missing))
    with pytest.raises(PretrainedWeightsError, match="missing 1 keys: level2.root.conv.weight") as info:
        build("centernet", pretrained=missing)
    one_line(info.value)

    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    truncated_pth = tmp_path / "truncated.pth"
    torch.save(timm_model.state_dict(), truncated_pth)
    truncated_pth.write_bytes(truncated_pth.read_bytes()[:5000])
    text = tmp_path / "notes.pth"
    text.write_text("these are not weights\n")
    json_named = tmp_path / "config.safetensors"
    json_named.write_text('{"a": 1}')
    for bad in (truncated, truncated_pth, text, json_named):
        with pytest.raises(PretrainedWeightsError) as info:
            load_imagenet_weights(DLA34(), bad)
        assert bad.name in one_line(info.value) and "cannot be read as a weights file" in str(info.value)

    not_a_state_dict = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], not_a_state_dict)
    with pytest.raises(PretrainedWeightsError, match="expected a state dict") as info:
        load_imagenet_weights(DLA34(), not_a_state_dict)
    one_line(info.value)


# --------------------------------------------------------------------------- the ImageNet file


def test_imagenet_is_the_pinned_weights_file(tmp_path, timm_file):
    path = tmp_path / "weights" / "dla34_in1k.safetensors"
    with pytest.raises(weights.WeightsFileError) as info:
        weights.resolve_pretrained("imagenet", path)
    message = one_line(info.value)
    assert weights.IMAGENET_URL in message and str(path.resolve()) in message
    path.parent.mkdir()
    path.write_bytes(timm_file[0].read_bytes())
    assert weights.resolve_pretrained("imagenet", path) == str(path)
    manifest = json.loads((path.parent / weights.WEIGHTS_MANIFEST).read_text())
    assert manifest[path.name]["sha256"] == download.file_sha256(path)
    assert weights.resolve_pretrained("imagenet", path) == str(path)  # the same file: accepted again
    path.write_bytes(path.read_bytes()[:-8] + b"12345678")
    with pytest.raises(weights.WeightsFileError, match="was recorded in") as info:
        weights.resolve_pretrained("imagenet", path)
    one_line(info.value)
    assert weights.resolve_pretrained(None, path) is None
    assert weights.resolve_pretrained("my/dla34.pth", path) == "my/dla34.pth"


def test_fetch_downloads_when_online_and_says_what_to_do_offline(tmp_path, timm_file, monkeypatch):
    def offline(request, timeout=None):
        raise urllib.error.URLError("no network")

    target = tmp_path / "weights" / "dla34_in1k.safetensors"
    with pytest.raises(download.ManualDownloadRequired) as info:
        weights.fetch_imagenet_weights(target, opener=offline, retries=1)
    assert weights.IMAGENET_URL in str(info.value) and str(target.resolve()) in str(info.value)
    assert not target.exists()

    monkeypatch.setattr(weights, "IMAGENET_URL", timm_file[0].resolve().as_uri())
    record = weights.fetch_imagenet_weights(target, retries=1)
    assert record["obtained"] == "downloaded" and target.read_bytes() == timm_file[0].read_bytes()
    assert json.loads((target.parent / "manifest.json").read_text())[target.name]["sha256"] == record["sha256"]
    assert weights.fetch_imagenet_weights(target, opener=offline)["obtained"] == "placed"


def test_training_pretrained_becomes_the_model_option():
    training = {"pretrained": "dla34.pth", "per_model": {"dsfnet_dynamic": {"pretrained": None}}}
    assert model_training_config(training, "micml")["model_options"] == {"pretrained": "dla34.pth"}
    assert model_training_config(training, "dsfnet_dynamic")["model_options"] == {}
    assert model_training_config({"pretrained": None}, "dsfnet")["model_options"] == {}
    overridden = model_training_config(training, "dsfnet", overrides={"pretrained": "other.safetensors"})
    assert overridden["model_options"] == {"pretrained": "other.safetensors"}
    assert weights.pretrained_choice(training, "dsfnet_dynamic") is None
    assert weights.pretrained_choice(training, "micml") == "dla34.pth"


def test_paper_config_plans_backbone_weights_before_training(tmp_path):
    paper = ["--configfile", str(REPO / "config" / "paper.yaml"), "--replace-workflow-config"]  # as README says
    result = subprocess.run([sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "-n",
                             "--forceall", *paper], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    # The paper profile replaces the default config: no job writes under results/synthetic/.
    assert "results/synthetic/" not in result.stdout.replace(str(REPO), "")
    jobs = result.stdout.split("rule ")
    train_inputs = [job for job in jobs if job.startswith("train:")]
    assert any(job.startswith("backbone_weights:") for job in jobs)
    assert train_inputs and all(weights.IMAGENET_WEIGHTS in job for job in train_inputs
                                if "model=dsfnet_dynamic" not in job)
    assert all(weights.IMAGENET_WEIGHTS not in job.split("output:")[0] for job in train_inputs
               if "model=dsfnet_dynamic" in job)


# --------------------------------------------------------------------------- normalisation


def test_normalisation_follows_the_weights_and_round_trips():
    assert normalisation_for_weights(None) is REFERENCE_NORMALISATION
    assert normalisation_for_weights("x.safetensors") is IMAGENET_NORMALISATION
    pixel = np.array([[10, 128, 250]], np.uint8)  # B, G, R
    expected = (np.array([250, 128, 10]) / 255 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(IMAGENET_NORMALISATION(pixel)[0], expected, rtol=1e-6)
    for normalisation in (REFERENCE_NORMALISATION, IMAGENET_NORMALISATION):
        assert Normalisation.from_dict(json.loads(json.dumps(normalisation.as_dict()))) == normalisation
    assert Normalisation.from_dict(None) is REFERENCE_NORMALISATION  # checkpoints older than the field
    with pytest.raises(ValueError, match="channels"):
        Normalisation.from_dict({"name": "x", "channels": "GBR", "mean": 0.5, "std": 0.1})


class Recorder(torch.nn.Module):
    """Heads of the right shape; keeps the input it was given."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))

    def forward(self, clip):
        self.last_input = clip.clone()
        batch, _, _, height, width = clip.shape
        return {"hm": clip[:, :1, 0] * self.scale, "wh": torch.ones(batch, 2, height, width),
                "reg": torch.zeros(batch, 2, height, width)}


@pytest.mark.parametrize("normalisation", [REFERENCE_NORMALISATION, IMAGENET_NORMALISATION], ids=lambda n: n.name)
def test_tiled_inference_feeds_the_models_normalisation(normalisation):
    rng = np.random.default_rng(0)
    clip = tuple(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8) for _ in range(5))
    model = Recorder()
    model.normalisation = normalisation
    TiledDetector(model, tile=None).detect_clip(clip)
    expected = torch.from_numpy(normalisation(pad_to_multiple(np.stack(clip))).transpose(3, 0, 1, 2).copy())[None]
    assert torch.equal(model.last_input, expected)  # grey padding included


def test_one_training_step_from_a_timm_file_stores_and_uses_imagenet_normalisation(tmp_path, timm_file,
                                                                                 dataset_root):  # noqa: F811
    config = model_training_config({"pretrained": str(timm_file[0])}, "centernet", overrides={
        "crop_size": 32, "batch_size": 2, "epochs": 1, "iters_per_epoch": 1, "val_interval": 0,
        "num_workers": 0, "progress": False, "threads": 1, "model_options": {"head_conv": 8}})
    best = train(config, dataset_root, tmp_path / "run")
    checkpoint = load_checkpoint(best)
    assert checkpoint["normalisation"] == IMAGENET_NORMALISATION.as_dict()
    assert checkpoint["model"]["options"] == {"head_conv": 8, "pretrained": str(timm_file[0])}
    assert checkpoint["global_step"] == 1
    detector = load_detector(best, optimize=False)  # the weights file is not read again
    assert detector.normalisation == IMAGENET_NORMALISATION

    del checkpoint["normalisation"]  # as a checkpoint written before the field existed
    old = tmp_path / "old.pt"
    torch.save(checkpoint, old)
    assert load_detector(old, optimize=False).normalisation == REFERENCE_NORMALISATION


# --------------------------------------------------------------------------- reference checkpoints


def test_convert_checkpoint_makes_a_reference_file_usable(tmp_path, capsys):
    model = build("dsfnet", head_conv=8)
    reference = tmp_path / "model_best.pth"
    torch.save({"epoch": 41, "state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, reference)

    with pytest.raises(CheckpointError, match="micml convert-checkpoint") as info:
        load_detector(reference)
    one_line(info.value)
    frames = tmp_path / "frames"
    frames.mkdir()
    cv2.imwrite(str(frames / "1.png"), np.zeros((32, 32, 3), np.uint8))
    assert main(["detect", str(frames), "--checkpoint", str(reference), "--out", str(tmp_path / "out")]) == 1
    assert "micml convert-checkpoint" in capsys.readouterr().err

    converted = tmp_path / "converted.pt"
    assert main(["convert-checkpoint", str(reference), str(converted), "--model", "dsfnet", "--head-conv", "8"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["source_epoch"] == 41 and printed["source_sha256"] == download.file_sha256(reference)
    checkpoint = load_checkpoint(converted)
    assert checkpoint["normalisation"] == REFERENCE_NORMALISATION.as_dict()
    assert checkpoint["provenance"]["converted_from"] == str(reference)
    detector = load_detector(converted, optimize=False)
    assert detector.normalisation == REFERENCE_NORMALISATION
    for name, tensor in model.state_dict().items():
        assert torch.equal(detector.state_dict()[name], tensor), name

    assert main(["convert-checkpoint", str(reference), str(tmp_path / "x.pt"), "--model", "micml",
                 "--head-conv", "8"]) == 1
    assert "do not fit model 'micml'" in one_line(RuntimeError(capsys.readouterr().err.strip()))
