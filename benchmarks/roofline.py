"""Where a benchmark stands against this machine's limits (not a benchmark itself).

A speed-up over a slow baseline says nothing about how much of the CPU is left idle. So each
model benchmark also measures, in its own process and thread count, two ceilings:

* the GEMM peak: a product of two large fp32 square matrices (best of several), through
  both libraries torch has on the CPU, MKL (`torch.mm`) and oneDNN (`micml.ops.matmul.linear`),
  whichever is faster here: MKL takes its AVX-512 kernels on Intel CPUs only, and on an AMD
  EPYC with AVX-512 ran at less than half oneDNN's rate, so `torch.mm` alone understated
  this machine's limit (and overstated every "% of GEMM peak") by 2x;
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
import functools
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
    #: each library's GEMM rate, e.g. {"MKL": 212.3, "oneDNN": 482.7}; gemm_gflops is the best
    gemm_by_library: dict = dataclasses.field(default_factory=dict)


def best_gflops(function, flops: float, repeats: int = PEAK_REPEATS) -> float:
    """FLOP rate of the fastest of `repeats` calls, after one untimed call."""
    function()
    fastest = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        fastest = min(fastest, time.perf_counter() - started)
    return flops / fastest / 1e9


def gemm_rates(side: int) -> dict:
    """GFLOP/s of a side^3 fp32 product through each library torch has here."""
    from micml.ops.matmul import linear, onednn_available

    a, b = torch.randn(side, side), torch.randn(side, side)
    products = {"MKL" if torch.backends.mkl.is_available() else "torch.mm": lambda: torch.mm(a, b)}
    if onednn_available():
        products["oneDNN"] = lambda: linear(a, b)
    with torch.inference_mode():
        return {library: best_gflops(product, 2.0 * side ** 3) for library, product in products.items()}


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
    gemm = gemm_rates(GEMM_SIDE_TINY if tiny else GEMM_SIDE)
    return Peaks(max(gemm.values()), conv_peak(CONV_SIDE_TINY if tiny else CONV_SIDE), gemm)


def print_peaks(peaks: Peaks, tiny: bool = False) -> None:
    gemm = GEMM_SIDE_TINY if tiny else GEMM_SIDE
    conv = CONV_SIDE_TINY if tiny else CONV_SIDE
    libraries = ", ".join(f"{library} {rate:.1f}" for library, rate in peaks.gemm_by_library.items())
    print(f"CPU: {cpu_model()}, {torch.get_num_threads()} threads; peaks: GEMM {peaks.gemm_gflops:.1f} GFLOP/s "
          f"(fp32 {gemm}^2, the best of {libraries}), conv {peaks.conv_gflops:.1f} GFLOP/s "
          f"(3x3 conv2d {CONV_CHANNELS} ch, {conv}x{conv})")


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


@functools.lru_cache(maxsize=1)
def _count_onednn_products() -> None:
    """Teach torch's FLOP counter the oneDNN product `micml.ops.matmul.linear` calls (it knows
    aten's mm, addmm and convolutions only, and would count the deformable convs' GEMMs as 0)."""
    from micml.ops.matmul import onednn_available
    from torch.utils.flop_counter import register_flop_formula

    if not onednn_available():
        return

    @register_flop_formula(torch.ops.mkldnn._linear_pointwise)
    def linear_flops(input_shape, weight_shape, *args, out_shape=None, **kwargs) -> int:
        return 2 * input_shape[0] * input_shape[1] * weight_shape[0]


def executed_flops(function) -> float:
    """FLOPs of the convolutions and matrix products `function()` runs, forward and backward
    (`torch.utils.flop_counter`): for a training step, whose nominal count would credit the
    work an optimisation skips (MICML's motion module computes ~60 % of the reference's)."""
    from torch.utils.flop_counter import FlopCounterMode

    _count_onednn_products()
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
