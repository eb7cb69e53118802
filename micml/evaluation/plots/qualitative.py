"""Qualitative overlays: frames with their true positives, false positives and missed objects.

They use exactly the matching of ``dsfnet_f1``: detections with score > 0.3, one-to-one
Hungarian matching on IoU, a match when IoU > 0. Matched detections are true positives (green),
the other kept detections false positives (red), unmatched objects false negatives (yellow).
Boxes are drawn into the frame's pixels (not as vector patches), with a line width scaled to the
frame, so that they stay visible when a 1024 px frame is shown small.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import cv2
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from micml.data.unified import UnifiedDataset, Video, read_image
from micml.detections import MAT_DIR, frame_mat_path, read_frame_mat
from micml.evaluation.dsfnet import keep_confident
from micml.evaluation.matching import match_boxes_by_iou
from micml.evaluation.plots.common import FIGURE_DPI, save_figure
from micml.evaluation.protocols import SCORE_THRESHOLD, reference_dtype

# RGB, pure so that they stand out on grey satellite ground and can be found in the image.
TP_COLOUR = (0, 255, 0)
FP_COLOUR = (255, 0, 0)
FN_COLOUR = (255, 255, 0)
QUALITATIVE_PANEL_PX = 480  # the side a frame gets in the figure


@dataclass
class FrameOutcome:
    """Boxes of one frame split by the dsfnet_f1 matching."""

    true_positives: np.ndarray  # detection boxes matched to an object
    false_positives: np.ndarray  # kept detections without a match
    false_negatives: np.ndarray  # objects without a match

    def counts(self) -> tuple[int, int, int]:
        return len(self.true_positives), len(self.false_positives), len(self.false_negatives)


def classify_frame(detections: np.ndarray, gt: np.ndarray, *, score_threshold: float = SCORE_THRESHOLD,
                   iou_threshold: float = 0.0) -> FrameOutcome:
    """TP/FP/FN boxes with the same filter and one-to-one matching as `dsfnet_f1`."""
    kept = keep_confident(np.asarray(detections).reshape(-1, 5), score_threshold)
    gt = np.asarray(gt).reshape(-1, 4)
    matching = match_boxes_by_iou(kept, gt, iou_threshold)
    matched_dets = np.zeros(len(kept), bool)
    matched_dets[matching.det_index] = True
    matched_gt = np.zeros(len(gt), bool)
    matched_gt[matching.gt_index] = True
    return FrameOutcome(kept[matched_dets, :4], kept[~matched_dets, :4], gt[~matched_gt, :4])


def line_thickness(image_shape: Sequence[int], panel_px: int = QUALITATIVE_PANEL_PX) -> int:
    """Pixels of a box outline so that it is still ~1.5 px wide once the frame is scaled to the panel."""
    return max(1, math.ceil(1.5 * max(image_shape[:2]) / panel_px))


def draw_outcome(image_rgb: np.ndarray, outcome: FrameOutcome, thickness: int) -> np.ndarray:
    """A copy of the frame with FN, FP and then TP outlines drawn into its pixels."""
    canvas = np.ascontiguousarray(image_rgb.copy())
    for boxes, colour in ((outcome.false_negatives, FN_COLOUR), (outcome.false_positives, FP_COLOUR),
                          (outcome.true_positives, TP_COLOUR)):
        for x1, y1, x2, y2 in np.asarray(boxes, float).tolist():
            # cv2 wants integer corners; the outline lies just outside the box so it does not hide the object.
            top_left = (int(math.floor(x1)) - thickness // 2 - 1, int(math.floor(y1)) - thickness // 2 - 1)
            bottom_right = (int(math.ceil(x2)) + thickness // 2, int(math.ceil(y2)) + thickness // 2)
            cv2.rectangle(canvas, top_left, bottom_right, colour, thickness, lineType=cv2.LINE_8)
    return canvas


def choose_frames(videos: Sequence[Video], count: int) -> list[tuple[str, int]]:
    """`count` (video, frame) pairs: in turn over the videos, each one's frames with most objects
    first (busy frames show most), so that every video appears before any appears twice."""
    ranked = [[(video.record.name, frame) for frame in
               sorted(range(1, video.record.n_frames + 1), key=lambda f: (-len(video.frame_boxes(f)), f))]
              for video in videos]
    chosen: list[tuple[str, int]] = []
    for depth in range(max((len(frames) for frames in ranked), default=0)):
        for frames in ranked:
            if depth < len(frames) and len(chosen) < count:
                chosen.append(frames[depth])
    return chosen


def plot_qualitative(dataset_root: str | os.PathLike, predictions_dir: str | os.PathLike, split: str,
                     out_png: str | os.PathLike, *, frames: Sequence[tuple[str, int]] | None = None,
                     max_frames: int = 4, score_threshold: float = SCORE_THRESHOLD, iou_threshold: float = 0.0,
                     title: str | None = None) -> dict[str, int]:
    """Frames of `split` with TP (green), FP (red) and FN (yellow) boxes; returns the total counts.

    `frames` lists (video, frame) pairs to show; by default `max_frames` busy frames spread over
    the videos (see `choose_frames`). Detections come from `predictions_dir/mat/` (a missing file
    means no detections).
    """
    dataset = UnifiedDataset(dataset_root)
    videos = {video.record.name: video for video in dataset.videos(split)}
    chosen = list(frames) if frames is not None else choose_frames(list(videos.values()), max_frames)
    if not chosen:
        raise ValueError(f"{dataset.annotation_file(split)}: split {split!r} has no frame to show")
    columns = min(len(chosen), 2 if len(chosen) == 4 else 3)
    rows = math.ceil(len(chosen) / columns)
    panel_in = QUALITATIVE_PANEL_PX / FIGURE_DPI
    first = videos[chosen[0][0]].record if chosen[0][0] in videos else None
    aspect = first.height / first.width if first else 1.0
    # at least 8 inches wide, or a single panel's title and legend would be cut
    figure = Figure(figsize=(max(8.0, panel_in * columns), panel_in * aspect * rows + 1.4), dpi=FIGURE_DPI,
                    layout="constrained")
    axes_grid = figure.subplots(rows, columns, squeeze=False)
    totals = np.zeros(3, int)
    for axes, (video, frame) in zip(axes_grid.flat, chosen):
        outcome = frame_outcome(dataset, videos, Path(predictions_dir), video, frame, score_threshold, iou_threshold)
        image = cv2.cvtColor(read_image(dataset.frame_path(video, frame)), cv2.COLOR_BGR2RGB)
        axes.imshow(draw_outcome(image, outcome, line_thickness(image.shape)), interpolation="nearest")
        tp, fp, fn = outcome.counts()
        totals += (tp, fp, fn)
        axes.set_title(f"{video} / frame {frame}: TP {tp}, FP {fp}, FN {fn}", fontsize=9)
    for axes in axes_grid.flat:
        axes.set_axis_off()
    figure.legend(handles=legend_handles(*totals), loc="outside lower center", ncols=3, fontsize=9)
    figure.suptitle(title or f"{Path(dataset_root).name} / {split}\ndetections with score > {score_threshold:g}, "
                             f"matched one-to-one at IoU > {iou_threshold:g} (as in the F1 tables)", fontsize=11)
    save_figure(figure, out_png)
    return {"tp": int(totals[0]), "fp": int(totals[1]), "fn": int(totals[2])}


def frame_outcome(dataset: UnifiedDataset, videos: Mapping[str, Video], predictions_dir: Path, video: str,
                  frame: int, score_threshold: float, iou_threshold: float) -> FrameOutcome:
    if video not in videos:
        raise ValueError(f"{dataset.root}: no video {video!r} in this split; videos: {', '.join(videos)}")
    mat = frame_mat_path(predictions_dir / MAT_DIR, video, frame)
    detections = read_frame_mat(mat) if mat.is_file() else np.zeros((0, 5), np.float32)
    gt = reference_dtype(videos[video].frame_boxes(frame))
    return classify_frame(detections, gt, score_threshold=score_threshold, iou_threshold=iou_threshold)


def legend_handles(tp: int, fp: int, fn: int) -> list[Patch]:
    def outline(colour, text):
        return Patch(facecolor="none", edgecolor=np.array(colour) / 255, linewidth=2, label=text)

    return [outline(TP_COLOUR, f"TP: matched detection ({tp})"),
            outline(FP_COLOUR, f"FP: false alarm ({fp})"),
            outline(FN_COLOUR, f"FN: missed object ({fn})")]
