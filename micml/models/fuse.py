"""An eval-only copy of a detector, rewritten for speed on CPU: `optimize_for_inference`.

The copy computes the same function as `model.eval()` up to float rounding:

* **BatchNorm folded** into the convolution before it (weight scaled per output channel, bias
  shifted): the Conv+BN pairs of DLA-34 and of the 3-D branch, and the BN after every
  deformable conv of the necks (the DCN's weight and bias absorb it; the offset/mask conv,
  which reads the block's input, is unchanged).
* **Deformable convs** run `fast_deform.deform_conv2d_mix_first` on CPU (mix channels, then
  sample), the DCN backend of `micml.ops` elsewhere.
* **3-D branch** convolutions as 2-D convolutions where the kernel is spatial only (frames as
  batch), every activation in channels-last memory, and the temporal tap (max-pool of kernel
  and stride 3 over T in 3..5 frames) as the maximum of frames 0-2.
* **Heads** (3x3 conv -> ReLU -> 1x1 conv at full resolution) a band of rows at a time, so
  the 128-channel hidden map never leaves the CPU caches.
* **channels_last** activations from the first layer on: oneDNN convolutions are faster on
  them, and the deformable conv reads and writes pixel rows.

The original model is left untouched. The copy refuses to run in training mode or with
gradients (the BatchNorms it folded no longer exist), and its state_dict has other keys: use
it for inference only, never checkpoint it.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from micml.ops import modulated_deform_conv2d

from . import layout
from .backbone import AggregationNode, ResidualBlock
from .fast_deform import deform_conv2d_mix_first
from .necks import DeformConvBlock
from .temporal import Conv3dBNReLU, TemporalBranch

#: Modules whose forward runs `conv` then `bn` (attribute pairs); folded in place.
CONV_BN_PAIRS = {
    ResidualBlock: (("conv1", "bn1"), ("conv2", "bn2")),
    AggregationNode: (("conv", "bn"),),
}
#: Pixels per band of a banded head: a 4096 x 128 float hidden map is 2 MB (an L2 cache).
HEAD_PIXELS_PER_BAND = 4096

_EVAL_ONLY = ("this model was made by micml.models.optimize_for_inference (BatchNorm folded into "
              "the convolutions): it runs in eval mode without gradients only; train the original "
              "model instead")


def optimize_for_inference(model: nn.Module) -> nn.Module:
    """An eval-only, faster copy of `model` (see the module docstring); `model` is unchanged.

    Call it once after loading the weights, then use the copy like the model:
    `fast = optimize_for_inference(model); with torch.inference_mode(): out = fast(clip)`.
    """
    fast = copy.deepcopy(model)
    _fold_batch_norms(fast)
    _replace_children(fast, DeformConvBlock, FoldedDeformConvBlock)
    _replace_children(fast, Conv3dBNReLU, FoldedConv3dReLU)
    for branch in [m for m in fast.modules() if isinstance(m, TemporalBranch)]:
        branch.temporal_pool = FirstThreeFramesMaxPool(branch.temporal_pool)
    for name in getattr(fast, "head_names", ()):
        head = getattr(fast, name)
        if BandedHead.supports(head):
            setattr(fast, name, BandedHead(head))
    base = getattr(fast, "base", None)
    if base is not None:  # the rest of the static branch inherits the memory format
        base.base_layer = ChannelsLast(base.base_layer)
    fast.optimized_for_inference = True
    return fast.eval().requires_grad_(False)


def _check_eval(module: nn.Module, x: torch.Tensor) -> None:
    if module.training or (torch.is_grad_enabled() and x.requires_grad):
        raise RuntimeError(_EVAL_ONLY)


def _replace_children(model: nn.Module, kind: type, replacement: type) -> None:
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, kind):
                setattr(parent, name, replacement(child))


# ---------------------------------------------------------------------------- BatchNorm folding
def folded_weight_and_bias(weight: torch.Tensor, bias: torch.Tensor | None,
                           bn: nn.modules.batchnorm._BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """(W', b') with conv(x, W', b') == bn(conv(x, W, b)) in eval mode; computed in float64."""
    if not bn.track_running_stats or bn.running_var is None:
        raise ValueError(f"cannot fold {bn}: it keeps no running statistics")
    scale = torch.rsqrt(bn.running_var.double() + bn.eps)
    if bn.affine:
        scale = scale * bn.weight.double()
    shift = -bn.running_mean.double() * scale
    if bn.affine:
        shift = shift + bn.bias.double()
    folded_bias = shift if bias is None else bias.double() * scale + shift
    folded_weight = weight.double() * scale.view(-1, *([1] * (weight.dim() - 1)))
    return folded_weight.to(weight.dtype), folded_bias.to(weight.dtype)


def fold_conv_bn(conv: nn.Conv2d | nn.Conv3d, bn: nn.modules.batchnorm._BatchNorm) -> nn.Module:
    """A copy of `conv`, with a bias, that computes bn(conv(x)) of eval mode."""
    fused = copy.deepcopy(conv)
    weight, bias = folded_weight_and_bias(conv.weight, conv.bias, bn)
    fused.weight = nn.Parameter(weight, requires_grad=False)
    fused.bias = nn.Parameter(bias, requires_grad=False)
    return fused


def _fold_batch_norms(model: nn.Module) -> None:
    """Fold every Conv->BN pair of CONV_BN_PAIRS and of nn.Sequential containers."""
    for module in list(model.modules()):
        for conv_name, bn_name in CONV_BN_PAIRS.get(type(module), ()):
            setattr(module, conv_name, fold_conv_bn(getattr(module, conv_name), getattr(module, bn_name)))
            setattr(module, bn_name, nn.Identity())
        if isinstance(module, nn.Sequential):
            for i in range(len(module) - 1):
                conv, bn = module[i], module[i + 1]
                if isinstance(conv, (nn.Conv2d, nn.Conv3d)) and isinstance(bn, nn.modules.batchnorm._BatchNorm):
                    module[i] = fold_conv_bn(conv, bn)
                    module[i + 1] = nn.Identity()


# ---------------------------------------------------------------------------- deformable conv
class FoldedDeformConvBlock(nn.Module):
    """DeformConvBlock (DCN -> BN -> ReLU) with the BN folded into the DCN's weight and bias."""

    def __init__(self, block: DeformConvBlock):
        super().__init__()
        dcn, bn = block.conv, block.actf[0]
        self.conv_offset_mask = copy.deepcopy(dcn.conv_offset_mask)
        weight, bias = folded_weight_and_bias(dcn.weight, dcn.bias, bn)
        self.register_buffer("weight", weight)
        self.register_buffer("bias", bias)
        self.offset_channels = 2 * dcn.deformable_groups * dcn.kernel_size[0] * dcn.kernel_size[1]
        self.one_group = dcn.deformable_groups == 1
        self.geometry = {"stride": dcn.stride, "padding": dcn.padding, "dilation": dcn.dilation}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_eval(self, x)
        offset_and_mask = self.conv_offset_mask(x)
        offset = offset_and_mask[:, :self.offset_channels]
        mask_logits = offset_and_mask[:, self.offset_channels:]
        if x.device.type == "cpu" and self.one_group:
            out = deform_conv2d_mix_first(x, offset, mask_logits, self.weight, self.bias, **self.geometry)
        else:
            out = modulated_deform_conv2d(x, offset, mask_logits.sigmoid(), self.weight, self.bias,
                                          **self.geometry)
        return out.relu_()


# ---------------------------------------------------------------------------- 3-D branch
class FoldedConv3dReLU(nn.Module):
    """Conv3dBNReLU with the BN folded, run channels-last (`layout.conv3d`) whatever the switch."""

    def __init__(self, block: Conv3dBNReLU):
        super().__init__()
        self.conv = fold_conv_bn(block.conv, block.bn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_eval(self, x)
        return layout.conv3d(self.conv, x, channels_last=True).relu_()


class FirstThreeFramesMaxPool(nn.Module):
    """MaxPool3d((3, 1, 1)) (stride 3) on T in 3..5 frames: the maximum of frames 0, 1, 2."""

    def __init__(self, pool: nn.MaxPool3d):
        super().__init__()
        self.pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not 3 <= x.shape[2] <= 5:
            return self.pool(x)
        return torch.maximum(torch.maximum(x[:, :, 0:1], x[:, :, 1:2]), x[:, :, 2:3])


# ---------------------------------------------------------------------------- heads
class BandedHead(nn.Module):
    """A head Conv(k x k) -> ReLU -> Conv(1 x 1), computed a band of output rows at a time.

    Each band convolves its rows of the zero-padded input without padding, which is the same
    arithmetic as the whole-map convolution; only the band's hidden map exists at once.
    """

    def __init__(self, head: nn.Sequential):
        super().__init__()
        self.hidden, self.relu, self.out = head[0], head[1], head[2]

    @staticmethod
    def supports(head: nn.Module) -> bool:
        if not (isinstance(head, nn.Sequential) and len(head) == 3):
            return False
        hidden, relu, out = head
        return (isinstance(hidden, nn.Conv2d) and isinstance(relu, nn.ReLU) and isinstance(out, nn.Conv2d)
                and hidden.stride == (1, 1) and hidden.dilation == (1, 1) and hidden.groups == 1
                and hidden.padding_mode == "zeros" and isinstance(hidden.padding, tuple)
                and 2 * hidden.padding[0] == hidden.kernel_size[0] - 1
                and 2 * hidden.padding[1] == hidden.kernel_size[1] - 1
                and out.kernel_size == (1, 1) and out.stride == (1, 1) and out.padding == (0, 0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_eval(self, x)
        pad_h, pad_w = self.hidden.padding
        padded = F.pad(x, (pad_w, pad_w, pad_h, pad_h))
        batch, _, height, width = x.shape
        out = torch.empty(batch, self.out.out_channels, height, width, dtype=x.dtype, device=x.device,
                          memory_format=torch.channels_last)
        rows_per_band = max(1, HEAD_PIXELS_PER_BAND // (batch * width))
        for first in range(0, height, rows_per_band):
            last = min(first + rows_per_band, height)
            hidden = F.conv2d(padded[:, :, first:last + 2 * pad_h], self.hidden.weight, self.hidden.bias)
            out[:, :, first:last] = self.out(hidden.relu_())
        return out


# ---------------------------------------------------------------------------- memory format
class ChannelsLast(nn.Module):
    """Runs `module` on a channels_last copy of its (4-D) input."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x.contiguous(memory_format=torch.channels_last))
