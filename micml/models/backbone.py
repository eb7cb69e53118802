"""DLA-34, the static ("vision") backbone, levels 0-4.

The network is the Deep Layer Aggregation backbone (Yu et al., CVPR 2018) as the reference
MICML/DSFNet code builds it (MICML:lib/models/MICML.py:39-316, see reference/MICML_SPEC.md §2.3):

    base_layer  7x7 conv 3->16, stride 1          -> 16 x H    x W
    level0      3x3 conv 16->16                   -> 16 x H    x W
    level1      3x3 conv 16->32, stride 2         -> 32 x H/2  x W/2
    level2      tree of depth 1, 32->64, /2       -> 64 x H/4  x W/4
    level3      tree of depth 2, 64->128, /2      -> 128 x H/8 x W/8
    level4      tree of depth 2, 128->256, /2     -> 256 x H/16 x W/16

The reference also constructs `level5` (256->512) and, when it loads ImageNet weights, an `fc`
classifier; neither is ever executed. They are not built here (9,563,112 parameters saved), and
`load_imagenet_weights` accepts and ignores their keys. Module attribute names follow the
reference so that state_dict keys (`base_layer.0.weight`, `level3.tree1.root.conv.weight`, ...)
are identical.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch
from torch import nn

BN_MOMENTUM = 0.1

#: Channels of base_layer/level0 ... level4 (level5 would be 512).
DLA34_CHANNELS = (16, 32, 64, 128, 256)
#: Depth of the aggregation tree at level2 ... level4.
DLA34_TREE_DEPTHS = (1, 2, 2)
#: Keys of a reference-layout DLA-34 file that belong to parts never executed.
UNUSED_PREFIXES = ("level5.", "fc.")


def _conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> nn.Sequential:
    """Conv (no bias) + BN + ReLU; indices 0/1/2 give the reference's keys."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride,
                  padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels, momentum=BN_MOMENTUM),
        nn.ReLU(inplace=True),
    )


class ResidualBlock(nn.Module):
    """Two 3x3 conv+BN with an identity (or supplied) shortcut: the DLA "basic block"."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels, momentum=BN_MOMENTUM)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels, momentum=BN_MOMENTUM)

    def forward(self, x: torch.Tensor, shortcut: torch.Tensor | None = None) -> torch.Tensor:
        if shortcut is None:
            shortcut = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + shortcut)


class AggregationNode(nn.Module):
    """1x1 conv + BN + ReLU over the channel concatenation of its inputs (DLA "root")."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1, stride=1, padding=0, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, momentum=BN_MOMENTUM)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(torch.cat(inputs, dim=1))))


class AggregationTree(nn.Module):
    """Hierarchical deep aggregation tree of `depth` levels of residual blocks.

    A depth-1 tree runs two blocks and merges [block2, block1, *carried] with an
    AggregationNode. A depth-d tree chains two depth-(d-1) trees; the second one receives the
    outputs to aggregate (`carried`) and does the merge. With `level_root` the (down-sampled)
    input of the tree is also carried to the merge.

    `root_channels` is the number of channels entering the merge node (what the DLA paper
    calls the root dimension); it is computed exactly as in the reference so that the weights
    of the ImageNet file fit.
    """

    def __init__(self, depth: int, in_channels: int, out_channels: int, stride: int = 1,
                 level_root: bool = False, root_channels: int = 0):
        super().__init__()
        if root_channels == 0:
            root_channels = 2 * out_channels
        if level_root:
            root_channels += in_channels
        if depth == 1:
            self.tree1 = ResidualBlock(in_channels, out_channels, stride)
            self.tree2 = ResidualBlock(out_channels, out_channels, 1)
            self.root = AggregationNode(root_channels, out_channels)
        else:
            self.tree1 = AggregationTree(depth - 1, in_channels, out_channels, stride)
            self.tree2 = AggregationTree(depth - 1, out_channels, out_channels,
                                         root_channels=root_channels + out_channels)
        self.depth = depth
        self.level_root = level_root
        self.downsample = nn.MaxPool2d(stride, stride=stride) if stride > 1 else None
        # The shortcut of the first block when the width changes. A depth>1 tree also owns one
        # (its weights are in every DLA-34 file and are counted in the reference's parameter
        # totals) but its result would be discarded: the inner depth-1 tree computes its own
        # shortcut. We never evaluate it there, and freeze it so that training code (DDP in
        # particular) does not wait for gradients that cannot exist.
        self.project = None
        if in_channels != out_channels:
            self.project = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=1, bias=False),
                nn.BatchNorm2d(out_channels, momentum=BN_MOMENTUM),
            )
            if depth > 1:
                self.project.requires_grad_(False)

    def forward(self, x: torch.Tensor, carried: list[torch.Tensor] | None = None) -> torch.Tensor:
        carried = [] if carried is None else carried
        bottom = self.downsample(x) if self.downsample is not None else x
        if self.level_root:
            carried.append(bottom)
        if self.depth == 1:
            shortcut = self.project(bottom) if self.project is not None else bottom
            x1 = self.tree1(x, shortcut)
            x2 = self.tree2(x1)
            return self.root(x2, x1, *carried)
        x1 = self.tree1(x)
        carried.append(x1)
        return self.tree2(x1, carried)


class DLA34(nn.Module):
    """DLA-34 levels 0-4; `forward` returns the five level outputs, finest first."""

    channels = DLA34_CHANNELS

    def __init__(self):
        super().__init__()
        c = DLA34_CHANNELS
        self.base_layer = _conv_bn_relu(3, c[0], 7)
        self.level0 = _conv_bn_relu(c[0], c[0], 3)
        self.level1 = _conv_bn_relu(c[0], c[1], 3, stride=2)
        self.level2 = AggregationTree(DLA34_TREE_DEPTHS[0], c[1], c[2], stride=2, level_root=False)
        self.level3 = AggregationTree(DLA34_TREE_DEPTHS[1], c[2], c[3], stride=2, level_root=True)
        self.level4 = AggregationTree(DLA34_TREE_DEPTHS[2], c[3], c[4], stride=2, level_root=True)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.base_layer(x)
        features = []
        for level in (self.level0, self.level1, self.level2, self.level3, self.level4):
            x = level(x)
            features.append(x)
        return features


def _extract_state_dict(obj) -> Mapping[str, torch.Tensor]:
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise TypeError(f"expected a state dict (a mapping of names to tensors), found {type(obj).__name__}")
    return obj


def load_imagenet_weights(backbone: DLA34, path: str | os.PathLike) -> list[str]:
    """Load a local DLA-34 ImageNet file (reference layout, e.g. `dla34-ba72cf86.pth`).

    Accepted key layouts: the original file (`base_layer.*`, `level0.*` ... `level5.*`,
    `fc.*`), or the same keys prefixed by `base.` / `module.base.` (a reference detector
    checkpoint). `level5.*` and `fc.*` are ignored; every other weight of levels 0-4 must be
    present with the right shape. BatchNorm `num_batches_tracked` counters may be absent
    (files saved before PyTorch 0.4.1 lack them). Nothing is downloaded.

    Returns the list of ignored keys.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"DLA-34 ImageNet weights not found: {path!r}. Expected a local file in the reference "
            "layout (e.g. dla34-ba72cf86.pth with keys base_layer.*, level0.* ... level5.*, fc.*); "
            "nothing is downloaded. Fix: copy the file to that path, or pass pretrained=None to "
            "start from random weights.")
    raw = _extract_state_dict(torch.load(path, map_location="cpu", weights_only=True))

    weights: dict[str, torch.Tensor] = {}
    ignored: list[str] = []
    for key, value in raw.items():
        name = key
        for prefix in ("module.", "base."):
            if name.startswith(prefix):
                name = name[len(prefix):]
        if name.startswith(UNUSED_PREFIXES):
            ignored.append(key)
        else:
            weights[name] = value

    expected = backbone.state_dict()
    unexpected = sorted(set(weights) - set(expected))
    missing = sorted(k for k in set(expected) - set(weights) if not k.endswith("num_batches_tracked"))
    wrong_shape = sorted(k for k in set(weights) & set(expected) if weights[k].shape != expected[k].shape)
    if unexpected or missing or wrong_shape:
        def show(keys):
            return ", ".join(keys[:5]) + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else "")
        problems = []
        if missing:
            problems.append(f"missing {len(missing)} keys: {show(missing)}")
        if unexpected:
            problems.append(f"{len(unexpected)} unknown keys: {show(unexpected)}")
        if wrong_shape:
            problems.append(f"{len(wrong_shape)} keys with a different shape: {show(wrong_shape)}")
        raise ValueError(
            f"{path!r} is not a DLA-34 state dict in the reference layout: " + "; ".join(problems)
            + ". Expected keys like base_layer.0.weight, level3.tree1.root.conv.weight "
            "(optionally prefixed by 'base.'). Fix: pass the original dla34-ba72cf86.pth file.")
    backbone.load_state_dict(weights, strict=False)
    return ignored
