"""DroneCrowd localisation AP (L-mAP), as the VID toolkit's ``calcAccuracy.m`` computes it.

Inputs are points: ``detections[video][frame]`` N x 3 [x, y, score] and
``ground_truth[video][frame]`` M x 2 [x, y]. The toolkit's ground truth is the centre of each
``anno`` box as annotated, (x1 + x2) / 2, never clipped to the frame (``evalRes.m`` line 55);
a unified dataset keeps those centres for the boxes its converter clipped
(:meth:`micml.data.unified.Video.frame_points`).

For every distance threshold thr in 1..25 px:

* per frame, detections in descending score order each take the nearest unmatched GT point
  with distance <= thr (inclusive; see :func:`micml.evaluation.matching.greedy_point_matches`);
* all detections of all sequences are pooled and ranked by score; P = TP/max(1, TP+FP),
  R = TP/max(1, #GT);
* AP is the all-point VOC AP (``VOCap.m``: precision made monotone, summed over the recall
  steps, with sentinels recall 0 -> precision 0 and recall 1 -> precision 0).

L-mAP is the mean of AP@1..25. Results are fractions (the toolkit prints percentages).

Equal scores keep their order, twice, as MATLAB's sort is stable also when descending:
within a frame, detections of equal score are matched in the order they were given
(``evalRes.m`` line 49, ``sort(..., 'descend')``), and in the pooled ranking equal scores stay
in sequence / frame / matching order (``calcAccuracy.m`` line 26, ``sort(-score)``). The order
decides which of them takes a GT point and where the true positives fall in the ranking, so it
moves AP. (The unofficial Python port reverses equal scores within a frame and ranks with
numpy's unstable quicksort, so its AP differs from the toolkit's wherever scores tie.)

Toolkit behaviours kept by default, each with a switch:

* ``toolkit_clamp``: the toolkit turns a point into the box [x-10, y-10, 20, 20, score] and
  clamps that row at 0 before taking the box centre back, so a detection closer than
  10 px to the left or top border is moved to 10 px, and a negative score becomes 0.
* ``count_gt_without_detections=False``: a sequence with no detection in any frame is
  skipped entirely, so its GT points are not counted as missed.

Only frames with at least one GT point are evaluated (the toolkit iterates the frame
numbers present in the annotation rows); detections on other frames are ignored.
"""

from __future__ import annotations

from typing import Hashable, Iterable, Mapping

import numpy as np
import pandas as pd

from micml.evaluation.dsfnet import (
    EvaluationInputError,
    as_box_array,
    default_score_thresholds,
    warn_about_unmatched_videos,
)
from micml.evaluation.matching import greedy_point_matches, point_distances

LMAP_THRESHOLDS = tuple(range(1, 26))
REPORTED_THRESHOLDS = (10, 15, 20)
# Half the side of the 20 x 20 box the toolkit builds around each detected point.
TOOLKIT_HALF_BOX = 10.0

Points = Mapping[Hashable, Mapping[int, np.ndarray]]


def voc_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """All-point interpolated AP (VOC 2010+), the toolkit's ``VOCap``."""
    recall_steps = np.concatenate(([0.0], recall, [1.0]))
    envelope = np.concatenate(([0.0], precision, [0.0]))
    envelope = np.maximum.accumulate(envelope[::-1])[::-1]
    changed = np.flatnonzero(recall_steps[1:] != recall_steps[:-1]) + 1
    return float(np.sum((recall_steps[changed] - recall_steps[changed - 1]) * envelope[changed]))


def toolkit_points(detections: np.ndarray) -> np.ndarray:
    """Apply the toolkit's clamp of [x-10, y-10, w, h, score] at 0 to [x, y, score] rows."""
    clamped = detections.astype(float, copy=True)
    clamped[:, :2] = np.maximum(clamped[:, :2] - TOOLKIT_HALF_BOX, 0.0) + TOOLKIT_HALF_BOX
    clamped[:, 2] = np.maximum(clamped[:, 2], 0.0)
    return clamped


def match_all_frames(
    detections: Points,
    ground_truth: Points,
    thresholds: np.ndarray,
    toolkit_clamp: bool,
    count_gt_without_detections: bool,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Scores (in pooling order), T x N match flags and the number of GT points counted."""
    warn_about_unmatched_videos(detections, ground_truth)
    scores, flags, n_gt = [], [], 0
    for video, gt_frames in ground_truth.items():
        det_frames = {
            frame: as_box_array(rows, 3, f"video {video!r} frame {frame} detections")
            for frame, rows in detections.get(video, {}).items()
        }
        if not count_gt_without_detections and not any(len(rows) for rows in det_frames.values()):
            continue
        for frame in sorted(gt_frames):
            gt = as_box_array(gt_frames[frame], 2, f"video {video!r} frame {frame} ground truth")
            if len(gt) == 0:
                continue
            dets = det_frames.get(frame, np.zeros((0, 3)))
            if toolkit_clamp:
                dets = toolkit_points(dets)
            order = np.argsort(-dets[:, 2], kind="stable")
            dets = dets[order]
            flags.append(greedy_point_matches(point_distances(dets[:, :2], gt[:, :2]), thresholds))
            scores.append(dets[:, 2])
            n_gt += len(gt)
    if not flags:
        return np.zeros(0), np.zeros((len(thresholds), 0), bool), n_gt
    return np.concatenate(scores), np.concatenate(flags, axis=1), n_gt


def ranked_recall_precision(scores: np.ndarray, is_match: np.ndarray, n_gt: int):
    """Cumulative R and P over detections ranked by descending score (stable on ties, as the toolkit)."""
    rank = np.argsort(-scores, kind="stable")
    true_positives = np.cumsum(is_match[rank])
    false_positives = np.cumsum(~is_match[rank])
    precision = true_positives / np.maximum(1, true_positives + false_positives)
    recall = true_positives / max(1, n_gt)
    return recall, precision


def dronecrowd_lmap(
    detections: Points,
    ground_truth: Points,
    thresholds: Iterable[float] = LMAP_THRESHOLDS,
    toolkit_clamp: bool = True,
    count_gt_without_detections: bool = False,
) -> dict[str, float]:
    """L-mAP (mean AP over ``thresholds``) plus ``AP@<thr>`` for every threshold evaluated.

    With the default thresholds 1..25 the dict holds ``L-mAP``, ``AP@1`` ... ``AP@25`` (so
    ``AP@10``, ``AP@15``, ``AP@20`` as the toolkit reports), all fractions in [0, 1].
    """
    thresholds = np.asarray(list(thresholds), dtype=float)
    if thresholds.size == 0:
        raise EvaluationInputError("dronecrowd_lmap: no distance threshold given")
    scores, flags, n_gt = match_all_frames(
        detections, ground_truth, thresholds, toolkit_clamp, count_gt_without_detections
    )
    aps = [voc_ap(*ranked_recall_precision(scores, flags[index], n_gt)) for index in range(thresholds.size)]
    result = {"L-mAP": float(np.mean(aps))}
    for threshold, ap in zip(thresholds, aps):
        result[f"AP@{threshold:g}"] = ap
    return result


def pr_curve_points(
    detections: Points,
    ground_truth: Points,
    max_distance: float = 10.0,
    score_thresholds: Iterable[float] | None = None,
    toolkit_clamp: bool = True,
    count_gt_without_detections: bool = False,
) -> pd.DataFrame:
    """Pooled P/R/F1 of the DroneCrowd matching at one distance, over score thresholds.

    Greedy matching by descending score is prefix-stable (a detection's match depends only
    on higher-scored ones), so matching once with every detection and counting those with
    score > t gives exactly what matching only those would. P and R are the toolkit's
    (pooled over all sequences), F1 = 2PR/(P+R), 0 when both are 0.
    """
    thresholds = np.asarray(
        default_score_thresholds() if score_thresholds is None else list(score_thresholds), dtype=float
    )
    scores, flags, n_gt = match_all_frames(
        detections, ground_truth, np.array([max_distance], float), toolkit_clamp, count_gt_without_detections
    )
    kept = scores[None, :] > thresholds[:, None]
    tp = (kept & flags[0][None, :]).sum(axis=1)
    fp = kept.sum(axis=1) - tp
    precision = tp / np.maximum(1, tp + fp)
    recall = tp / max(1, n_gt)
    denominator = precision + recall
    f1 = np.divide(2 * precision * recall, denominator, out=np.zeros_like(denominator), where=denominator > 0)
    return pd.DataFrame(
        {
            "score_threshold": thresholds,
            "tp": tp,
            "fp": fp,
            "fn": n_gt - tp,
            "precision": precision,
            "recall": recall,
            "f1": f1,
        }
    )
