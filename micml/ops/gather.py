"""Fast modulated deformable convolution built from gathers and one GEMM.

The bilinear sampling of every (output pixel, kernel point, deformable group)
reads four input pixels. For a slice of output pixels we compute those four
row indices and weights (bilinear factor x inside-image x mask), then:

* forward:  columns = weighted sum of the four gathered rows of a channels-last
  view of the input (``embedding_bag`` gathers and sums in one multithreaded
  pass), output = columns @ weight matrix (one GEMM);
* backward: input gradient = the transposed gather, one sparse CSR x dense
  product; corner-weight gradient = one dot product per corner
  (``sampled_addmm``), turned into offset and mask gradients analytically.

Everything runs slice by slice over output pixels and nothing per sample is
kept for backward (it is recomputed, as torchvision's kernel does), so memory
stays bounded by ``COLUMN_CHUNK_BYTES`` whatever the frame size.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F

# Upper bound on the column buffer of one slice; larger outputs are processed
# in slices of output pixels so big frames do not need gigabytes of columns.
COLUMN_CHUNK_BYTES = 64 * 2**20

_INT32_LIMIT = 2**31 - 1


@dataclass(frozen=True)
class _Geometry:
    batch: int
    height: int
    width: int
    out_h: int
    out_w: int
    kernel_h: int
    kernel_w: int
    groups: int
    stride: tuple
    padding: tuple
    dilation: tuple

    @property
    def samples_per_pixel(self):
        return self.kernel_h * self.kernel_w * self.groups


def deform_conv2d_gather(x, offset, mask, weight, bias, stride, padding, dilation):
    """torchvision's ``deform_conv2d`` contract (no grouped conv); geometry as pairs."""
    batch, channels, height, width = x.shape
    out_channels, _, kernel_h, kernel_w = weight.shape
    kernel_points = kernel_h * kernel_w
    groups = offset.shape[1] // (2 * kernel_points)
    out_h, out_w = offset.shape[-2:]
    geometry = _Geometry(
        batch, height, width, out_h, out_w, kernel_h, kernel_w, groups, stride, padding, dilation
    )

    # Channels-last rows (b, y, x, g) of length channels // groups: a free view
    # when x is already channels_last, one copy otherwise.
    input_rows = x.permute(0, 2, 3, 1).reshape(batch * height * width * groups, channels // groups)
    # Per-sample order (b, ho, wo, kernel point, group), matching the columns;
    # offset channel g*2K + 2k + {0: dy, 1: dx}, mask channel g*K + k.
    offset_rows = offset.reshape(batch, groups, kernel_points, 2, out_h, out_w).permute(0, 4, 5, 2, 1, 3)
    offset_rows = offset_rows.reshape(-1, 2)
    mask_rows = None
    if mask is not None:
        mask_rows = mask.reshape(batch, groups, kernel_points, out_h, out_w).permute(0, 3, 4, 2, 1)
        mask_rows = mask_rows.reshape(-1)
    # Column order inside one output pixel is (kernel point, channel): the
    # weight is laid out the same way, (kh, kw, C) x O.
    weight_matrix = weight.permute(2, 3, 1, 0).reshape(kernel_points * channels, out_channels)

    out_rows = _DeformConvFunction.apply(input_rows, offset_rows, mask_rows, weight_matrix, bias, geometry)
    out = out_rows.view(batch, out_h, out_w, out_channels).permute(0, 3, 1, 2)
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return out  # already channels_last strides: keep the caller's layout
    return out.contiguous()


class _DeformConvFunction(torch.autograd.Function):
    """out_rows (B*Ho*Wo, O) = sampled columns @ weight_matrix + bias, slice by slice."""

    @staticmethod
    def forward(ctx, input_rows, offset_rows, mask_rows, weight_matrix, bias, geometry):
        pixels = geometry.batch * geometry.out_h * geometry.out_w
        out = input_rows.new_empty(pixels, weight_matrix.shape[1])
        for first, last in _pixel_slices(pixels, weight_matrix.shape[0], input_rows.element_size()):
            plan = _SamplingPlan(geometry, offset_rows, mask_rows, first, last)
            columns = plan.columns(input_rows)
            if bias is None:
                torch.mm(columns, weight_matrix, out=out[first:last])
            else:
                torch.addmm(bias, columns, weight_matrix, out=out[first:last])
        ctx.geometry = geometry
        ctx.has_bias = bias is not None
        ctx.save_for_backward(input_rows, offset_rows, mask_rows, weight_matrix)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        input_rows, offset_rows, mask_rows, weight_matrix = ctx.saved_tensors
        need_rows, need_offset, need_mask, need_matrix, need_bias, _ = ctx.needs_input_grad
        need_corners = need_offset or need_mask
        grad_out = grad_out.contiguous()
        grad_rows = torch.zeros_like(input_rows) if need_rows else None
        grad_offset = torch.empty_like(offset_rows) if need_offset else None
        grad_mask = torch.empty_like(mask_rows) if need_mask and mask_rows is not None else None
        grad_matrix = torch.zeros_like(weight_matrix) if need_matrix else None
        grad_bias = grad_out.sum(0) if need_bias and ctx.has_bias else None

        per_pixel = ctx.geometry.samples_per_pixel
        slices = _pixel_slices(grad_out.shape[0], weight_matrix.shape[0], input_rows.element_size())
        for first, last in slices:
            plan = _SamplingPlan(ctx.geometry, offset_rows, mask_rows, first, last)
            grad_slice = grad_out[first:last]
            if need_matrix:
                grad_matrix.addmm_(plan.columns(input_rows).t(), grad_slice)
            if not (need_rows or need_corners):
                continue
            grad_columns = torch.mm(grad_slice, weight_matrix.t()).view(-1, input_rows.shape[1])
            if need_rows:
                grad_rows.addmm_(plan.scatter_matrix(input_rows.shape[0]), grad_columns)
            if need_corners:
                samples = slice(first * per_pixel, last * per_pixel)
                grad_corners = _corner_dots(plan.index, input_rows, grad_columns)
                grad_y, grad_x, grad_m = plan.offset_and_mask_grads(grad_corners)
                if grad_offset is not None:
                    grad_offset[samples, 0] = grad_y
                    grad_offset[samples, 1] = grad_x
                if grad_mask is not None:
                    grad_mask[samples] = grad_m
        return grad_rows, grad_offset, grad_mask, grad_matrix, grad_bias, None


def _pixel_slices(pixels, columns_per_pixel, element_size):
    step = max(1, COLUMN_CHUNK_BYTES // (columns_per_pixel * element_size))
    for first in range(0, pixels, step):
        yield first, min(first + step, pixels)


class _SamplingPlan:
    """Corner indices and weights of the samples of output pixels [first, last).

    Samples are ordered (pixel, kernel point, group); corners (y0,x0), (y0,x1),
    (y1,x0), (y1,x1). A corner outside the image gets weight 0 and a clamped
    index: the "outside pixels contribute 0" rule of DCNv2. The arithmetic is
    done on one contiguous vector per neighbour (fast elementwise kernels);
    only ``index`` and ``weight`` are interleaved (n, 4) for embedding_bag.
    """

    def __init__(self, geometry, offset_rows, mask_rows, first, last):
        g = geometry
        samples = slice(first * g.samples_per_pixel, last * g.samples_per_pixel)
        self.pixels = last - first
        self.mask = None if mask_rows is None else mask_rows[samples]
        offsets = offset_rows[samples].view(self.pixels, g.kernel_h * g.kernel_w, g.groups, 2)
        device, dtype = offsets.device, offsets.dtype

        pixel = torch.arange(first, last, device=device)
        image, out_y, out_x = pixel // (g.out_h * g.out_w), (pixel // g.out_w) % g.out_h, pixel % g.out_w
        kernel_y = (torch.arange(g.kernel_h, device=device) * g.dilation[0]).repeat_interleave(g.kernel_w)
        kernel_x = (torch.arange(g.kernel_w, device=device) * g.dilation[1]).repeat(g.kernel_h)
        grid_y = (out_y * g.stride[0] - g.padding[0]).view(-1, 1) + kernel_y  # (pixels, K)
        grid_x = (out_x * g.stride[1] - g.padding[1]).view(-1, 1) + kernel_x
        y = (grid_y.to(dtype).unsqueeze(2) + offsets[..., 0]).view(-1)
        x = (grid_x.to(dtype).unsqueeze(2) + offsets[..., 1]).view(-1)
        index_dtype = torch.int32 if g.batch * g.height * g.width * g.groups <= _INT32_LIMIT else torch.int64
        self.y = _AxisNeighbours(y, g.height, index_dtype)
        self.x = _AxisNeighbours(x, g.width, index_dtype)

        # Bilinear factors without the mask are kept for the mask gradient.
        self.factor_y = (self.y.weight_low, self.y.weight_high)
        self.factor_x = (self.x.weight_low, self.x.weight_high)
        weight_y = self.factor_y if self.mask is None else tuple(w * self.mask for w in self.factor_y)
        self.weight = torch.stack([wy * wx for wy in weight_y for wx in self.factor_x], dim=1)

        first_row_of_image = (image * g.height).to(index_dtype).view(-1, 1)  # (pixels, 1)
        group = torch.arange(g.groups, device=device, dtype=index_dtype)
        row_starts = []
        for row in (self.y.index_low, self.y.index_high):
            row = (row.view(self.pixels, -1) + first_row_of_image) * (g.width * g.groups)
            row_starts.append((row.view(self.pixels, -1, g.groups) + group).view(-1))
        columns = [col * g.groups for col in (self.x.index_low, self.x.index_high)]
        self.index = torch.stack([start + col for start in row_starts for col in columns], dim=1)

    def columns(self, input_rows):
        """Sampled columns (pixels, K*G*Cg): the weighted sum of each sample's four rows."""
        sampled = F.embedding_bag(self.index, input_rows, per_sample_weights=self.weight, mode="sum")
        return sampled.view(self.pixels, -1)

    def scatter_matrix(self, rows):
        """Sparse (rows, samples) matrix sending sample gradients back to input rows."""
        flat_index = self.index.view(-1)
        # A stable sort fixes the summation order, so gradients are deterministic.
        sorted_rows, order = flat_index.sort(stable=True)
        row_pointer = torch.zeros(rows + 1, device=flat_index.device, dtype=flat_index.dtype)
        row_pointer[1:] = torch.bincount(sorted_rows, minlength=rows).cumsum(0)
        sample_of_entry = (order >> 2).to(flat_index.dtype)  # entry // 4; integer division is slow
        values = self.weight.view(-1)[order]
        return _csr(row_pointer, sample_of_entry, values, (rows, self.index.shape[0]))

    def offset_and_mask_grads(self, grad_weight):
        """Chain rule from corner-weight gradients (n, 4) to dy, dx and mask gradients.

        weight[a, b] = mask * fy[a] * fx[b], fy = ((1 - ty) * inside_y0, ty * inside_y1),
        and d ty / d dy = 1 because the floor is locally constant.
        """
        g00, g01, g10, g11 = grad_weight.unbind(1)
        (fy0, fy1), (fx0, fx1) = self.factor_y, self.factor_x
        along_x_low_row = g00 * fx0 + g01 * fx1  # Σ_b grad[0, b] fx[b]
        along_x_high_row = g10 * fx0 + g11 * fx1
        along_y_low_col = g00 * fy0 + g10 * fy1  # Σ_a grad[a, 0] fy[a]
        along_y_high_col = g01 * fy0 + g11 * fy1
        grad_y = self.y.inside_high * along_x_high_row - self.y.inside_low * along_x_low_row
        grad_x = self.x.inside_high * along_y_high_col - self.x.inside_low * along_y_low_col
        if self.mask is None:
            return grad_y, grad_x, None
        grad_mask = fy0 * along_x_low_row + fy1 * along_x_high_row
        return grad_y * self.mask, grad_x * self.mask, grad_mask


class _AxisNeighbours:
    """The two neighbours of float positions along one axis of length ``size``."""

    def __init__(self, position, size, index_dtype):
        low = position.floor()
        fraction = position - low
        low = low.clamp_(-2, size).to(index_dtype)  # clamp before the cast: absurd offsets cannot overflow
        self.inside_low = (low >= 0) & (low < size)
        self.inside_high = (low >= -1) & (low < size - 1)
        self.weight_low = (1 - fraction) * self.inside_low
        self.weight_high = fraction * self.inside_high
        self.index_low = low.clamp(0, size - 1)
        self.index_high = (low + 1).clamp_(0, size - 1)


def _corner_dots(corner_index, input_rows, grad_columns):
    """<grad_columns[n], input_rows[corner_index[n, c]]> for every sample n and corner c."""
    samples = corner_index.shape[0]
    pattern = _csr(
        torch.arange(0, 4 * samples + 1, 4, device=corner_index.device, dtype=corner_index.dtype),
        corner_index.reshape(-1),
        grad_columns.new_zeros(4 * samples),
        (samples, input_rows.shape[0]),
    )
    dots = torch.sparse.sampled_addmm(pattern, grad_columns, input_rows.t(), beta=0.0)
    return dots.values().view(samples, 4)


def _csr(row_pointer, column_index, values, size):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Ss]parse CSR tensor support is in beta.*")
        return torch.sparse_csr_tensor(row_pointer, column_index, values, size=size, check_invariants=False)
