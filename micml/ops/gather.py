"""Fast modulated deformable convolution on the CPU: fused sampling and one GEMM.

For a slice of output pixels:

* forward: ``columns`` (pixels, K*G*Cg) = the bilinear samples of a channels-last view of
  the input (one fused pass, :func:`micml.ops.kernels.sample_columns`), output = columns @
  weight rows.T (one GEMM);
* backward: the weight gradient from the columns (recomputed, one GEMM), the columns'
  gradient (one GEMM), then one fused pass (:func:`micml.ops.kernels.sample_gradients`)
  scattering it into the input gradient and turning its dot products with the four corners
  into offset and mask gradients.

The kernels read offsets and masks in place, whatever their strides (a channel slice of the
offset/mask conv's output needs no copy), and write their gradients pixel-major. Nothing per
sample is kept for backward (it is recomputed, as torchvision's kernel does), so memory stays
bounded by ``COLUMN_CHUNK_BYTES`` whatever the frame size. The GEMMs go through
:func:`micml.ops.matmul.linear` (oneDNN in float32).
"""

from __future__ import annotations

import numba
import torch

from micml.ops import kernels
from micml.ops.matmul import linear

# Upper bound on the column buffer of one slice; larger outputs are processed
# in slices of output pixels so big frames do not need gigabytes of columns.
COLUMN_CHUNK_BYTES = 64 * 2**20
# Upper bound on the per-thread copies of the input gradient (one per thread, so threads
# never write the same place); above it the backward's scatter uses fewer threads.
THREAD_GRADIENT_BYTES = 256 * 2**20


def deform_conv2d_gather(x, offset, mask, weight, bias, stride, padding, dilation):
    """torchvision's ``deform_conv2d`` contract (no grouped conv); geometry as pairs."""
    if x.device.type != "cpu":
        raise ValueError(f"the gather DCN backend runs on the CPU only, not {x.device}; "
                         "use backend='torchvision' (the default off the CPU)")
    batch, channels, _, _ = x.shape
    out_channels, _, kernel_h, kernel_w = weight.shape
    points = kernel_h * kernel_w
    groups = offset.shape[1] // (2 * points)
    if mask is None:  # DCNv1: every sample weighs 1 (a broadcast view; no gradient)
        mask = offset.new_ones(()).expand(batch, groups * points, *offset.shape[-2:])
    # Column order inside one output pixel is (kernel point, channel): each output channel's
    # weight row is laid out the same way, O x (kh, kw, C).
    weight_rows = weight.permute(0, 2, 3, 1).reshape(out_channels, points * channels)
    base_y, base_x = _undeformed_positions(offset.shape[-2:], (kernel_h, kernel_w), stride, padding,
                                          dilation, offset.dtype)
    out = _DeformConvFunction.apply(x, offset, mask, weight_rows, bias, base_y, base_x)
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return out  # channels_last strides, as the caller's input
    return out.contiguous()


def _undeformed_positions(out_size, kernel_size, stride, padding, dilation, dtype):
    """Positions sampled at offset 0: rows (Ho, K) and columns (Wo, K), in the offsets' dtype."""
    (out_h, out_w), (kernel_h, kernel_w) = out_size, kernel_size
    kernel_y = (torch.arange(kernel_h) * dilation[0]).repeat_interleave(kernel_w)
    kernel_x = (torch.arange(kernel_w) * dilation[1]).repeat(kernel_h)
    base_y = (torch.arange(out_h) * stride[0] - padding[0]).view(-1, 1) + kernel_y
    base_x = (torch.arange(out_w) * stride[1] - padding[1]).view(-1, 1) + kernel_x
    return base_y.to(dtype), base_x.to(dtype)


def _use_torch_threads():
    """Give numba's kernels as many threads as torch uses (never more than numba started)."""
    numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))


def _pixel_major(offset, mask, groups):
    """Strided views (B, Ho, Wo, K, G, 2) of offset and (B, Ho, Wo, K, G) of mask; no copy."""
    points = mask.shape[1] // groups
    offset = offset.unflatten(1, (groups, points, 2)).permute(0, 4, 5, 2, 1, 3)
    mask = mask.unflatten(1, (groups, points)).permute(0, 3, 4, 2, 1)
    return offset, mask


class _DeformConvFunction(torch.autograd.Function):
    """out (B, O, Ho, Wo), channels-last = sampled columns @ weight_rows.T + bias, slice by slice."""

    @staticmethod
    def forward(ctx, x, offset, mask, weight_rows, bias, base_y, base_x):
        _use_torch_threads()
        sampler = _Sampler(x, offset, mask, base_y, base_x)
        slices = list(_pixel_slices(sampler.pixels, weight_rows.shape[1], x.element_size()))
        products = [linear(sampler.columns(first, last), weight_rows, bias) for first, last in slices]
        out = products[0] if len(products) == 1 else torch.cat(products)
        ctx.has_bias = bias is not None
        ctx.save_for_backward(x, offset, mask, weight_rows, base_y, base_x)
        batch, _, out_h, out_w = offset.shape
        return out.view(batch, out_h, out_w, -1).permute(0, 3, 1, 2)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        x, offset, mask, weight_rows, base_y, base_x = ctx.saved_tensors
        need_x, need_offset, need_mask, need_weight, need_bias = ctx.needs_input_grad[:5]
        _use_torch_threads()
        sampler = _Sampler(x, offset, mask, base_y, base_x)
        grad_out = grad_out.permute(0, 2, 3, 1).reshape(sampler.pixels, -1)  # pixel rows (free if channels_last)
        grad_weight = torch.zeros_like(weight_rows) if need_weight else None
        grad_bias = grad_out.sum(0) if need_bias and ctx.has_bias else None
        grads = _SamplingGradients(sampler, need_x, need_offset or need_mask)
        weight_columns = weight_rows.t().contiguous()  # grad columns = grad_out @ weight_rows
        for first, last in _pixel_slices(sampler.pixels, weight_rows.shape[1], x.element_size()):
            grad_slice = grad_out[first:last]
            if need_weight:
                grad_weight += linear(grad_slice.t(), sampler.columns(first, last).t())
            if need_x or need_offset or need_mask:
                grads.add(first, linear(grad_slice, weight_columns))
        grad_x, grad_offset, grad_mask = grads.result()
        return (grad_x, grad_offset if need_offset else None, grad_mask if need_mask else None,
                grad_weight, grad_bias, None, None)


def _pixel_slices(pixels, columns_per_pixel, element_size):
    step = max(1, COLUMN_CHUNK_BYTES // (columns_per_pixel * element_size))
    for first in range(0, pixels, step):
        yield first, min(first + step, pixels)


class _Sampler:
    """One DCN call's tensors as the numpy views :mod:`micml.ops.kernels` takes."""

    def __init__(self, x, offset, mask, base_y, base_x):
        batch, channels, height, width = x.shape
        self.groups = offset.shape[1] // (2 * base_y.shape[1])
        self.points = base_y.shape[1]
        self.dtype = x.dtype
        self.pixels = batch * offset.shape[2] * offset.shape[3]
        # Rows (b, y, x, g) of Cg channels: a free view of a channels_last x, one copy otherwise.
        rows = x.detach().permute(0, 2, 3, 1).contiguous()
        self.rows = rows.view(batch, height, width, self.groups, channels // self.groups).numpy()
        offset, mask = _pixel_major(offset.detach(), mask.detach(), self.groups)
        self.offset, self.mask = offset.numpy(), mask.numpy()
        self.base_y, self.base_x = base_y.numpy(), base_x.numpy()
        self.kernels = kernels.for_width(self.rows.shape[-1])

    def columns(self, first, last):
        """Sampled columns (last - first, K*G*Cg) of output pixels [first, last)."""
        columns = torch.empty(last - first, self.points * self.groups * self.rows.shape[-1], dtype=self.dtype)
        view = columns.numpy().reshape(last - first, self.points, self.groups, -1)
        self.kernels.sample_columns(self.rows, self.offset, self.mask, self.base_y, self.base_x, first, view)
        return columns


class _SamplingGradients:
    """Input, offset and mask gradients of a :class:`_Sampler`'s samples, slice by slice."""

    def __init__(self, sampler, want_x, want_corners):
        self.sampler, self.want_x, self.want_corners = sampler, want_x, want_corners
        rows = sampler.rows
        # One copy of the input gradient per thread of the scatter (see kernels.sample_gradients).
        copies = THREAD_GRADIENT_BYTES // max(1, rows.size * rows.itemsize)
        parts = max(1, min(numba.get_num_threads(), copies)) if want_x else 1
        self.grad_rows = torch.zeros((parts,) + rows.shape, dtype=sampler.dtype)
        self.grad_offset = torch.empty(sampler.offset.shape, dtype=sampler.dtype)
        self.grad_mask = torch.empty(sampler.mask.shape, dtype=sampler.dtype)

    def add(self, first, grad_columns):
        s = self.sampler
        pixels = grad_columns.shape[0]
        flat_offset = self.grad_offset.view(-1, s.points, s.groups, 2)[first:first + pixels]
        flat_mask = self.grad_mask.view(-1, s.points, s.groups)[first:first + pixels]
        s.kernels.sample_gradients(
            s.rows, s.offset, s.mask, s.base_y, s.base_x, first,
            grad_columns.numpy().reshape(pixels, s.points, s.groups, -1),
            self.grad_rows.numpy(), flat_offset.numpy(), flat_mask.numpy(), self.want_x, self.want_corners,
        )

    def result(self):
        """(grad x (B, C, H, W) channels-last or None, grad offset, grad mask) in the inputs' shapes."""
        s = self.sampler
        grad_x = None
        if self.want_x:
            batch, height, width = s.rows.shape[:3]
            summed = self.grad_rows[0] if len(self.grad_rows) == 1 else self.grad_rows.sum(0)
            grad_x = summed.view(batch, height, width, -1).permute(0, 3, 1, 2)
        # Pixel-major (B, Ho, Wo, K, G, ...) back to the (B, G*K*2, Ho, Wo) channel order.
        grad_offset = self.grad_offset.permute(0, 4, 3, 5, 1, 2).flatten(1, 3)
        grad_mask = self.grad_mask.permute(0, 4, 3, 1, 2).flatten(1, 2)
        return grad_x, grad_offset, grad_mask
