"""Tiled vs whole-frame inference: throughput, and peak memory as the frame grows.

1. frames/s at SIZE x SIZE for whole-frame inference (the reference's 1024 setting) and for each
   tile size (best of --frames frames), with the ratio tiled / whole.
2. peak memory of one tiled frame at each of --memory-sizes (e.g. 1024 and 4096), each measured
   in a fresh process (peak RSS, VmHWM, above the RSS once the model and the five uint8 frames
   of the clip exist), with the ratio to the smallest size next to the ratio of pixels. Tiling
   keeps the working memory flat; the whole-frame figure at the smallest size is printed
   for comparison.

The default model is a stand-in with the detector's input/output contract (a small stride-1 conv
stack); `--model dsfnet` (or any registry variant) uses a real, randomly initialised model, which
takes about 30 s per 1024 x 1024 frame on a 2-core CPU.

    python benchmarks/bench_tiling.py --tiny        # seconds
    python benchmarks/bench_tiling.py               # 1024: whole vs tiles 256/512; memory 1024 vs 4096
    python benchmarks/bench_tiling.py --model micml --device cuda --amp bf16 --channels-last --compile

--device/--amp/--channels-last/--compile (benchmarks/gpu_options.py) apply to the throughput
test; the memory test measures CPU RSS, so a CUDA run skips it.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np
import torch
from torch import nn

import gpu_options
import roofline
from micml.data.clips import SEQ_LEN
from micml.inference.tiling import TiledDetector


class BenchStandIn(nn.Module):
    """(B, 3, 5, H, W) -> hm/wh/reg at stride 1 through four 3x3 convolutions of 16 channels."""

    def __init__(self, width: int = 16):
        super().__init__()
        layers, channels = [], 3 * SEQ_LEN
        for _ in range(3):
            layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU()]
            channels = width
        self.body = nn.Sequential(*layers, nn.Conv2d(width, 5, 3, padding=1))
        self.variant = "bench_standin"

    def forward(self, clip: torch.Tensor) -> dict[str, torch.Tensor]:
        batch, channels, frames, height, width = clip.shape
        y = self.body(clip.reshape(batch, channels * frames, height, width))
        return {"hm": y[:, :1], "wh": y[:, 1:3].abs(), "reg": y[:, 3:5].sigmoid()}


def make_model(name: str) -> nn.Module:
    if name == "standin":
        return BenchStandIn().eval()
    from micml.models import build
    return build(name).eval()


def make_clip(size: int, seed: int = 0) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    return tuple(rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(SEQ_LEN))


def frames_per_second(model: nn.Module, clip, tile: int | None, overlap: int, batch_size: int, frames: int,
                      gpu: argparse.Namespace | None = None) -> float:
    """1 / the fastest of `frames` timed frames: the best case is the least disturbed by other load
    on a shared machine (as `timeit` advises). `gpu`: the --device/--amp/--compile flags."""
    options = {"device": gpu.device, "amp": gpu.amp, "compile": gpu.compile} if gpu is not None else {}
    detector = TiledDetector(model, tile=tile, overlap=overlap, batch_size=batch_size, **options)
    detector.detect_clip(clip)  # warm-up: allocator, kernel selection
    fastest = float("inf")
    for _ in range(frames):
        started = time.perf_counter()
        detector.detect_clip(clip)
        fastest = min(fastest, time.perf_counter() - started)
    return 1 / fastest


def status_mib(field: str) -> float:
    """A memory figure of this process from /proc/self/status (VmRSS now, VmHWM peak), in MiB."""
    with open("/proc/self/status") as stream:
        for line in stream:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def reset_peak_rss() -> bool:
    """Start the peak (VmHWM) again from the current RSS (Linux >= 4.0); False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as stream:
            stream.write("5")
        return True
    except OSError:
        return False


def measure_memory_here(size: int, tile: int | None, overlap: int, batch_size: int, model_name: str) -> dict:
    """Run in a fresh process: peak RSS while detecting one frame, above the RSS after setup.

    Where the peak cannot be reset, the peak of the whole process so far is the baseline, which
    can hide a working set smaller than the setup's own transient peak.
    """
    model = make_model(model_name)
    clip = make_clip(size)
    detector = TiledDetector(model, tile=tile, overlap=overlap, batch_size=batch_size)
    before = status_mib("VmRSS") if reset_peak_rss() else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    detector.detect_clip(clip)
    return {"size": size, "tile": tile, "clip_mib": sum(f.nbytes for f in clip) / 2**20,
            "working_mib": max(status_mib("VmHWM") - before, 0.0)}


def measure_memory(size: int, tile: int | None, args) -> dict:
    command = [sys.executable, __file__, "--measure-memory", str(size), "--overlap", str(args.overlap),
               "--batch-size", str(args.batch_size), "--model", args.model, "--threads", str(args.threads),
               "--memory-tile", "whole" if tile is None else str(tile)]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="standin", help="'standin' or a micml.models variant (default standin)")
    parser.add_argument("--size", type=int, default=1024, help="frame side for the throughput test")
    parser.add_argument("--tiles", type=int, nargs="+", default=[256, 512], help="tile sizes to compare")
    parser.add_argument("--overlap", type=int, default=32, help="tile overlap in pixels")
    parser.add_argument("--batch-size", type=int, default=1, help="tiles per forward")
    parser.add_argument("--frames", type=int, default=3, help="timed frames per setting")
    parser.add_argument("--memory-sizes", type=int, nargs="+", default=[1024, 4096],
                        help="frame sides for the memory test (the first is the baseline)")
    parser.add_argument("--memory-tile", default="512", help="tile size for the memory test, or 'whole'")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch CPU threads")
    parser.add_argument("--tiny", action="store_true", help="small sizes: finishes in seconds")
    gpu_options.add_gpu_arguments(parser)
    parser.add_argument("--measure-memory", type=int, metavar="SIZE", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    gpu_options.require_device(args.device)
    if args.tiny:
        args.size, args.tiles, args.overlap, args.frames = 192, [64, 128], 16, 2
        args.memory_sizes, args.memory_tile = [256, 1024], "128"
    args.memory_tile = None if args.memory_tile == "whole" else int(args.memory_tile)
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.measure_memory:
        print(json.dumps(measure_memory_here(args.measure_memory, args.memory_tile, args.overlap, args.batch_size,
                                             args.model)))
        return

    model, clip = gpu_options.on_device(make_model(args.model), args), make_clip(args.size)
    print(f"model {args.model}, {args.threads} threads, overlap {args.overlap}, batch {args.batch_size}, "
          f"{gpu_options.describe(args)}")
    peaks = roofline.measured_peaks(args.tiny)
    # Useful work of a frame: the whole frame's FLOPs (tiles redo their overlap on top).
    flops = roofline.model_flops(model, (1, 3, SEQ_LEN, args.size, args.size))
    whole = frames_per_second(model, clip, None, args.overlap, args.batch_size, args.frames, args)
    print(f"{args.size}x{args.size} whole frame: {whole:8.3f} frames/s   "
          + roofline.rate_line("effective", flops, 1 / whole, peaks))
    for tile in args.tiles:
        tiled = frames_per_second(model, clip, tile, args.overlap, args.batch_size, args.frames, args)
        n_tiles = len(TiledDetector(model, tile=tile, overlap=args.overlap).layout(args.size, args.size).tiles)
        print(f"{args.size}x{args.size} tile {tile:4d} ({n_tiles:2d} tiles): {tiled:8.3f} frames/s   "
              f"tiled/whole = {tiled / whole:.2f}   " + roofline.rate_line("effective", flops, 1 / tiled, peaks))

    if torch.device(args.device).type != "cpu":
        print("\npeak working memory: skipped (it measures CPU RSS; this run is on {})".format(args.device))
        return
    base_size = args.memory_sizes[0]
    whole_memory = measure_memory(base_size, None, args)
    print(f"\npeak working memory, one frame (beyond the model and the {SEQ_LEN} uint8 frames of the clip):")
    print(f"{base_size}x{base_size} whole frame: {whole_memory['working_mib']:8.1f} MiB")
    baseline = None
    for size in args.memory_sizes:
        tiled = measure_memory(size, args.memory_tile, args)
        baseline = baseline or max(tiled["working_mib"], 1e-3)
        print(f"{size}x{size} tile {args.memory_tile}: {tiled['working_mib']:8.1f} MiB "
              f"(clip {tiled['clip_mib']:.0f} MiB)   memory ratio {tiled['working_mib'] / baseline:.2f} for pixel ratio {(size / base_size) ** 2:.0f}")


if __name__ == "__main__":
    main()
