"""Load checkpoints written by the reference code (MICML / DSFNet) into our models.

Our state_dict keys are the reference's own (same attribute names), so the conversion is small:

* a `module.` prefix (DataParallel / DDP) is removed;
* `base.level5.*` and `base.fc.*` are dropped: the reference builds (and the ImageNet load fills)
  DLA-34's level 5 and classifier, which never run, and we do not build them;
* `base3d.Motion.*` is dropped when the target model has no motion module (e.g. loading a MICML
  checkpoint into `dsfnet`, which is what MICML deploys);
* `cell_list2.*` (the reference's second registration of the same ConvLSTM cells) is kept; if
  only one of `cell_list.*` / `cell_list2.*` is present it is copied to the other.

The reference checkpoint is `{'epoch', 'state_dict', 'optimizer'?}` (reference/MICML_SPEC.md
§3.4); a bare state dict is accepted too.

`micml.checkpoint.convert_reference_checkpoint` (the command `micml convert-checkpoint SRC DST
--model NAME`) writes one as a micml checkpoint, so that `micml test` and `micml detect` use it.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Mapping

import torch
from torch import nn

from micml.checkpoint import read_reference_file

UNUSED_BACKBONE_PREFIXES = ("base.level5.", "base.fc.")
MOTION_PREFIX = "base3d.Motion."
_CELLS, _CELLS_ALIAS = "base3d.Motion.cell_list.", "base3d.Motion.cell_list2."


def convert_reference_state_dict(state_dict: Mapping[str, torch.Tensor], *,
                                 keep_motion: bool = True) -> OrderedDict:
    """Reference-code keys -> this project's keys (see the module docstring)."""
    converted: OrderedDict[str, torch.Tensor] = OrderedDict()
    for key, value in state_dict.items():
        if key.startswith("module."):
            key = key[len("module."):]
        if key.startswith(UNUSED_BACKBONE_PREFIXES):
            continue
        if not keep_motion and key.startswith(MOTION_PREFIX):
            continue
        converted[key] = value
    for source, target in ((_CELLS, _CELLS_ALIAS), (_CELLS_ALIAS, _CELLS)):
        for key in [k for k in converted if k.startswith(source)]:
            converted.setdefault(target + key[len(source):], converted[key])
    return converted


def read_reference_checkpoint(source: str | os.PathLike | Mapping) -> Mapping[str, torch.Tensor]:
    """The state dict inside a reference checkpoint file (or mapping)."""
    if isinstance(source, (str, os.PathLike)):
        source = read_reference_file(source)
    if isinstance(source, Mapping) and isinstance(source.get("state_dict"), Mapping):
        source = source["state_dict"]
    if not isinstance(source, Mapping):
        raise TypeError(f"expected a checkpoint dict or a state dict, found {type(source).__name__}")
    return source


def load_reference_checkpoint(model: nn.Module, source: str | os.PathLike | Mapping,
                              strict: bool = True):
    """Load a reference checkpoint (path, checkpoint dict or state dict) into `model`.

    Motion keys are dropped when `model` has no motion module. With `strict` (default) any
    other missing or unexpected key is an error. Returns `load_state_dict`'s result.
    """
    state_dict = read_reference_checkpoint(source)
    has_motion = getattr(model, "motion", None) is not None
    return model.load_state_dict(convert_reference_state_dict(state_dict, keep_motion=has_motion),
                                 strict=strict)
