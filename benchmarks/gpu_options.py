"""The GPU flags of the model benchmarks, in one place: --device, --amp, --channels-last, --compile.

Their defaults (cpu, off, no, no) leave a CPU run exactly as it was. They apply to the model a
script times with micml's optimised path; the baseline path stays the reference's fp32 eager
model (moved to --device), so the ratio still reads as "what micml gains".
"""

from __future__ import annotations

import argparse
import contextlib
import sys

import torch

from micml.precision import AMP_DTYPES, autocast, channels_last_weights, compiled


def add_gpu_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cuda or cuda:1 (default cpu)")
    parser.add_argument("--amp", default="off", choices=tuple(AMP_DTYPES),
                        help="autocast dtype of the optimised path (default off: float32)")
    parser.add_argument("--channels-last", action="store_true",
                        help="channels_last memory format for the optimised path (micml already uses it on CPU)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the optimised path's model")


def require_device(device: str) -> None:
    """Stop with one line when `device` names CUDA and there is none (instead of a traceback)."""
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        sys.exit(f"no CUDA device: --device {device} asked for one but torch.cuda.is_available() is False "
                 f"(torch {torch.__version__}, built for CUDA {torch.version.cuda}); run on a GPU machine or "
                 "leave --device out")


def on_device(model: torch.nn.Module, args: argparse.Namespace) -> torch.nn.Module:
    """`model` on args.device, channels_last when asked (not compiled: see `compiled_if_asked`)."""
    model = model.to(args.device)
    return channels_last_weights(model) if args.channels_last else model


def compiled_if_asked(model: torch.nn.Module, args: argparse.Namespace) -> torch.nn.Module:
    return compiled(model, args.compile)


def amp_context(args: argparse.Namespace):
    """Autocast in args.amp on args.device; a no-op context for "off" (the CPU default)."""
    return autocast(args.device, args.amp) if args.amp != "off" else contextlib.nullcontext()


def describe(args: argparse.Namespace) -> str:
    """E.g. "cuda, bf16, channels_last, compiled" for a table header."""
    parts = [str(args.device), "fp32" if args.amp == "off" else args.amp]
    parts += ["channels_last"] if args.channels_last else []
    parts += ["compiled"] if args.compile else []
    return ", ".join(parts)
