"""Tests for micml.ops: DCNv2 backends against an independent slow loop implementation."""

import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import micml.ops
from micml.ops import ModulatedDeformConv2d, check_against_reference, modulated_deform_conv2d
from micml.ops import check as check_module
from micml.ops import deform_conv as deform_conv_module
from micml.ops import gather as gather_module
from micml.ops import kernels
from micml.ops import matmul as matmul_module
from micml.ops.matmul import Linear, PointwiseConv2d, linear, onednn_available
from micml.ops.reference import reference_modulated_deform_conv2d

BACKENDS = ("gather", "torchvision")
INPUT_NAMES = ("x", "offset", "mask", "weight", "bias")


def naive_modulated_deform_conv2d(x, offset, mask, weight, bias, stride, padding, dilation):
    """DCNv2 straight from its definition: loops over pixels and kernel points, numpy float64.

    Bilinear sampling is written as a tent filter over all pixels,
    sum_h,w max(0, 1-|y-h|) max(0, 1-|x-w|) img[h, w], which is zero outside the
    image by construction and shares no code or structure with micml.ops.
    """
    stride, padding, dilation = (
        (value, value) if isinstance(value, int) else tuple(value) for value in (stride, padding, dilation)
    )
    x, offset, weight = (np.asarray(t, dtype=np.float64) for t in (x, offset, weight))
    batch, channels, height, width = x.shape
    out_channels, _, kernel_h, kernel_w = weight.shape
    kernel_points = kernel_h * kernel_w
    groups = offset.shape[1] // (2 * kernel_points)
    group_channels = channels // groups
    out_h, out_w = offset.shape[2:]
    if mask is None:
        mask = np.ones((batch, groups * kernel_points, out_h, out_w))
    mask = np.asarray(mask, np.float64)
    rows, cols = np.arange(height), np.arange(width)
    out = np.zeros((batch, out_channels, out_h, out_w))
    for b in range(batch):
        for ho in range(out_h):
            for wo in range(out_w):
                for g in range(groups):
                    group_slice = slice(g * group_channels, (g + 1) * group_channels)
                    for i in range(kernel_h):
                        for j in range(kernel_w):
                            k = i * kernel_w + j
                            dy = offset[b, g * 2 * kernel_points + 2 * k, ho, wo]
                            dx = offset[b, g * 2 * kernel_points + 2 * k + 1, ho, wo]
                            y = ho * stride[0] - padding[0] + i * dilation[0] + dy
                            xx = wo * stride[1] - padding[1] + j * dilation[1] + dx
                            tent_y = np.maximum(0.0, 1.0 - np.abs(y - rows))
                            tent_x = np.maximum(0.0, 1.0 - np.abs(xx - cols))
                            value = np.einsum("h,chw,w->c", tent_y, x[b, group_slice], tent_x)
                            value *= mask[b, g * kernel_points + k, ho, wo]
                            out[b, :, ho, wo] += weight[:, group_slice, i, j] @ value
    if bias is not None:
        out += np.asarray(bias, np.float64)[None, :, None, None]
    return torch.from_numpy(out)


def random_case(batch, channels, out_channels, size, kernel=(3, 3), stride=1, padding=1, dilation=1,
                groups=1, offset_scale=2.5, dtype=torch.float64, seed=0):
    generator = torch.Generator().manual_seed(seed)
    out_size = deform_conv_module.output_size(size, kernel, (stride,) * 2, (padding,) * 2, (dilation,) * 2)
    points = kernel[0] * kernel[1] * groups

    def randn(*shape):
        return torch.randn(*shape, generator=generator, dtype=torch.float64).to(dtype)

    return dict(
        x=randn(batch, channels, *size),
        offset=randn(batch, 2 * points, *out_size) * offset_scale,
        mask=torch.rand(batch, points, *out_size, generator=generator, dtype=torch.float64).to(dtype),
        weight=randn(out_channels, channels, *kernel),
        bias=randn(out_channels),
        geometry=dict(stride=stride, padding=padding, dilation=dilation),
    )


def call(function, case, **extra):
    tensors = (case[name] for name in ("x", "offset", "mask", "weight", "bias"))
    return function(*tensors, **case["geometry"], **extra)


SHAPE_CASES = {
    "plain": dict(batch=2, channels=3, out_channels=4, size=(6, 7)),
    "stride2_pad0": dict(batch=1, channels=3, out_channels=2, size=(7, 9), stride=2, padding=0),
    "dilation2_pad1": dict(batch=1, channels=2, out_channels=3, size=(8, 6), dilation=2),
    "far_outside": dict(batch=1, channels=2, out_channels=2, size=(5, 6), offset_scale=6.0),
    "groups2_stride2": dict(batch=2, channels=4, out_channels=3, size=(7, 6), stride=2, groups=2),
    "kernel2x3": dict(batch=1, channels=2, out_channels=3, size=(5, 7), kernel=(2, 3), padding=0),
}


@pytest.mark.parametrize("backend", BACKENDS + ("reference",))
@pytest.mark.parametrize("case_name", sorted(SHAPE_CASES))
def test_matches_naive_loops_float64(backend, case_name):
    case = random_case(**SHAPE_CASES[case_name], seed=len(case_name))
    expected = call(naive_modulated_deform_conv2d, case)
    if backend == "reference":
        got = call(reference_modulated_deform_conv2d, case)
    else:
        got = call(modulated_deform_conv2d, case, backend=backend)
    assert got.dtype == torch.float64 and got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-10)


def test_offsets_really_sample_outside_the_image():
    # Guards the "far_outside" case: some samples must land fully outside,
    # otherwise the zero-outside rule would go untested.
    case = random_case(**SHAPE_CASES["far_outside"], seed=len("far_outside"))
    assert case["offset"].abs().max() > 8


def test_gather_matches_torchvision_float32():
    case = random_case(2, 8, 6, (20, 24), groups=2, offset_scale=3.0, dtype=torch.float32)
    ours = call(modulated_deform_conv2d, case, backend="gather")
    theirs = call(modulated_deform_conv2d, case, backend="torchvision")
    assert (ours - theirs).abs().max() <= 1e-4


@pytest.mark.parametrize(
    "geometry", [dict(stride=1, padding=1, dilation=1), dict(stride=2, padding=0, dilation=2)]
)
def test_gradients_agree_with_torchvision_and_reference(geometry):
    case = random_case(2, 4, 3, (7, 8), groups=2, **geometry)
    results = {}
    for name, function in (
        ("gather", lambda *a, **k: modulated_deform_conv2d(*a, **k, backend="gather")),
        ("torchvision", lambda *a, **k: modulated_deform_conv2d(*a, **k, backend="torchvision")),
        ("reference", reference_modulated_deform_conv2d),
    ):
        leaves = {key: case[key].clone().requires_grad_() for key in INPUT_NAMES}
        out = call(function, {**leaves, "geometry": case["geometry"]})
        cotangent = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)
        results[name] = torch.autograd.grad(out, list(leaves.values()), cotangent)
    for ours, theirs, ref in zip(results["gather"], results["torchvision"], results["reference"]):
        torch.testing.assert_close(ours, ref, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(theirs, ref, rtol=1e-9, atol=1e-9)


def _kink_free_offsets(shape, generator):
    """Offsets whose fractional part stays in [0.2, 0.8]: finite differences never cross a pixel."""
    whole = torch.randint(-3, 4, shape, generator=generator).double()
    return whole + 0.2 + 0.6 * torch.rand(shape, generator=generator, dtype=torch.float64)


@pytest.mark.parametrize("groups,stride,with_mask", [(1, 1, True), (2, 2, True), (1, 1, False)])
def test_gather_gradcheck(groups, stride, with_mask):
    generator = torch.Generator().manual_seed(groups)
    channels, size = 2 * groups, (3, 4) if stride == 1 else (4, 5)
    out_size = deform_conv_module.output_size(size, (3, 3), (stride,) * 2, (1, 1), (1, 1))
    inputs = {
        "x": torch.randn(1, channels, *size, generator=generator, dtype=torch.float64),
        "offset": _kink_free_offsets((1, 18 * groups, *out_size), generator),
        "mask": torch.rand(1, 9 * groups, *out_size, generator=generator, dtype=torch.float64),
        "weight": torch.randn(3, channels, 3, 3, generator=generator, dtype=torch.float64),
        "bias": torch.randn(3, generator=generator, dtype=torch.float64),
    }
    if not with_mask:
        del inputs["mask"]
    names = list(inputs)

    def function(*tensors):
        named = dict(zip(names, tensors))
        return modulated_deform_conv2d(
            named["x"], named["offset"], named.get("mask"), named["weight"], named["bias"],
            stride=stride, padding=1, backend="gather",
        )

    leaves = tuple(t.requires_grad_() for t in inputs.values())
    assert torch.autograd.gradcheck(function, leaves, eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("backend", BACKENDS)
def test_offset_channels_are_dy_then_dx(backend):
    """Only the centre tap is non-zero, so out(h, w) = x sampled at (h + dy, w + dx)."""
    x = torch.arange(5 * 6, dtype=torch.float64).view(1, 1, 5, 6) ** 1.5  # varies along both axes
    weight = torch.zeros(1, 1, 3, 3, dtype=torch.float64)
    weight[0, 0, 1, 1] = 1
    mask = torch.ones(1, 9, 5, 6, dtype=torch.float64)
    along_x = torch.zeros(1, 18, 5, 6, dtype=torch.float64)
    along_x[:, 1::2] = 1.0  # odd channels: dx = +1 for every kernel point
    along_y = torch.zeros_like(along_x)
    along_y[:, 0::2] = 1.0  # even channels: dy = +1

    shifted_x = modulated_deform_conv2d(x, along_x, mask, weight, None, backend=backend)
    shifted_y = modulated_deform_conv2d(x, along_y, mask, weight, None, backend=backend)
    torch.testing.assert_close(shifted_x[..., :, :-1], x[..., :, 1:])  # moved one column left
    torch.testing.assert_close(shifted_y[..., :-1, :], x[..., 1:, :])  # moved one row up
    assert shifted_x[..., :, -1].abs().max() == 0 and shifted_y[..., -1, :].abs().max() == 0  # read outside


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "geometry", [dict(stride=1, padding=1, dilation=1), dict(stride=2, padding=2, dilation=2)]
)
def test_zero_offsets_and_unit_mask_equal_conv2d(backend, geometry):
    case = random_case(2, 3, 5, (9, 8), **geometry)
    case["offset"].zero_()
    case["mask"].fill_(1.0)
    expected = F.conv2d(case["x"], case["weight"], case["bias"], **geometry)
    torch.testing.assert_close(call(modulated_deform_conv2d, case, backend=backend), expected)
    case["mask"] = None  # DCNv1 (no mask) is the same as a unit mask
    torch.testing.assert_close(call(modulated_deform_conv2d, case, backend=backend), expected)


def test_fresh_layer_is_half_conv2d_plus_bias():
    torch.manual_seed(0)
    layer = ModulatedDeformConv2d(4, 5).double()
    assert layer.bias.abs().max() == 0
    with torch.no_grad():
        layer.bias.copy_(torch.randn(5))  # non-zero so that adding the bias is checked
    x = torch.randn(2, 4, 7, 6, dtype=torch.float64)
    expected = 0.5 * F.conv2d(x, layer.weight, padding=1) + layer.bias.view(1, -1, 1, 1)
    torch.testing.assert_close(layer(x), expected)


def test_layer_state_dict_matches_reference_dcn():
    layer = ModulatedDeformConv2d(16, 8, deformable_groups=2)
    shapes = {key: tuple(value.shape) for key, value in layer.state_dict().items()}
    assert shapes == {
        "weight": (8, 16, 3, 3),
        "bias": (8,),
        "conv_offset_mask.weight": (54, 16, 3, 3),
        "conv_offset_mask.bias": (54,),
    }
    bound = 1 / (16 * 9) ** 0.5
    assert 0.5 * bound < layer.weight.abs().max() <= bound
    assert layer.conv_offset_mask.weight.abs().max() == 0 and layer.conv_offset_mask.bias.abs().max() == 0


def test_layer_learns_offsets_through_either_backend():
    torch.manual_seed(0)
    layer = ModulatedDeformConv2d(3, 4, stride=2)
    with torch.no_grad():
        layer.conv_offset_mask.weight.normal_(0, 0.3)
    x = torch.randn(2, 3, 9, 10)
    outputs = {}
    for backend in BACKENDS:
        layer.zero_grad()
        micml.ops.set_backend(backend)
        try:
            out = layer(x)
        finally:
            micml.ops.set_backend(None)
        out.square().sum().backward()
        outputs[backend] = (out.detach(), layer.conv_offset_mask.weight.grad.clone())
    assert outputs["gather"][0].shape == (2, 4, 5, 5)
    assert outputs["gather"][1].abs().max() > 0
    for ours, theirs in zip(outputs["gather"], outputs["torchvision"]):
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)


def test_chunked_and_single_thread_scatter_match_single_pass(monkeypatch):
    case = random_case(2, 4, 3, (9, 7), groups=2)

    def output_and_grads():
        leaves = [case[key].clone().requires_grad_() for key in INPUT_NAMES]
        out = modulated_deform_conv2d(*leaves, backend="gather")
        return [out.detach(), *torch.autograd.grad(out.sin().sum(), leaves)]

    single = output_and_grads()
    monkeypatch.setattr(gather_module, "COLUMN_CHUNK_BYTES", 5 * 4 * 9 * 8)  # 5 pixels per chunk, ragged end
    monkeypatch.setattr(gather_module, "THREAD_GRADIENT_BYTES", 0)  # one copy of the input gradient
    for chunked, whole in zip(output_and_grads(), single):
        torch.testing.assert_close(chunked, whole, rtol=1e-12, atol=1e-12)


def test_channels_last_input_keeps_layout_and_values():
    case = random_case(2, 4, 3, (6, 7), dtype=torch.float32)
    contiguous = call(modulated_deform_conv2d, case, backend="gather")
    case["x"] = case["x"].contiguous(memory_format=torch.channels_last)
    channels_last = call(modulated_deform_conv2d, case, backend="gather")
    assert channels_last.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(channels_last, contiguous)


def test_offset_and_mask_as_channel_slices_of_one_channels_last_tensor():
    """How micml's layers pass them (slices of the offset/mask conv output): read in place, same values."""
    case = random_case(2, 4, 3, (6, 7), dtype=torch.float32)
    expected = [out.detach() for out in _output_and_grads(case)]
    offset_and_mask = torch.cat([case["offset"], case["mask"]], 1).contiguous(memory_format=torch.channels_last)
    sliced = dict(case, offset=offset_and_mask[:, :18], mask=offset_and_mask[:, 18:])
    assert not sliced["offset"].is_contiguous()
    for found, wanted in zip(_output_and_grads(sliced), expected):
        torch.testing.assert_close(found, wanted, rtol=0, atol=0)


def test_gradients_do_not_depend_on_the_thread_count():
    """The scatter gives each thread its own input-gradient copy: no races, same sums up to rounding."""
    case = random_case(2, 4, 3, (9, 8), groups=2)
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = _output_and_grads(case)
        torch.set_num_threads(2)
        two, again = _output_and_grads(case), _output_and_grads(case)
    finally:
        torch.set_num_threads(previous)
    for a, b, c in zip(one, two, again):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
        assert torch.equal(b, c)  # same threads, same order: bit for bit


# ---------------------------------------------------------------------------- GEMM library
def test_linear_matches_torch_for_any_strides_and_dtypes():
    generator = torch.Generator().manual_seed(3)
    x, weight, bias = (torch.randn(*shape, generator=generator) for shape in ((37, 12), (5, 12), (5,)))
    expected = x @ weight.t() + bias
    torch.testing.assert_close(linear(x, weight, bias), expected)
    transposed_storage = (x.t().contiguous().t(), weight.t().contiguous().t())
    torch.testing.assert_close(linear(*transposed_storage, bias), expected)
    grad = torch.randn(37, 5, generator=generator)
    torch.testing.assert_close(linear(grad.t(), x.t()), grad.t() @ x)  # the weight gradient's form
    doubles = x.double(), weight.double()
    assert torch.equal(linear(*doubles), doubles[0] @ doubles[1].t())  # float64: torch's own product


@pytest.mark.skipif(not onednn_available(), reason="this torch build has no oneDNN")
def test_float32_dcn_products_run_on_onednn():
    """MKL's sgemm takes AVX2 code on AMD CPUs: the DCN's GEMMs must not fall back to it."""
    case = random_case(2, 8, 6, (12, 10), dtype=torch.float32)
    with torch.profiler.profile() as profile:
        _output_and_grads(case)
    ops = {event.key for event in profile.key_averages()}
    assert "mkldnn::_linear_pointwise" in ops
    assert not ops & {"aten::mm", "aten::addmm"}, ops


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_linear_layer_is_nn_linear_with_its_products_on_onednn(dtype):
    torch.manual_seed(4)
    plain = torch.nn.Linear(12, 5).to(dtype)
    ours = Linear(12, 5).to(dtype)
    assert ours.load_state_dict(plain.state_dict()) and ours.state_dict().keys() == plain.state_dict().keys()
    x = torch.randn(3, 7, 12, dtype=dtype)  # leading dims, as the motion module's per-pixel mapping
    grad = torch.randn(3, 7, 5, dtype=dtype)
    results = []
    for layer in (plain, ours):
        leaf = x.clone().requires_grad_()
        with torch.profiler.profile() as profile:
            out = layer(leaf)
            out.backward(grad)
        ops = {event.key for event in profile.key_averages()}
        results.append((out.detach(), leaf.grad, layer.weight.grad, layer.bias.grad, ops))
    expected, found = results
    tolerance = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)
    for a, b in zip(found[:4], expected[:4]):
        torch.testing.assert_close(a, b, **tolerance)
    on_onednn = dtype == torch.float32 and onednn_available()
    assert ("mkldnn::_linear_pointwise" in found[4]) == on_onednn, found[4]
    if on_onednn:
        assert not found[4] & {"aten::mm", "aten::addmm"}, found[4]


def test_linear_layer_under_cpu_autocast_behaves_as_nn_linear():
    """Autocast is torch's business: bf16 forward, float32 parameter gradients, as nn.Linear."""
    torch.manual_seed(6)
    plain, ours = torch.nn.Linear(12, 5), Linear(12, 5)
    ours.load_state_dict(plain.state_dict())
    x = torch.randn(7, 12)
    results = []
    for layer in (plain, ours):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = layer(x)
        out.float().sum().backward()
        results.append((out, layer.weight.grad))
    (expected, expected_grad), (found, found_grad) = results
    assert found.dtype == expected.dtype == torch.bfloat16 and found_grad.dtype == torch.float32
    assert torch.equal(found, expected) and torch.equal(found_grad, expected_grad)


@pytest.mark.parametrize("memory_format,dtype", [(torch.channels_last, torch.float32),
                                                 (torch.contiguous_format, torch.float32),
                                                 (torch.channels_last, torch.float64)])
def test_pointwise_conv_is_a_1x1_conv2d(memory_format, dtype):
    """Channels-last float32 runs as a oneDNN product over the pixels; anything else is the conv."""
    torch.manual_seed(7)
    plain = torch.nn.Conv2d(20, 6, 1).to(dtype)
    ours = PointwiseConv2d(20, 6).to(dtype)
    assert ours.load_state_dict(plain.state_dict()) and ours.state_dict().keys() == plain.state_dict().keys()
    x = torch.randn(2, 20, 5, 7, dtype=dtype).contiguous(memory_format=memory_format)
    results = []
    for layer in (plain, ours):
        leaf = x.clone().requires_grad_()
        with torch.profiler.profile() as profile:
            out = layer(leaf)
            out.sin().sum().backward()
        ops = {event.key for event in profile.key_averages()}
        results.append((out.detach(), leaf.grad, layer.weight.grad, layer.bias.grad, ops))
    (*expected, _), (*found, ops) = results
    assert found[0].is_contiguous(memory_format=memory_format)
    tolerance = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)
    for a, b in zip(found, expected):
        torch.testing.assert_close(a, b, **tolerance)
    as_product = memory_format == torch.channels_last and dtype == torch.float32 and onednn_available()
    assert ("mkldnn::_linear_pointwise" in ops) == as_product and ("aten::convolution" in ops) != as_product, ops


def test_onednn_and_torch_products_give_the_same_dcn(monkeypatch):
    case = random_case(2, 8, 6, (20, 24), groups=2, offset_scale=3.0, dtype=torch.float32)
    library = _output_and_grads(case)
    monkeypatch.setattr(matmul_module, "onednn_available", lambda: False)
    with torch.profiler.profile() as profile:
        fallback = _output_and_grads(case)
    assert "mkldnn::_linear_pointwise" not in {event.key for event in profile.key_averages()}
    for found, expected in zip(library, fallback):
        torch.testing.assert_close(found, expected, rtol=1e-4, atol=1e-4)  # float32 sums in another order


def test_gather_backend_refuses_other_devices():
    case = random_case(1, 2, 2, (5, 5))
    meta = {key: value.to("meta") for key, value in case.items() if isinstance(value, torch.Tensor)}
    with pytest.raises(ValueError, match="CPU only.*backend='torchvision'"):
        modulated_deform_conv2d(meta["x"], meta["offset"], meta["mask"], meta["weight"], meta["bias"],
                                backend="gather")


@pytest.mark.parametrize("width", [0, -3, 2.0, True])
def test_kernels_reject_bad_row_widths(width):
    with pytest.raises(ValueError, match="positive integer"):
        kernels.for_width(width)


def test_compiled_kernels_are_loaded_from_the_disk_cache_by_a_new_process():
    """A kernel whose closure held a jitted function missed numba's cache in every process
    (recompiling each run, ~7 s per training job): both kernels must hit it the second time."""
    script = (
        "import numpy as np, torch\n"
        "from micml.ops import kernels, modulated_deform_conv2d\n"
        "x = torch.randn(1, 3, 5, 6, requires_grad=True)\n"
        "offset = torch.randn(1, 18, 5, 6, requires_grad=True)\n"
        "mask = torch.rand(1, 9, 5, 6, requires_grad=True)\n"
        "out = modulated_deform_conv2d(x, offset, mask, torch.randn(2, 3, 3, 3), None, backend='gather')\n"
        "out.sum().backward()\n"
        "k = kernels.for_width(3)\n"
        "print(*(f.stats.cache_hits.total() for f in k), *(f.stats.cache_misses.total() for f in k))\n"
    )
    runs = [subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
            for _ in range(2)]
    assert all(run.returncode == 0 for run in runs), runs[-1].stderr
    hits_columns, hits_gradients, misses_columns, misses_gradients = map(int, runs[1].stdout.split())
    assert hits_columns >= 1 and hits_gradients >= 1
    assert misses_columns == 0 and misses_gradients == 0


def _output_and_grads(case):
    leaves = [case[key].detach().clone().requires_grad_() for key in INPUT_NAMES]
    if case["offset"].stride() != leaves[1].stride():  # keep the caller's strides (a slice stays a slice)
        leaves[1] = case["offset"].detach().requires_grad_()
        leaves[2] = case["mask"].detach().requires_grad_()
    out = modulated_deform_conv2d(*leaves, **case["geometry"], backend="gather")
    return [out.detach(), *torch.autograd.grad(out.sin().sum(), leaves)]


def test_bad_shapes_raise_clear_errors():
    case = random_case(1, 4, 2, (6, 6))
    with pytest.raises(ValueError, match="offset shape"):
        modulated_deform_conv2d(case["x"], case["offset"][..., :-1], case["mask"], case["weight"], None)
    with pytest.raises(ValueError, match="mask shape"):
        modulated_deform_conv2d(case["x"], case["offset"], case["mask"][:, :-1], case["weight"], None)
    with pytest.raises(ValueError, match="input channels"):
        modulated_deform_conv2d(case["x"][:, :3], case["offset"], case["mask"], case["weight"], None)


def test_backend_selection_order(monkeypatch):
    monkeypatch.delenv(micml.ops.BACKEND_ENV_VAR, raising=False)
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert micml.ops.resolve_backend(cpu) == "gather"
    assert micml.ops.resolve_backend(cuda) == "torchvision"
    monkeypatch.setenv(micml.ops.BACKEND_ENV_VAR, "torchvision")
    assert micml.ops.resolve_backend(cpu) == "torchvision"
    assert micml.ops.resolve_backend(cpu, "gather") == "gather"  # the argument beats the environment
    micml.ops.set_backend("gather")
    try:
        assert micml.ops.resolve_backend(cuda) == "gather"  # set_backend beats the environment
        assert micml.ops.resolve_backend(cuda, "torchvision") == "torchvision"
    finally:
        micml.ops.set_backend(None)
    monkeypatch.setenv(micml.ops.BACKEND_ENV_VAR, "auto")
    assert micml.ops.resolve_backend(cpu) == "gather"
    monkeypatch.setenv(micml.ops.BACKEND_ENV_VAR, "cudnn")
    with pytest.raises(ValueError, match="MICML_DCN_BACKEND"):
        micml.ops.resolve_backend(cpu)
    with pytest.raises(ValueError, match="backend argument"):
        micml.ops.resolve_backend(cpu, "fast")


@pytest.mark.parametrize(
    "env_value,expected", [("gather", "gather"), ("torchvision", "torchvision"), (None, "gather")]
)
def test_backend_selection_dispatches_to_that_kernel(monkeypatch, env_value, expected):
    import torchvision.ops

    calls = []

    def spy(name, function):
        def wrapper(*args, **kwargs):
            calls.append(name)
            return function(*args, **kwargs)

        return wrapper

    gather_kernel = deform_conv_module.deform_conv2d_gather
    monkeypatch.setattr(deform_conv_module, "deform_conv2d_gather", spy("gather", gather_kernel))
    monkeypatch.setattr(torchvision.ops, "deform_conv2d", spy("torchvision", torchvision.ops.deform_conv2d))
    if env_value is None:
        monkeypatch.delenv(micml.ops.BACKEND_ENV_VAR, raising=False)
    else:
        monkeypatch.setenv(micml.ops.BACKEND_ENV_VAR, env_value)
    call(modulated_deform_conv2d, random_case(1, 2, 2, (4, 4)))
    assert calls == [expected]


def test_check_against_reference_on_cpu():
    report = check_against_reference("cpu", repeats=1, timing_size=16)
    for backend in BACKENDS:
        assert set(report["max_abs_diff"][backend]) == {
            "output", "grad_x", "grad_offset", "grad_mask", "grad_weight", "grad_bias"
        }
        assert max(report["max_abs_diff"][backend].values()) < report["tolerance"] * 10
        assert report["timing_s"][backend]["forward"] > 0
        assert report["timing_s"][backend]["forward_backward"] > 0


def test_check_against_reference_raises_on_mismatch(monkeypatch):
    def off_by_a_little(*args, **kwargs):
        return reference_modulated_deform_conv2d(*args, **kwargs) + 1e-3

    monkeypatch.setattr(check_module, "reference_modulated_deform_conv2d", off_by_a_little)
    with pytest.raises(check_module.DeformConvMismatch, match="output differs"):
        check_against_reference("cpu", repeats=1, timing_size=16)


def test_random_geometries_match_torchvision():
    hypothesis = pytest.importorskip("hypothesis")
    strategies = pytest.importorskip("hypothesis.strategies")

    @hypothesis.settings(max_examples=25, deadline=None, derandomize=True)
    @hypothesis.given(
        batch=strategies.integers(1, 2),
        group_channels=strategies.integers(1, 3),
        groups=strategies.integers(1, 2),
        out_channels=strategies.integers(1, 3),
        height=strategies.integers(3, 9),
        width=strategies.integers(3, 9),
        kernel=strategies.sampled_from([(3, 3), (1, 1), (2, 3)]),
        stride=strategies.integers(1, 3),
        padding=strategies.integers(0, 2),
        dilation=strategies.integers(1, 2),
        seed=strategies.integers(0, 1000),
    )
    def check(
        batch, group_channels, groups, out_channels, height, width, kernel, stride, padding, dilation, seed
    ):
        size = (height, width)
        geometry = ((stride,) * 2, (padding,) * 2, (dilation,) * 2)
        out_size = deform_conv_module.output_size(size, kernel, *geometry)
        hypothesis.assume(min(out_size) >= 1)
        case = random_case(batch, group_channels * groups, out_channels, size, kernel, stride, padding,
                           dilation, groups, offset_scale=3.0, seed=seed)
        ours = call(modulated_deform_conv2d, case, backend="gather")
        theirs = call(modulated_deform_conv2d, case, backend="torchvision")
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-10)

    check()
