"""Where a benchmark stands against this machine's limits (not a benchmark itself).

A speed-up over a slow baseline says nothing about how much of the CPU is left idle. So each
model benchmark also measures, in its own process and thread count, two ceilings:

* the GEMM peak: `torch.mm` of two large fp32 square matrices (best of several);
* the conv peak: a 3x3 `conv2d`, 64 -> 64 channels on 256 x 256 (best of several, the faster
  of NCHW and channels_last), the shape that dominates the detectors' full-resolution layers;

and prints the effective GFLOP/s of what it times (its FLOPs / its fastest run's seconds,
like the peaks: on a shared machine the fastest run is the least disturbed) as a percentage
of each. An eval forward or a tiled frame counts the nominal FLOPs of the whole frame: 2 x
the multiply-accumulates of `micml.diagnostics.multiply_accumulates` (convs, deformable
convs, linear layers). A deformable conv's forward+backward counts 3 x its forward (forward,
input gradient, weight gradient). A training step and the motion module count what micml's
optimised path executes (`executed_flops`). Both paths are credited with the same work, so
the baseline's rate is "micml's work at the baseline's speed".
"""

from __future__ import annotations

import copy
import dataclasses
import time
from typing import Sequence

import torch

from micml.machine import cpu_model

GEMM_SIDE, GEMM_SIDE_TINY = 2048, 512
CONV_CHANNELS, CONV_SIDE, CONV_SIDE_TINY = 64, 256, 64
PEAK_REPEATS = 5
#: forward + input gradient + weight gradient, each about one forward's FLOPs
BACKWARD_FACTOR = 3


@dataclasses.dataclass(frozen=True)
class Peaks:
    gemm_gflops: float
    conv_gflops: float


def best_gflops(function, flops: float, repeats: int = PEAK_REPEATS) -> float:
    """FLOP rate of the fastest of `repeats` calls, after one untimed call."""
    function()
    fastest = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        fastest = min(fastest, time.perf_counter() - started)
    return flops / fastest / 1e9


def gemm_peak(side: int) -> float:
    a, b = torch.randn(side, side), torch.randn(side, side)
    with torch.inference_mode():
        return best_gflops(lambda: torch.mm(a, b), 2.0 * side ** 3)


def conv_peak(side: int, channels: int = CONV_CHANNELS) -> float:
    """The faster of the two memory layouts (oneDNN's channels_last is ~2x NCHW on AVX-512 CPUs,
    and it is what micml's optimised paths run)."""
    flops = 2.0 * channels * channels * 9 * side * side
    rates = []
    for layout in (torch.contiguous_format, torch.channels_last):
        x = torch.randn(1, channels, side, side).contiguous(memory_format=layout)
        weight = torch.randn(channels, channels, 3, 3).contiguous(memory_format=layout)
        with torch.inference_mode():
            rates.append(best_gflops(lambda: torch.nn.functional.conv2d(x, weight, padding=1), flops))
    return max(rates)


def measure_peaks(tiny: bool = False) -> Peaks:
    """This machine's fp32 GEMM and 3x3 conv throughput at the current thread count."""
    return Peaks(gemm_peak(GEMM_SIDE_TINY if tiny else GEMM_SIDE),
                 conv_peak(CONV_SIDE_TINY if tiny else CONV_SIDE))


def print_peaks(peaks: Peaks, tiny: bool = False) -> None:
    gemm = GEMM_SIDE_TINY if tiny else GEMM_SIDE
    conv = CONV_SIDE_TINY if tiny else CONV_SIDE
    print(f"CPU: {cpu_model()}, {torch.get_num_threads()} threads; peaks: GEMM {peaks.gemm_gflops:.1f} GFLOP/s "
          f"(sgemm {gemm}^2), conv {peaks.conv_gflops:.1f} GFLOP/s (3x3 conv2d {CONV_CHANNELS} ch, {conv}x{conv})")


def measured_peaks(tiny: bool = False) -> Peaks:
    """`measure_peaks`, printed with the CPU model."""
    peaks = measure_peaks(tiny)
    print_peaks(peaks, tiny)
    return peaks


def model_flops(model: torch.nn.Module, input_shape: Sequence[int]) -> float:
    """Nominal FLOPs of one eval forward of `model` on `input_shape`. Counted on a meta copy:
    free at any size, the model itself untouched."""
    from micml.diagnostics import multiply_accumulates

    meta = copy.deepcopy(model).to("meta").eval()
    return 2.0 * multiply_accumulates(meta, tuple(input_shape))


def executed_flops(function) -> float:
    """FLOPs of the convolutions and matrix products `function()` runs, forward and backward
    (`torch.utils.flop_counter`): for a training step, whose nominal count would credit the
    work an optimisation skips (MICML's motion module computes ~60 % of the reference's)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        function()
    return float(counter.get_total_flops())


def rate_line(label: str, flops: float, seconds: float, peaks: Peaks) -> str:
    """E.g. 'optimised: 88.1 GFLOP/s, 47 % of GEMM peak, 70 % of conv peak (21.0 GFLOP in 0.238 s)'."""
    gflops = flops / seconds / 1e9
    return (f"{label}: {gflops:.1f} GFLOP/s, {100 * gflops / peaks.gemm_gflops:.0f} % of GEMM peak, "
            f"{100 * gflops / peaks.conv_gflops:.0f} % of conv peak ({flops / 1e9:.3g} GFLOP in {seconds:.3g} s)")


def print_rates(flops: float, seconds: dict, peaks: Peaks, what: str = "") -> None:
    """One `rate_line` per path of `seconds` ({path: median seconds})."""
    for path, value in seconds.items():
        print(rate_line(f"{path}{what}", flops, value, peaks))
