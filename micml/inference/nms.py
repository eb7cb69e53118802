"""Gaussian soft-NMS as the reference applies it after decoding (MICML_SPEC.md 5.2).

The reference runs CenterNet's Cython `soft_nms` (lib/external/nms.pyx, method=2, sigma=0.5,
threshold=0.001): repeatedly take the highest-scoring remaining box, then multiply the score of
every remaining box that overlaps it by exp(-IoU^2 / sigma) and discard those that fall below the
threshold. IoU uses the "+1" pixel convention: a box [x1, y1, x2, y2] covers x2 - x1 + 1 pixels.

Two choices differ from what the reference *does*, on purpose:
- The reference ignores the returned `keep` list and uses the array as modified in place, so its
  output ends with stale copies of discarded rows. We return only the kept rows, in selection
  order (which is also descending final score), so every row is a real detection.
- Only the inner loop is vectorised: the greedy order makes soft-NMS sequential in the number of
  kept boxes, but boxes never move, so all IoUs are computed once as one N x N matrix.

As in the reference, a box is discarded only when a selected box *overlaps* it and pulls its score
under the threshold; a box that starts below the threshold and overlaps nothing is kept.
"""

from __future__ import annotations

import numpy as np

SOFT_NMS_SIGMA = 0.5
SOFT_NMS_DISCARD_BELOW = 0.001


def iou_plus_one(boxes: np.ndarray, others: np.ndarray | None = None) -> np.ndarray:
    """IoU matrix between N x 4+ and M x 4+ boxes with the reference's +1 pixel convention.

    Computed in float32 in the reference's order of operations, so that scores decayed here
    equal the reference's to the last bit in ordinary cases.
    """
    others = boxes if others is None else others
    a = np.asarray(boxes, np.float32)[:, None, :4]
    b = np.asarray(others, np.float32)[None, :, :4]
    one = np.float32(1)
    inter_w = np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]) + one
    inter_h = np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]) + one
    # The reference computes an overlap only where both sides are positive; elsewhere it is 0.
    overlapping = (inter_w > 0) & (inter_h > 0)
    inter = inter_w * inter_h
    area_a = (a[..., 2] - a[..., 0] + one) * (a[..., 3] - a[..., 1] + one)
    area_b = (b[..., 2] - b[..., 0] + one) * (b[..., 3] - b[..., 1] + one)
    union = area_a + area_b - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(overlapping, inter / union, np.float32(0)).astype(np.float32)


def gaussian_weight(iou: np.ndarray, sigma: float) -> np.ndarray:
    """exp(-iou^2 / sigma): the square and division in float32, the exp in float64 (as np.exp on
    a C float in the reference), stored back as float32."""
    exponent = -(iou * iou) / np.float32(sigma)
    return np.exp(exponent.astype(np.float64)).astype(np.float32)


def soft_nms_gaussian(detections: np.ndarray, sigma: float = SOFT_NMS_SIGMA,
                      discard_below: float = SOFT_NMS_DISCARD_BELOW) -> np.ndarray:
    """Soft-NMS of N x 5 [x1, y1, x2, y2, score]; returns the kept rows with decayed scores,
    ordered by selection (descending score), as float32."""
    detections = np.asarray(detections, dtype=np.float32).reshape(-1, 5)
    n = len(detections)
    if n == 0:
        return detections.copy()
    overlap = iou_plus_one(detections)
    scores = detections[:, 4].copy()
    remaining = np.ones(n, dtype=bool)
    order = []
    while remaining.any():
        candidates = np.flatnonzero(remaining)
        best = candidates[np.argmax(scores[candidates])]  # ties: lowest input index
        order.append(best)
        remaining[best] = False
        others = np.flatnonzero(remaining)
        ious = overlap[best, others]
        scores[others] = gaussian_weight(ious, sigma) * scores[others]
        pulled_under = (ious > 0) & (scores[others] < np.float32(discard_below))
        remaining[others[pulled_under]] = False
    kept = detections[order]
    kept[:, 4] = scores[order]
    return kept
