"""Parameter counting."""

from __future__ import annotations

from torch import nn


def count_parameters(model: nn.Module, inference_only: bool = True) -> int:
    """Number of parameters (shared tensors counted once).

    With `inference_only`, parameters of parts that an eval-mode forward never runs are left
    out (the motion module of `micml`; reported by `model.parts_unused_at_inference()`). This is
    the convention of reference/MICML_SPEC.md §2.7, where `micml` and `dsfnet` both count
    7,546,319. As there, the two 1x1 shortcut projections owned by DLA-34's level3/level4 trees
    (whose result the network discards) are counted.
    """
    if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
        model = model.module
    params = {id(p): p for p in model.parameters()}
    if inference_only and hasattr(model, "parts_unused_at_inference"):
        for part in model.parts_unused_at_inference():
            for p in part.parameters():
                params.pop(id(p), None)
    return sum(p.numel() for p in params.values())
