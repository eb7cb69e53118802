"""Dense float32 products for the deformable convs' GEMMs, through oneDNN where torch has it.

``torch.mm`` on the CPU calls MKL's sgemm, which takes its AVX-512 kernels on Intel CPUs only.
On a 2-core AMD EPYC with AVX-512 it ran a 2048^2 product at ~212 GFLOP/s and the deformable
convs' column products (32768 x 576 x 64) at ~145-165, while oneDNN, the library torch's own
convolutions run on, did the same products at ~360-450 GFLOP/s. oneDNN's matmul is reachable
in torch only through the (internal, but stable since torch 2.0) op behind inductor's packed
linear layers, ``mkldnn._linear_pointwise``; float64, non-CPU tensors and builds without
oneDNN take ``torch.addmm`` / ``torch.mm``.
"""

from __future__ import annotations

import functools

import torch


@functools.lru_cache(maxsize=1)
def onednn_available() -> bool:
    """Whether this torch build has oneDNN and its linear op (x86 and aarch64 wheels do)."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``torch.nn.functional.linear`` of 2-D tensors: x (M, K) @ weight (N, K).T + bias (N,).

    Any strides: a transposed view goes to oneDNN as it is (no copy), so a weight gradient
    ``grad_out.T @ columns`` is ``linear(grad_out.t(), columns.t())``.
    """
    if x.dtype == torch.float32 and x.device.type == "cpu" and onednn_available():
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")
    if bias is None:
        return torch.mm(x, weight.t())
    return torch.addmm(bias, x, weight.t())
