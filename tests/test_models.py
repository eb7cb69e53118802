"""Tests of micml.models: parameter counts, shapes, init, motion-module fidelity, registry,
reference checkpoint keys and pretrained loading. Small tensors only; CPU; < 60 s on 2 cores.

Expected numbers come from reference/MICML_SPEC.md §2.5-2.7 (measured on the reference code).
"""

from __future__ import annotations

import math

import pytest
import torch

from micml import catalog
from micml.models import (VARIANTS, build, convert_reference_state_dict, count_parameters, describe,
                          load_reference_checkpoint, rebuild)
from micml.models.backbone import DLA34
from micml.models.motion import ConvLSTMCell, MotionModule
from micml.models.motion_reference import reference_motion_forward
from micml.models.necks import bilinear_upsampling_kernel, dla_up_stage_plan

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    return {name: build(name) for name in VARIANTS}


def _clip(batch=1, size=64, frames=5, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, frames, size, size, generator=generator)


# ---------------------------------------------------------------------------- parameter counts
def test_inference_parameters_match_reference(models):
    assert count_parameters(models["dsfnet"]) == 7_546_319
    assert count_parameters(models["micml"]) == 7_546_319
    assert count_parameters(models["micml"], inference_only=False) == 7_546_319 + 1_217_600
    # Run at test time, the motion module's parameters count.
    assert count_parameters(models["micml_motion_at_test"]) == 7_546_319 + 1_217_600


def test_per_part_parameters_match_reference(models):
    m = models["micml"]
    # DLA-34 "base" in the reference is 15,783,832 incl. level5 (9,050,112) and fc (513,000).
    assert count_parameters(m.base) == 15_783_832 - 9_050_112 - 513_000
    assert count_parameters(m.dla_up) == 1_087_100
    assert sum(count_parameters(getattr(m.base3d, f"branch{i}")) for i in (1, 2, 3)) == 41_360
    assert count_parameters(m.base3d.dla_up) == 89_698
    assert count_parameters(m.ida_up) == 51_116
    assert [count_parameters(getattr(m, h)) for h in ("hm", "wh", "reg")] == [18_689, 18_818, 18_818]

    motion = m.motion
    assert count_parameters(motion) == 1_217_600
    assert count_parameters(motion.cell_list) == 885_504
    parts = {"w0": 262_208, "conv1": 41_088, "mapping": 12_288, "w1": 4_160, "w2": 4_160,
             "se1": 4_096, "se2": 4_096}
    assert {name: count_parameters(getattr(motion, name)) for name in parts} == parts


def test_ablation_parameters(models):
    full = 1_217_600
    assert count_parameters(models["micml_no_mining"].motion) == full - 41_088 - 4_096 - 262_208 - 4_160
    assert count_parameters(models["micml_no_adapter"].motion) == full - 4_096 - 262_208 - 2 * 4_160
    for name in ("micml_no_mining", "micml_no_adapter"):
        assert count_parameters(models[name]) == 7_546_319


# ---------------------------------------------------------------------------- shapes
def _count_calls(module):
    calls = []
    handle = module.register_forward_hook(lambda *args: calls.append(1))
    return calls, handle


@pytest.mark.parametrize("name", VARIANTS)
def test_output_shapes_stride_one_and_motion_only_where_due(models, name):
    model = models[name].eval()
    motion = model.motion
    calls, handle = _count_calls(motion) if motion is not None else ([], None)
    try:
        with torch.inference_mode():
            out = model(_clip())
    finally:
        if handle is not None:
            handle.remove()
    assert isinstance(out, dict) and list(out) == ["hm", "wh", "reg"]
    assert [tuple(out[k].shape) for k in out] == [(1, 1, 64, 64), (1, 2, 64, 64), (1, 2, 64, 64)]
    assert all(torch.isfinite(v).all() for v in out.values())
    # Eval forward: the motion module runs only in `micml_motion_at_test`.
    assert len(calls) == (1 if name == "micml_motion_at_test" else 0)


def test_output_shapes_at_512_on_meta_device():
    try:
        with torch.device("meta"):
            model = build("micml").eval()
            out = model(torch.empty(1, 3, 5, 512, 512))
    except (NotImplementedError, RuntimeError) as error:  # an op without a meta kernel
        pytest.skip(f"meta device unsupported by an op: {error}")
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "hm": (1, 1, 512, 512), "wh": (1, 2, 512, 512), "reg": (1, 2, 512, 512)}


def test_stage_shapes_at_512_on_meta_device():
    """Spec §2.3 table: DLAUp 2-D and 3-D outputs for a 512x512 clip."""
    try:
        with torch.device("meta"):
            model = build("dsfnet").eval()
            clip = torch.empty(1, 3, 5, 512, 512)
            static = model.dla_up(model.base(clip[:, :, 0]))
            temporal = model.base3d(clip)
    except (NotImplementedError, RuntimeError) as error:
        pytest.skip(f"meta device unsupported by an op: {error}")
    assert [tuple(t.shape) for t in static] == [(1, 16, 512, 512), (1, 32, 256, 256), (1, 64, 128, 128),
                                                (1, 128, 64, 64), (1, 256, 32, 32)]
    assert [tuple(t.shape) for t in temporal] == [(1, 16, 512, 512), (1, 32, 256, 256), (1, 64, 128, 128)]


# ---------------------------------------------------------------------------- motion on/off
def test_micml_training_forward_runs_motion_and_reaches_every_trainable_parameter():
    torch.manual_seed(5)
    model = build("micml").train()
    calls, handle = _count_calls(model.motion)
    try:
        out = model(_clip(size=32))
    finally:
        handle.remove()
    assert len(calls) == 1
    assert [tuple(out[k].shape) for k in out] == [(1, 1, 32, 32), (1, 2, 32, 32), (1, 2, 32, 32)]
    (out["hm"].sigmoid().mean() + out["wh"].abs().mean() + out["reg"].abs().mean()).backward()
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert no_grad == []
    assert model.motion.w0.weight.grad.abs().sum() > 0
    # Only the level3/level4 tree projections, whose output DLA-34 discards, are frozen.
    frozen = sorted({n.rsplit(".", 2)[0] for n, p in model.named_parameters() if not p.requires_grad})
    assert frozen == ["base.level3.project", "base.level4.project"]


def test_micml_in_eval_equals_dsfnet_with_the_same_weights(models):
    micml = models["micml"].eval()
    dsfnet = build("dsfnet").eval()
    dsfnet.load_state_dict(convert_reference_state_dict(micml.state_dict(), keep_motion=False))
    clip = _clip(size=32)
    with torch.inference_mode():
        a, b = micml(clip), dsfnet(clip)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


# ---------------------------------------------------------------------------- motion module
def test_cells_are_shared(models):
    motion = models["micml"].motion
    assert len(motion.cell_list) == len(motion.cell_list2) == 3
    for a, b in zip(motion.cell_list, motion.cell_list2):
        assert a is b
    keys = motion.state_dict().keys()
    assert "cell_list.2.conv.weight" in keys and "cell_list2.2.conv.weight" in keys


def test_convlstm_gate_order_is_i_f_o_g():
    cell = ConvLSTMCell(2, 3)
    with torch.no_grad():
        cell.conv.weight.zero_()
        cell.conv.bias.copy_(torch.tensor([20.0] * 3 + [-20.0] * 3 + [20.0] * 3 + [0.5] * 3))
    h, c = cell(torch.randn(1, 2, 4, 4), (torch.zeros(1, 3, 4, 4), torch.full((1, 3, 4, 4), 7.0)))
    # forget gate closed, input and output gates open: c' = tanh(0.5), h' = tanh(c')
    torch.testing.assert_close(c, torch.full_like(c, math.tanh(0.5)), atol=1e-6, rtol=0)
    torch.testing.assert_close(h, torch.tanh(c), atol=1e-6, rtol=0)


def test_node_features_are_a_raw_reshape_not_a_permute():
    torch.manual_seed(1)
    motion = MotionModule(channels=8, num_layers=1, pooled_size=8)
    h = torch.randn(2, 8, 12, 12)
    pooled = motion.se1(motion.maxpool(h))  # (B, C=8, S=8, S=8)
    nodes = motion.node_features(h)
    assert nodes.shape == (2, 64, 8)
    for r in (0, 9, 37, 63):  # row r = (channel r // S, image row r % S), entries = columns
        torch.testing.assert_close(nodes[:, r], pooled[:, r // 8, r % 8, :], rtol=0, atol=0)
    channel_last = pooled.permute(0, 2, 3, 1).reshape(2, 64, 8)
    assert not torch.allclose(nodes, channel_last)


@pytest.mark.parametrize("mining,adapter", [(True, True), (False, True), (True, False)])
def test_motion_module_matches_naive_statement(mining, adapter):
    torch.manual_seed(2)
    motion = MotionModule(channels=8, num_layers=2, pooled_size=8, mining=mining, adapter=adapter).eval()
    with torch.no_grad():  # make the BN of conv1 non-trivial
        if mining:
            motion.conv1[1].running_mean.uniform_(-0.1, 0.1)
            motion.conv1[1].running_var.uniform_(0.5, 1.5)
    seq = torch.randn(2, 5, 8, 12, 10)
    with torch.no_grad():
        expected = reference_motion_forward(motion, seq)
        found = motion(seq)
    assert found.shape == (2, 5, 8, 12, 10)
    torch.testing.assert_close(found, expected, rtol=1e-5, atol=1e-5)


def test_motion_module_built_as_reference():
    m = build("micml").motion
    assert m.maxpool.output_size == 64
    assert m.conv1[0].in_channels == 640 and m.w0.in_features == 4096
    assert m.mapping[0].bias is None and m.mapping[2].bias is None and m.conv1[0].bias is None


# ---------------------------------------------------------------------------- init facts
def test_head_initialisation(models):
    m = models["dsfnet"]
    assert torch.all(m.hm[2].bias == -2.19)
    for name in ("wh", "reg"):
        head = getattr(m, name)
        assert torch.all(head[0].bias == 0) and torch.all(head[2].bias == 0)


def test_upsampling_kernels_are_bilinear(models):
    expected = {4: torch.tensor([1, 3, 3, 1]) / 4, 8: torch.tensor([1, 3, 5, 7, 7, 5, 3, 1]) / 8}
    for k, profile in expected.items():
        torch.testing.assert_close(bilinear_upsampling_kernel(k), torch.outer(profile, profile))
    m = models["dsfnet"]
    for up, k in ((m.ida_up.up_1, 4), (m.ida_up.up_2, 8), (m.dla_up.ida_3.up_4, 4)):
        assert up.weight.requires_grad and up.bias is None and up.groups == up.in_channels
        torch.testing.assert_close(up.weight, bilinear_upsampling_kernel(k).expand_as(up.weight))
    # A constant map stays constant away from the border.
    x = torch.ones(1, 16, 8, 8)
    with torch.no_grad():
        y = m.ida_up.up_2(x)
    assert y.shape == (1, 16, 32, 32)
    torch.testing.assert_close(y[..., 4:-4, 4:-4], torch.ones_like(y[..., 4:-4, 4:-4]))


def test_dla_up_channel_bookkeeping():
    plan = dla_up_stage_plan([16, 32, 64, 128, 256], [1, 2, 4, 8, 16])
    assert [(s["out_channels"], s["in_channels"], s["factors"]) for s in plan] == [
        (128, [128, 256], [1, 2]),
        (64, [64, 128, 128], [1, 2, 2]),
        (32, [32, 64, 64, 64], [1, 2, 2, 2]),
        (16, [16, 32, 32, 32, 32], [1, 2, 2, 2, 2]),
    ]
    plan3d = dla_up_stage_plan([16, 32, 64], [1, 2, 4])
    assert [(s["out_channels"], s["in_channels"]) for s in plan3d] == [(32, [32, 64]), (16, [16, 32, 32])]


# ---------------------------------------------------------------------------- input checks
@pytest.mark.parametrize("shape,needle", [
    ((3, 5, 64, 64), "4-D tensor"),
    ((1, 3, 4, 64, 64), "T=4"),
    ((1, 3, 6, 64, 64), "T=6"),
    ((1, 1, 5, 64, 64), "found 1"),
    ((1, 3, 5, 64, 72), "W=72"),
])
def test_bad_input_gives_actionable_error(models, shape, needle):
    with pytest.raises(ValueError, match="Fix:") as info:
        models["dsfnet"](torch.zeros(shape))
    assert needle in str(info.value)


# ---------------------------------------------------------------------------- registry
def test_registry_builds_every_variant_with_its_config(models):
    assert set(VARIANTS) == {"centernet", "dsfnet_static", "dsfnet_dynamic", "dsfnet", "micml",
                             "micml_motion_at_test", "micml_no_adapter", "micml_no_mining"}
    # the registry builds exactly micml.catalog's names, in order, and describes them the same way
    assert VARIANTS == catalog.VARIANTS and list(models) == list(catalog.VARIANTS)
    assert all(describe(name) == catalog.describe(name) != "" for name in VARIANTS)
    for name, model in models.items():
        assert model.variant == name
        assert model.config == {"variant": name, "head_conv": 128, "pretrained": None}
    assert models["centernet"].base3d is None and models["centernet"].ida_up is None
    assert models["dsfnet_static"].base3d is None and models["dsfnet_static"].ida_up is not None
    assert models["dsfnet_dynamic"].base is None
    assert models["dsfnet"].motion is None and models["micml"].motion is not None
    rebuilt = rebuild(models["micml_no_mining"].config)
    assert rebuilt.state_dict().keys() == models["micml_no_mining"].state_dict().keys()


def test_registry_rejects_unknown_names_and_options():
    with pytest.raises(ValueError, match="known models: centernet, dsfnet_static") as info:
        build("micml2")
    assert all(name in str(info.value) for name in VARIANTS)
    with pytest.raises(TypeError, match="valid options: pretrained=None, head_conv=128"):
        build("micml", head=3)
    with pytest.raises(ValueError, match="head_conv"):
        build("micml", head_conv=-1)


def test_head_conv_option():
    model = build("centernet", head_conv=0)
    assert count_parameters(model.hm) == 16 + 1 and model.hm.bias.item() == pytest.approx(-2.19)
    assert build("centernet", head_conv=64).hm[0].out_channels == 64


# ---------------------------------------------------------------------------- reference keys
def _bn(prefix):
    return [f"{prefix}.{k}" for k in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")]


def _dla_tree(prefix, depth, project):
    def block(p):
        return [f"{p}.conv1.weight", *_bn(f"{p}.bn1"), f"{p}.conv2.weight", *_bn(f"{p}.bn2")]
    if depth == 1:
        keys = block(f"{prefix}.tree1") + block(f"{prefix}.tree2") + [f"{prefix}.root.conv.weight",
                                                                      *_bn(f"{prefix}.root.bn")]
    else:
        keys = _dla_tree(f"{prefix}.tree1", depth - 1, True) + _dla_tree(f"{prefix}.tree2", depth - 1, False)
    if project:
        keys += [f"{prefix}.project.0.weight", *_bn(f"{prefix}.project.1")]
    return keys


def _deform(prefix):
    return [*_bn(f"{prefix}.actf.0"), f"{prefix}.conv.weight", f"{prefix}.conv.bias",
            f"{prefix}.conv.conv_offset_mask.weight", f"{prefix}.conv.conv_offset_mask.bias"]


def _ida(prefix, n):
    keys = []
    for i in range(1, n):
        keys += _deform(f"{prefix}.proj_{i}") + [f"{prefix}.up_{i}.weight"] + _deform(f"{prefix}.node_{i}")
    return keys


def _dla_up(prefix, n):
    return [k for stage in range(n - 1) for k in _ida(f"{prefix}.ida_{stage}", stage + 2)]


def reference_keys():
    """The reference MICML state_dict keys, in order, written from the reference's structure."""
    keys = ["base.base_layer.0.weight", *_bn("base.base_layer.1")]
    for level in (0, 1):
        keys += [f"base.level{level}.0.weight", *_bn(f"base.level{level}.1")]
    for level, depth in ((2, 1), (3, 2), (4, 2), (5, 1)):
        keys += _dla_tree(f"base.level{level}", depth, True)
    keys += ["base.fc.weight", "base.fc.bias"]
    keys += _dla_up("dla_up", 5)
    for branch in (1, 2, 3):
        for j in range(3):
            keys += [f"base3d.branch{branch}.{j}.conv.weight", *_bn(f"base3d.branch{branch}.{j}.bn")]
    keys += _dla_up("base3d.dla_up", 3)
    motion = "base3d.Motion"
    for cells in ("cell_list", "cell_list2"):
        for layer in range(3):
            keys += [f"{motion}.{cells}.{layer}.conv.weight", f"{motion}.{cells}.{layer}.conv.bias"]
    for linear in ("w0", "w1", "w2"):
        keys += [f"{motion}.{linear}.weight", f"{motion}.{linear}.bias"]
    for se in ("se1", "se2"):
        keys += [f"{motion}.{se}.fc.0.weight", f"{motion}.{se}.fc.2.weight"]
    keys += [f"{motion}.conv1.0.weight", *_bn(f"{motion}.conv1.1"),
             f"{motion}.mapping.0.weight", f"{motion}.mapping.2.weight"]
    keys += _ida("ida_up", 3)
    for head in ("hm", "wh", "reg"):
        keys += [f"{head}.0.weight", f"{head}.0.bias", f"{head}.2.weight", f"{head}.2.bias"]
    return keys


def _reference_state_dict(model, prefix="module."):
    """Random tensors under the reference's keys (shapes from `model`; level5/fc small)."""
    generator = torch.Generator().manual_seed(3)
    ours = model.state_dict()
    state = {}
    for key in reference_keys():
        shape = ours[key].shape if key in ours else (2, 2)
        if key.endswith("num_batches_tracked"):
            state[prefix + key] = torch.tensor(7)
        else:
            state[prefix + key] = torch.randn(shape, generator=generator)
    state[prefix + "base3d.Motion.cell_list2.1.conv.bias"] = state[prefix + "base3d.Motion.cell_list.1.conv.bias"]
    return state


def test_reference_key_pattern_has_617_keys_and_matches_ours(models):
    keys = reference_keys()
    assert len(keys) == len(set(keys)) == 617
    ours = list(models["micml"].state_dict())
    expected = [k for k in keys if not k.startswith(("base.level5.", "base.fc."))]
    assert ours == expected  # same names, same order


def test_reference_state_dict_loads_strictly(tmp_path):
    model = build("micml")
    reference = _reference_state_dict(model)
    converted = convert_reference_state_dict(reference)
    model.load_state_dict(converted, strict=True)
    torch.testing.assert_close(model.hm[2].bias, reference["module.hm.2.bias"])
    torch.testing.assert_close(model.base.level4.tree2.root.conv.weight,
                               reference["module.base.level4.tree2.root.conv.weight"])
    torch.testing.assert_close(model.motion.w0.weight, reference["module.base3d.Motion.w0.weight"])

    # A checkpoint file as the reference saves it, into the deployed architecture (no motion).
    path = tmp_path / "model_best.pth"
    torch.save({"epoch": 55, "state_dict": {k[len("module."):]: v for k, v in reference.items()}}, path)
    dsfnet = build("dsfnet")
    result = load_reference_checkpoint(dsfnet, path)
    assert not result.missing_keys and not result.unexpected_keys
    torch.testing.assert_close(dsfnet.ida_up.node_2.conv.weight, reference["module.ida_up.node_2.conv.weight"])


def test_reference_state_dict_with_wrong_keys_fails_strictly():
    model = build("dsfnet")
    state = convert_reference_state_dict(model.state_dict())
    state.pop("hm.2.bias")
    with pytest.raises(RuntimeError, match="hm.2.bias"):
        load_reference_checkpoint(model, state)
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        load_reference_checkpoint(model, "nowhere.pth")


# ---------------------------------------------------------------------------- pretrained
def _imagenet_file(tmp_path):
    """A DLA-34 ImageNet file in the reference layout: levels 0-5 + fc, no BN counters."""
    generator = torch.Generator().manual_seed(4)
    state = {k: torch.randn(v.shape, generator=generator) for k, v in DLA34().state_dict().items()
             if not k.endswith("num_batches_tracked")}
    for key in _dla_tree("level5", 1, True):
        state[key] = torch.randn(3, generator=generator)
    state["fc.weight"] = torch.randn(1000, 512, 1, 1, generator=generator)
    state["fc.bias"] = torch.randn(1000, generator=generator)
    path = tmp_path / "dla34-ba72cf86.pth"
    torch.save(state, path)
    return path, state


def test_pretrained_loads_local_file_and_ignores_level5_fc(tmp_path):
    path, state = _imagenet_file(tmp_path)
    model = build("micml", pretrained=path)
    torch.testing.assert_close(model.base.level3.tree1.tree2.conv2.weight, state["level3.tree1.tree2.conv2.weight"])
    torch.testing.assert_close(model.base.base_layer[1].running_var, state["base_layer.1.running_var"])
    assert not hasattr(model.base, "level5") and not hasattr(model.base, "fc")
    assert model.config["pretrained"] == str(path)


def test_pretrained_errors(tmp_path):
    missing = tmp_path / "dla34-missing.pth"
    with pytest.raises(FileNotFoundError, match="dla34-missing.pth") as info:
        build("dsfnet", pretrained=missing)
    assert "pretrained=None" in str(info.value)
    path, state = _imagenet_file(tmp_path)
    with pytest.raises(ValueError, match="no DLA-34 backbone"):
        build("dsfnet_dynamic", pretrained=path)
    del state["level2.root.conv.weight"]
    torch.save(state, path)
    with pytest.raises(ValueError, match="level2.root.conv.weight"):
        build("centernet", pretrained=path)
