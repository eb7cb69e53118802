"""Mixed precision: the autocast choices shared by training and inference (one list for both)."""

from __future__ import annotations

import functools

import torch

AMP_DTYPES = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}
#: CPU flags of native bfloat16 arithmetic (AVX-512 BF16 dot products, AMX tiles). Without
#: them oneDNN emulates bf16 and autocast only adds conversions.
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_has_bf16(flags: frozenset[str] | None = None) -> bool:
    """Whether this CPU (or one with `flags`) computes bfloat16 natively."""
    from micml.machine import cpu_flags

    flags = cpu_flags() if flags is None else flags
    return any(flag in flags for flag in BF16_CPU_FLAGS)


def check_amp(amp: str) -> None:
    if amp not in AMP_DTYPES:
        raise ValueError(f"amp must be one of {', '.join(AMP_DTYPES)}, found {amp!r}")


def autocast(device: torch.device | str, amp: str) -> torch.autocast:
    """`torch.autocast` in the dtype that `amp` names on `device`'s type; disabled for "off"."""
    check_amp(amp)
    dtype = AMP_DTYPES[amp]
    return torch.autocast(torch.device(device).type, dtype=dtype, enabled=dtype is not None)


def float32_under_autocast(function):
    """Run `function` in float32 when autocast is on for its first argument's device.

    The rule torchvision registers for deform_conv2d, applied to every deformable-conv path
    (the CPU kernels would otherwise get mixed float32/bfloat16 operands): bilinear sampling
    positions need float32 precision.
    """
    @functools.wraps(function)
    def wrapper(x: torch.Tensor, *args, **kwargs):
        device_type = x.device.type
        if not (torch.amp.is_autocast_available(device_type) and torch.is_autocast_enabled(device_type)):
            return function(x, *args, **kwargs)
        as_float = lambda value: value.float() if torch.is_tensor(value) and value.is_floating_point() else value
        with torch.autocast(device_type, enabled=False):
            return function(as_float(x), *map(as_float, args), **{k: as_float(v) for k, v in kwargs.items()})
    return wrapper


# --------------------------------------------------------------------------- GPU speed settings

# torch.compile's backend. Not a user setting: tests switch it to "eager" to check the wiring
# where the inductor backend (which needs a C compiler) is missing or too slow to wait for.
COMPILE_BACKEND = "inductor"


def tune_cudnn(device: torch.device | str) -> None:
    """Let cuDNN pick the fastest convolution algorithm per input shape on CUDA.

    Training crops and test tiles have a few fixed shapes, so the search pays for itself after
    the first batches; CPU runs are left alone (the flag is global and means nothing there).
    """
    if torch.device(device).type == "cuda":
        torch.backends.cudnn.benchmark = True


def compiled(model: torch.nn.Module, enabled: bool) -> torch.nn.Module:
    """`torch.compile(model)` when `enabled`, else `model` itself.

    The compiled wrapper shares the model's parameters, so checkpoints are still written from the
    plain model; results differ from eager by float rounding (fused kernels).
    """
    return torch.compile(model, backend=COMPILE_BACKEND) if enabled else model


def channels_last_weights(model: torch.nn.Module) -> torch.nn.Module:
    """`model` with 4-D weights in channels_last and 5-D ones in channels_last_3d, in place.

    `model.to(memory_format=torch.channels_last)` refuses every detector: the temporal branch's
    Conv3d weights are 5-D. Convolutions then run (and propagate) the channels-last layout.
    """
    formats = {4: torch.channels_last, 5: torch.channels_last_3d}
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            if tensor.dim() in formats:
                tensor.data = tensor.data.contiguous(memory_format=formats[tensor.dim()])
    return model
