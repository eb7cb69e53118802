"""Eval forward of micml's optimised model in float32 vs under bfloat16 autocast, on CPU.

Both paths are `micml.models.optimize_for_inference` of the same trained-like model on the
same clip; runs alternate. Prints the medians, the ratio, GFLOP/s and % of this machine's
fp32 peaks (`roofline.py`; bf16 can exceed them), the largest head differences and how many
of the float32 top-100 detections the bf16 run finds at the same pixel. Autocast pays only
where the CPU computes bfloat16 natively (AVX512_BF16 or AMX: `micml.precision.cpu_has_bf16`);
elsewhere oneDNN emulates it, which the first output line says.

    python benchmarks/bench_precision.py --tiny          # seconds
    python benchmarks/bench_precision.py                 # micml, 512 x 512
"""

from __future__ import annotations

from micml.openmp import own_cores

own_cores()  # before torch loads: a benchmark has the cores to itself (GOMP_SPINCOUNT=0 to share)

import argparse

import torch

import baselines
from micml.allocator import keep_freed_memory
import roofline
from micml.inference.decode import decode
from micml.models import build, optimize_for_inference
from micml.precision import autocast, cpu_has_bf16

PATHS = ("fp32", "bf16")
TOP_K = 100


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="micml", help="registry variant (default micml)")
    parser.add_argument("--size", type=int, default=512, help="frame side (default 512)")
    parser.add_argument("--repeats", type=int, default=3, help="timed forwards per path (default 3)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--tiny", action="store_true", help="a seconds-long smoke run (CI)")
    args = parser.parse_args(argv)
    if args.tiny:
        args.size, args.repeats = 64, 2
    return args


def forward(model: torch.nn.Module, clip: torch.Tensor, path: str) -> dict:
    with baselines.optimised_path(), autocast("cpu", "off" if path == "fp32" else path), torch.inference_mode():
        return {head: value.float() for head, value in model(clip).items()}


def shared_detections(expected: dict, found: dict) -> tuple[int, float]:
    """Of the float32 run's top-K detections, how many the other run has at the same centre,
    and the largest score difference among those."""
    (a,), (b,) = decode(expected, TOP_K), decode(found, TOP_K)
    centres = lambda d: {(round(float(x1 + x2) / 2, 1), round(float(y1 + y2) / 2, 1)): s for x1, y1, x2, y2, s in d}
    centres_a, centres_b = centres(a), centres(b)
    common = centres_a.keys() & centres_b.keys()
    return len(common), max((abs(centres_a[c] - centres_b[c]) for c in common), default=0.0)


def main(argv=None) -> None:
    args = parse_args(argv)
    baselines.configure_threads(args.threads)
    keep_freed_memory()  # as TiledDetector does on CPU (micml test/detect): both paths alike
    torch.manual_seed(0)
    model = baselines.trained_like(build(args.model)).eval()
    optimised = optimize_for_inference(model)
    clip = baselines.random_clip(1, args.size)
    native = "native bf16 (AVX512_BF16/AMX)" if cpu_has_bf16() else "no AVX512_BF16/AMX: bf16 is emulated"
    print(f"{args.model} optimised eval forward, 1 x 3 x 5 x {args.size} x {args.size}, {torch.get_num_threads()} threads, "
          f"median of {args.repeats} after 1 untimed forward, torch {torch.__version__}; {native}")
    peaks = roofline.measured_peaks(args.tiny)

    first = {path: forward(optimised, clip, path) for path in PATHS}
    times = baselines.interleaved_seconds({path: (lambda p=path: forward(optimised, clip, p)) for path in PATHS},
                                          args.repeats)
    median = {path: baselines.median(times[path]) for path in PATHS}
    baselines.print_table([(path, f"{median[path]:.3f}", f"{min(times[path]):.3f}") for path in PATHS],
                          ("path", "median s", "min s"))
    print(f"speed-up (fp32 / bf16): {median['fp32'] / median['bf16']:.2f}x")
    roofline.print_rates(roofline.model_flops(model, clip.shape), {path: min(times[path]) for path in PATHS}, peaks)
    for head, expected in first["fp32"].items():
        print(f"max |diff| {head:4s} {baselines.max_abs_diff(expected, first['bf16'][head]):.2e} "
              f"(max |output| {expected.abs().max().item():.2e})")
    common, score_diff = shared_detections(first["fp32"], first["bf16"])
    print(f"top-{TOP_K} detections at the same centre in both: {common}; largest score difference {score_diff:.2e}")


if __name__ == "__main__":
    main()
