"""Eval forward on CPU: the baseline path vs `micml.models.optimize_for_inference`, and tiled
throughput of the optimised model.

Baseline: `model.eval()` in fp32 eager with torchvision's DCN kernel, under inference_mode.
Optimised: `optimize_for_inference(model)` (BatchNorm folded, mix-first deformable conv,
framewise 3-D convs, banded heads, channels_last), also under inference_mode. Same
trained-like weights (non-zero DCN offsets) and clip; runs alternate. Then frames/s of the
optimised model through `TiledDetector` on a larger frame, in tiles of --tile pixels and
whole.

    python benchmarks/bench_inference.py --tiny          # seconds
    python benchmarks/bench_inference.py                 # 512 x 512 micml; tiled 1024 x 1024
    python benchmarks/bench_inference.py --device cuda --amp bf16 --channels-last --compile

--device/--amp/--channels-last/--compile (benchmarks/gpu_options.py) apply to the optimised
path; the baseline stays fp32 eager on the same device.
"""

from __future__ import annotations

from micml.openmp import own_cores

own_cores()  # before torch loads: a benchmark has the cores to itself (GOMP_SPINCOUNT=0 to share)

import argparse
import contextlib
import time

import numpy as np
import torch

import baselines
from micml.allocator import keep_freed_memory
import gpu_options
import roofline
from micml.inference.tiling import TiledDetector
from micml.models import build, optimize_for_inference


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="micml", help="registry variant (default micml)")
    parser.add_argument("--size", type=int, default=512, help="frame side of the forward comparison (default 512)")
    parser.add_argument("--repeats", type=int, default=3, help="timed forwards per path (default 3)")
    parser.add_argument("--tiled-size", type=int, default=1024, help="frame side for tiled throughput (default 1024)")
    parser.add_argument("--tile", type=int, default=512, help="tile side (default 512)")
    parser.add_argument("--overlap", type=int, default=32, help="tile overlap (default 32)")
    parser.add_argument("--tiled-frames", type=int, default=2, help="timed frames for throughput (default 2; 0 skips the frame-size costs)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--tiny", action="store_true", help="a seconds-long smoke run (CI)")
    gpu_options.add_gpu_arguments(parser)
    args = parser.parse_args(argv)
    if args.tiled_frames < 0:
        parser.error(f"--tiled-frames must be 0 (skip the frame-size costs) or more, not {args.tiled_frames}")
    gpu_options.require_device(args.device)
    if args.tiny:
        args.size, args.repeats, args.tiled_size, args.tile, args.overlap = 64, 2, 128, 64, 16
        args.tiled_frames = min(args.tiled_frames, 1)  # an explicit 0 still skips the frame costs
    return args


def forward(path: str, models: dict, clip: torch.Tensor, args) -> dict:
    context = baselines.baseline_path() if path == "baseline" else baselines.optimised_path()
    precision = gpu_options.amp_context(args) if path == "optimised" else contextlib.nullcontext()
    with context, precision, torch.inference_mode():
        return {head: value.float() for head, value in models[path](clip).items()}


def seconds_per_frame(model: torch.nn.Module, size: int, tile: int | None, args, fit_tiles: bool = True) -> float:
    """Seconds of the fastest of --tiled-frames size x size frames through TiledDetector (uint8
    clip -> detections; `tile=None`: one whole-frame forward), after one warm-up frame. The
    fastest is the least disturbed by other load, as in bench_tiling.py."""
    rng = np.random.default_rng(0)
    clip = [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(5)]
    detector = TiledDetector(model, tile=tile, overlap=args.overlap, device=args.device, amp=args.amp,
                             compile=args.compile, fit_tiles=fit_tiles)
    detector.detect_clip(clip)
    seconds = []
    for _ in range(args.tiled_frames):
        started = time.perf_counter()
        detector.detect_clip(clip)
        seconds.append(time.perf_counter() - started)
    return min(seconds)


def frame_costs(model: torch.nn.Module, optimised: torch.nn.Module, peaks: roofline.Peaks, args) -> None:
    """Frames/s and GFLOP/s of whole frames at --size and --tiled-size and of tiles at --tiled-size,
    and what the larger frame costs per pixel: a model whose cost is linear in pixels pays
    (tiled-size / size)^2 (4x for 1024 over 512); tiles pay their overlap on top."""
    settings = {"whole": (args.size, None, True), "large whole": (args.tiled_size, None, True),
                "large tiled": (args.tiled_size, args.tile, True), "large exact tiles": (args.tiled_size, args.tile, False)}
    seconds = {}
    for name, (size, tile, fit) in settings.items():
        # TiledDetector compiles the model when --compile
        seconds[name] = seconds_per_frame(optimised, size, tile, args, fit_tiles=fit)
        layout = TiledDetector(optimised, tile=tile, overlap=args.overlap, fit_tiles=fit).layout(size, size)
        how = "whole frame" if tile is None else (
            f"tiles {tile}, overlap {args.overlap}, {'fitted' if fit else 'exact'}: "
            f"{len(layout.tiles)} of {layout.input_shape[0]}x{layout.input_shape[1]}")
        flops = roofline.model_flops(model, (1, 3, 5, size, size))  # useful work: the whole frame's
        print(f"optimised, {size}x{size} frames ({how}): {1 / seconds[name]:.3f} frames/s; "
              + roofline.rate_line("effective", flops, seconds[name], peaks))
    pixels = (args.tiled_size / args.size) ** 2
    print(f"cost of a {args.tiled_size} frame / a {args.size} frame (pixel ratio {pixels:.0f}): "
          f"whole {seconds['large whole'] / seconds['whole']:.2f}x, tiled {seconds['large tiled'] / seconds['whole']:.2f}x "
          f"(exact tiles {seconds['large exact tiles'] / seconds['whole']:.2f}x); "
          f"tiled/whole = {seconds['large whole'] / seconds['large tiled']:.2f} (frames/s)")


def main(argv=None) -> None:
    args = parse_args(argv)
    baselines.configure_threads(args.threads)
    keep_freed_memory()  # as TiledDetector does on CPU (micml test/detect): both paths alike
    torch.manual_seed(0)
    model = baselines.trained_like(build(args.model)).eval().to(args.device)
    optimised = gpu_options.on_device(optimize_for_inference(model), args)
    models = {"baseline": model, "optimised": gpu_options.compiled_if_asked(optimised, args)}
    clip = baselines.random_clip(1, args.size).to(args.device)
    peaks = roofline.measured_peaks(args.tiny)
    print(f"{args.model} eval forward, 1 x 3 x 5 x {args.size} x {args.size}, {torch.get_num_threads()} threads, "
          f"median of {args.repeats} after 1 untimed forward, torch {torch.__version__}; "
          f"optimised path: {gpu_options.describe(args)}")

    flops = roofline.model_flops(model, clip.shape)
    first = baselines.compare_paths(lambda path: forward(path, models, clip, args), args.repeats, device=args.device,
                                    flops=flops, peaks=peaks)
    for head, expected in first["baseline"].items():
        diff = baselines.max_abs_diff(expected, first["optimised"][head])
        print(f"max |diff| {head:4s} {diff:.2e} (max |output| {expected.abs().max().item():.2e})")

    if args.tiled_frames:
        frame_costs(model, optimised, peaks, args)
    print(f"peak RSS of this process {baselines.peak_rss_mib():.0f} MiB")


if __name__ == "__main__":
    main()
