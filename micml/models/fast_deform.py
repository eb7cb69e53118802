"""Inference-only modulated deformable convolution: mix the channels first, then sample.

A DCNv2 output pixel is  out[o] = bias[o] + sum_k mask_k * sum_c W[o, c, k] * x_c(p_k),
where x_c(p_k) is a bilinear sample (four corners) at the deformed position of kernel point k.
Bilinear sampling is linear, so it commutes with the channel mix W[:, :, k]:

    Y_k = W[:, :, k] @ x                     one GEMM over all pixels: C -> K*O channels
    out = bias + sum_k sum_corner mask_k * w_corner * Y_k[corner]

The second line is one fused pass per band of output rows (`micml.ops.kernels.sample_mixed`):
4*K weighted rows of O floats summed into one row. Compared with sampling x first
(micml.ops.gather: 4*K rows of C floats into K*C columns, then a GEMM) there is no column
buffer, and when O < C the rows are shorter. Each band mixes only the input rows its samples read
(a few more than its own with trained offsets) into a reused buffer, so Y stays in the CPU
caches; offsets of many pixels fall back to Y of the whole frame. Used by
`micml.models.fuse` for eval; there is no backward.

Zero border instead of inside tests: Y is computed on x padded with one zero row/column
before and two after, and positions are clamped to [-1, size]. A corner outside the image
then lands on the border and reads 0, which is DCNv2's "outside pixels count as 0" rule,
and the second corner of a clamped position has weight 0 and stays in bounds.
"""

from __future__ import annotations

import torch

from micml.ops import kernels
from micml.ops.gather import pixel_major, undeformed_positions, use_torch_threads
from micml.precision import float32_under_autocast

# Border added before (1) and after (2) each spatial axis of the mixed map Y.
PAD_BEFORE, PAD_AFTER = 1, 2
# Output pixels per band. A band's index/weight buffers and the rows of Y it reads then fit
# in the CPU caches (measured on 2 cores: 4-8k pixels are 2x faster than whole frames).
PIXELS_PER_BAND = 1 << 13
# A band whose samples span more input rows than this many times its own height (offsets of
# many pixels) reads Y of the whole frame, computed once, instead of mixing its own rows.
ROW_SPAN_LIMIT = 4


def zero_padded_channels_last(x: torch.Tensor) -> torch.Tensor:
    """x (B, C, H, W) -> (B, H + 3, W + 3, C) with the zero border of the module docstring."""
    batch, channels, height, width = x.shape
    padded = x.new_zeros(batch, height + PAD_BEFORE + PAD_AFTER, width + PAD_BEFORE + PAD_AFTER, channels)
    padded[:, PAD_BEFORE:PAD_BEFORE + height, PAD_BEFORE:PAD_BEFORE + width] = x.permute(0, 2, 3, 1)
    return padded


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
    if x.device.type != "cpu":
        raise ValueError(f"deform_conv2d_mix_first runs on the CPU only, not {x.device}")
    batch, channels = x.shape[:2]
    out_channels, _, kernel_h, kernel_w = weight.shape
    points = kernel_h * kernel_w
    out_h, out_w = offset.shape[-2:]
    padded = zero_padded_channels_last(x)
    padded_h, padded_w = padded.shape[1:3]
    mix = weight.permute(1, 2, 3, 0).reshape(channels, points * out_channels)
    # Per (image, output row, output column, kernel point): strided views, no copies.
    offsets, mask_logits = pixel_major(offset, mask_logits, groups=1)
    offsets, mask_logits = offsets[..., 0, :], mask_logits[..., 0]
    base_y, base_x = undeformed_positions((out_h, out_w), (kernel_h, kernel_w), stride, padding, dilation,
                                          offset.dtype, shift=PAD_BEFORE)
    bias = x.new_zeros(out_channels) if bias is None else bias.contiguous()
    use_torch_threads()
    sample_mixed = kernels.for_width(out_channels).sample_mixed

    rows_per_band = max(1, PIXELS_PER_BAND // max(1, batch * out_w))
    span_limit = ROW_SPAN_LIMIT * rows_per_band + 2 * kernel_h
    # Reused band after band: a fresh tensor per band would stream through memory (3x slower
    # for the mixed rows on 2 cores) where a reused one stays in the CPU caches.
    band_rows_buffer = x.new_empty(batch * min(span_limit, padded_h) * padded_w, points * out_channels)
    whole_frame_rows = None

    out = x.new_empty(batch, out_h, out_w, out_channels)
    for first in range(0, out_h, rows_per_band):
        band = slice(first, min(first + rows_per_band, out_h))
        rows = base_y[band].view(1, -1, 1, points) + offsets[:, band, :, :, 0]
        low, high = (int(v) for v in torch.aminmax(rows.clamp_(0, padded_h - PAD_AFTER).floor_()))
        top, bottom = low, high + 1  # the padded rows this band reads
        if bottom - top < span_limit:
            span = padded[:, top:bottom + 1].reshape(-1, channels)
            mixed = torch.mm(span, mix, out=band_rows_buffer[:span.shape[0]])
            mixed = mixed.view(batch, bottom - top + 1, padded_w, points, out_channels)
        else:  # large offsets: mix the whole frame once
            if whole_frame_rows is None:
                whole_frame_rows = (padded.view(-1, channels) @ mix).view(batch, padded_h, padded_w, points,
                                                                            out_channels)
            mixed, top = whole_frame_rows, 0
        target = out[:, band] if batch == 1 else x.new_empty(batch, band.stop - band.start, out_w, out_channels)
        sample_mixed(mixed.numpy(), offsets[:, band].numpy(), mask_logits[:, band].numpy(),
                             base_y[band].numpy(), base_x.numpy(), top, padded_h, bias.numpy(),
                             target.numpy())
        if batch > 1:  # the kernel writes contiguous rows; a band of several images is not
            out[:, band] = target
    return out.permute(0, 3, 1, 2)
