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
are identical; they are also timm's (`timm.create_model("dla34")`: the same 186 names and
shapes, without the two dead level3/level4 `project` shortcuts), so timm's ImageNet weights
(`timm/dla34.in1k`) load as they are.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

log = logging.getLogger(__name__)

BN_MOMENTUM = 0.1

#: Channels of base_layer/level0 ... level4 (level5 would be 512).
DLA34_CHANNELS = (16, 32, 64, 128, 256)
#: Depth of the aggregation tree at level2 ... level4.
DLA34_TREE_DEPTHS = (1, 2, 2)
#: Keys of a DLA-34 ImageNet file that belong to parts never executed (and not built here).
UNUSED_PREFIXES = ("level5.", "fc.")
#: Our keys a timm file lacks: the shortcuts of the depth-2 trees, built (the reference builds
#: them) but never executed (see AggregationTree), so they keep their initial values.
DEAD_PROJECT_PREFIXES = ("level3.project.", "level4.project.")
#: Prefixes of a backbone saved inside a detector (reference `base.`, DataParallel `module.`).
WRAPPER_PREFIXES = ("module.", "base.")


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


class PretrainedWeightsError(ValueError):
    """A backbone weights file that cannot be used; the one-line message names the file and the fix."""


@dataclass(frozen=True)
class LoadReport:
    """What loading a backbone file skipped, all of it expected: file keys of parts not built
    here (level5, fc), and our keys the file lacks (dead shortcuts, BatchNorm counters)."""

    skipped: tuple[str, ...]
    kept_initial: tuple[str, ...]


def read_weights(path: str | os.PathLike) -> Mapping[str, torch.Tensor]:
    """The tensors of a `.safetensors` file, or of a `.pth`/`.pt` file read with
    `torch.load(weights_only=True)` (a `{'state_dict': ...}` checkpoint is unwrapped)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"DLA-34 ImageNet weights not found: {path!r}. Expected a local .safetensors or .pth file of "
            "timm's dla34 (timm/dla34.in1k model.safetensors) or the reference's dla34-ba72cf86.pth; nothing "
            "is downloaded here. Fix: place the file at that path (the workflow's backbone_weights rule does "
            "it for training.pretrained: imagenet), or pass pretrained=None to start from random weights.")
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file  # only for this format

            state = load_file(path, device="cpu")
        else:
            # weights_only=True: tensors and plain values only; a shared file never runs code.
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # each format raises its own types for damaged or foreign files
        first_line = (str(error).splitlines() or [""])[0][:200]
        raise PretrainedWeightsError(
            f"{path!r}: cannot be read as a weights file ({type(error).__name__}: {first_line}); it is truncated, "
            "damaged or not a .safetensors/.pth weights file: download or copy it again") from None
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        found = type(state).__name__ if not isinstance(state, Mapping) else "a mapping with non-tensor values"
        raise PretrainedWeightsError(f"{path!r}: expected a state dict (names -> tensors), found {found}; "
                                     "give timm's dla34 weights or the reference's DLA-34 ImageNet file")
    return state


def backbone_key(name: str) -> str:
    """Our key for a file's key: wrapper prefixes removed (timm's and the reference's names are ours)."""
    for prefix in WRAPPER_PREFIXES:
        if name.startswith(prefix):
            name = name[len(prefix):]
    return name


def load_imagenet_weights(backbone: DLA34, path: str | os.PathLike) -> LoadReport:
    """Load a local DLA-34 ImageNet file into `backbone`: timm's dla34 (`.safetensors` or `.pth`),
    the reference's `dla34-ba72cf86.pth`, or either saved inside a detector (`base.`/`module.base.`).

    Every weight of levels 0-4 must be present with our shape, except the dead level3/level4
    `project` shortcuts (timm lacks them) and BatchNorm `num_batches_tracked` counters (files
    saved before PyTorch 0.4.1 lack them); `level5.*` and `fc.*` are skipped. What was skipped is
    logged and returned. Anything else (a missing or unknown key, another shape) is a one-line
    PretrainedWeightsError. Nothing is downloaded.
    """
    path = os.fspath(path)
    weights: dict[str, torch.Tensor] = {}
    skipped: list[str] = []
    for key, value in read_weights(path).items():
        name = backbone_key(key)
        if name.startswith(UNUSED_PREFIXES):
            skipped.append(key)
        else:
            weights[name] = value

    expected = backbone.state_dict()
    absent = sorted(set(expected) - set(weights))
    kept_initial = [k for k in absent if k.endswith("num_batches_tracked") or k.startswith(DEAD_PROJECT_PREFIXES)]
    _refuse_mismatch(path, expected, weights, missing=sorted(set(absent) - set(kept_initial)))
    backbone.load_state_dict(weights, strict=False)
    report = LoadReport(tuple(skipped), tuple(kept_initial))
    log.info("%s: loaded %d backbone tensors; skipped %d of the file's keys (level5, fc: never executed)%s; "
             "%d of ours not in the file kept their initial values (%s)", path, len(weights), len(skipped),
             _listed(skipped), len(kept_initial), _listed(kept_initial) or "none")
    return report


def _refuse_mismatch(path: str, expected: Mapping[str, torch.Tensor], weights: Mapping[str, torch.Tensor],
                     missing: list[str]) -> None:
    unknown = sorted(set(weights) - set(expected))
    wrong_shape = [f"{k} {tuple(weights[k].shape)} vs {tuple(expected[k].shape)}"
                   for k in sorted(set(weights) & set(expected)) if weights[k].shape != expected[k].shape]
    problems = [f"{what} {len(keys)} keys: {_listed(keys)}" for what, keys in
                (("missing", missing), ("unknown", unknown), ("of another shape (file vs model)", wrong_shape)) if keys]
    if problems:
        raise PretrainedWeightsError(
            f"{path!r} is not a DLA-34 backbone file in timm's or the reference's layout: " + "; ".join(problems)
            + ". Expected keys like base_layer.0.weight, level3.tree1.root.conv.weight (optionally prefixed by "
            "'base.'). Fix: give timm's dla34 weights (timm/dla34.in1k) or the reference's dla34-ba72cf86.pth.")


def _listed(keys: list[str], shown: int = 5) -> str:
    return ", ".join(keys[:shown]) + (f" (+{len(keys) - shown} more)" if len(keys) > shown else "")
