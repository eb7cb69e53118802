"""What the bench_* scripts compare against, and how they measure (not a benchmark itself).

The *baseline path* is the reference-equivalent CPU path: fp32 eager, the reference's memory
layout (no channels_last), torchvision's deform_conv2d kernel, and the motion module run as
the reference runs it
(UESTC-nnLab/MICPL lib/models/Motion.py): the full ConvLSTM convolution on [x, h] for every
step and every mining step, the 2*C*T-channel concatenation at full resolution max-pooled as
a whole, and the adapter looped over the batch. The *optimised path* is micml's default on
CPU: channels_last static branch, the gather DCN and `MotionModule.forward` (and, for
inference, `micml.models.optimize_for_inference`).

Timing alternates baseline and optimised runs in one process so that load from other
programs hits both alike; peak memory is measured in a fresh process per path.
"""

from __future__ import annotations

import contextlib
import json
import resource
import statistics
import subprocess
import sys
import time
import types

import torch

import roofline
from micml.models.layout import use_channels_last_on_cpu
from micml.models.motion import MotionModule
from micml.models.motion_reference import reference_motion_forward
from micml.ops import set_backend


# ---------------------------------------------------------------------------- the baseline path
@contextlib.contextmanager
def baseline_path(*motions: MotionModule):
    """The reference's layout, torchvision's DCN kernel and the reference motion forward,
    inside the `with` block."""
    for motion in motions:
        motion.forward = types.MethodType(reference_motion_forward, motion)
    set_backend("torchvision")
    use_channels_last_on_cpu(False)
    try:
        yield
    finally:
        use_channels_last_on_cpu(True)
        set_backend(None)
        for motion in motions:
            del motion.forward  # back to the class's forward


@contextlib.contextmanager
def optimised_path():
    """micml's CPU default: the gather DCN (the motion module's own forward is the optimised one)."""
    set_backend("gather")
    try:
        yield
    finally:
        set_backend(None)


# ---------------------------------------------------------------------------- model and inputs
def trained_like(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give a fresh model what a trained one has and a fresh one lacks: non-zero DCN offsets
    (a fresh offset conv is all zeros, which makes every kernel sample on the grid) and
    non-trivial BatchNorm statistics. In place; returns the model."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            offset_conv = getattr(module, "conv_offset_mask", None)
            if offset_conv is not None:
                offset_conv.weight.copy_(torch.randn(offset_conv.weight.shape, generator=generator) * 0.05)
                offset_conv.bias.copy_(torch.randn(offset_conv.bias.shape, generator=generator) * 0.5)
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.running_mean.copy_(torch.randn(module.running_mean.shape, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(module.running_var.shape, generator=generator) + 0.5)
    return model


def random_clip(batch: int, size: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, 5, size, size, generator=generator)


# ---------------------------------------------------------------------------- measuring
def configure_threads(threads: int | None) -> None:
    if threads:
        torch.set_num_threads(threads)


def interleaved_seconds(functions: dict, repeats: int, device: str | torch.device = "cpu") -> dict:
    """Wall times of each function, alternating between them so load spikes hit all alike
    (on CUDA, with the device synchronised around each call)."""
    synchronize = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    times = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            synchronize()
            started = time.perf_counter()
            function()
            synchronize()
            times[name].append(time.perf_counter() - started)
    return times


def median(values) -> float:
    return statistics.median(values)


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, in MiB.

    VmHWM of /proc/self/status where there is one: unlike ru_maxrss, which a child inherits
    from the parent it was forked from, it starts afresh with the new program.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_rss_in_fresh_process(script: str, argv: list[str]) -> float:
    """Run `script argv` (which prints {"peak_rss_mib": ...} last) in a fresh interpreter."""
    result = subprocess.run([sys.executable, script, *argv], capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])["peak_rss_mib"]


def max_abs_diff(a, b) -> float:
    """Largest |a - b| over tensors or dicts/lists of tensors with the same structure."""
    if isinstance(a, dict):
        return max(max_abs_diff(a[key], b[key]) for key in a)
    if isinstance(a, (list, tuple)):
        return max(max_abs_diff(x, y) for x, y in zip(a, b))
    return (a.detach().double() - b.detach().double()).abs().max().item()


def relative_l2(a, b) -> float:
    """||a - b|| / ||a|| over two equally long lists (or dicts with the same keys) of tensors."""
    pairs = [(a[k], b[k]) for k in a] if isinstance(a, dict) else list(zip(a, b))
    difference = sum(((x.double() - y.double()) ** 2).sum() for x, y in pairs)
    norm = sum((x.double() ** 2).sum() for x, _ in pairs)
    return (difference / norm).sqrt().item()


def print_table(rows: list[tuple], header: tuple) -> None:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    for line in (header, *rows):
        print("  ".join(str(cell).rjust(width) for cell, width in zip(line, widths)))


PATHS = ("baseline", "optimised")


def compare_paths(step, repeats: int, *, script: str | None = None, memory_argv: list[str] | None = None,
                  digits: int = 3, device: str | torch.device = "cpu", flops: float | None = None,
                  peaks: roofline.Peaks | None = None) -> dict:
    """Run `step(path)` once per path (untimed; its results are returned), then `repeats` timed
    runs alternating the paths; print medians, minima, peak RSS of a fresh process per path
    (`script memory_argv --measure-memory PATH`, when memory_argv is given) and the speed-up,
    and with `flops` (nominal FLOPs of one step) and `peaks`, each path's GFLOP/s and % of peak
    in its fastest run (the peaks are best-of runs too: both the least disturbed by other load).
    On a CUDA `device` each timed run is synchronised, so it counts the kernels it queued."""
    first = {path: step(path) for path in PATHS}
    times = interleaved_seconds({path: (lambda p=path: step(p)) for path in PATHS}, repeats, device)
    memory = {}
    if memory_argv is not None:
        memory = {path: peak_rss_in_fresh_process(script, memory_argv + ["--measure-memory", path]) for path in PATHS}
    rows = [(path, f"{median(times[path]):.{digits}f}", f"{min(times[path]):.{digits}f}",
             f"{memory[path]:.0f}" if memory else "-") for path in PATHS]
    print_table(rows, ("path", "median s", "min s", "peak RSS MiB"))
    print(f"speed-up (baseline / optimised): {median(times['baseline']) / median(times['optimised']):.2f}x")
    if flops is not None and peaks is not None:
        roofline.print_rates(flops, {path: min(times[path]) for path in PATHS}, peaks)
    return first
