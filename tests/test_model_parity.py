"""`micml` and `dsfnet` compute the reference networks' function, on every path that runs them.

tests/data/model_parity holds the eval outputs of the reference MICML and DSFNet code for one
deterministic set of weights (README there). Here our models get the same weights, strictly
loaded, and must give the same heads in float64 to 1e-10 of the largest value, with each
deformable-convolution backend, with the reference's memory layout, and through the optimised
inference copy that `load_detector` returns. A refactor or speed change that alters the
function fails here, not in a training run days later.
"""

import contextlib
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from micml.models import optimize_for_inference
from micml.models.layout import use_channels_last_on_cpu
from micml.models.registry import build
from micml.ops.deform_conv import set_backend

DATA = Path(__file__).resolve().parent / "data" / "model_parity"
RELATIVE_TOLERANCE = 1e-10
HEADS = ("hm", "wh", "reg")
# Built and loaded by the reference but never run by its forward; our backbone leaves them out.
NEVER_RUN_BY_THE_REFERENCE = ("base.level5.", "base.fc.")
FIXTURES = {"micml": ("micml_reference_state_dict_keys.json", "expected_eval.npz"),
            "dsfnet": ("dsfnet_reference_state_dict_keys.json", "expected_eval_dsfnet.npz")}
INPUT_GENERATOR = "numpy.random.default_rng(7).standard_normal(shape)"


def fill_values(entries):
    """The fixture's own fill (tests/data/model_parity/fill.py), loaded from its file unchanged."""
    spec = importlib.util.spec_from_file_location("model_parity_fill", DATA / "fill.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.fill_values(entries)


def reference_entries(variant):
    keys_file = FIXTURES[variant][0]
    return [(e["key"], e["shape"], e["dtype"]) for e in json.loads((DATA / keys_file).read_text())]


@pytest.fixture(scope="module")
def clip():
    spec = json.loads((DATA / "input_specs.json").read_text())["inputs"]["eval"]
    assert spec["generator"] == INPUT_GENERATOR and spec["dtype"] == "float64"
    return torch.from_numpy(np.random.default_rng(7).standard_normal(spec["shape"]))


@pytest.fixture(scope="module", params=sorted(FIXTURES))
def filled(request):
    """(variant, float64 model in eval mode with the fixture's weights, the reference's outputs)."""
    variant = request.param
    values = fill_values(reference_entries(variant))
    model = build(variant).double()
    ours = model.state_dict()
    loadable = {key: torch.from_numpy(np.asarray(value)) for key, value in values.items() if key in ours}
    model.load_state_dict(loadable, strict=True)
    with np.load(DATA / FIXTURES[variant][1]) as expected:
        return variant, model.eval(), {head: expected[head] for head in HEADS}


@pytest.mark.parametrize("variant", sorted(FIXTURES))
def test_only_the_never_run_reference_weights_are_absent(variant):
    ours = set(build(variant).state_dict())
    absent = [key for key, _, _ in reference_entries(variant) if key not in ours]
    assert absent and all(key.startswith(NEVER_RUN_BY_THE_REFERENCE) for key in absent)


@contextlib.contextmanager
def dcn_backend(name, channels_last=True):
    set_backend(name)
    use_channels_last_on_cpu(channels_last)
    try:
        yield
    finally:
        set_backend(None)
        use_channels_last_on_cpu(True)


def relative_errors(output, expected):
    return {head: float(np.abs(output[head].numpy() - expected[head]).max() / np.abs(expected[head]).max())
            for head in HEADS}


@pytest.mark.parametrize("backend, channels_last", [("gather", True), ("torchvision", True), ("gather", False)],
                         ids=["gather", "torchvision", "gather-reference-layout"])
def test_eval_heads_equal_the_reference(filled, clip, backend, channels_last):
    variant, model, expected = filled
    with dcn_backend(backend, channels_last), torch.no_grad():
        errors = relative_errors(model(clip), expected)
    assert max(errors.values()) <= RELATIVE_TOLERANCE, f"{variant} with {backend}: {errors}"


def test_optimised_inference_copy_equals_the_reference(filled, clip):
    variant, model, expected = filled
    with torch.inference_mode():
        errors = relative_errors(optimize_for_inference(model)(clip), expected)
    assert max(errors.values()) <= RELATIVE_TOLERANCE, f"{variant}, optimised: {errors}"
