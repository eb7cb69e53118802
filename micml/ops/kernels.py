"""Fused CPU kernels of the bilinear sampling inside a modulated deformable convolution.

Hand-written (numba) because no maintained library fuses it on the CPU: torchvision's
``deform_conv2d`` CPU kernel is single-threaded, and the same sampling built from torch ops
(index and weight tensors, ``embedding_bag`` gathers, a sorted CSR scatter) spent about 60 %
of a DCN's time on ~20 passes over memory. Each kernel here makes one pass, computing a
sample's four corners and weights where it uses them. The GEMMs stay in torch.

Conventions shared by the kernels (torchvision's DCNv2 semantics):

* a sample's position is ``base[pixel, k] + offset``, added in the offset's dtype as torch
  does (so floor() picks the same corners as torchvision in float32);
* corners (y0, x0), (y0, x1), (y1, x0), (y1, x1); a corner outside the image weighs 0 and
  its index is clamped into the image (it is read and multiplied by 0);
* a corner's weight is ``mask * fy * fx`` with ``fy = (1 - ty, ty)`` along y, likewise x.

Kernels take numpy arrays (free views of CPU tensors) and write into the outputs they are
given; threads come from numba's pool, sized by the caller (`micml.ops.gather`).
The number of channels per row is a compile-time constant, one set of kernels per width
(:func:`for_width`): LLVM then vectorises rows as short as 16 channels, which it leaves
scalar with a run-time trip count (2-3.5x slower in a microbenchmark).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import numba
import numpy as np

# cache=True: compiled code is kept beside this file (__pycache__; numba keys it by the
# closure's width too), so only the first run on a machine pays ~1 s per kernel, width, dtype.
# A kernel's closure must hold plain values only: numba hashes it into the cache key, and a
# jitted function in it hashes differently in every process (a cache miss every run).
_JIT = {"nogil": True, "cache": True, "boundscheck": False}


@numba.njit(**_JIT)
def _neighbours(position, size):
    """Clamped indices (low, high), bilinear factors (low, high), inside flags (low, high)."""
    floor = np.floor(position)  # stays a float: math.floor's int round trip doubled this function's cost
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


@numba.njit(**_JIT)
def _corners(rows_shape, offset, mask, base_y, base_x, image, out_y, out_x, k, g):
    """One sample's corner rows (ya, yb, xa, xb), bilinear factors (fy0, fy1, fx0, fx1), inside
    flags (iy0, iy1, ix0, ix1) and mask m: the arithmetic both kernels share."""
    height, image_w = rows_shape[1], rows_shape[2]
    ya, yb, fy0, fy1, iy0, iy1 = _neighbours(base_y[out_y, k] + offset[image, out_y, out_x, k, g, 0], height)
    xa, xb, fx0, fx1, ix0, ix1 = _neighbours(base_x[out_x, k] + offset[image, out_y, out_x, k, g, 1], image_w)
    return ya, yb, xa, xb, fy0, fy1, fx0, fx1, iy0, iy1, ix0, ix1, mask[image, out_y, out_x, k, g]


# Reassociation lets LLVM vectorise the reduction; the order is still fixed for a given
# machine, so results are reproducible run to run. `width` is a compile-time constant here too
# (numba.literally; a kernel passes its closure's width, so there is no run-time dispatch).
@numba.njit(fastmath={"reassoc", "contract"}, **_JIT)
def _dot(a, b, width):
    numba.literally(width)
    total = a.dtype.type(0)
    for c in range(width):
        total += a[c] * b[c]
    return total


class Kernels(NamedTuple):
    """The kernels for rows of one width (channels per deformable group)."""

    sample_columns: object
    sample_gradients: object


@functools.lru_cache(maxsize=None)
def for_width(width: int) -> Kernels:
    """Kernels compiled for rows of ``width`` channels (compiled on first use, then cached)."""
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise ValueError(f"kernel row width must be a positive integer, found {width!r}")

    @numba.njit(parallel=True, **_JIT)
    def sample_columns(rows, offset, mask, base_y, base_x, first, columns):
        """columns[p, k, g] = the bilinear sample of group g at kernel point k of pixel first + p.

        rows (B, H, W, G, width): the input, channels last. offset (B, Ho, Wo, K, G, 2) as
        (dy, dx) and mask (B, Ho, Wo, K, G), any strides; base_y (Ho, K), base_x (Wo, K): the
        undeformed positions; columns (n, K, G, width) for the pixels (b, y, x) numbered
        [first, first + n). rows and columns C-contiguous.
        """
        groups = rows.shape[3]
        out_h, out_w, points = base_y.shape[0], base_x.shape[0], base_y.shape[1]
        dtype = columns.dtype.type
        for p in numba.prange(columns.shape[0]):
            pixel = first + p
            image, out_y, out_x = pixel // (out_h * out_w), (pixel // out_w) % out_h, pixel % out_w
            for k in range(points):
                for g in range(groups):
                    ya, yb, xa, xb, fy0, fy1, fx0, fx1, _, _, _, _, m = _corners(
                        rows.shape, offset, mask, base_y, base_x, image, out_y, out_x, k, g)
                    w00, w01 = dtype(m * fy0 * fx0), dtype(m * fy0 * fx1)
                    w10, w11 = dtype(m * fy1 * fx0), dtype(m * fy1 * fx1)
                    r00, r01 = rows[image, ya, xa, g], rows[image, ya, xb, g]
                    r10, r11 = rows[image, yb, xa, g], rows[image, yb, xb, g]
                    column = columns[p, k, g]
                    for c in range(width):
                        column[c] = w00 * r00[c] + w01 * r01[c] + w10 * r10[c] + w11 * r11[c]

    @numba.njit(parallel=True, **_JIT)
    def sample_gradients(rows, offset, mask, base_y, base_x, first, grad_columns,
                         grad_rows, grad_offset, grad_mask, want_rows, want_corners):
        """Backward of `sample_columns` for pixels [first, first + n).

        grad_columns (n, K, G, width). Adds the input gradient into grad_rows (T, B, H, W, G,
        width): the pixels are split into T contiguous parts and part t scatters into
        grad_rows[t] only, so no two threads write one place and the sum over t (by the
        caller) has a fixed order. Writes the offset gradient (n, K, G, 2) and the mask
        gradient (n, K, G).
        """
        groups = rows.shape[3]
        out_h, out_w, points = base_y.shape[0], base_x.shape[0], base_y.shape[1]
        dtype = grad_columns.dtype.type
        samples, parts = grad_columns.shape[0], grad_rows.shape[0]
        per_part = (samples + parts - 1) // parts
        for part in numba.prange(parts):
            target = grad_rows[part]
            for p in range(part * per_part, min(samples, (part + 1) * per_part)):
                pixel = first + p
                image, out_y, out_x = pixel // (out_h * out_w), (pixel // out_w) % out_h, pixel % out_w
                for k in range(points):
                    for g in range(groups):
                        ya, yb, xa, xb, fy0, fy1, fx0, fx1, iy0, iy1, ix0, ix1, m = _corners(
                            rows.shape, offset, mask, base_y, base_x, image, out_y, out_x, k, g)
                        grad = grad_columns[p, k, g]
                        if want_rows:
                            w00, w01 = dtype(m * fy0 * fx0), dtype(m * fy0 * fx1)
                            w10, w11 = dtype(m * fy1 * fx0), dtype(m * fy1 * fx1)
                            q00, q01 = target[image, ya, xa, g], target[image, ya, xb, g]
                            q10, q11 = target[image, yb, xa, g], target[image, yb, xb, g]
                            for c in range(width):
                                q00[c] += w00 * grad[c]
                            for c in range(width):
                                q01[c] += w01 * grad[c]
                            for c in range(width):
                                q10[c] += w10 * grad[c]
                            for c in range(width):
                                q11[c] += w11 * grad[c]
                        if not want_corners:
                            continue
                        # Gradients of the four corner weights, then the chain rule through
                        # w[a, b] = m * fy[a] * fx[b] (d ty / d dy = 1: the floor is locally constant).
                        d00, d01 = _dot(grad, rows[image, ya, xa, g], width), _dot(grad, rows[image, ya, xb, g], width)
                        d10, d11 = _dot(grad, rows[image, yb, xa, g], width), _dot(grad, rows[image, yb, xb, g], width)
                        along_x_low_row, along_x_high_row = d00 * fx0 + d01 * fx1, d10 * fx0 + d11 * fx1
                        along_y_low_col, along_y_high_col = d00 * fy0 + d10 * fy1, d01 * fy0 + d11 * fy1
                        grad_offset[p, k, g, 0] = m * (iy1 * along_x_high_row - iy0 * along_x_low_row)
                        grad_offset[p, k, g, 1] = m * (ix1 * along_y_high_col - ix0 * along_y_low_col)
                        grad_mask[p, k, g] = fy0 * along_x_low_row + fy1 * along_x_high_row

    return Kernels(sample_columns, sample_gradients)
