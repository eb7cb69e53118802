"""CenterNet heads: centre heat-map (`hm`), box size (`wh`) and sub-pixel offset (`reg`).

Each head is Conv2d(in -> head_conv, 3x3, bias) -> ReLU -> Conv2d(head_conv -> C, 1x1, bias)
(keys `<name>.0.*`, `<name>.2.*`), or a single 1x1 conv when `head_conv == 0`.
Initialisation as in the reference (reference/MICML_SPEC.md §2.6): the heat-map's last bias is
-2.19 (sigmoid(-2.19) ~ 0.1, the focal-loss prior); every conv bias of the other heads is 0;
all weights keep PyTorch's default initialisation.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import nn

#: Output channels of each head (one object class).
HEAD_OUTPUTS = {"hm": 1, "wh": 2, "reg": 2}
HEATMAP_PRIOR_BIAS = -2.19


def centernet_head(in_channels: int, out_channels: int, head_conv: int = 128,
                   heatmap: bool = False) -> nn.Module:
    """One head; `heatmap=True` applies the -2.19 prior bias, otherwise all conv biases are 0."""
    if head_conv > 0:
        head = nn.Sequential(
            nn.Conv2d(in_channels, head_conv, 3, padding=1, bias=True),
            nn.ReLU(inplace=True),
            nn.Conv2d(head_conv, out_channels, 1, stride=1, padding=0, bias=True),
        )
        last = head[-1]
    else:
        head = last = nn.Conv2d(in_channels, out_channels, 1, stride=1, padding=0, bias=True)
    if heatmap:
        nn.init.constant_(last.bias, HEATMAP_PRIOR_BIAS)
    else:
        for module in head.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.zeros_(module.bias)
    return head


def centernet_heads(in_channels: int = 16, head_conv: int = 128,
                    outputs: Mapping[str, int] = HEAD_OUTPUTS) -> nn.ModuleDict:
    """All heads by name, in the reference's order (hm, wh, reg)."""
    if head_conv < 0:
        raise ValueError(f"head_conv must be >= 0 (0 = a single 1x1 conv), got {head_conv}")
    return nn.ModuleDict({
        name: centernet_head(in_channels, channels, head_conv, heatmap=(name == "hm"))
        for name, channels in outputs.items()
    })
