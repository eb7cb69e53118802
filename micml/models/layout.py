"""Memory layout of activations on CPU: channels-last, and 3-D convolutions as 2-D ones.

On CPU the detectors run their activations in channels_last (4-D) / channels_last_3d (5-D)
memory: oneDNN's convolutions are faster on it, and the gather DCN (micml.ops) reads and
writes pixel rows without transposing copies. A 3-D convolution whose kernel spans one frame,
(1, kh, kw), runs as a 2-D convolution over the frames stacked on the batch axis (a free view
in channels_last_3d memory); oneDNN's 2-D kernels are much faster than its 3-D ones, and
PyTorch falls back to an unoptimised 3-D kernel for contiguous (B, C, T, H, W) inputs.
Values are the same up to float rounding. Measured on 2 cores: a MICML training step at
256 x 256 ~15 % faster, the 3-D branch's forward + backward at 512 x 512 ~30 % faster.

`use_channels_last_on_cpu(False)` restores the reference's layout (the benchmarks' baseline).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

_channels_last_on_cpu = True


def use_channels_last_on_cpu(enabled: bool) -> None:
    """Run CPU activations channels-last (True, the default) or as the reference does."""
    global _channels_last_on_cpu
    _channels_last_on_cpu = bool(enabled)


def wants_channels_last(x: torch.Tensor) -> bool:
    return _channels_last_on_cpu and x.device.type == "cpu"


def to_channels_last(x: torch.Tensor) -> torch.Tensor:
    """x in channels_last (4-D) or channels_last_3d (5-D) memory where that is wanted."""
    if not wants_channels_last(x):
        return x
    return x.contiguous(memory_format=torch.channels_last if x.dim() == 4 else torch.channels_last_3d)


def conv3d(conv: nn.Conv3d, x: torch.Tensor, channels_last: bool | None = None) -> torch.Tensor:
    """conv(x), channels-last (default: where wanted), single-frame kernels as 2-D convs."""
    if not (wants_channels_last(x) if channels_last is None else channels_last):
        return conv(x)
    x = x.contiguous(memory_format=torch.channels_last_3d)
    if conv.kernel_size[0] != 1 or conv.stride[0] != 1 or conv.padding[0] != 0 or conv.padding_mode != "zeros":
        return conv(x).contiguous(memory_format=torch.channels_last_3d)
    batch, channels, frames, height, width = x.shape
    frames_as_batch = x.transpose(1, 2).reshape(batch * frames, channels, height, width)
    out = F.conv2d(frames_as_batch, conv.weight[:, :, 0], conv.bias, conv.stride[1:], conv.padding[1:],
                   conv.dilation[1:], conv.groups)
    out = out.contiguous(memory_format=torch.channels_last)
    return out.view(batch, frames, *out.shape[1:]).transpose(1, 2)
