"""Modulated deformable convolution (DCNv2): functional API, backend choice, layer.

Layout and semantics are torchvision's ``deform_conv2d``: ``offset`` holds
interleaved (dy, dx) pairs, channel ``g*2K + 2k`` is the row offset of kernel
point ``k = i*kw + j`` in deformable group ``g``; ``mask`` channel ``g*K + k``.
Bilinear sampling, neighbours outside the image count as 0.

Backends: ``"gather"`` (micml.ops.gather: fused numba sampling + torch GEMMs, CPU only) and ``"torchvision"``
(its compiled kernel; the one to use on CUDA). Which one runs is decided, first
match wins, by the ``backend=`` argument, :func:`set_backend`, the environment
variable ``MICML_DCN_BACKEND``, then the device (CPU: gather, else torchvision).
"""

from __future__ import annotations

import math
import os

import torch
from torch import nn
from torch.nn.modules.utils import _pair

from micml.ops.gather import deform_conv2d_gather
from micml.precision import float32_under_autocast

BACKENDS = ("gather", "torchvision")
BACKEND_ENV_VAR = "MICML_DCN_BACKEND"

_chosen_backend: str | None = None


def set_backend(name: str | None) -> None:
    """Force a backend for every later call in this process; ``None`` restores the default."""
    global _chosen_backend
    _chosen_backend = None if name is None else _validated(name, "set_backend()")


def resolve_backend(device: torch.device, backend: str | None = None) -> str:
    """The backend a call on ``device`` uses (argument > set_backend > env var > device)."""
    if backend is not None:
        return _validated(backend, "the backend argument")
    if _chosen_backend is not None:
        return _chosen_backend
    from_env = os.environ.get(BACKEND_ENV_VAR, "").strip().lower()
    if from_env not in ("", "auto"):
        return _validated(from_env, f"environment variable {BACKEND_ENV_VAR}")
    return "gather" if torch.device(device).type == "cpu" else "torchvision"


def _validated(name: str, source: str) -> str:
    if name not in BACKENDS:
        raise ValueError(
            f"Unknown deformable-convolution backend {name!r} from {source}; "
            f"use one of {', '.join(BACKENDS)} (or 'auto' in {BACKEND_ENV_VAR})."
        )
    return name


@float32_under_autocast
def modulated_deform_conv2d(
    x, offset, mask, weight, bias, stride=1, padding=1, dilation=1, backend=None
):
    """DCNv2: ``torchvision.ops.deform_conv2d(x, offset, weight, bias, stride, padding, dilation, mask)``.

    x (B, C, H, W); offset (B, 2*G*kh*kw, Ho, Wo); mask (B, G*kh*kw, Ho, Wo) or
    None (plain DCNv1); weight (O, C, kh, kw); bias (O,) or None.
    """
    stride, padding, dilation = _pair(stride), _pair(padding), _pair(dilation)
    _check_shapes(x, offset, mask, weight, bias, stride, padding, dilation)
    if resolve_backend(x.device, backend) == "torchvision":
        from torchvision.ops import deform_conv2d

        return deform_conv2d(x, offset, weight, bias, stride, padding, dilation, mask)
    return deform_conv2d_gather(x, offset, mask, weight, bias, stride, padding, dilation)


def output_size(image_size, kernel_size, stride, padding, dilation):
    """(Ho, Wo) of a convolution with the given geometry (pairs)."""
    return tuple(
        (size + 2 * pad - dil * (kernel - 1) - 1) // step + 1
        for size, kernel, step, pad, dil in zip(image_size, kernel_size, stride, padding, dilation)
    )


def _check_shapes(x, offset, mask, weight, bias, stride, padding, dilation):
    if x.dim() != 4 or weight.dim() != 4:
        raise ValueError(f"expected 4-D input and weight, got {tuple(x.shape)} and {tuple(weight.shape)}")
    batch, channels = x.shape[:2]
    out_channels, weight_channels, kernel_h, kernel_w = weight.shape
    if weight_channels != channels:
        raise ValueError(
            f"weight {tuple(weight.shape)} expects {weight_channels} input channels but x has {channels} "
            "(grouped convolution is not supported)"
        )
    kernel_points = kernel_h * kernel_w
    if offset.shape[1] % (2 * kernel_points) != 0:
        raise ValueError(
            f"offset has {offset.shape[1]} channels, not a multiple of 2*kh*kw = {2 * kernel_points}"
        )
    groups = offset.shape[1] // (2 * kernel_points)
    if groups == 0 or channels % groups != 0:
        raise ValueError(f"{channels} input channels cannot be split into {groups} deformable groups")
    expected = (batch, 2 * groups * kernel_points) + output_size(
        x.shape[-2:], (kernel_h, kernel_w), stride, padding, dilation
    )
    if tuple(offset.shape) != expected:
        raise ValueError(f"offset shape {tuple(offset.shape)} does not match the expected {expected}")
    if mask is not None and tuple(mask.shape) != (batch, groups * kernel_points) + expected[2:]:
        raise ValueError(
            f"mask shape {tuple(mask.shape)} does not match the expected "
            f"{(batch, groups * kernel_points) + expected[2:]}"
        )
    if bias is not None and tuple(bias.shape) != (out_channels,):
        raise ValueError(f"bias shape {tuple(bias.shape)} does not match ({out_channels},)")


class ModulatedDeformConv2d(nn.Module):
    """DCNv2 layer predicting its own offsets and mask; state_dict matches the reference DCN.

    Keys: ``weight``, ``bias``, ``conv_offset_mask.weight``, ``conv_offset_mask.bias``.
    The offset/mask convolution starts at zero, so a fresh layer computes
    ``0.5 * conv2d(x, weight) + bias`` (zero offsets, mask sigmoid(0)).
    """

    def __init__(
        self, in_channels, out_channels, kernel_size=3, stride=1, padding=1, dilation=1, deformable_groups=1
    ):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _pair(kernel_size)
        self.stride = _pair(stride)
        self.padding = _pair(padding)
        self.dilation = _pair(dilation)
        self.deformable_groups = deformable_groups
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, *self.kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels))
        kernel_points = self.kernel_size[0] * self.kernel_size[1]
        # The reference omits dilation here; passing it keeps the offset map the
        # size of the output for dilation > 1 and changes nothing at dilation 1.
        self.conv_offset_mask = nn.Conv2d(
            in_channels,
            3 * deformable_groups * kernel_points,
            self.kernel_size,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            bias=True,
        )
        self.reset_parameters()

    def reset_parameters(self):
        bound = 1.0 / math.sqrt(self.in_channels * self.kernel_size[0] * self.kernel_size[1])
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.zeros_(self.bias)
        nn.init.zeros_(self.conv_offset_mask.weight)
        nn.init.zeros_(self.conv_offset_mask.bias)

    def forward(self, x):
        offset_and_mask = self.conv_offset_mask(x)
        offset_channels = 2 * self.deformable_groups * self.kernel_size[0] * self.kernel_size[1]
        offset = offset_and_mask[:, :offset_channels]
        mask = offset_and_mask[:, offset_channels:].sigmoid()
        return modulated_deform_conv2d(
            x, offset, mask, self.weight, self.bias, self.stride, self.padding, self.dilation
        )

    def extra_repr(self):
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, dilation={self.dilation}, deformable_groups={self.deformable_groups}"
        )
