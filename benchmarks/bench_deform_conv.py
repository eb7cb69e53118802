"""Benchmark micml's gather DCNv2 against torchvision's kernel (CPU by default).

torchvision gets the inputs as the reference passes them (NCHW); micml's DCN and the conv2d it
is compared with get them as micml's CPU models do (channels-last activations, offset and mask
as channel slices of one channels-last tensor).

Prints median forward and forward+backward times per backend, their ratio, and
the largest differences of outputs and gradients. Example (the goal setting):

    python benchmarks/bench_deform_conv.py --batch 2 --channels 64 --size 128 --threads 2
"""

from __future__ import annotations

from micml.openmp import own_cores

own_cores()  # before torch loads: a benchmark has the cores to itself (GOMP_SPINCOUNT=0 to share)

import argparse
import functools
import statistics

import torch

import baselines
import roofline
from micml.allocator import keep_freed_memory
from micml.ops import modulated_deform_conv2d

BACKENDS = ("torchvision", "gather")
PARTS = ("forward", "both")  # forward only; forward + backward


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=128, help="input height and width (default 128)")
    parser.add_argument("--channels", type=int, default=64, help="input and output channels (default 64)")
    parser.add_argument("--batch", type=int, default=2, help="batch size (default 2)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per measurement (default 5)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--tiny", action="store_true", help="a seconds-long smoke run (CI)")
    args = parser.parse_args(argv)
    if args.tiny:
        args.size, args.channels, args.batch, args.repeats = 24, 8, 1, 2
    return args


def make_inputs(batch, channels, size, device, seed=0):
    """DCN inputs with offsets of a few pixels (some sample outside) and a sigmoid mask."""
    generator = torch.Generator().manual_seed(seed)

    def randn(*shape, scale=1.0):
        return (torch.randn(*shape, generator=generator) * scale).to(device)

    inputs = {
        "x": randn(batch, channels, size, size),
        "offset": randn(batch, 18, size, size, scale=2.0),
        "mask": randn(batch, 9, size, size).sigmoid(),
        "weight": randn(channels, channels, 3, 3, scale=(channels * 9) ** -0.5),
        "bias": randn(channels),
        "grad_out": randn(batch, channels, size, size),
    }
    return inputs


def as_in_micml(inputs):
    """The same inputs laid out as micml's CPU models pass them: channels-last activations, and
    offset and mask as channel slices of the channels-last offset/mask conv output."""
    laid_out = dict(inputs)
    for name in ("x", "grad_out"):
        laid_out[name] = inputs[name].contiguous(memory_format=torch.channels_last)
    offset_and_mask = torch.cat([inputs["offset"], inputs["mask"]], 1).contiguous(memory_format=torch.channels_last)
    offset_channels = inputs["offset"].shape[1]
    laid_out["offset"], laid_out["mask"] = offset_and_mask[:, :offset_channels], offset_and_mask[:, offset_channels:]
    return laid_out


def run(backend, inputs, backward):
    """One call; returns the output and, with backward, the gradients of all inputs."""
    names = ("x", "offset", "mask", "weight", "bias")
    leaves = {name: inputs[name].detach().requires_grad_(backward) for name in names}
    with torch.set_grad_enabled(backward):
        out = modulated_deform_conv2d(*(leaves[name] for name in names), backend=backend)
        if not backward:
            return out, {}
        out.backward(inputs["grad_out"])  # a dense cotangent, like a real loss gives
    return out.detach(), {name: leaves[name].grad for name in names}


def run_conv2d(inputs, backward):
    """A plain 3x3 conv2d of the same shape (what the DCN would cost without its sampling)."""
    leaves = {name: inputs[name].detach().requires_grad_(backward) for name in ("x", "weight", "bias")}
    with torch.set_grad_enabled(backward):
        out = torch.nn.functional.conv2d(leaves["x"], leaves["weight"], leaves["bias"], padding=1)
        if backward:
            out.backward(inputs["grad_out"])
    return out


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    keep_freed_memory()  # as micml's train and test jobs do on CPU: every path alike
    reference_inputs = make_inputs(args.batch, args.channels, args.size, args.device)
    # torchvision as the reference calls it (NCHW); micml's DCN and the conv2d as micml runs them
    inputs = {"torchvision": reference_inputs, "gather": as_in_micml(reference_inputs)}
    inputs["conv2d"] = inputs["gather"]
    print(
        f"DCNv2 3x3, batch {args.batch}, {args.channels}->{args.channels} channels, "
        f"{args.size}x{args.size}, {args.device}, {torch.get_num_threads()} threads, "
        f"median of {args.repeats}, torch {torch.__version__}"
    )

    peaks = roofline.measured_peaks(args.tiny)
    results = {backend: run(backend, inputs[backend], backward=True) for backend in BACKENDS}  # warm-up
    run_conv2d(inputs["conv2d"], backward=True)
    functions = {}
    for backend in BACKENDS:
        functions[backend, "forward"] = functools.partial(run, backend, inputs[backend], backward=False)
        functions[backend, "both"] = functools.partial(run, backend, inputs[backend], backward=True)
    for part in PARTS:
        functions["conv2d", part] = functools.partial(run_conv2d, inputs["conv2d"], backward=part == "both")
    times = baselines.interleaved_seconds(functions, args.repeats, args.device)
    median = {key: statistics.median(values) for key, values in times.items()}
    fastest = {key: min(values) for key, values in times.items()}

    print(f"{'':24}{'forward s':>18}{'fwd+bwd s':>18}   median (min)")
    for backend in (*BACKENDS, "conv2d"):
        cells = [f"{median[backend, part]:.4f} ({fastest[backend, part]:.4f})" for part in PARTS]
        print(f"{backend:24}{cells[0]:>18}{cells[1]:>18}")
    ratios = [
        f"{median['torchvision', part] / median['gather', part]:.1f}x "
        f"({fastest['torchvision', part] / fastest['gather', part]:.1f}x)"
        for part in PARTS
    ]
    print(f"{'speed-up (tv / gather)':24}{ratios[0]:>18}{ratios[1]:>18}")
    versus_conv = [f"{median['gather', part] / median['conv2d', part]:.2f}x" for part in PARTS]
    print(f"{'gather / conv2d ratio':24}{versus_conv[0]:>18}{versus_conv[1]:>18}   (cost of the DCN over a plain conv)")
    forward_flops = 2.0 * args.batch * args.channels * args.channels * 9 * args.size * args.size
    for part, flops in (("forward", forward_flops), ("both", roofline.BACKWARD_FACTOR * forward_flops)):
        roofline.print_rates(flops, {backend: fastest[backend, part] for backend in (*BACKENDS, "conv2d")}, peaks,
                             what=", forward" if part == "forward" else ", fwd+bwd")

    (tv_out, tv_grads), (our_out, our_grads) = results["torchvision"], results["gather"]
    print(f"max |diff| output      {(tv_out - our_out).abs().max().item():.2e}")
    for name in ("x", "offset", "mask", "weight", "bias"):
        diff = (tv_grads[name] - our_grads[name]).abs().max().item()
        scale = tv_grads[name].abs().max().item()
        print(f"max |diff| grad {name:7}{diff:.2e}  (max |grad| {scale:.2e})")


if __name__ == "__main__":
    main()
