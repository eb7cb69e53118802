"""Inference-only modulated deformable convolution: mix the channels first, then sample.

A DCNv2 output pixel is  out[o] = bias[o] + sum_k mask_k * sum_c W[o, c, k] * x_c(p_k),
where x_c(p_k) is a bilinear sample (four corners) at the deformed position of kernel point k.
Bilinear sampling is linear, so it commutes with the channel mix W[:, :, k]:

    Y_k = W[:, :, k] @ x                     one GEMM over all pixels: C -> K*O channels
    out = bias + sum_k sum_corner mask_k * w_corner * Y_k[corner]

The second line is one `embedding_bag` per band of output rows: 4*K weighted rows of O
floats summed into one row. Compared with sampling x first (micml.ops.gather: 4*K rows of C
floats into K*C columns, then a GEMM) there is no column buffer, the bags are K times fewer
and, when O < C, the rows are shorter. Each band mixes only the input rows its samples read
(a few more than its own with trained offsets), one oneDNN product per band: Y of a band is
small and its freed block comes back from the heap for the next band, so Y stays in the CPU
caches; offsets of many pixels fall back to Y of the whole frame. Used by
`micml.models.fuse` for eval; there is no backward.

Zero border instead of inside tests: Y is computed on x padded with one zero row/column
before and two after, and positions are clamped to [-1, size]. A corner outside the image
then lands on the border and reads 0, which is DCNv2's "outside pixels count as 0" rule,
and the second corner of a clamped position has weight 0 and stays in bounds.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from micml.ops.matmul import linear
from micml.precision import float32_under_autocast

# Border added before (1) and after (2) each spatial axis of the mixed map Y.
PAD_BEFORE, PAD_AFTER = 1, 2
# Output pixels per band. A band's index/weight buffers and the rows of Y it reads then fit
# in the CPU caches (measured on 2 cores: 4-8k pixels are 2x faster than whole frames).
PIXELS_PER_BAND = 1 << 13
# A band whose samples span more input rows than this many times its own height (offsets of
# many pixels) reads Y of the whole frame, computed once, instead of mixing its own rows.
ROW_SPAN_LIMIT = 4
_INT32_LIMIT = 2**31 - 1


def zero_padded_channels_last(x: torch.Tensor) -> torch.Tensor:
    """x (B, C, H, W) -> (B, H + 3, W + 3, C) with the zero border of the module docstring."""
    batch, channels, height, width = x.shape
    padded = x.new_zeros(batch, height + PAD_BEFORE + PAD_AFTER, width + PAD_BEFORE + PAD_AFTER, channels)
    padded[:, PAD_BEFORE:PAD_BEFORE + height, PAD_BEFORE:PAD_BEFORE + width] = x.permute(0, 2, 3, 1)
    return padded


def _floor_and_fraction(padded_position: torch.Tensor, padded_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Padded coordinate of the lower neighbour (as float) and the weight of the upper one.

    Positions are clamped to [-1, size] of the image, [0, size + 1] padded; being >= 0 there,
    their fractional part is position - floor(position).
    """
    position = padded_position.clamp_(0, padded_size - PAD_AFTER)
    weight_upper = position.frac()
    return position.sub_(weight_upper), weight_upper


def _corner_weights(mask: torch.Tensor, weight_y: torch.Tensor, weight_x: torch.Tensor,
                    out: torch.Tensor) -> torch.Tensor:
    """mask * bilinear weight of corners (y0, x0), (y0, x1), (y1, x0), (y1, x1) into out[..., 4, K]."""
    upper_row = mask * weight_y
    lower_row = mask - upper_row  # mask * (1 - weight_y)
    for row_weight, left, right in ((lower_row, 0, 1), (upper_row, 2, 3)):
        torch.mul(row_weight, weight_x, out=out[..., right, :])
        torch.sub(row_weight, out[..., right, :], out=out[..., left, :])
    return out


@float32_under_autocast
def deform_conv2d_mix_first(x: torch.Tensor, offset: torch.Tensor, mask_logits: torch.Tensor,
                            weight: torch.Tensor, bias: torch.Tensor | None,
                            stride: tuple[int, int] = (1, 1), padding: tuple[int, int] = (1, 1),
                            dilation: tuple[int, int] = (1, 1)) -> torch.Tensor:
    """DCNv2 with torchvision's deform_conv2d contract for one deformable group, forward only,
    except that it takes the mask before its sigmoid: mask = sigmoid(mask_logits).

    x (B, C, H, W); offset (B, 2K, Ho, Wo) interleaved (dy, dx); mask_logits (B, K, Ho, Wo);
    weight (O, C, kh, kw). Returns (B, O, Ho, Wo) with channels-last strides.
    """
    batch, channels, height, width = x.shape
    out_channels, _, kernel_h, kernel_w = weight.shape
    points = kernel_h * kernel_w
    out_h, out_w = offset.shape[-2:]
    padded = zero_padded_channels_last(x)
    padded_h, padded_w = padded.shape[1:3]
    mix = weight.permute(2, 3, 0, 1).reshape(points * out_channels, channels)  # rows (k, o) of C weights
    index_dtype = torch.int32 if padded.numel() // channels * points <= _INT32_LIMIT else torch.int64

    # Everything per (image, output row, output column, kernel point): channels-last order.
    offsets = offset.permute(0, 2, 3, 1).view(batch, out_h, out_w, points, 2)
    mask_logits = mask_logits.permute(0, 2, 3, 1)
    arange = functools.partial(torch.arange, device=x.device, dtype=x.dtype)
    kernel_y = (arange(kernel_h) * dilation[0]).repeat_interleave(kernel_w)
    kernel_x = (arange(kernel_w) * dilation[1]).repeat(kernel_h)
    # Grid positions in padded coordinates: (Wo, K) for x, one (rows, 1, K) per band for y.
    grid_x = (arange(out_w) * stride[1] - padding[1] + PAD_BEFORE).view(-1, 1) + kernel_x
    image_stride = torch.arange(batch, device=x.device, dtype=index_dtype).view(-1, 1, 1, 1) * padded_w * points
    point = torch.arange(points, device=x.device, dtype=index_dtype)

    rows_per_band = max(1, PIXELS_PER_BAND // max(1, batch * out_w))
    span_limit = ROW_SPAN_LIMIT * rows_per_band + 2 * kernel_h
    # Index and weight buffers written band after band: reusing them keeps them in the CPU
    # caches. A bag is laid out (corner, kernel point): writing one corner is then a run of K values.
    samples_per_band = batch * rows_per_band * out_w * 4 * points
    index_buffer = torch.empty(samples_per_band, device=x.device, dtype=index_dtype)
    weight_buffer = x.new_empty(samples_per_band)
    corner_step = torch.tensor([0, 1, padded_w, padded_w + 1], device=x.device, dtype=index_dtype).view(4, 1)
    corner_step = corner_step * points
    whole_frame_rows = None

    out = x.new_empty(batch, out_h, out_w, out_channels)
    for first in range(0, out_h, rows_per_band):
        band = slice(first, min(first + rows_per_band, out_h))
        band_shape = (batch, band.stop - band.start, out_w, 4, points)
        grid_y = (arange(first, band.stop) * stride[0] - padding[0] + PAD_BEFORE).view(-1, 1, 1) + kernel_y
        row, weight_y = _floor_and_fraction(grid_y + offsets[:, band, :, :, 0], padded_h)
        col, weight_x = _floor_and_fraction(grid_x + offsets[:, band, :, :, 1], padded_w)

        top, bottom = (int(v) for v in torch.aminmax(row))
        bottom += 1  # the padded rows this band reads: [top, bottom]
        # Y as rows ((image * rows_per_image + padded row - top) * Wp + padded col) * K + k.
        if bottom - top < span_limit:
            span = padded[:, top:bottom + 1].reshape(-1, channels)
            rows = linear(span, mix).view(-1, out_channels)
            rows_per_image = bottom - top + 1
        else:  # large offsets: mix the whole frame once
            if whole_frame_rows is None:
                whole_frame_rows = linear(padded.view(-1, channels), mix).view(-1, out_channels)
            rows, rows_per_image, top = whole_frame_rows, padded_h, 0
        top_left = row.to(index_dtype).mul_(padded_w * points)
        top_left.add_(col.to(index_dtype), alpha=points)
        top_left += image_stride * rows_per_image + (point - top * padded_w * points)
        index = index_buffer[:math.prod(band_shape)].view(band_shape)
        torch.add(top_left.unsqueeze(-2), corner_step, out=index)
        mask = mask_logits[:, band].sigmoid()  # here, where the band is in the caches
        corner_weight = _corner_weights(mask, weight_y, weight_x, weight_buffer[:index.numel()].view(band_shape))
        sampled = F.embedding_bag(index.view(-1, 4 * points), rows,
                                  per_sample_weights=corner_weight.view(-1, 4 * points), mode="sum")
        if bias is not None:
            sampled += bias
        out[:, band] = sampled.view(batch, band.stop - band.start, out_w, out_channels)
    return out.permute(0, 3, 1, 2)
