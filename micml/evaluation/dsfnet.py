"""The P/R/F1 protocol of DSFNet and MICML (``evaluation.py``), and HiEUM's distance variant.

Definitions, as in the reference evaluator:

* Per frame, detections with score > ``score_threshold`` (strict) are kept. The comparison
  is done in the dtype of the detection array: a float32 score of 0.3 read from a .mat file
  is dropped at threshold 0.3, as in the reference, although it exceeds 0.3 in float64.
* Matching is one-to-one and Hungarian (see :mod:`micml.evaluation.matching`):
  ``dsfnet_f1`` on IoU (a match when IoU > ``iou_threshold``; MICML uses 0, i.e. any
  overlap; DSFNet reported 0.05/0.1/0.2), ``centre_distance`` on box centres (a match when
  the distance is < ``max_distance``; HiEUM uses 5 px).
* TP = matches, FP = kept detections - TP, FN = GT - TP, summed over the frames of a video.
  P = TP/(TP+FP+1e-7), R = TP/(TP+FN+1e-7), F1 = 2PR/(P+R+1e-7).
* The ``mean`` row is the unweighted mean over videos of P, R and F1 separately (so its F1
  is not the F1 of its P and R); its tp/fp/fn are the sums.

Which frames count: the frames listed in ``ground_truth[video]``, because the reference
walks the GT xml files and opens the detection file of each. List frames without objects
as empty (0, 4) arrays, or the false positives on them are not counted. Detections on
frames or videos that have no GT entry are never looked at (a warning names such videos).
A video whose GT has no frames at all scores P = R = F1 = 0 and still enters the mean, as
a video folder without xml files does in the reference.

The reference's confidence filter applies a mask built from *sorted* scores to the
*unsorted* rows; that is only correct for rows already in descending score order (which
soft-NMS output is). We filter the rows by their own scores.
"""

from __future__ import annotations

import warnings
from typing import Callable, Hashable, Iterable, Mapping

import numpy as np
import pandas as pd

from micml.evaluation.matching import (
    Matching,
    assign_by_distance,
    assign_by_iou,
    box_iou,
    centre_distances,
)

# The reference adds this to every denominator of P, R and F1 (utils_eval.py get_result).
RATIO_EPS = 1e-7
COLUMNS = ("tp", "fp", "fn", "precision", "recall", "f1")
MEAN_ROW = "mean"

Detections = Mapping[Hashable, Mapping[int, np.ndarray]]
GroundTruth = Mapping[Hashable, Mapping[int, np.ndarray]]
# (detection boxes, GT boxes) -> pair scores; (pair scores) -> matched pairs
PairScores = Callable[[np.ndarray, np.ndarray], np.ndarray]
Assign = Callable[[np.ndarray], Matching]


class EvaluationInputError(ValueError):
    """Detections or ground truth that do not have the documented shape."""


# --- input checks ---------------------------------------------------------------------------


def as_box_array(array, columns: int, what: str) -> np.ndarray:
    """Return ``array`` as an N x ``columns`` numeric array, keeping its dtype."""
    boxes = np.asarray(array)
    if boxes.size == 0:
        return np.zeros((0, columns), boxes.dtype if boxes.dtype.kind in "fiu" else np.float64)
    if boxes.ndim != 2 or boxes.shape[1] < columns or boxes.dtype.kind not in "fiu":
        raise EvaluationInputError(
            f"{what}: expected a numeric N x {columns} array, got shape {boxes.shape} "
            f"dtype {boxes.dtype}"
        )
    finite = np.isfinite(boxes[:, :columns]).all(axis=1)
    if not finite.all():
        row = int(np.flatnonzero(~finite)[0])
        raise EvaluationInputError(
            f"{what}: row {row} holds a NaN or infinite value {boxes[row, :columns].tolist()}; "
            "fix the file that produced it (a NaN box would otherwise count as a miss or vanish)"
        )
    return boxes


def keep_mask(detections: np.ndarray, score_threshold: float) -> np.ndarray:
    """Score (column 4) > threshold, compared in the array's own float dtype like numpy does
    in the reference (float32 scores against a Python float stay float32)."""
    scores = detections[:, 4]
    dtype = scores.dtype if scores.dtype.kind == "f" else np.float64
    return scores > np.asarray(score_threshold, dtype=dtype)


def keep_confident(detections: np.ndarray, score_threshold: float) -> np.ndarray:
    return detections[keep_mask(detections, score_threshold)]


def warn_about_unmatched_videos(detections: Detections, ground_truth: GroundTruth) -> None:
    extra = [video for video in detections if video not in ground_truth]
    if extra:
        warnings.warn(
            f"detections for videos {sorted(map(str, extra))} have no ground truth and are "
            "ignored; check that video names agree (e.g. '002' vs 2)",
            stacklevel=3,
        )


# --- counts to ratios -----------------------------------------------------------------------


def precision_recall_f1(tp, fp, fn):
    """P, R, F1 with the reference's epsilons; works on scalars and arrays alike."""
    precision = tp / (tp + fp + RATIO_EPS)
    recall = tp / (tp + fn + RATIO_EPS)
    f1 = 2 * recall * precision / (recall + precision + RATIO_EPS)
    return precision, recall, f1


def results_table(counts: Mapping[Hashable, tuple[int, int, int]]) -> pd.DataFrame:
    """Per-video rows plus the ``mean`` row from per-video (tp, fp, fn)."""
    if not counts:
        raise EvaluationInputError("ground truth holds no video: nothing to evaluate")
    table = pd.DataFrame.from_dict(counts, orient="index", columns=["tp", "fp", "fn"]).astype(np.int64)
    table["precision"], table["recall"], table["f1"] = precision_recall_f1(
        table["tp"].to_numpy(), table["fp"].to_numpy(), table["fn"].to_numpy()
    )
    mean = table[["precision", "recall", "f1"]].mean(axis=0)
    totals = table[["tp", "fp", "fn"]].sum(axis=0)
    table.loc[MEAN_ROW] = pd.concat([totals, mean])
    table.index.name = "video"
    return table.astype({"tp": np.int64, "fp": np.int64, "fn": np.int64})[list(COLUMNS)]


# --- the evaluator --------------------------------------------------------------------------


class MatchCountEvaluator:
    """Accumulates TP/FP/FN per video, frame by frame; ``summarize`` gives the table.

    ``pair_scores`` builds the detection x GT matrix (IoU or centre distance) and
    ``assign`` turns it into matched pairs. Use :func:`iou_evaluator` or
    :func:`centre_distance_evaluator` rather than building one by hand.
    """

    def __init__(self, pair_scores: PairScores, assign: Assign, score_threshold: float = 0.3):
        self.pair_scores = pair_scores
        self.assign = assign
        self.score_threshold = score_threshold
        self.reset()

    def reset(self) -> None:
        self._counts: dict[Hashable, list[int]] = {}
        self._seen_frames: set[tuple[Hashable, int]] = set()

    def add_video(self, video: Hashable) -> None:
        """Make ``video`` part of the table even if none of its frames is processed."""
        self._counts.setdefault(video, [0, 0, 0])

    def process(self, video: Hashable, frame: int, detections, ground_truth) -> Matching:
        """Match one frame: detections N x 5 [x1,y1,x2,y2,score], GT M x 4 [x1,y1,x2,y2]."""
        if (video, frame) in self._seen_frames:
            raise EvaluationInputError(f"video {video!r} frame {frame}: processed twice")
        self._seen_frames.add((video, frame))
        where = f"video {video!r} frame {frame}"
        gt = as_box_array(ground_truth, 4, f"{where} ground truth")
        kept = keep_confident(as_box_array(detections, 5, f"{where} detections"), self.score_threshold)
        matching = self.match_frame(kept, gt)
        counts = self._counts.setdefault(video, [0, 0, 0])
        counts[0] += matching.count
        counts[1] += len(kept) - matching.count
        counts[2] += len(gt) - matching.count
        return matching

    def match_frame(self, kept: np.ndarray, gt: np.ndarray) -> Matching:
        if len(kept) == 0 or len(gt) == 0:
            return Matching(np.zeros(0, np.intp), np.zeros(0, np.intp))
        return self.assign(self.pair_scores(kept, gt))

    def counts(self) -> dict[Hashable, tuple[int, int, int]]:
        return {video: tuple(values) for video, values in self._counts.items()}

    def summarize(self) -> pd.DataFrame:
        return results_table(self.counts())


def iou_evaluator(iou_threshold: float = 0.0, score_threshold: float = 0.3) -> MatchCountEvaluator:
    return MatchCountEvaluator(box_iou, lambda iou: assign_by_iou(iou, iou_threshold), score_threshold)


def centre_distance_evaluator(max_distance: float = 5.0, score_threshold: float = 0.3) -> MatchCountEvaluator:
    return MatchCountEvaluator(
        centre_distances, lambda dist: assign_by_distance(dist, max_distance), score_threshold
    )


def evaluate_all(
    evaluator: MatchCountEvaluator, detections: Detections, ground_truth: GroundTruth
) -> pd.DataFrame:
    """Run ``evaluator`` over every GT frame; a frame missing from ``detections`` has none."""
    warn_about_unmatched_videos(detections, ground_truth)
    evaluator.reset()
    empty = np.zeros((0, 5))
    for video, gt_frames in ground_truth.items():
        evaluator.add_video(video)
        det_frames = detections.get(video, {})
        for frame, gt in gt_frames.items():
            evaluator.process(video, frame, det_frames.get(frame, empty), gt)
    return evaluator.summarize()


def dsfnet_f1(
    detections: Detections,
    ground_truth: GroundTruth,
    iou_threshold: float = 0.0,
    score_threshold: float = 0.3,
) -> pd.DataFrame:
    """P/R/F1 of DSFNet/MICML's ``evaluation.py`` (IoU mode), one row per video plus ``mean``.

    ``detections[video][frame]``: N x 5 [x1, y1, x2, y2, score]; ``ground_truth[video][frame]``:
    M x 4 [x1, y1, x2, y2]. Returns columns tp, fp, fn, precision, recall, f1 (fractions).
    """
    return evaluate_all(iou_evaluator(iou_threshold, score_threshold), detections, ground_truth)


def centre_distance(
    detections: Detections,
    ground_truth: GroundTruth,
    max_distance: float = 5.0,
    score_threshold: float = 0.3,
) -> pd.DataFrame:
    """The same table with HiEUM's rule (the reference's 'dis' mode): centres < 5 px apart."""
    return evaluate_all(centre_distance_evaluator(max_distance, score_threshold), detections, ground_truth)


# --- precision-recall curves ----------------------------------------------------------------


def default_score_thresholds() -> np.ndarray:
    """0.00, 0.05, ..., 0.95 as exact two-decimal floats (so 0.3 is the float 0.3)."""
    return np.round(np.arange(20) * 0.05, 2)


def frame_true_positives(
    detections: np.ndarray,
    gt: np.ndarray,
    thresholds: np.ndarray,
    pair_scores: PairScores,
    assign: Assign,
) -> tuple[np.ndarray, np.ndarray]:
    """(TP, kept) per score threshold for one frame, each equal to a fresh evaluation.

    A Hungarian matching of a smaller detection set is not a restriction of the matching of
    a larger one, so every distinct kept set is matched again. The pair matrix is built
    once and its rows are selected in their original order, which keeps scipy's choice
    among equal optima identical to the one ``dsfnet_f1`` makes at that threshold.
    """
    kept_masks = [keep_mask(detections, threshold) for threshold in thresholds]
    kept = np.array([int(mask.sum()) for mask in kept_masks], dtype=np.int64)
    true_positives = np.zeros(len(thresholds), dtype=np.int64)
    if len(gt) == 0 or kept.max(initial=0) == 0:
        return true_positives, kept
    scores = pair_scores(detections, gt)
    by_kept_count: dict[int, int] = {}
    for index, mask in enumerate(kept_masks):
        count = int(kept[index])
        if count == 0:
            continue
        if count not in by_kept_count:
            by_kept_count[count] = assign(scores[mask]).count
        true_positives[index] = by_kept_count[count]
    return true_positives, kept


def pr_curve(
    detections: Detections,
    ground_truth: GroundTruth,
    pair_scores: PairScores,
    assign: Assign,
    score_thresholds: Iterable[float] | None = None,
) -> pd.DataFrame:
    """One row per score threshold: pooled tp/fp/fn and the video-mean P, R, F1.

    Each row equals the ``mean`` row that the table function gives at that threshold.
    """
    thresholds = np.asarray(
        default_score_thresholds() if score_thresholds is None else list(score_thresholds), dtype=float
    )
    warn_about_unmatched_videos(detections, ground_truth)
    if not ground_truth:
        raise EvaluationInputError("ground truth holds no video: nothing to evaluate")
    per_video = []
    for video, gt_frames in ground_truth.items():
        det_frames = detections.get(video, {})
        tp = np.zeros(len(thresholds), np.int64)
        kept = np.zeros(len(thresholds), np.int64)
        n_gt = 0
        for frame, gt_array in gt_frames.items():
            where = f"video {video!r} frame {frame}"
            gt = as_box_array(gt_array, 4, f"{where} ground truth")
            dets = as_box_array(det_frames.get(frame, np.zeros((0, 5))), 5, f"{where} detections")
            frame_tp, frame_kept = frame_true_positives(dets, gt, thresholds, pair_scores, assign)
            tp += frame_tp
            kept += frame_kept
            n_gt += len(gt)
        per_video.append((tp, kept - tp, n_gt - tp))
    tp, fp, fn = (np.stack(column) for column in zip(*per_video))  # each videos x thresholds
    precision, recall, f1 = precision_recall_f1(tp, fp, fn)
    return pd.DataFrame(
        {
            "score_threshold": thresholds,
            "tp": tp.sum(axis=0),
            "fp": fp.sum(axis=0),
            "fn": fn.sum(axis=0),
            "precision": precision.mean(axis=0),
            "recall": recall.mean(axis=0),
            "f1": f1.mean(axis=0),
        }
    )


def pr_curve_dsfnet(
    detections: Detections,
    ground_truth: GroundTruth,
    iou_threshold: float = 0.0,
    score_thresholds: Iterable[float] | None = None,
) -> pd.DataFrame:
    """``dsfnet_f1``'s ``mean`` row over a grid of score thresholds (exact, not approximated)."""
    return pr_curve(
        detections, ground_truth, box_iou, lambda iou: assign_by_iou(iou, iou_threshold), score_thresholds
    )


def pr_curve_distance(
    detections: Detections,
    ground_truth: GroundTruth,
    max_distance: float = 5.0,
    score_thresholds: Iterable[float] | None = None,
) -> pd.DataFrame:
    """``centre_distance``'s ``mean`` row over a grid of score thresholds."""
    return pr_curve(
        detections,
        ground_truth,
        centre_distances,
        lambda dist: assign_by_distance(dist, max_distance),
        score_thresholds,
    )
