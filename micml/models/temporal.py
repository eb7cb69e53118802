"""The temporal ("dynamic") branch of DSFNet/MICML: factorised 3-D convolutions over the clip.

(reference/MICML_SPEC.md §2.3; attribute names are the reference's `base3d.*` keys.)

    clip (B, 3, T=5, H, W)
    branch1: W-conv (1,1,5), H-conv (1,5,1), T-conv (3,1,1), 3 -> 16     -> tap 0: 16 x H   x W
    spatial max-pool /2
    branch2: kernels 3, 16 -> 32                                        -> tap 1: 32 x H/2 x W/2
    spatial max-pool /2
    branch3: kernels 3, 32 -> 64    [+ motion module, see below]        -> tap 2: 64 x H/4 x W/4
    dla_up: DLAUp([16, 32, 64], [1, 2, 4]) -> [16 x H x W, 32 x H/2 x W/2, 64 x H/4 x W/4]

A *tap* is a temporal max-pool of kernel and stride 3, which for T = 5 keeps the maximum over
temporal indices 0..2 (frames t, t-1, t-2) and drops the time axis.

Motion hook: when a motion module is attached (`attach_motion`), the branch-3 features
`x (B, 64, T, h, w)` become `x + motion(x)` before tap 2 — in training mode only (as in the
reference), or also in eval mode when attached with `at_test=True`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from . import layout
from .necks import DLAUp


class Conv3dBNReLU(nn.Module):
    """Conv3d (no bias) -> BatchNorm3d(eps 1e-3, momentum 0.1) -> ReLU. Keys `conv.*`, `bn.*`.

    The convolution runs through `layout.conv3d` (channels-last, framewise on CPU).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: tuple[int, int, int],
                 padding: tuple[int, int, int]):
        super().__init__()
        self.conv = nn.Conv3d(in_channels, out_channels, kernel_size, stride=1, padding=padding, bias=False)
        self.bn = nn.BatchNorm3d(out_channels, eps=1e-3, momentum=0.1)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(layout.conv3d(self.conv, x)))


def factorised_conv3d(in_channels: int, out_channels: int, spatial_kernel: int) -> nn.Sequential:
    """W-conv, then H-conv (both `spatial_kernel` wide), then a 3-tap T-conv; sizes preserved."""
    k, p = spatial_kernel, spatial_kernel // 2
    return nn.Sequential(
        Conv3dBNReLU(in_channels, out_channels, (1, 1, k), (0, 0, p)),
        Conv3dBNReLU(out_channels, out_channels, (1, k, 1), (0, p, 0)),
        Conv3dBNReLU(out_channels, out_channels, (3, 1, 1), (1, 0, 0)),
    )


class TemporalBranch(nn.Module):
    """Factorised 3-D conv branch with temporal max-pool taps and its own DLAUp."""

    def __init__(self, in_channels: int = 3, channels: Sequence[int] = (16, 32, 64)):
        super().__init__()
        c = tuple(int(v) for v in channels)
        if len(c) != 3:
            raise ValueError(f"the temporal branch has 3 stages, got channels={list(channels)}")
        self.channels = c
        self.branch1 = factorised_conv3d(in_channels, c[0], 5)
        self.branch2 = factorised_conv3d(c[0], c[1], 3)
        self.branch3 = factorised_conv3d(c[1], c[2], 3)
        self.spatial_pool = nn.MaxPool3d((1, 2, 2))
        self.temporal_pool = nn.MaxPool3d((3, 1, 1))
        self.dla_up = DLAUp(c, [1, 2, 4])
        # The motion hook: filled by `attach_motion`; the attribute name gives the reference's
        # `base3d.Motion.*` keys.
        self.register_module("Motion", None)
        self.motion_at_test = False

    def attach_motion(self, motion: nn.Module, at_test: bool = False) -> None:
        """Add `motion` to the deepest features: in training, and in eval too if `at_test`."""
        self.Motion = motion
        self.motion_at_test = bool(at_test)

    @property
    def motion_active(self) -> bool:
        return self.Motion is not None and (self.training or self.motion_at_test)

    def tap(self, x: torch.Tensor) -> torch.Tensor:
        """Temporal max-pool (kernel = stride = 3) and drop the time axis."""
        pooled = self.temporal_pool(x)
        if pooled.shape[2] != 1:
            raise ValueError(f"the temporal tap expects T in 3..5 frames, got T={x.shape[2]}")
        return pooled[:, :, 0]

    def add_motion(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, C, T, h, w) -> x + motion, or x unchanged when the motion module is inactive."""
        if not self.motion_active:
            return x
        return x + self.Motion(x.transpose(1, 2)).transpose(1, 2)

    def forward(self, clip: torch.Tensor) -> list[torch.Tensor]:
        x = self.branch1(clip)
        taps = [self.tap(x)]
        x = self.branch2(self.spatial_pool(x))
        taps.append(self.tap(x))
        x = self.branch3(self.spatial_pool(x))
        x = self.add_motion(x)
        taps.append(self.tap(x))
        return self.dla_up(taps)
