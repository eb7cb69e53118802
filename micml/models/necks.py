"""Up-sampling necks: iterative (IDA) and deep layer aggregation (DLA) with deformable convs.

These are the necks of CenterNet/DSFNet/MICML (reference/MICML_SPEC.md §2.4). Attribute names
(`actf`, `conv`, `proj_i`, `up_i`, `node_i`, `ida_k`) are the reference's so that state_dict
keys are identical.

    DeformConvBlock(cin, cout) = modulated deformable 3x3 conv -> BN -> ReLU
    IDAUp(o, channels, factors): for every input i >= 1 (coarser than input 0)
        x_i <- node_i( up_i( proj_i(x_i) ) + x_{i-1} )         (x_{i-1} already updated)
    DLAUp(channels, scales): one IDAUp per stage, from the deepest pair upwards; returns one
        map per input resolution, finest first.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from micml.ops import ModulatedDeformConv2d

BN_MOMENTUM = 0.1


class DeformConvBlock(nn.Module):
    """Modulated deformable 3x3 conv (with bias) followed by BN and ReLU.

    Keys: `actf.0.*` (the BN; `actf` is BN + ReLU) and `conv.weight`, `conv.bias`,
    `conv.conv_offset_mask.*` (the deformable conv). `actf` is registered first, as in the
    reference, so that the key order is the same too.
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.actf = nn.Sequential(
            nn.BatchNorm2d(out_channels, momentum=BN_MOMENTUM),
            nn.ReLU(inplace=True),
        )
        self.conv = ModulatedDeformConv2d(in_channels, out_channels, kernel_size=3, stride=1,
                                          padding=1, dilation=1, deformable_groups=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.actf(self.conv(x))


def bilinear_upsampling_kernel(kernel_size: int) -> torch.Tensor:
    """Separable bilinear interpolation kernel (k x k) for a transposed conv of stride k // 2.

    With f = ceil(k / 2) and centre c = (2f - 1 - f % 2) / (2f) (in units of f), entry (i, j)
    is (1 - |i/f - c|) * (1 - |j/f - c|). For k = 4: [0.25, 0.75, 0.75, 0.25] outer itself.
    """
    f = math.ceil(kernel_size / 2)
    centre = (2 * f - 1 - f % 2) / (2.0 * f)
    profile = torch.tensor([1 - abs(i / f - centre) for i in range(kernel_size)], dtype=torch.float32)
    return profile[:, None] * profile[None, :]


def bilinear_upsampler(channels: int, factor: int) -> nn.ConvTranspose2d:
    """Depthwise transposed conv that up-samples by `factor`, initialised bilinear, trainable."""
    up = nn.ConvTranspose2d(channels, channels, kernel_size=2 * factor, stride=factor,
                            padding=factor // 2, output_padding=0, groups=channels, bias=False)
    with torch.no_grad():
        up.weight.copy_(bilinear_upsampling_kernel(2 * factor).expand_as(up.weight))
    return up


class IDAUp(nn.Module):
    """Iterative deep aggregation of `len(channels)` maps into `out_channels` channels.

    Input i has `channels[i]` channels and is `factors[i]` times coarser than input i - 1
    (factors[0] is ignored: input 0 is the anchor, it is neither projected nor up-sampled).
    """

    def __init__(self, out_channels: int, channels: Sequence[int], factors: Sequence[int]):
        super().__init__()
        if len(channels) != len(factors) or len(channels) < 2:
            raise ValueError(f"IDAUp needs >= 2 inputs and one factor per input, got channels="
                             f"{list(channels)} factors={list(factors)}")
        self.out_channels = out_channels
        self.channels = tuple(int(c) for c in channels)
        self.factors = tuple(int(f) for f in factors)
        for i in range(1, len(channels)):
            setattr(self, f"proj_{i}", DeformConvBlock(self.channels[i], out_channels))
            setattr(self, f"up_{i}", bilinear_upsampler(out_channels, self.factors[i]))
            setattr(self, f"node_{i}", DeformConvBlock(out_channels, out_channels))

    def forward(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Return a new list: entry 0 unchanged, entry i >= 1 aggregated at entry 0's resolution."""
        if len(features) != len(self.channels):
            raise ValueError(f"IDAUp built for {len(self.channels)} inputs got {len(features)}")
        out = list(features)
        for i in range(1, len(out)):
            projected = getattr(self, f"proj_{i}")(out[i])
            upsampled = getattr(self, f"up_{i}")(projected)
            out[i] = getattr(self, f"node_{i}")(upsampled + out[i - 1])
        return out


def dla_up_stage_plan(channels: Sequence[int], scales: Sequence[int]) -> list[dict]:
    """Channel/factor bookkeeping of DLAUp, stage by stage (reference/MICML_SPEC.md §2.4).

    Stage k aggregates the inputs from index j = n - 2 - k to n - 1 into `channels[j]` channels.
    Entries deeper than j were already brought to `channels[j + 1]` channels at the resolution
    of entry j + 1 by stage k - 1, so stage k sees channels [c_j, c_{j+1}, ..., c_{j+1}] and
    up-sampling factors [1, s_{j+1}/s_j, ..., s_{j+1}/s_j].

    For DLA-34 ([16, 32, 64, 128, 256], scales [1, 2, 4, 8, 16]):
        ida_0: 128 on [128, 256]; ida_1: 64 on [64, 128, 128];
        ida_2: 32 on [32, 64, 64, 64]; ida_3: 16 on [16, 32, 32, 32, 32]; factors 2 everywhere.
    """
    n = len(channels)
    if len(scales) != n:
        raise ValueError(f"one scale per level expected, got channels={list(channels)} scales={list(scales)}")
    plan = []
    for k in range(n - 1):
        j = n - 2 - k
        tail = n - 1 - j
        in_channels = [channels[j]] + [channels[j + 1]] * tail
        factor = scales[j + 1] // scales[j]
        plan.append({"start": j, "out_channels": channels[j], "in_channels": in_channels,
                     "factors": [1] + [factor] * tail})
    return plan


class DLAUp(nn.Module):
    """Deep layer aggregation up-sampling over maps of strides `scales` (finest first).

    `forward` returns one map per input, finest first: entry i has `channels[i]` channels at
    the resolution of input i. The last entry is the deepest input itself, unchanged.
    """

    def __init__(self, channels: Sequence[int], scales: Sequence[int]):
        super().__init__()
        self.channels = tuple(int(c) for c in channels)
        self.plan = dla_up_stage_plan(self.channels, [int(s) for s in scales])
        for k, stage in enumerate(self.plan):
            setattr(self, f"ida_{k}", IDAUp(stage["out_channels"], stage["in_channels"], stage["factors"]))

    def forward(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        if len(features) != len(self.channels):
            raise ValueError(f"DLAUp built for {len(self.channels)} inputs got {len(features)}")
        layers = list(features)
        outputs = [layers[-1]]
        for k, stage in enumerate(self.plan):
            start = stage["start"]
            layers[start:] = getattr(self, f"ida_{k}")(layers[start:])
            outputs.insert(0, layers[-1])
        return outputs
