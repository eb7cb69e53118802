"""Slow reference DCNv2, used only to check the fast backends (not for models).

Written for clarity, not speed: one kernel point and deformable group at a
time, four explicit bilinear neighbours, plain advanced indexing. It is built
from differentiable torch ops, so autograd gives reference gradients too.
"""

from __future__ import annotations

import torch
from torch.nn.modules.utils import _pair


def reference_modulated_deform_conv2d(x, offset, mask, weight, bias, stride=1, padding=1, dilation=1):
    """Same contract as ``micml.ops.modulated_deform_conv2d``; use float64 for checks."""
    (stride_h, stride_w), (pad_h, pad_w), (dil_h, dil_w) = _pair(stride), _pair(padding), _pair(dilation)
    batch, channels, _, _ = x.shape
    out_channels, _, kernel_h, kernel_w = weight.shape
    kernel_points = kernel_h * kernel_w
    groups = offset.shape[1] // (2 * kernel_points)
    group_channels = channels // groups
    out_h, out_w = offset.shape[-2:]

    grid_y = (torch.arange(out_h, dtype=x.dtype, device=x.device) * stride_h - pad_h).view(1, out_h, 1)
    grid_x = (torch.arange(out_w, dtype=x.dtype, device=x.device) * stride_w - pad_w).view(1, 1, out_w)
    out = x.new_zeros(batch, out_channels, out_h, out_w)
    for group in range(groups):
        channel_slice = slice(group * group_channels, (group + 1) * group_channels)
        for i in range(kernel_h):
            for j in range(kernel_w):
                k = i * kernel_w + j
                dy = offset[:, group * 2 * kernel_points + 2 * k]
                dx = offset[:, group * 2 * kernel_points + 2 * k + 1]
                sampled = bilinear_sample_zero_outside(
                    x[:, channel_slice], grid_y + i * dil_h + dy, grid_x + j * dil_w + dx
                )
                if mask is not None:
                    sampled = sampled * mask[:, group * kernel_points + k].unsqueeze(1)
                out = out + torch.einsum("oc,bchw->bohw", weight[:, channel_slice, i, j], sampled)
    if bias is not None:
        out = out + bias.view(1, -1, 1, 1)
    return out


def bilinear_sample_zero_outside(image, y, x):
    """image (B, C, H, W) sampled at float positions y, x (B, Ho, Wo) -> (B, C, Ho, Wo)."""
    batch, _, height, width = image.shape
    top = torch.floor(y.detach())
    left = torch.floor(x.detach())
    batch_index = torch.arange(batch, device=image.device).view(batch, 1, 1)
    result = 0
    for row, row_weight in ((top, 1 - (y - top)), (top + 1, y - top)):
        for col, col_weight in ((left, 1 - (x - left)), (left + 1, x - left)):
            inside = (row >= 0) & (row <= height - 1) & (col >= 0) & (col <= width - 1)
            rows = row.clamp(0, height - 1).long()
            cols = col.clamp(0, width - 1).long()
            values = image[batch_index, :, rows, cols]  # (B, Ho, Wo, C)
            weight = row_weight * col_weight * inside
            result = result + values.permute(0, 3, 1, 2) * weight.unsqueeze(1)
    return result
