"""Self-check of the DCN backends against the slow reference (the workflow's dcn_check)."""

from __future__ import annotations

import statistics
import time

import torch

from micml.ops.deform_conv import BACKENDS, modulated_deform_conv2d, output_size
from micml.ops.reference import reference_modulated_deform_conv2d

INPUT_NAMES = ("x", "offset", "mask", "weight", "bias")


class DeformConvMismatch(RuntimeError):
    """A backend disagrees with the reference beyond tolerance."""


def check_against_reference(device="cpu", tolerance=1e-4, repeats=3, seed=0, timing_size=64) -> dict:
    """Compare every backend (float32) with the float64 reference, and time them.

    Accuracy cases: stride 1 and 2, two deformable groups, offsets with a
    2.5 px standard deviation so that some samples leave the image. Gradients are compared relative to
    their largest magnitude. Timing case: batch 1, 32->32 channels,
    ``timing_size`` squared.
    Returns a JSON-serialisable dict; raises DeformConvMismatch on failure.
    """
    import torchvision

    device = torch.device(device)
    report = {
        "device": str(device),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "tolerance": tolerance,
    }
    report["max_abs_diff"] = _accuracy(device, tolerance, seed)
    timing_case = _random_case(1, 32, 32, (timing_size,) * 2, 1, groups=1, offset_scale=2.0, seed=seed)
    report["timing_s"] = {
        backend: _timings(_backend_function(backend), _to(timing_case, device), repeats, device)
        for backend in BACKENDS
    }
    return report


def _accuracy(device, tolerance, seed):
    """Worst difference per backend and quantity over two geometries; raises past tolerance."""
    worst = {backend: {} for backend in BACKENDS}
    for stride in (1, 2):
        case = _random_case(2, 6, 4, (11, 13), stride, groups=2, offset_scale=2.5, seed=seed + stride)
        reference_case = _to(case, device, torch.float64)
        expected = _output_and_grads(reference_modulated_deform_conv2d, reference_case, stride)
        for backend in BACKENDS:
            got = _output_and_grads(_backend_function(backend), _to(case, device), stride)
            for name, value in got.items():
                diff = (value.double() - expected[name]).abs().max().item()
                allowed = tolerance * max(1.0, expected[name].abs().max().item())
                worst[backend][name] = max(worst[backend].get(name, 0.0), diff)
                if diff > allowed:
                    raise DeformConvMismatch(
                        f"DCN backend {backend!r} on {device}: {name} differs from the reference by "
                        f"{diff:.3g} (allowed {allowed:.3g}) at stride {stride}; "
                        "do not train with this backend until the difference is understood."
                    )
    return worst


def _backend_function(backend):
    def call(*args, **kwargs):
        return modulated_deform_conv2d(*args, **kwargs, backend=backend)

    return call


def _random_case(batch, channels, out_channels, size, stride, groups, offset_scale, seed):
    generator = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=generator, dtype=torch.float64)

    out_size = output_size(size, (3, 3), (stride, stride), (1, 1), (1, 1))
    points = 9 * groups
    return {
        "x": randn(batch, channels, *size),
        "offset": randn(batch, 2 * points, *out_size) * offset_scale,
        "mask": torch.rand(batch, points, *out_size, generator=generator, dtype=torch.float64),
        "weight": randn(out_channels, channels, 3, 3) * 0.3,
        "bias": randn(out_channels),
        "cotangent": randn(batch, out_channels, *out_size),
    }


def _to(case, device, dtype=torch.float32):
    return {name: tensor.to(device=device, dtype=dtype) for name, tensor in case.items()}


def _output_and_grads(function, case, stride):
    leaves = [case[name].clone().requires_grad_() for name in INPUT_NAMES]
    out = function(*leaves, stride=stride, padding=1, dilation=1)
    grads = torch.autograd.grad(out, leaves, case["cotangent"])
    return {"output": out.detach(), **{f"grad_{name}": grad for name, grad in zip(INPUT_NAMES, grads)}}


def _timings(function, case, repeats, device):
    def forward():
        with torch.no_grad():
            function(*(case[name] for name in INPUT_NAMES))

    def forward_backward():
        _output_and_grads(function, case, stride=1)

    forward_backward()  # warm-up (lazy init, allocator)
    return {
        "forward": _median_seconds(forward, repeats, device),
        "forward_backward": _median_seconds(forward_backward, repeats, device),
    }


def _median_seconds(function, repeats, device):
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        function()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)
