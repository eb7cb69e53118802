"""The detector, composed from parts: every variant of the registry is a `Detector`.

    clip (B, 3, T=5, H, W), index 0 = current frame
      |-- static branch:   static_backbone(clip[:, :, 0]) -> static_neck -> maps at strides 1, 2, 4, ...
      |-- temporal branch: temporal_branch(clip) [+ motion on its deepest map] -> strides 1, 2, 4
      |   (where both exist they are summed per stride)
      |-- neck (fusion IDAUp, 3 levels -> 16 ch at stride 1), or, without a neck, the finest map
      `-- heads -> {'hm': (B,1,H,W), 'wh': (B,2,H,W), 'reg': (B,2,H,W)}

Parts are registered under the reference's attribute names (`base`, `dla_up`, `base3d`,
`ida_up`, `hm`, `wh`, `reg`; the motion module lives in the temporal branch as
`base3d.Motion`), so a state dict has the reference checkpoint's keys.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from .layout import to_channels_last
from .temporal import TemporalBranch


class Detector(nn.Module):
    """A CenterNet-style detector of moving objects made of optional parts.

    Args:
        static_backbone: image backbone run on the current frame (DLA-34), or None.
        static_neck: DLAUp over the backbone's levels; required with `static_backbone`.
        temporal_branch: 3-D branch over the whole clip, or None.
        motion: motion module added to the temporal branch's deepest features, or None.
        neck: fusion IDAUp over the first `len(neck.channels)` maps, or None (heads then see
            the finest map, stride 1).
        head: mapping of head name -> module; each head sees the 16-channel stride-1 map.
        motion_at_test: run `motion` in eval mode too (the reference runs it in training only).
    """

    num_frames = 5
    in_channels = 3
    size_divisor = 16

    def __init__(self, static_backbone: nn.Module | None = None, static_neck: nn.Module | None = None,
                 temporal_branch: TemporalBranch | None = None, motion: nn.Module | None = None,
                 neck: nn.Module | None = None, head: Mapping[str, nn.Module] | None = None,
                 motion_at_test: bool = False):
        super().__init__()
        if static_backbone is None and temporal_branch is None:
            raise ValueError("a Detector needs a static backbone, a temporal branch, or both")
        if (static_backbone is None) != (static_neck is None):
            raise ValueError("static_backbone and static_neck go together (both or neither)")
        if motion is not None and temporal_branch is None:
            raise ValueError("the motion module is attached to the temporal branch; pass one")
        if not head:
            raise ValueError("a Detector needs at least one head")
        self.base = static_backbone
        self.dla_up = static_neck
        self.base3d = temporal_branch
        if motion is not None:
            temporal_branch.attach_motion(motion, at_test=motion_at_test)
        self.ida_up = neck
        self.head_names = tuple(head)
        for name, module in head.items():
            self.add_module(name, module)
        # Filled by the registry: the variant name and the options that rebuild this model.
        self.variant: str | None = None
        self.config: dict = {}

    # ------------------------------------------------------------------ introspection
    @property
    def motion(self) -> nn.Module | None:
        return None if self.base3d is None else self.base3d.Motion

    @property
    def motion_at_test(self) -> bool:
        return self.motion is not None and self.base3d.motion_at_test

    def parts_unused_at_inference(self) -> list[nn.Module]:
        """Modules with parameters that an eval-mode forward never runs."""
        if self.motion is not None and not self.motion_at_test:
            return [self.motion]
        return []

    # ------------------------------------------------------------------ forward
    def check_input(self, clip: torch.Tensor) -> None:
        expected = f"(B, {self.in_channels}, {self.num_frames}, H, W)"
        layout = ("batch, BGR channels, frames (index 0 = current frame t, index k = frame t-k), "
                  "height, width")
        shape = tuple(clip.shape)
        if clip.dim() != 5:
            raise ValueError(
                f"the detector expects a clip of shape {expected} ({layout}); found a {clip.dim()}-D "
                f"tensor of shape {shape}. Fix: stack the {self.num_frames} frames on dim 2 "
                "(torch.stack(frames, dim=2)) and add the batch dim (clip[None]) for a single clip.")
        if clip.shape[1] != self.in_channels:
            raise ValueError(
                f"the detector expects {self.in_channels} channels on dim 1 of {expected}; found "
                f"{clip.shape[1]} in shape {shape}. Fix: a (B, T, C, H, W) tensor needs "
                "clip.transpose(1, 2); grey frames must be repeated to 3 channels.")
        if clip.shape[2] != self.num_frames:
            raise ValueError(
                f"the detector expects T={self.num_frames} frames on dim 2 of {expected}; found "
                f"T={clip.shape[2]} in shape {shape}. Fix: sample frames t, t-1, ..., "
                f"t-{self.num_frames - 1} (clamped to the first frame of the video).")
        height, width = clip.shape[-2:]
        if height % self.size_divisor or width % self.size_divisor:
            raise ValueError(
                f"the detector expects H and W divisible by {self.size_divisor} (the backbone's "
                f"deepest stride); found H={height}, W={width}. Fix: pad or crop the frames to a "
                f"multiple of {self.size_divisor} (e.g. 512 or 1024), or use tiled inference.")

    def forward(self, clip: torch.Tensor) -> dict[str, torch.Tensor]:
        self.check_input(clip)
        levels = None
        if self.base is not None:
            levels = self.dla_up(self.base(to_channels_last(clip[:, :, 0])))
        if self.base3d is not None:
            temporal = self.base3d(clip)
            levels = temporal if levels is None else [s + t for s, t in zip(levels, temporal)]
        if self.ida_up is not None:
            features = self.ida_up(levels[:len(self.ida_up.channels)])[-1]
        else:
            features = levels[0]
        return {name: getattr(self, name)(features) for name in self.head_names}
