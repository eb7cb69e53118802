"""Timing of the evaluation protocols on a test-set-sized input (prints, asserts nothing).

7 videos x 300 frames of 1024 x 1024, ~30 GT vehicles and 100 detections per frame (the
reference decoder's top-K): about what the RsCarData test split produces.

    .venv/bin/python benchmarks/bench_evaluation.py          (--tiny: 3 frames per video, for CI)

The "reference-style" line runs the same definitions the way the reference evaluator is
written (a Python loop over frames, one Hungarian call each, no shared work) and checks that
both give the same table; the ratio shows what the shared code costs or saves.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy.optimize import linear_sum_assignment

from micml.evaluation import (
    centre_distance,
    coco_ap50,
    dronecrowd_lmap,
    dsfnet_f1,
    pr_curve_distance,
    pr_curve_dsfnet,
)

N_VIDEOS, N_FRAMES, N_DETECTIONS, MEAN_GT = 7, 300, 100, 30
FRAME_SIZE = 1024


def synthetic_split(seed: int = 0, n_frames: int = N_FRAMES):
    """GT boxes of 4-20 px, detections = jittered hits (some missed) + random false alarms."""
    rng = np.random.default_rng(seed)
    detections, ground_truth = {}, {}
    for video in range(N_VIDEOS):
        name = f"{video + 1:03d}"
        detections[name], ground_truth[name] = {}, {}
        for frame in range(1, n_frames + 1):
            n_gt = rng.poisson(MEAN_GT)
            corner = rng.uniform(0, FRAME_SIZE - 20, (n_gt, 2))
            size = rng.uniform(4, 20, (n_gt, 2))
            gt = np.hstack([corner, corner + size]).round()
            hits = gt[rng.random(n_gt) < 0.8] + rng.normal(0, 1.5, (1, 4))
            n_false = N_DETECTIONS - len(hits)
            false_corner = rng.uniform(0, FRAME_SIZE - 20, (n_false, 2))
            false_boxes = np.hstack([false_corner, false_corner + rng.uniform(4, 20, (n_false, 2))])
            boxes = np.vstack([hits, false_boxes])
            scores = np.concatenate([rng.uniform(0.3, 1.0, len(hits)), rng.uniform(0.0, 0.6, n_false)])
            order = np.argsort(-scores)
            detections[name][frame] = np.hstack([boxes, scores[:, None]])[order].astype(np.float32)
            ground_truth[name][frame] = gt
    return detections, ground_truth


def reference_style_f1(detections, ground_truth, iou_threshold=0.0, score_threshold=0.3):
    """Per-frame loop with the reference's definitions, written plainly for comparison."""
    rows = {}
    for video, frames in ground_truth.items():
        tp = fp = fn = 0
        for frame, gt in frames.items():
            det = detections.get(video, {}).get(frame, np.zeros((0, 5), np.float32))
            det = det[det[:, 4] > score_threshold]
            matched = 0
            if len(det) and len(gt):
                iou = np.zeros((len(det), len(gt)))
                for i, d in enumerate(det):
                    iw = np.maximum(0.0, np.minimum(d[2], gt[:, 2]) - np.maximum(d[0], gt[:, 0]))
                    ih = np.maximum(0.0, np.minimum(d[3], gt[:, 3]) - np.maximum(d[1], gt[:, 1]))
                    inter = iw * ih
                    gt_area = (gt[:, 2] - gt[:, 0]) * (gt[:, 3] - gt[:, 1])
                    union = (d[2] - d[0]) * (d[3] - d[1]) + gt_area - inter
                    iou[i] = inter / (union + 1e-7)
                r, c = linear_sum_assignment(-iou)
                matched = int(np.sum(iou[r, c] > iou_threshold))
            tp, fp, fn = tp + matched, fp + len(det) - matched, fn + len(gt) - matched
        rows[video] = (tp, fp, fn)
    return rows


def timed(label, function, *args, **kwargs):
    start = time.perf_counter()
    result = function(*args, **kwargs)
    seconds = time.perf_counter() - start
    print(f"{label:<44s} {seconds:7.2f} s")
    return result, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="3 frames per video: proves the script runs")
    n_frames = 3 if parser.parse_args().tiny else N_FRAMES
    split = detections, ground_truth = synthetic_split(n_frames=n_frames)
    n_gt = sum(len(gt) for frames in ground_truth.values() for gt in frames.values())
    print(f"{N_VIDEOS} videos x {n_frames} frames x {N_DETECTIONS} detections, {n_gt} GT boxes")
    table, ours = timed("dsfnet_f1 (IoU > 0, score > 0.3)", dsfnet_f1, detections, ground_truth)
    loop_rows, plain = timed("reference-style loop, same definitions", reference_style_f1, *split)
    same = all(tuple(table.loc[video, ["tp", "fp", "fn"]]) == counts for video, counts in loop_rows.items())
    print(f"  same tp/fp/fn as the loop: {same}; speed-up over the loop: {plain / ours:.2f}x")
    timed("dsfnet_f1 (IoU > 0.05)", dsfnet_f1, detections, ground_truth, iou_threshold=0.05)
    timed("centre_distance (5 px)", centre_distance, detections, ground_truth)
    timed("pr_curve_dsfnet (20 score thresholds)", pr_curve_dsfnet, detections, ground_truth)
    timed("pr_curve_distance (20 score thresholds)", pr_curve_distance, detections, ground_truth)
    timed("coco_ap50 (pycocotools, maxDets 1000)", coco_ap50, detections, ground_truth)
    timed("coco_ap50 (size_breakdown=False)", coco_ap50, detections, ground_truth, size_breakdown=False)
    points = {
        video: {f: np.column_stack([(d[:, :2] + d[:, 2:4]) / 2, d[:, 4]]) for f, d in frames.items()}
        for video, frames in detections.items()
    }
    gt_points = {
        video: {f: (g[:, :2] + g[:, 2:]) / 2 for f, g in frames.items()}
        for video, frames in ground_truth.items()
    }
    lmap, _ = timed("dronecrowd_lmap (25 distance thresholds)", dronecrowd_lmap, points, gt_points)
    print(f"  mean F1 {table.loc['mean', 'f1']:.4f}, L-mAP {lmap['L-mAP']:.4f}")


if __name__ == "__main__":
    main()
