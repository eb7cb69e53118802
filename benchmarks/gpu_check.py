"""The first run on a GPU machine: does the CUDA path work, and how fast is it? One JSON.

On one GPU, within about 8 minutes (an H100 class card), in this order:

1. dcn: the deformable convolution's backends against the reference on CUDA
   (`micml.ops.check_against_reference`, what the workflow's dcn_check rule runs).
2. eval: micml frames/s on whole 1024 x 1024 frames through `TiledDetector` (the reference's
   test setting) as `micml test` runs it (`optimize_for_inference`), in fp32, bf16,
   bf16 + channels_last and bf16 + channels_last + torch.compile. The first frame of each
   (cuDNN autotuning, compilation) is reported apart.
3. train: --train-steps training steps of micml at 512 x 512, batch --batch, bf16 autocast
   (forward, loss = sum of the heads' means, backward, Adam), steps/s after the first steps.
4. ddp: with two or more GPUs, the same steps in two processes under DDP (nccl,
   find_unused_parameters=False as training uses it), and whether both end with equal weights
   (with the hidden --device cpu of the tests: gloo on the CPU).

A failing part is recorded with its error and the next one runs; the exit status is non-zero
when any part failed. The JSON is rewritten after each part, so a killed run keeps what it did.

    python benchmarks/gpu_check.py --out gpu_check.json
    python benchmarks/gpu_check.py --out gpu_check.json --frames 5 --train-steps 10   # quicker

Without CUDA it exits at once with one line starting "no CUDA device: ".
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import socket
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch

import baselines
from micml.inference.tiling import TiledDetector
from micml.models import build, optimize_for_inference
from micml.precision import autocast, channels_last_weights, tune_cudnn

MODEL = "micml"
LEARNING_RATE = 1.25e-4
EVAL_SETTINGS = {  # name: (amp, channels_last, compile), each adding one thing to the one before
    "fp32": ("off", False, False),
    "bf16": ("bf16", False, False),
    "bf16_channels_last": ("bf16", True, False),
    "bf16_channels_last_compiled": ("bf16", True, True),
}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="the JSON file to write")
    parser.add_argument("--eval-size", type=int, default=1024, help="frame side for eval frames/s (default 1024)")
    parser.add_argument("--frames", type=int, default=20, help="timed frames per eval setting (default 20)")
    parser.add_argument("--train-size", type=int, default=512, help="training crop side (default 512)")
    parser.add_argument("--batch", type=int, default=4, help="training batch per GPU (default 4)")
    parser.add_argument("--train-steps", type=int, default=50, help="training steps (default 50)")
    parser.add_argument("--skip", nargs="*", default=[], choices=["dcn", "eval", "compile", "train", "ddp"],
                        help="parts to leave out (compile: the compiled eval setting)")
    # Only for tests/test_gpu_ready.py: the same code on the CPU, at tiny sizes, to prove it runs.
    parser.add_argument("--device", default="cuda", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def require_cuda(device: str) -> None:
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        sys.exit(f"no CUDA device: torch.cuda.is_available() is False (torch {torch.__version__}, built for CUDA "
                 f"{torch.version.cuda}, CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}); "
                 "run this on a machine with an NVIDIA GPU")


def machine() -> dict:
    return {"host": socket.gethostname(), "python": platform.python_version(), "torch": torch.__version__,
            "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
            "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]}


def on_cuda(device) -> bool:
    return torch.device(device).type == "cuda"


def synchronize(device) -> None:
    if on_cuda(device):
        torch.cuda.synchronize(device)


def peak_gib(device) -> float | None:
    """Peak GPU memory allocated since the last reset, in GiB; None off CUDA."""
    return torch.cuda.max_memory_allocated(device) / 2**30 if on_cuda(device) else None


def reset_peak(device) -> None:
    if on_cuda(device):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def write_json(path: Path, document: dict) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(document, indent=2, default=str))
    os.replace(partial, path)


# --------------------------------------------------------------------------- the parts


def dcn_check(args) -> dict:
    from micml.ops import check_against_reference

    return check_against_reference(torch.device(args.device))  # raises when a backend is off by more than its tolerance


def eval_frames_per_second(args) -> dict:
    """frames/s per EVAL_SETTINGS entry, whole frames, after one untimed frame."""
    torch.manual_seed(0)
    plain = baselines.trained_like(build(MODEL)).eval().to(args.device)
    rng = np.random.default_rng(0)
    clip = [rng.integers(0, 256, (args.eval_size, args.eval_size, 3), dtype=np.uint8) for _ in range(5)]
    results = {}
    for name, (amp, channels_last, compile_) in EVAL_SETTINGS.items():
        if compile_ and "compile" in args.skip:
            continue
        model = optimize_for_inference(copy.deepcopy(plain))
        model = channels_last_weights(model) if channels_last else model
        detector = TiledDetector(model, tile=None, device=args.device, amp=amp, compile=compile_)
        started = time.perf_counter()
        detector.detect_clip(clip)  # returns numpy: the GPU has finished
        first = time.perf_counter() - started
        seconds = []
        for _ in range(args.frames):
            started = time.perf_counter()
            detector.detect_clip(clip)
            seconds.append(time.perf_counter() - started)
        results[name] = {"frames_per_second": 1 / baselines.median(seconds), "first_frame_s": first,
                         "frames": args.frames, "peak_gib": peak_gib(args.device)}
        print(f"eval {name}: {results[name]['frames_per_second']:.2f} frames/s (first frame {first:.1f} s)", flush=True)
        del detector, model
        reset_peak(args.device)
    return {"model": MODEL, "size": args.eval_size, "settings": results}


def train_steps(model: torch.nn.Module, clip: torch.Tensor, steps: int) -> list[float]:
    """Seconds of each of `steps` bf16 steps (synchronised), loss = sum of the heads' means."""
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=LEARNING_RATE)
    seconds = []
    for _ in range(steps):
        synchronize(clip.device)
        started = time.perf_counter()
        with autocast(clip.device, "bf16"):
            outputs = model(clip)
            loss = sum(output.float().mean() for output in outputs.values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        synchronize(clip.device)
        seconds.append(time.perf_counter() - started)
    return seconds


def step_summary(seconds: list[float], batch: int) -> dict:
    steady = seconds[min(5, len(seconds) - 1):]  # the first steps autotune cuDNN and warm the allocator
    return {"steps": len(seconds), "first_step_s": seconds[0], "median_step_s": baselines.median(steady),
            "samples_per_second": batch / baselines.median(steady)}


def training(args) -> dict:
    torch.manual_seed(0)
    model = build(MODEL).train().to(args.device)
    clip = baselines.random_clip(args.batch, args.train_size).to(args.device)
    seconds = train_steps(model, clip, args.train_steps)
    summary = step_summary(seconds, args.batch)
    print(f"train: {summary['median_step_s']:.3f} s/step, batch {args.batch} at {args.train_size}", flush=True)
    return {"model": MODEL, "size": args.train_size, "batch": args.batch, "amp": "bf16",
            "peak_gib": peak_gib(args.device), **summary}


def ddp_worker(rank: int, world_size: int, args, port: int, queue) -> None:
    """One of the DDP processes: the training steps under DistributedDataParallel."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    cuda = on_cuda(args.device)
    device = torch.device("cuda", rank) if cuda else torch.device("cpu")
    torch.distributed.init_process_group("nccl" if cuda else "gloo", rank=rank, world_size=world_size)
    try:
        if cuda:
            torch.cuda.set_device(device)
        tune_cudnn(device)
        torch.manual_seed(0)  # the same initial weights in both processes (DDP also broadcasts rank 0's)
        model = build(MODEL).train().to(device)
        network = torch.nn.parallel.DistributedDataParallel(model, device_ids=[rank] if cuda else None,
                                                            find_unused_parameters=False)
        clip = baselines.random_clip(args.batch, args.train_size, seed=rank).to(device)
        seconds = train_steps(network, clip, args.train_steps)
        checksum = sum(p.detach().double().sum().item() for p in model.parameters())
        queue.put({"rank": rank, "checksum": checksum, **step_summary(seconds, args.batch)})
    finally:
        torch.distributed.destroy_process_group()


def ddp(args) -> dict:
    if on_cuda(args.device) and torch.cuda.device_count() < 2:
        return {"skipped": f"{torch.cuda.device_count()} CUDA device; DDP needs two"}
    import torch.multiprocessing as mp

    with socket.socket() as probe:  # a free port for the rendezvous
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    context = mp.get_context("spawn")
    queue = context.Queue()
    mp.start_processes(ddp_worker, args=(2, args, port, queue), nprocs=2, start_method="spawn")
    ranks = sorted((queue.get(timeout=60) for _ in range(2)), key=lambda result: result["rank"])
    equal = ranks[0]["checksum"] == ranks[1]["checksum"]
    print(f"ddp: {ranks[0]['median_step_s']:.3f} s/step per process, weights equal: {equal}", flush=True)
    if not equal:
        raise RuntimeError(f"the two DDP processes ended with different weights: {ranks}")
    return {"processes": 2, "batch_per_process": args.batch, "weights_equal": equal, "ranks": ranks}


PARTS = {"dcn": dcn_check, "eval": eval_frames_per_second, "train": training, "ddp": ddp}


def main(argv=None) -> int:
    args = parse_args(argv)
    require_cuda(args.device)
    tune_cudnn(args.device)
    out = Path(args.out)
    document = {"machine": machine(), "arguments": vars(args), "parts": {}, "complete": False}
    failed = []
    for name, part in PARTS.items():
        if name in args.skip:
            continue
        started = time.perf_counter()
        try:
            document["parts"][name] = {"passed": True, **part(args)}
        except Exception as error:  # record it and go on: one broken part must not hide the others
            failed.append(name)
            document["parts"][name] = {"passed": False, "error": f"{type(error).__name__}: {error}",
                                       "traceback": traceback.format_exc()}
            print(f"{name}: FAILED {type(error).__name__}: {error}", file=sys.stderr, flush=True)
        document["parts"][name]["seconds"] = round(time.perf_counter() - started, 1)
        write_json(out, document)
    document["complete"] = True
    document["failed"] = failed
    write_json(out, document)
    print(f"wrote {out}; " + (f"failed: {', '.join(failed)}" if failed else "every part passed"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
