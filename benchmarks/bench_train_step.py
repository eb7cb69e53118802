"""One training step of a detector on CPU: the baseline path vs micml's optimised path.

A step is forward -> loss = sum over heads of mean(output) -> zero_grad -> backward -> Adam
(lr 1.25e-4), as in reference/CPU_CALIBRATION.md. Baseline: torchvision's DCN kernel and the
reference's motion module (`micml.models.motion_reference`); optimised: the gather DCN
and `MotionModule.forward`. Two copies of the same trained-like model and the same clip; the
first (untimed) step of each gives the output and gradient differences, then timed steps
alternate. Peak RSS of one step per path is measured in a fresh process.

    python benchmarks/bench_train_step.py --tiny                       # seconds
    python benchmarks/bench_train_step.py --size 256 --repeats 3       # minutes
    python benchmarks/bench_train_step.py --size 512 --repeats 1       # the goal: ~3 min baseline/step
    python benchmarks/bench_train_step.py --device cuda --amp bf16 --channels-last --compile --no-memory

--device/--amp/--channels-last/--compile (benchmarks/gpu_options.py) apply to the optimised
path; the baseline stays fp32 eager on the same device. Peak RSS is CPU memory: a CUDA run
skips it.
"""

from __future__ import annotations

from micml.openmp import own_cores

own_cores()  # before torch loads: a benchmark has the cores to itself (GOMP_SPINCOUNT=0 to share)

import argparse
import contextlib
import copy
import json

import torch

import baselines
import gpu_options
import roofline
from micml.allocator import keep_freed_memory
from micml.models import build

LEARNING_RATE = 1.25e-4


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="micml", help="registry variant (default micml)")
    parser.add_argument("--size", type=int, default=512, help="crop side (default 512)")
    parser.add_argument("--batch", type=int, default=1, help="batch size (default 1)")
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per path (default 3)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--no-memory", action="store_true", help="skip the fresh-process peak RSS runs")
    parser.add_argument("--tiny", action="store_true", help="a seconds-long smoke run (CI)")
    gpu_options.add_gpu_arguments(parser)
    parser.add_argument("--measure-memory", choices=baselines.PATHS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    gpu_options.require_device(args.device)
    args.no_memory = args.no_memory or torch.device(args.device).type != "cpu"
    if args.tiny:
        args.size, args.batch, args.repeats = 32, 1, 2
    return args


class Trainer:
    """A model, its Adam optimiser and the path (baseline or optimised) it trains on."""

    def __init__(self, model: torch.nn.Module, path: str, args):
        self.model, self.path = model.train(), path
        self.optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=LEARNING_RATE)
        # The GPU flags shape the optimised path only; the baseline is the reference's fp32 eager step.
        optimised = path == "optimised"
        self.network = gpu_options.compiled_if_asked(model, args) if optimised else model
        self.precision = (lambda: gpu_options.amp_context(args)) if optimised else contextlib.nullcontext

    def step(self, clip: torch.Tensor) -> dict:
        """One step; returns the outputs and the gradients it applied."""
        motions = [self.model.motion] if getattr(self.model, "motion", None) is not None else []
        context = baselines.baseline_path(*motions) if self.path == "baseline" else baselines.optimised_path()
        with context:
            with self.precision():
                outputs = self.network(clip)
                loss = sum(output.float().mean() for output in outputs.values())
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
        grads = {name: p.grad.clone() for name, p in self.model.named_parameters() if p.grad is not None}
        self.optimizer.step()
        return {"outputs": {k: v.detach().float() for k, v in outputs.items()}, "grads": grads}


def make_trainers(args) -> tuple[dict, torch.Tensor]:
    torch.manual_seed(0)
    model = baselines.trained_like(build(args.model)).to(args.device)
    paths = [args.measure_memory] if args.measure_memory else baselines.PATHS
    on_device = {"baseline": lambda plain: plain, "optimised": lambda plain: gpu_options.on_device(plain, args)}
    trainers = {path: Trainer(on_device[path](copy.deepcopy(model)), path, args) for path in paths}
    return trainers, baselines.random_clip(args.batch, args.size).to(args.device)


def main(argv=None) -> None:
    args = parse_args(argv)
    baselines.configure_threads(args.threads)
    if args.device == "cpu":
        keep_freed_memory()  # as micml's train job does on CPU: both paths alike
    trainers, clip = make_trainers(args)
    if args.measure_memory:
        trainers[args.measure_memory].step(clip)
        print(json.dumps({"peak_rss_mib": baselines.peak_rss_mib()}))
        return
    peaks = roofline.measured_peaks(args.tiny)
    # What the optimised step computes, counted on a throwaway copy (the timed models keep their
    # state); Adam's update and the loss are a few FLOPs per parameter, left out.
    counted = Trainer(copy.deepcopy(trainers["optimised"].model), "optimised", args)
    flops = roofline.executed_flops(lambda: counted.step(clip))
    del counted

    print(f"{args.model} training step, batch {args.batch}, {args.size}x{args.size}, {torch.get_num_threads()} threads, "
          f"median of {args.repeats} after 1 untimed step, torch {torch.__version__}; "
          f"optimised path: {gpu_options.describe(args)}")
    memory_argv = None
    if not args.no_memory:
        memory_argv = ["--model", args.model, "--size", str(args.size), "--batch", str(args.batch)]
        memory_argv += ["--threads", str(args.threads)] if args.threads else []
    first = baselines.compare_paths(lambda path: trainers[path].step(clip), args.repeats, script=__file__,
                                    memory_argv=memory_argv, digits=2, device=args.device,
                                    flops=flops, peaks=peaks)
    a, b = first["baseline"], first["optimised"]
    print(f"max |diff| outputs {baselines.max_abs_diff(a['outputs'], b['outputs']):.2e} "
          f"(max |output| {max(v.abs().max().item() for v in a['outputs'].values()):.2e})")
    print(f"gradients: max |diff| {baselines.max_abs_diff(a['grads'], b['grads']):.2e}, "
          f"relative L2 difference {baselines.relative_l2(a['grads'], b['grads']):.1e}")
    print("(training-mode BatchNorm on small deep maps amplifies float32 rounding: the baseline's own "
          "float32 gradients differ from float64 by a few % at 64 x 64; see benchmarks/README.md)")


if __name__ == "__main__":
    main()
