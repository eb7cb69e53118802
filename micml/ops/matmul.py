"""Dense float32 products for micml's GEMMs (the deformable convs' columns, the motion
module's linear layers and 1x1 conv), through oneDNN where torch has it.

``torch.mm`` on the CPU calls MKL's sgemm, which takes its AVX-512 kernels on Intel CPUs only.
On a 2-core AMD EPYC with AVX-512 it ran a 2048^2 product at ~212 GFLOP/s and the deformable
convs' column products (32768 x 576 x 64) at ~145-165, while oneDNN, the library torch's own
convolutions run on, did the same products at ~360-480 GFLOP/s. oneDNN's matmul is reachable
in torch only through the (internal, but stable since torch 2.0) op behind inductor's packed
linear layers, ``mkldnn._linear_pointwise``, which has no autograd formula: :func:`linear`
adds one. float64, other devices, CPU autocast and builds without oneDNN take
``torch.nn.functional.linear``.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn


@functools.lru_cache(maxsize=1)
def onednn_available() -> bool:
    """Whether this torch build has oneDNN and its linear op (x86 and aarch64 wheels do)."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``torch.nn.functional.linear`` of 2-D tensors, differentiable: x (M, K) @ weight (N, K).T + bias.

    Any strides: a transposed view goes to oneDNN as it is (no copy), so a weight gradient
    ``grad_out.T @ columns`` is ``linear(grad_out.t(), columns.t())``. Off oneDNN's path
    (float64, GPU, autocast) it is ``F.linear`` itself, with torch's autograd and autocast rules.
    """
    if not _on_onednn(x, weight):
        return F.linear(x, weight, bias)
    tensors = (x, weight) if bias is None else (x, weight, bias)
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return _Linear.apply(x, weight, bias)
    return _onednn_product(x, weight, bias)


def _on_onednn(x: torch.Tensor, weight: torch.Tensor) -> bool:
    return (x.dtype == weight.dtype == torch.float32 and x.device.type == weight.device.type == "cpu"
            and onednn_available() and not torch.is_autocast_enabled("cpu"))


def _onednn_product(x, weight, bias):
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


class _Linear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return _onednn_product(x, weight, bias)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        need_x, need_weight, need_bias = ctx.needs_input_grad
        grad_x = _onednn_product(grad_out, weight.t(), None) if need_x else None
        grad_weight = _onednn_product(grad_out.t(), x.t(), None) if need_weight else None
        grad_bias = grad_out.sum(0) if need_bias and ctx.has_bias else None
        return grad_x, grad_weight, grad_bias


class Linear(nn.Linear):
    """``nn.Linear`` (same parameters, state-dict keys and initialisation) whose products
    go through :func:`linear`. Takes (..., in_features) like ``nn.Linear``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = linear(x.reshape(-1, x.shape[-1]), self.weight, self.bias)
        return rows.view(*x.shape[:-1], rows.shape[-1])


class PointwiseConv2d(nn.Conv2d):
    """A 1x1, stride-1 ``nn.Conv2d`` (same parameters, keys and initialisation) computed as
    :func:`linear` over the pixels when its input is channels-last CPU float32 (the pixels are
    then a free (pixels, channels) view). oneDNN's own 1x1 conv backward forms the weight
    gradient slowly on channels-last memory: the motion module's 640 -> 64 conv at 4 x 64 x 64
    took 20 ms forward + backward as a conv, 14 ms as a product (2 cores, AMD EPYC)."""

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True):
        super().__init__(in_channels, out_channels, kernel_size=1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (_on_onednn(x, self.weight) and x.is_contiguous(memory_format=torch.channels_last)):
            return super().forward(x)
        batch, channels, height, width = x.shape
        pixels = x.permute(0, 2, 3, 1).reshape(-1, channels)
        out = linear(pixels, self.weight.view(self.out_channels, channels), self.bias)
        return out.view(batch, height, width, -1).permute(0, 3, 1, 2)
