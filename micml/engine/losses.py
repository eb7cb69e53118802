"""CenterNet detection loss: focal(hm) + 0.1 L1(wh) + 1 L1(reg) (reference ctdet.py, spec 3.3).

The model output is never modified: the reference replaced `output['hm']` by its sigmoid in
place, so validation applied a second sigmoid to it (spec 3.2).
"""

from __future__ import annotations

import torch
from torch import nn

PROBABILITY_CLAMP = 1e-4
LOSS_WEIGHTS = {"hm": 1.0, "wh": 0.1, "reg": 1.0}


def heatmap_probability(logits: torch.Tensor) -> torch.Tensor:
    """sigmoid clamped to [1e-4, 1 - 1e-4], as the reference's `_sigmoid` (keeps log finite)."""
    return torch.sigmoid(logits.float()).clamp(PROBABILITY_CLAMP, 1 - PROBABILITY_CLAMP)


def focal_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float = 2.0, beta: float = 4.0) -> torch.Tensor:
    """Penalty-reduced pixel focal loss (CornerNet/CenterNet), normalised by the positive pixels.

    Positives are pixels whose target is exactly 1. With no positive in the batch the negative
    term is returned unnormalised, as the reference does (dividing by max(N_pos, 1) is the same).
    """
    p = heatmap_probability(logits)
    target = target.float()
    positive = target.eq(1).float()
    negative_weight = torch.pow(1 - target, beta) * (1 - positive)
    positive_term = torch.log(p) * torch.pow(1 - p, alpha) * positive
    negative_term = torch.log(1 - p) * torch.pow(p, alpha) * negative_weight
    n_positive = positive.sum().clamp(min=1)
    return -(positive_term.sum() + negative_term.sum()) / n_positive


def gather_at(feature: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Values of a (B, C, H, W) map at flat pixel indices (B, K) -> (B, K, C)."""
    batch, channels = feature.shape[:2]
    flat = feature.reshape(batch, channels, -1)
    return flat.gather(2, index.unsqueeze(1).expand(-1, channels, -1)).transpose(1, 2)


def reg_l1_loss(prediction: torch.Tensor, mask: torch.Tensor, index: torch.Tensor,
                target: torch.Tensor) -> torch.Tensor:
    """Mean absolute error per coordinate over the filled slots (reference RegL1Loss)."""
    predicted = gather_at(prediction.float(), index)
    weight = mask.float().unsqueeze(2).expand_as(predicted)
    return (torch.abs(predicted - target.float()) * weight).sum() / (weight.sum() + 1e-4)


class CenterNetLoss(nn.Module):
    """Maps (model output, batch) to {'hm', 'wh', 'reg', 'total'} (unweighted parts, weighted total)."""

    def __init__(self, weights: dict[str, float] | None = None):
        super().__init__()
        self.weights = dict(LOSS_WEIGHTS if weights is None else weights)

    def forward(self, output: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        parts = {
            "hm": focal_loss(output["hm"], batch["hm"]),
            "wh": reg_l1_loss(output["wh"], batch["reg_mask"], batch["ind"], batch["wh"]),
            "reg": reg_l1_loss(output["reg"], batch["reg_mask"], batch["ind"], batch["reg"]),
        }
        parts["total"] = sum(self.weights[name] * value for name, value in parts.items())
        return parts
