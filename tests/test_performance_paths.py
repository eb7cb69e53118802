"""The fast paths compute what the straightforward ones compute, and the benchmarks run.

* the motion module's batched forward vs a straightforward statement of the reference
  (per step and mining step the full ConvLSTM conv on [x, h], the full-resolution
  concatenation pooled as a whole, the adapter looped over samples), in training mode with
  gradients;
* channels-last / framewise 3-D convolutions (`micml.models.layout`) vs the plain ones;
* `optimize_for_inference` vs plain eval mode, and its parts (mix-first deformable conv
  against the naive float64 DCN, banded heads, folded 3-D convs, the temporal tap);
* every benchmark script with `--tiny` (a subprocess each) prints a ratio line.

CPU only, small tensors; about a minute on 2 cores, most of it in the benchmark runs.
"""

from __future__ import annotations

import copy
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import micml.models.fast_deform as fast_deform
from micml.models import build, layout, optimize_for_inference
from micml.models.fuse import BandedHead, FirstThreeFramesMaxPool, FoldedConv3dReLU
from micml.models.motion import ConvLSTMCell, MotionModule
from micml.models.motion_reference import reference_motion_forward
from micml.models.temporal import Conv3dBNReLU
from micml.ops.matmul import onednn_available
from micml.ops.reference import reference_modulated_deform_conv2d

torch.set_num_threads(2)
BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


# ---------------------------------------------------------------------------- motion module
def _output_and_gradients(forward, module: torch.nn.Module, seq: torch.Tensor, cotangent: torch.Tensor):
    module.zero_grad(set_to_none=True)
    leaf = seq.detach().requires_grad_()
    out = forward(leaf)
    out.backward(cotangent)
    return out.detach(), leaf.grad, {n: p.grad for n, p in module.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("mining,adapter", [(True, True), (False, True), (True, False)])
def test_motion_forward_equals_straightforward_statement_with_gradients(mining, adapter):
    """float64, so that only a difference in the math shows, not float32's summation order (the
    optimised path pools and mixes channels-last memory, the statement the reference's layout)."""
    torch.manual_seed(3)
    motion = MotionModule(channels=8, num_layers=2, pooled_size=8, mining=mining, adapter=adapter).train().double()
    generator = torch.Generator().manual_seed(4)
    seq = torch.randn(2, 5, 8, 12, 10, generator=generator, dtype=torch.float64)
    cotangent = torch.randn(seq.shape, generator=generator, dtype=torch.float64)

    expected = _output_and_gradients(lambda x: reference_motion_forward(motion, x), motion, seq, cotangent)
    found = _output_and_gradients(motion, motion, seq, cotangent)

    torch.testing.assert_close(found[0], expected[0], rtol=0, atol=1e-12)
    torch.testing.assert_close(found[1], expected[1], rtol=0, atol=1e-12)
    assert found[2].keys() == expected[2].keys() and len(found[2]) >= 8
    for name, grad in expected[2].items():  # sums of many terms: relative to the largest
        scale = grad.abs().max().item()
        torch.testing.assert_close(found[2][name], grad, rtol=0, atol=1e-10 * scale, msg=name)


def test_motion_module_pools_channels_last_memory_on_cpu(monkeypatch):
    """PyTorch's CPU adaptive max-pool is 10-20x slower on (B, C, H, W) memory, which the
    ConvLSTM states come in: the module hands it channels-last memory (the reference layout
    switch, used by the benchmarks' baseline, leaves it as it is)."""
    motion = MotionModule(channels=8, num_layers=1, pooled_size=4).train()
    seq = torch.randn(2, 5, 8, 12, 10)
    layouts = []
    motion.maxpool.register_forward_pre_hook(
        lambda _, args: layouts.append(args[0].is_contiguous(memory_format=torch.channels_last)))
    motion(seq)
    assert layouts and all(layouts)
    layouts.clear()
    monkeypatch.setattr(layout, "_channels_last_on_cpu", False)
    motion(seq)
    assert layouts and not any(layouts)


@pytest.mark.skipif(not onednn_available(), reason="this torch build has no oneDNN")
def test_motion_module_linear_layers_train_on_onednn():
    """MKL's sgemm takes AVX2 code on AMD CPUs: w0, w1, w2, the SE layers and the per-pixel
    mapping run their forward and backward products on oneDNN (only the adapter's batched
    matmul stays with torch)."""
    motion = MotionModule(channels=8, num_layers=1, pooled_size=4).train()
    with torch.profiler.profile() as profile:
        motion(torch.randn(2, 5, 8, 12, 10)).sum().backward()
    ops = {event.key for event in profile.key_averages()}
    assert "mkldnn::_linear_pointwise" in ops and not ops & {"aten::mm", "aten::addmm"}, ops


def test_convlstm_step_from_input_gates_equals_cell_forward():
    torch.manual_seed(5)
    cell = ConvLSTMCell(6, 4)
    x, h, c = torch.randn(2, 6, 7, 5), torch.randn(2, 4, 7, 5), torch.randn(2, 4, 7, 5)
    for state in ((h, c), (torch.zeros_like(h), torch.zeros_like(c))):
        expected = cell(x, state)
        found = cell.step(cell.input_gates(x), None if not state[0].any() else state)
        for a, b in zip(found, expected):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


# ---------------------------------------------------------------------------- memory layout
@pytest.mark.parametrize("kernel,padding", [((1, 1, 5), (0, 0, 2)), ((1, 3, 1), (0, 1, 0)), ((3, 1, 1), (1, 0, 0))])
def test_channels_last_conv3d_equals_conv3d_with_gradients(kernel, padding):
    torch.manual_seed(10)
    conv = torch.nn.Conv3d(3, 4, kernel, padding=padding, bias=False)
    x = torch.randn(2, 3, 5, 7, 6)
    results = []
    for channels_last in (False, True):
        conv.zero_grad()
        leaf = x.clone().requires_grad_()
        out = layout.conv3d(conv, leaf, channels_last=channels_last)
        out.backward(torch.ones_like(out))
        results.append((out.detach(), leaf.grad, conv.weight.grad.clone()))
    for plain, fast in zip(*results):
        torch.testing.assert_close(fast, plain, rtol=0, atol=1e-5)
    assert results[1][0].is_contiguous(memory_format=torch.channels_last_3d)


def test_detector_output_does_not_depend_on_the_layout_switch():
    torch.manual_seed(11)
    model = build("dsfnet").eval()
    clip = torch.randn(1, 3, 5, 32, 32)
    with torch.inference_mode():
        fast = model(clip)
        layout.use_channels_last_on_cpu(False)
        try:
            plain = model(clip)
        finally:
            layout.use_channels_last_on_cpu(True)
    for head in plain:
        torch.testing.assert_close(fast[head], plain[head], rtol=0, atol=1e-5 * plain[head].abs().max().item())


# ---------------------------------------------------------------------------- inference
def _trained_like(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Non-zero DCN offsets (a fresh offset conv is zero) and non-trivial BN statistics."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if hasattr(module, "conv_offset_mask"):
                module.conv_offset_mask.weight.normal_(0, 0.05, generator=generator)
                module.conv_offset_mask.bias.normal_(0, 1.0, generator=generator)
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.running_mean.normal_(0, 0.2, generator=generator)
                module.running_var.uniform_(0.3, 2.0, generator=generator)
                module.weight.uniform_(0.5, 1.5, generator=generator)
                module.bias.normal_(0, 0.2, generator=generator)
    return model.eval()


@pytest.mark.parametrize("name", ["dsfnet", "micml", "centernet", "micml_motion_at_test"])
def test_optimized_eval_equals_plain_eval(name):
    torch.manual_seed(0)
    model = _trained_like(build(name))
    before = copy.deepcopy(model.state_dict())
    fast = optimize_for_inference(model)
    clip = torch.randn(1, 3, 5, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        expected, found = model(clip), fast(clip)
    for head in expected:
        scale = expected[head].abs().max().item()
        assert scale > 0
        torch.testing.assert_close(found[head], expected[head], rtol=0, atol=1e-4 * scale, msg=head)
    # the original is untouched and still trainable; the copy has no BatchNorm left
    assert model.state_dict().keys() == before.keys()
    assert all(torch.equal(model.state_dict()[k], before[k]) for k in before)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in fast.modules())
    assert fast.variant == name and not fast.training


def test_optimized_model_refuses_training():
    fast = optimize_for_inference(build("dsfnet"))
    with pytest.raises(RuntimeError, match="eval mode without gradients only"):
        fast.train()(torch.randn(1, 3, 5, 32, 32))


@pytest.mark.parametrize("stride,padding,dilation", [(1, 1, 1), (2, 1, 1), (1, 2, 2)])
@pytest.mark.parametrize("offset_scale", [1.5, 30.0])  # bands mixing their own rows / the whole frame
def test_mix_first_deform_conv_matches_naive_reference(monkeypatch, stride, padding, dilation, offset_scale):
    monkeypatch.setattr(fast_deform, "PIXELS_PER_BAND", 20)  # several bands, the last one short
    generator = torch.Generator().manual_seed(7)
    x = torch.randn(2, 6, 11, 13, generator=generator, dtype=torch.float64)
    weight = torch.randn(5, 6, 3, 3, generator=generator, dtype=torch.float64)
    bias = torch.randn(5, generator=generator, dtype=torch.float64)
    out_h = (11 + 2 * padding - 2 * dilation - 1) // stride + 1
    out_w = (13 + 2 * padding - 2 * dilation - 1) // stride + 1
    offset = torch.randn(2, 18, out_h, out_w, generator=generator, dtype=torch.float64) * offset_scale
    mask_logits = torch.randn(2, 9, out_h, out_w, generator=generator, dtype=torch.float64)
    expected = reference_modulated_deform_conv2d(x, offset, mask_logits.sigmoid(), weight, bias,
                                                 stride, padding, dilation)
    found = fast_deform.deform_conv2d_mix_first(x, offset, mask_logits, weight, bias, (stride,) * 2,
                                                (padding,) * 2, (dilation,) * 2)
    torch.testing.assert_close(found, expected, rtol=0, atol=1e-12)


@pytest.mark.skipif(not onednn_available(), reason="this torch build has no oneDNN")
def test_mix_first_float32_mixes_channels_on_onednn():
    generator = torch.Generator().manual_seed(5)
    x, weight = torch.randn(1, 16, 20, 18, generator=generator), torch.randn(8, 16, 3, 3, generator=generator)
    offset, mask_logits = torch.randn(1, 18, 20, 18, generator=generator), torch.randn(1, 9, 20, 18, generator=generator)
    expected = reference_modulated_deform_conv2d(x.double(), offset.double(), mask_logits.double().sigmoid(),
                                                 weight.double(), None, 1, 1, 1)
    with torch.profiler.profile() as profile:
        found = fast_deform.deform_conv2d_mix_first(x, offset, mask_logits, weight, None)
    ops = {event.key for event in profile.key_averages()}
    assert "mkldnn::_linear_pointwise" in ops and "aten::mm" not in ops, ops
    torch.testing.assert_close(found.double(), expected, rtol=0, atol=1e-4)


def test_banded_head_equals_head(monkeypatch):
    monkeypatch.setattr("micml.models.fuse.HEAD_PIXELS_PER_BAND", 30)  # 3 rows of 10 per band
    torch.manual_seed(8)
    head = torch.nn.Sequential(torch.nn.Conv2d(4, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(16, 2, 1)).eval()
    assert BandedHead.supports(head)
    x = torch.randn(2, 4, 11, 10)
    with torch.inference_mode():
        torch.testing.assert_close(BandedHead(head).eval()(x), head(x), rtol=0, atol=1e-5)


@pytest.mark.parametrize("kernel,padding", [((1, 1, 5), (0, 0, 2)), ((1, 3, 1), (0, 1, 0)), ((3, 1, 1), (1, 0, 0))])
def test_folded_conv3d_equals_conv_bn_relu(kernel, padding):
    torch.manual_seed(9)
    block = _trained_like(Conv3dBNReLU(3, 6, kernel, padding))
    x = torch.randn(2, 3, 5, 9, 8)
    with torch.inference_mode():
        expected = block(x)
        found = FoldedConv3dReLU(block).eval()(x)
    torch.testing.assert_close(found, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("frames", [3, 4, 5, 6])
def test_temporal_tap_equals_max_pool(frames):
    pool = torch.nn.MaxPool3d((3, 1, 1))
    x = torch.randn(2, 4, frames, 5, 6)
    assert torch.equal(FirstThreeFramesMaxPool(pool)(x), pool(x))


# ---------------------------------------------------------------------------- benchmarks
RATIO_LINE = re.compile(r"(speed-up|ratio|/whole =)[^\n]*\d+(\.\d+)?")
# Model benchmarks say where they stand against this machine's measured limits (benchmarks/roofline.py).
MODEL_BENCHMARKS = ("bench_deform_conv.py", "bench_inference.py", "bench_motion.py", "bench_precision.py",
                    "bench_tiling.py", "bench_train_step.py")
PEAK_LINE = re.compile(r"CPU: .+ peaks: GEMM \d+\.\d GFLOP/s .* conv \d+\.\d GFLOP/s")
RATE_LINE = re.compile(r"\d+\.\d GFLOP/s, \d+ % of GEMM peak, \d+ % of conv peak")


@pytest.mark.parametrize("script", sorted(p.name for p in BENCHMARKS.glob("bench_*.py")))
def test_benchmark_runs_tiny_and_prints_a_ratio(script):
    assert "--tiny" in (BENCHMARKS / script).read_text(), f"{script} needs a --tiny option to run in CI time"
    environment = dict(os.environ, GOMP_SPINCOUNT="0")  # sleep-waiting: other work may share the cores
    result = subprocess.run([sys.executable, str(BENCHMARKS / script), "--tiny"], capture_output=True, text=True,
                            timeout=600, env=environment, cwd=BENCHMARKS.parent)
    assert result.returncode == 0, result.stderr[-3000:]
    assert RATIO_LINE.search(result.stdout), result.stdout
    numbers = [float(n) for n in re.findall(r"(\d+\.\d+)x", result.stdout)]
    assert all(math.isfinite(n) and n > 0 for n in numbers)
    if script in MODEL_BENCHMARKS:
        assert PEAK_LINE.search(result.stdout), result.stdout
        assert len(RATE_LINE.findall(result.stdout)) >= 2, result.stdout


def test_inference_benchmark_skips_frame_costs_with_zero_tiled_frames_and_refuses_negative():
    def run(*argv):
        return subprocess.run([sys.executable, str(BENCHMARKS / "bench_inference.py"), *argv], capture_output=True,
                              text=True, timeout=600, env=dict(os.environ, GOMP_SPINCOUNT="0"), cwd=BENCHMARKS.parent)

    refused = run("--tiled-frames", "-1")
    assert refused.returncode == 2 and "--tiled-frames must be 0" in refused.stderr, refused.stderr[-2000:]
    skipped = run("--tiny", "--tiled-frames", "0")
    assert skipped.returncode == 0, skipped.stderr[-3000:]
    assert RATE_LINE.search(skipped.stdout) and "frames/s" not in skipped.stdout, skipped.stdout


def _roofline():
    """benchmarks/roofline.py (the scripts import it as a sibling, not through a package)."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import roofline
    finally:
        sys.path.remove(str(BENCHMARKS))
    return roofline


def test_rate_line_states_percent_of_each_peak():
    roofline = _roofline()
    line = roofline.rate_line("optimised", 50e9, 0.5, roofline.Peaks(gemm_gflops=200.0, conv_gflops=125.0))
    assert line.startswith("optimised: 100.0 GFLOP/s, 50 % of GEMM peak, 80 % of conv peak"), line


def test_executed_flops_count_the_deformable_convs_products():
    """The gather DCN's GEMMs run on oneDNN's op, which torch's FLOP counter does not know by itself."""
    from micml.ops import modulated_deform_conv2d

    roofline = _roofline()
    x, weight = torch.randn(1, 8, 10, 10, requires_grad=True), torch.randn(4, 8, 3, 3, requires_grad=True)
    offset, mask = torch.randn(1, 18, 10, 10), torch.rand(1, 9, 10, 10)

    def forward_and_backward():
        modulated_deform_conv2d(x, offset, mask, weight, None, backend="gather").sum().backward()

    forward = 2 * 10 * 10 * (8 * 9) * 4
    assert roofline.executed_flops(forward_and_backward) == roofline.BACKWARD_FACTOR * forward


def test_gemm_peak_is_the_faster_library():
    roofline = _roofline()
    rates = roofline.gemm_rates(64)
    assert ("oneDNN" in rates) == onednn_available() and len(rates) >= 1
    peaks = roofline.measure_peaks(tiny=True)
    assert peaks.gemm_gflops == max(peaks.gemm_by_library.values())


def test_model_flops_counts_without_touching_the_model():
    roofline = _roofline()
    conv = torch.nn.Conv3d(3, 4, (1, 3, 3), padding=(0, 1, 1))
    assert roofline.model_flops(conv, (1, 3, 5, 8, 8)) == 2 * 4 * 5 * 8 * 8 * 3 * 9
    assert conv.weight.device.type == "cpu"


# ---------------------------------------------------------------------------- bf16 hardware
def test_native_bf16_is_read_from_the_cpu_flags(tmp_path, monkeypatch):
    import micml.machine
    from micml.precision import cpu_has_bf16

    assert cpu_has_bf16(frozenset({"avx512f", "avx512_bf16"})) and cpu_has_bf16(frozenset({"amx_bf16"}))
    assert not cpu_has_bf16(frozenset({"avx2", "avx512f"}))
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu avx2 avx512_bf16\n\n")
    monkeypatch.setattr(micml.machine, "CPUINFO", cpuinfo)
    assert micml.machine.cpu_flags() == {"fpu", "avx2", "avx512_bf16"} and cpu_has_bf16()
    monkeypatch.setattr(micml.machine, "CPUINFO", tmp_path / "absent")
    assert micml.machine.cpu_flags() == frozenset() and not cpu_has_bf16()


# ---------------------------------------------------------------------------- allocator
FAULTS_OF_A_SECOND_FORWARD = """
import resource, sys, torch
from micml.allocator import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
torch.set_num_threads(2)
conv = torch.nn.Conv2d(8, 8, 3, padding=1)
x = torch.randn(1, 8, 1024, 1024)  # 32 MiB activations: above glibc's largest default mmap threshold

def forward():
    with torch.inference_mode():
        return conv(conv(conv(x))).relu().sum()

forward()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
forward()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_kept_memory_is_reused_without_fresh_page_faults(tmp_path):
    script = tmp_path / "second_forward.py"
    script.write_text(FAULTS_OF_A_SECOND_FORWARD)

    def faults(mode):
        result = subprocess.run([sys.executable, str(script), mode], capture_output=True, text=True, check=True,
                                cwd=BENCHMARKS.parent, env=dict(os.environ, PYTHONPATH=str(BENCHMARKS.parent)))
        return int(result.stdout.split()[-1])

    # Four 32 MiB activations mapped afresh are 32,768 faults of 4 KiB pages. Kept memory is
    # reused: how much depends on where small objects land in the heap, so only "far fewer".
    default, kept = faults("default"), faults("keep")
    assert default > 30_000
    assert kept < default / 3, (kept, default)
