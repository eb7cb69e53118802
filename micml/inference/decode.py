"""CenterNet decoding of the stride-1 heads into boxes (MICML_SPEC.md 5.2, steps 1-3).

1. scores = sigmoid(hm); a pixel is a peak when it equals the maximum of its 3x3 neighbourhood.
2. the K highest peaks per image (the reference's K is 100: the callers never pass `opt.K`).
3. centre = integer peak position + reg (no +0.5), box = centre -+ wh/2, score = peak value.

One difference from the reference: when an image has fewer than K peaks, the reference pads its
K rows with zero-score non-peak pixels; we return only real peaks. Real heatmaps have thousands
of local maxima, so this never changes a reference-sized output, but it keeps tiled decoding (which
masks pixels outside a tile's core) free of filler rows.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch
import torch.nn.functional as F

REFERENCE_TOP_K = 100
NOT_A_PEAK = -1.0  # below every sigmoid score, so top-k prefers any peak to a masked pixel


def peak_scores(hm_logits: torch.Tensor, allowed: torch.Tensor | None = None) -> torch.Tensor:
    """(B, 1, H, W) heatmap logits -> (B, H*W) scores: the sigmoid where the pixel is a 3x3 local
    maximum (and `allowed`, a mask broadcastable to (B, 1, H, W)), NOT_A_PEAK elsewhere."""
    heat = hm_logits.float().sigmoid()
    is_peak = F.max_pool2d(heat, kernel_size=3, stride=1, padding=1) == heat
    if allowed is not None:
        is_peak = is_peak & allowed
    return torch.where(is_peak, heat, torch.full_like(heat, NOT_A_PEAK)).flatten(1)


def top_k_boxes(scores: torch.Tensor, wh: torch.Tensor, reg: torch.Tensor, k: int) -> torch.Tensor:
    """The k best of (B, H*W) `scores` as (B, k', 5) [x1, y1, x2, y2, score], k' = min(k, H*W),
    in descending score; rows scored NOT_A_PEAK are filler the caller drops."""
    width = wh.shape[-1]
    best, index = scores.topk(min(k, scores.shape[1]), dim=1)

    def at_peaks(head: torch.Tensor) -> torch.Tensor:  # (B, 2, H, W) -> (B, 2, k')
        return head.float().flatten(2).gather(2, index.unsqueeze(1).expand(-1, head.shape[1], -1))

    size, offset = at_peaks(wh), at_peaks(reg)
    centre_x = (index % width).float() + offset[:, 0]
    centre_y = torch.div(index, width, rounding_mode="floor").float() + offset[:, 1]
    half_w, half_h = size[:, 0] / 2, size[:, 1] / 2
    return torch.stack([centre_x - half_w, centre_y - half_h, centre_x + half_w, centre_y + half_h, best], dim=2)


def decode_batch(outputs: Mapping[str, torch.Tensor], k: int = REFERENCE_TOP_K,
                 allowed: torch.Tensor | None = None) -> torch.Tensor:
    """Heads {'hm', 'wh', 'reg'} of a batch -> (B, k', 5), filler rows scored NOT_A_PEAK."""
    return top_k_boxes(peak_scores(outputs["hm"], allowed), outputs["wh"], outputs["reg"], k)


def real_rows(detections: torch.Tensor) -> torch.Tensor:
    """Drop the filler rows of one image's (k', 5) detections."""
    return detections[detections[:, 4] > NOT_A_PEAK]


def decode(outputs: Mapping[str, torch.Tensor], k: int = REFERENCE_TOP_K) -> list[np.ndarray]:
    """Per image of the batch: N x 5 float32 [x1, y1, x2, y2, score] in input pixels, N <= k,
    in descending score."""
    batch = decode_batch(outputs, k).cpu()
    return [real_rows(image).numpy().astype(np.float32) for image in batch]
