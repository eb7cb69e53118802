"""Fused CPU kernels of the bilinear sampling inside a modulated deformable convolution.

Hand-written (numba) because no maintained library fuses it on the CPU: torchvision's
``deform_conv2d`` CPU kernel is single-threaded, and the same sampling built from torch ops
(four index and weight tensors, ``embedding_bag`` gathers, a sorted CSR scatter) spends
two thirds of a DCN's time on ~20 passes over memory. Each kernel here makes one pass,
computing a sample's four corners and weights where it uses them. The GEMMs stay in torch.

Conventions shared by the kernels (torchvision's DCNv2 semantics):

* a sample's position is ``base[pixel, k] + offset``, added in the offset's dtype as torch
  does (so floor() picks the same corners as torchvision in float32);
* corners (y0, x0), (y0, x1), (y1, x0), (y1, x1); a corner outside the image weighs 0 and
  its index is clamped into the image (it is read and multiplied by 0);
* a corner's weight is ``mask * fy * fx`` with ``fy = (1 - ty, ty)`` along y, likewise x.

Kernels take numpy arrays (free views of contiguous CPU tensors) and write into the
outputs they are given; threads come from numba's pool, sized by the caller
(:func:`micml.ops.gather.use_torch_threads`).
"""

from __future__ import annotations

import math

import numba
import numpy as np

# cache=True: compiled code is kept beside this file (__pycache__), so only the first run on a
# machine pays the ~2 s compilation of each kernel and dtype.
_JIT = {"nogil": True, "cache": True, "boundscheck": False}


@numba.njit(**_JIT)
def _neighbours(position, size):
    """Clamped indices (low, high), bilinear factors (low, high), inside flags (low, high)."""
    floor = math.floor(position)
    fraction = position - floor
    # Clamp before the cast: absurd offsets cannot overflow the integer.
    low = int(min(max(floor, -2.0), float(size)))
    inside_low = 1.0 if 0 <= low < size else 0.0
    inside_high = 1.0 if -1 <= low < size - 1 else 0.0
    index_low = min(max(low, 0), size - 1)
    index_high = min(max(low + 1, 0), size - 1)
    factor_low = (1.0 - fraction) * inside_low
    factor_high = fraction * inside_high
    return index_low, index_high, factor_low, factor_high, inside_low, inside_high


# Reassociation lets LLVM vectorise the reduction; the order is still fixed for a given
# machine, so results are reproducible run to run.
@numba.njit(fastmath={"reassoc", "contract"}, **_JIT)
def _dot(a, b):
    total = a.dtype.type(0)
    for c in range(a.shape[0]):
        total += a[c] * b[c]
    return total


@numba.njit(**_JIT)
def _add_scaled(target, scale, values):
    for c in range(values.shape[0]):
        target[c] += scale * values[c]


@numba.njit(parallel=True, **_JIT)
def sample_columns(rows, offset, mask, base_y, base_x, first, columns):
    """columns[p, k, g] = the bilinear sample of group g at kernel point k of pixel first + p.

    rows (B, H, W, G, Cg): the input, channels last. offset (B, Ho, Wo, K, G, 2) as (dy, dx)
    and mask (B, Ho, Wo, K, G), any strides; base_y (Ho, K), base_x (Wo, K): the undeformed
    positions; columns (n, K, G, Cg) for the pixels (b, y, x) numbered [first, first + n).
    """
    _, height, width, groups, _ = rows.shape
    out_h, out_w = base_y.shape[0], base_x.shape[0]
    dtype = columns.dtype.type
    for p in numba.prange(columns.shape[0]):
        pixel = first + p
        image, out_y, out_x = pixel // (out_h * out_w), (pixel // out_w) % out_h, pixel % out_w
        for k in range(base_y.shape[1]):
            for g in range(groups):
                ya, yb, fy0, fy1, _, _ = _neighbours(base_y[out_y, k] + offset[image, out_y, out_x, k, g, 0], height)
                xa, xb, fx0, fx1, _, _ = _neighbours(base_x[out_x, k] + offset[image, out_y, out_x, k, g, 1], width)
                m = mask[image, out_y, out_x, k, g]
                w00, w01 = dtype(m * fy0 * fx0), dtype(m * fy0 * fx1)
                w10, w11 = dtype(m * fy1 * fx0), dtype(m * fy1 * fx1)
                r00, r01 = rows[image, ya, xa, g], rows[image, ya, xb, g]
                r10, r11 = rows[image, yb, xa, g], rows[image, yb, xb, g]
                column = columns[p, k, g]
                for c in range(column.shape[0]):
                    column[c] = w00 * r00[c] + w01 * r01[c] + w10 * r10[c] + w11 * r11[c]


@numba.njit(parallel=True, **_JIT)
def sample_gradients(rows, offset, mask, base_y, base_x, first, grad_columns,
                     grad_rows, grad_offset, grad_mask, want_rows, want_corners):
    """Backward of :func:`sample_columns` for pixels [first, first + n).

    grad_columns (n, K, G, Cg). Adds the input gradient into grad_rows (T, B, H, W, G, Cg):
    the pixels are split into T contiguous parts and part t scatters into grad_rows[t] only,
    so no two threads write one place and the sum over t (by the caller) has a fixed order.
    Writes the offset gradient (n, K, G, 2) and the mask gradient (n, K, G).
    """
    _, height, width, groups, _ = rows.shape
    out_h, out_w = base_y.shape[0], base_x.shape[0]
    dtype = grad_columns.dtype.type
    samples, parts = grad_columns.shape[0], grad_rows.shape[0]
    per_part = (samples + parts - 1) // parts
    for part in numba.prange(parts):
        target = grad_rows[part]
        for p in range(part * per_part, min(samples, (part + 1) * per_part)):
            pixel = first + p
            image, out_y, out_x = pixel // (out_h * out_w), (pixel // out_w) % out_h, pixel % out_w
            for k in range(base_y.shape[1]):
                for g in range(groups):
                    ya, yb, fy0, fy1, iy0, iy1 = _neighbours(base_y[out_y, k] + offset[image, out_y, out_x, k, g, 0], height)
                    xa, xb, fx0, fx1, ix0, ix1 = _neighbours(base_x[out_x, k] + offset[image, out_y, out_x, k, g, 1], width)
                    m = mask[image, out_y, out_x, k, g]
                    grad = grad_columns[p, k, g]
                    if want_rows:
                        _add_scaled(target[image, ya, xa, g], dtype(m * fy0 * fx0), grad)
                        _add_scaled(target[image, ya, xb, g], dtype(m * fy0 * fx1), grad)
                        _add_scaled(target[image, yb, xa, g], dtype(m * fy1 * fx0), grad)
                        _add_scaled(target[image, yb, xb, g], dtype(m * fy1 * fx1), grad)
                    if not want_corners:
                        continue
                    # Gradients of the four corner weights, then the chain rule through
                    # w[a, b] = m * fy[a] * fx[b] (d ty / d dy = 1: the floor is locally constant).
                    d00, d01 = _dot(grad, rows[image, ya, xa, g]), _dot(grad, rows[image, ya, xb, g])
                    d10, d11 = _dot(grad, rows[image, yb, xa, g]), _dot(grad, rows[image, yb, xb, g])
                    along_x_low_row, along_x_high_row = d00 * fx0 + d01 * fx1, d10 * fx0 + d11 * fx1
                    along_y_low_col, along_y_high_col = d00 * fy0 + d10 * fy1, d01 * fy0 + d11 * fy1
                    grad_offset[p, k, g, 0] = m * (iy1 * along_x_high_row - iy0 * along_x_low_row)
                    grad_offset[p, k, g, 1] = m * (ix1 * along_y_high_col - ix0 * along_y_low_col)
                    grad_mask[p, k, g] = fy0 * along_x_low_row + fy1 * along_x_high_row


@numba.njit(parallel=True, **_JIT)
def sample_mixed(mixed, offset, mask_logits, base_y, base_x, top, padded_h, bias, out):
    """Mix-first DCN (micml.models.fast_deform): out = bias + sum_k sum_corner weight * mixed.

    mixed (B, R, Wp, K, O): rows [top, top + R) of the zero-padded input (padded_h x Wp),
    each multiplied by every kernel point's weight matrix. offset (B, Ho', Wo, K, 2) and
    mask_logits (B, Ho', Wo, K) for a band of output rows; base_y (Ho', K) and base_x (Wo, K)
    in padded coordinates; bias (O,); out (B, Ho', Wo, O). Positions are clamped to the
    padded frame minus its last two rows/columns: its zero border stands for DCNv2's
    "outside pixels count as 0", and a clamped position's second corner weighs 0.
    """
    padded_w = mixed.shape[2]
    dtype = out.dtype.type
    batch, band_h, out_w = out.shape[0], out.shape[1], out.shape[2]
    for pixel in numba.prange(batch * band_h * out_w):
        image, out_y, out_x = pixel // (band_h * out_w), (pixel // out_w) % band_h, pixel % out_w
        target = out[image, out_y, out_x]
        target[:] = bias
        for k in range(base_y.shape[1]):
            y = min(max(base_y[out_y, k] + offset[image, out_y, out_x, k, 0], 0), padded_h - 2)
            x = min(max(base_x[out_x, k] + offset[image, out_y, out_x, k, 1], 0), padded_w - 2)
            row, col = math.floor(y), math.floor(x)
            ty, tx = y - row, x - col
            mask = 1.0 / (1.0 + math.exp(-mask_logits[image, out_y, out_x, k]))
            r, c = int(row) - top, int(col)
            upper = mask * ty
            lower = mask - upper
            _add_scaled(target, dtype(lower * (1.0 - tx)), mixed[image, r, c, k])
            _add_scaled(target, dtype(lower * tx), mixed[image, r, c + 1, k])
            _add_scaled(target, dtype(upper * (1.0 - tx)), mixed[image, r + 1, c, k])
            _add_scaled(target, dtype(upper * tx), mixed[image, r + 1, c + 1, k])
