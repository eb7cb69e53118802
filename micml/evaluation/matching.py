"""Per-frame matching rules shared by the evaluation protocols.

Two families, each written to give the same pairs as the evaluator it stands for:

* Hungarian, one-to-one (DSFNet / MICML / HiEUM ``eval_metric.update``): the assignment is
  optimal over *all* detection-GT pairs (IoU maximised, or clipped centre distance
  minimised) and only afterwards are pairs beyond the threshold discarded. This is not the
  same as a maximum-cardinality matching of the valid pairs: with IoUs A-G1 = 0.5,
  A-G2 = 0.1, B-G1 = 0.1, B-G2 = 0 the optimum is {A-G1, B-G2}, one true positive, although
  two pairs overlap. We keep that rule because it is what the published numbers used.
* Greedy by score (DroneCrowd VID toolkit ``evalRes.m``): detections, highest score first,
  take the nearest still unmatched GT point within the distance threshold.

Arithmetic is left in the dtypes of the inputs (no cast to float64 here): the reference
feeds float32 detections read from .mat files and integer GT boxes parsed from xml, and
numpy's promotion then decides the rounding. Doing the same operations on the same dtypes
gives bit-identical matrices and therefore the same assignments, ties included.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy.optimize import linear_sum_assignment

# Added to the IoU denominator by the reference (utils_eval.py iou_batch); it also keeps a
# pair of zero-area boxes at IoU 0 instead of 0/0.
IOU_EPS = 1e-7

# The reference replaces centre distances beyond the threshold by threshold + 10 before the
# assignment, so far pairs all cost the same and never look attractive.
FAR_PAIR_PENALTY = 10.0


class Matching(NamedTuple):
    """Pairs counted as true positives: ``det_index[k]`` matches ``gt_index[k]``."""

    det_index: np.ndarray
    gt_index: np.ndarray

    @property
    def count(self) -> int:
        return int(self.det_index.size)


NO_MATCH = Matching(np.zeros(0, np.intp), np.zeros(0, np.intp))


def box_iou(det_boxes: np.ndarray, gt_boxes: np.ndarray) -> np.ndarray:
    """IoU matrix (N x M) of [x1, y1, x2, y2] boxes, continuous coordinates (no "+1")."""
    det = det_boxes[:, None, :4]
    gt = gt_boxes[None, :, :4]
    inter_w = np.maximum(0.0, np.minimum(det[..., 2], gt[..., 2]) - np.maximum(det[..., 0], gt[..., 0]))
    inter_h = np.maximum(0.0, np.minimum(det[..., 3], gt[..., 3]) - np.maximum(det[..., 1], gt[..., 1]))
    inter = inter_w * inter_h
    det_area = (det[..., 2] - det[..., 0]) * (det[..., 3] - det[..., 1])
    gt_area = (gt[..., 2] - gt[..., 0]) * (gt[..., 3] - gt[..., 1])
    return inter / (det_area + gt_area - inter + IOU_EPS)


def box_centres(boxes: np.ndarray) -> np.ndarray:
    return (boxes[:, :2] + boxes[:, 2:4]) / 2


def point_distances(det_points: np.ndarray, gt_points: np.ndarray) -> np.ndarray:
    """Euclidean distance matrix (N x M) between two sets of 2-D points."""
    return np.sqrt(np.sum((det_points[:, None, :2] - gt_points[None, :, :2]) ** 2, axis=-1))


def centre_distances(det_boxes: np.ndarray, gt_boxes: np.ndarray) -> np.ndarray:
    """Distance matrix (N x M) between the centres of [x1, y1, x2, y2] boxes."""
    return point_distances(box_centres(det_boxes), box_centres(gt_boxes))


def assign_by_iou(iou: np.ndarray, iou_threshold: float) -> Matching:
    """Hungarian assignment maximising the summed IoU; a pair counts when IoU > threshold.

    With threshold 0 any positive overlap, however thin, is a match; boxes that only touch
    have IoU 0 and are not.
    """
    if min(iou.shape) == 0:
        return NO_MATCH
    # scipy maximises by negating the matrix; doing it here keeps the call identical to the
    # reference's fallback path (it uses lap.lapjv only when that package is installed).
    rows, cols = linear_sum_assignment(-iou)
    valid = iou[rows, cols] > iou_threshold
    return Matching(rows[valid], cols[valid])


def assign_by_distance(distances: np.ndarray, max_distance: float) -> Matching:
    """Hungarian assignment on clipped centre distances; a pair counts when distance < max.

    Distances above ``max_distance`` are replaced by ``max_distance + 10`` before the
    assignment; a distance of exactly ``max_distance`` is kept as is but is not a match.
    """
    if min(distances.shape) == 0:
        return NO_MATCH
    cost = np.where(distances > max_distance, max_distance + FAR_PAIR_PENALTY, distances)
    rows, cols = linear_sum_assignment(cost)
    valid = cost[rows, cols] < max_distance
    return Matching(rows[valid], cols[valid])


def match_boxes_by_iou(det_boxes: np.ndarray, gt_boxes: np.ndarray, iou_threshold: float = 0.0) -> Matching:
    if len(det_boxes) == 0 or len(gt_boxes) == 0:
        return NO_MATCH
    return assign_by_iou(box_iou(det_boxes, gt_boxes), iou_threshold)


def match_boxes_by_centre_distance(
    det_boxes: np.ndarray, gt_boxes: np.ndarray, max_distance: float = 5.0
) -> Matching:
    if len(det_boxes) == 0 or len(gt_boxes) == 0:
        return NO_MATCH
    return assign_by_distance(centre_distances(det_boxes, gt_boxes), max_distance)


def greedy_point_matches(distances: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Greedy matching of the DroneCrowd toolkit, for several distance thresholds at once.

    ``distances`` is N x M with detections already in processing order (highest score
    first). Each detection takes the nearest GT point not yet taken with distance <= thr;
    among equally near points the one listed last wins, as in the toolkit's scan (it
    accepts a candidate unless it is strictly farther than the best so far). Returns a
    T x N boolean array: whether detection n is a true positive at threshold t.
    """
    thresholds = np.asarray(thresholds, dtype=float)
    n_det, n_gt = distances.shape
    is_match = np.zeros((thresholds.size, n_det), dtype=bool)
    if n_det == 0 or n_gt == 0:
        return is_match
    gt_taken = np.zeros((thresholds.size, n_gt), dtype=bool)
    limits = thresholds[:, None]
    # Detections with no GT point within the largest threshold can never match: skip them.
    for det in np.flatnonzero(distances.min(axis=1) <= thresholds.max()):
        row = distances[det][None, :]
        allowed = ~gt_taken & (row <= limits)
        hit = np.flatnonzero(allowed.any(axis=1))
        if hit.size == 0:
            continue
        masked = np.where(allowed[hit], row, np.inf)
        # argmin returns the first minimum; searching the reversed row gives the last one.
        last_nearest = n_gt - 1 - np.argmin(masked[:, ::-1], axis=1)
        gt_taken[hit, last_nearest] = True
        is_match[hit, det] = True
    return is_match
