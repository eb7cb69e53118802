"""Motion module, forward + backward in training mode: the reference's way vs micml's.

Baseline: `micml.models.motion_reference` (every step and mining step runs the full
ConvLSTM conv on [x, h], the 640-channel concatenation is pooled at full resolution, the
adapter loops over samples). Optimised: `MotionModule.forward` (the input half of the conv
computed once per layer, h pooled once per step, a batched adapter). Same module, same input,
same output cotangent; prints median seconds, the ratio, the largest output and gradient
differences, and each path's peak RSS measured in a fresh process.

    python benchmarks/bench_motion.py --tiny              # seconds
    python benchmarks/bench_motion.py                     # 128 x 128 maps (512 crops), batch 1
    python benchmarks/bench_motion.py --size 64 --batch 4 # 256 crops, batch 4
"""

from __future__ import annotations

from micml.openmp import own_cores

own_cores()  # before torch loads: a benchmark has the cores to itself (GOMP_SPINCOUNT=0 to share)

import argparse
import json

import torch

import baselines
import roofline
from micml.models.motion import MotionModule



def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=128, help="side of the motion input maps (crop / 4; default 128)")
    parser.add_argument("--batch", type=int, default=1, help="batch size (default 1)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per path (default 3)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--no-memory", action="store_true", help="skip the fresh-process peak RSS runs")
    parser.add_argument("--tiny", action="store_true", help="a seconds-long smoke run (CI)")
    parser.add_argument("--measure-memory", choices=baselines.PATHS, help=argparse.SUPPRESS)
    parser.add_argument("--channels", type=int, default=64, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.tiny:  # a narrower module too: MICML's pools every map to 64 x 64 whatever its size
        args.size, args.batch, args.repeats, args.channels = 12, 2, 2, 16
    return args


def make_case(args) -> tuple[MotionModule, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    # MICML ties the pooled side to the channels (both 64, reference Motion.py).
    motion = MotionModule(channels=args.channels, pooled_size=args.channels).train()
    generator = torch.Generator().manual_seed(1)
    shape = (args.batch, motion.num_frames, motion.channels, args.size, args.size)
    return motion, torch.randn(shape, generator=generator), torch.randn(shape, generator=generator)


def forward_backward(path: str, motion: MotionModule, sequence: torch.Tensor, cotangent: torch.Tensor):
    """Output, input gradient and parameter gradients of one forward + backward on `path`."""
    motion.zero_grad(set_to_none=True)
    leaf = sequence.detach().requires_grad_()
    context = baselines.baseline_path(motion) if path == "baseline" else baselines.optimised_path()
    with context:
        out = motion(leaf)
        out.backward(cotangent)
    grads = [p.grad.clone() for p in motion.parameters()]
    return out.detach(), leaf.grad, grads


def main(argv=None) -> None:
    args = parse_args(argv)
    baselines.configure_threads(args.threads)
    motion, sequence, cotangent = make_case(args)
    if args.measure_memory:
        forward_backward(args.measure_memory, motion, sequence, cotangent)
        print(json.dumps({"peak_rss_mib": baselines.peak_rss_mib()}))
        return

    peaks = roofline.measured_peaks(args.tiny)
    # The work micml's path does (the reference's ConvLSTM convs would credit the part it skips).
    flops = roofline.executed_flops(lambda: forward_backward("optimised", motion, sequence, cotangent))
    print(f"motion module fwd+bwd, train mode, input {tuple(sequence.shape)}, {torch.get_num_threads()} threads, "
          f"median of {args.repeats}, torch {torch.__version__}")
    memory_argv = None
    if not args.no_memory:
        memory_argv = ["--size", str(args.size), "--batch", str(args.batch), "--channels", str(args.channels)]
        memory_argv += ["--threads", str(args.threads)] if args.threads else []
    first = baselines.compare_paths(lambda path: forward_backward(path, motion, sequence, cotangent), args.repeats,
                                    script=__file__, memory_argv=memory_argv, flops=flops, peaks=peaks)
    (out_a, input_grad_a, grads_a), (out_b, input_grad_b, grads_b) = first["baseline"], first["optimised"]
    print(f"max |diff| output {baselines.max_abs_diff(out_a, out_b):.2e} "
          f"(max |output| {out_a.abs().max().item():.2e})")
    print(f"input gradient: max |diff| {baselines.max_abs_diff(input_grad_a, input_grad_b):.2e} "
          f"(max |gradient| {input_grad_a.abs().max().item():.2e}), relative L2 difference "
          f"{baselines.relative_l2([input_grad_a], [input_grad_b]):.1e}")
    print(f"parameter gradients: max |diff| {baselines.max_abs_diff(grads_a, grads_b):.2e} "
          f"(max |gradient| {max(g.abs().max().item() for g in grads_a):.2e}), relative L2 difference "
          f"{baselines.relative_l2(grads_a, grads_b):.1e}")
    print("(a max-pool routes each gradient to one argmax, which a rounding-level near-tie can move)")


if __name__ == "__main__":
    main()
