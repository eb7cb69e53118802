"""Each scoring protocol run on a split's detections: its table, headline numbers and curve.

* ``dsfnet_f1`` at IoU > 0, 0.05, 0.1, 0.2 (MICML reports IoU > 0, DSFNet the others), score > 0.3;
  summary row ``mean``: P, R, F1 averaged over videos (the published number), TP/FP/FN summed.
* ``centre_distance``: box centres closer than 5 px (HiEUM), same rows.
* ``coco_ap50``: COCO AP50 (and AP, AP75, AR) per video; summary row ``all`` pools every frame of
  the split in one pycocotools run, as DSFNet's ``test.py`` does.
* ``dronecrowd_lmap``: L-mAP and AP@10/15/20 of detected box centres against the annotated points
  (the box centres before clipping to the frame, `Video.frame_points`) per video; summary row
  ``all`` pools every sequence, as the DroneCrowd toolkit does.

`EVALUATORS[protocol](detections, truth)` gives (table, headline) and `protocol_document` the
table as a `micml.tables.TableDocument`; `micml.evaluation.evaluate` runs them on a prediction folder.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from micml.catalog import CENTRE_DISTANCE, COCO_AP50, DRONECROWD_LMAP, DSFNET_F1
from micml.evaluation.coco import coco_ap50
from micml.evaluation.dsfnet import centre_distance, dsfnet_f1, pr_curve_distance, pr_curve_dsfnet
from micml.evaluation.points import dronecrowd_lmap, pr_curve_points
from micml.tables import TableDocument, TableSection

DSFNET_IOU_THRESHOLDS = (0.0, 0.05, 0.1, 0.2)
SCORE_THRESHOLD = 0.3
CENTRE_DISTANCE_PX = 5.0
# DroneCrowd's PR curve needs one distance; 10 px is the smallest threshold the toolkit reports.
POINT_CURVE_DISTANCE_PX = 10.0
LMAP_COLUMNS = ("L-mAP", "AP@10", "AP@15", "AP@20")
COCO_COLUMNS = ("AP50", "AP", "AP75", "AR")
MEAN_ROW = "mean"  # unweighted mean over videos (dsfnet_f1, centre_distance)
POOLED_ROW = "all"  # one evaluation over all videos together (coco_ap50, dronecrowd_lmap)
PR_CURVE_COLUMNS = ("protocol", "setting", "score_threshold", "tp", "fp", "fn", "precision", "recall", "f1")

Boxes = dict[str, dict[int, np.ndarray]]


def reference_dtype(boxes: np.ndarray) -> np.ndarray:
    """Integral boxes as int64, like the reference's boxes parsed from xml, others as float64.

    numpy then promotes our float32 detections against them exactly as in the reference, so
    IoUs, and therefore the Hungarian assignments and their ties, come out bit for bit the same.
    """
    integral = boxes.size > 0 and bool(np.all(boxes == np.round(boxes)))
    return boxes.astype(np.int64 if integral else np.float64)


def box_centre_points(boxes: Boxes, *, with_scores: bool) -> Boxes:
    """Boxes [x1, y1, x2, y2(, score)] -> points [x, y(, score)] (DroneCrowd's point protocol)."""
    points: Boxes = {}
    for video, frames in boxes.items():
        points[video] = {}
        for frame, rows in frames.items():
            rows = np.asarray(rows, dtype=np.float64).reshape(-1, 5 if with_scores else 4)
            centres = (rows[:, :2] + rows[:, 2:4]) / 2
            points[video][frame] = np.column_stack([centres, rows[:, 4]]) if with_scores else centres
    return points


# --------------------------------------------------------------------------- per protocol


def per_video_table(table: pd.DataFrame) -> pd.DataFrame:
    """dsfnet_f1 / centre_distance output (indexed by video, `mean` last) with `video` as a column."""
    frame = table.reset_index()
    frame["video"] = frame["video"].astype(str)
    return frame


def evaluate_dsfnet_f1(detections: Boxes, truth: Boxes) -> tuple[pd.DataFrame, dict]:
    tables, headline = [], {}
    for threshold in DSFNET_IOU_THRESHOLDS:
        table = per_video_table(dsfnet_f1(detections, truth, iou_threshold=threshold,
                                          score_threshold=SCORE_THRESHOLD))
        table.insert(0, "iou_threshold", threshold)
        tables.append(table)
        headline[iou_key(threshold)] = summary_row(table)
    summary = {"score_threshold": SCORE_THRESHOLD, "iou_thresholds": headline}
    return pd.concat(tables, ignore_index=True), summary


def iou_key(threshold: float) -> str:
    """The summary.json key of an IoU threshold: '0', '0.05', '0.1', '0.2'."""
    return f"{threshold:g}"


def summary_row(table: pd.DataFrame) -> dict:
    row = table[table["video"] == MEAN_ROW].iloc[0]
    return {name: row[name] for name in ("precision", "recall", "f1", "tp", "fp", "fn")}


def evaluate_centre_distance(detections: Boxes, truth: Boxes) -> tuple[pd.DataFrame, dict]:
    table = per_video_table(centre_distance(detections, truth, max_distance=CENTRE_DISTANCE_PX,
                                            score_threshold=SCORE_THRESHOLD))
    table.insert(0, "max_distance", CENTRE_DISTANCE_PX)
    summary = {"max_distance": CENTRE_DISTANCE_PX, "score_threshold": SCORE_THRESHOLD, **summary_row(table)}
    return table, summary


def per_video_and_pooled(metric, detections: Boxes, truth: Boxes, columns: Sequence[str]) -> pd.DataFrame:
    """`metric` run on each video alone, then once on all of them together (row `all`)."""
    rows = []
    for video in truth:
        only = {video: detections.get(video, {})}
        rows.append({"video": video, **pick(metric(only, {video: truth[video]}), columns)})
    rows.append({"video": POOLED_ROW, **pick(metric(detections, truth), columns)})
    return pd.DataFrame(rows, columns=["video", *columns])


def pick(result: Mapping[str, float], columns: Sequence[str]) -> dict:
    return {column: result.get(column, math.nan) for column in columns}


def evaluate_coco_ap50(detections: Boxes, truth: Boxes) -> tuple[pd.DataFrame, dict]:
    # The size breakdown (AP_small...) triples pycocotools' pure-Python loop and no table uses it.
    def metric(dets, gt):
        return coco_ap50(dets, gt, size_breakdown=False)

    table = per_video_and_pooled(metric, detections, truth, COCO_COLUMNS)
    return table, pooled_summary(table, COCO_COLUMNS)


def evaluate_dronecrowd_lmap(detections: Boxes, truth_points: Boxes) -> tuple[pd.DataFrame, dict]:
    points = box_centre_points(detections, with_scores=True)
    table = per_video_and_pooled(dronecrowd_lmap, points, truth_points, LMAP_COLUMNS)
    return table, pooled_summary(table, LMAP_COLUMNS)


def pooled_summary(table: pd.DataFrame, columns: Sequence[str]) -> dict:
    row = table[table["video"] == POOLED_ROW].iloc[0]
    return {column: row[column] for column in columns}


EVALUATORS = {
    DSFNET_F1: evaluate_dsfnet_f1,
    CENTRE_DISTANCE: evaluate_centre_distance,
    COCO_AP50: evaluate_coco_ap50,
    DRONECROWD_LMAP: evaluate_dronecrowd_lmap,
}


def pr_curve_rows(protocol: str, detections: Boxes, truth: Boxes) -> pd.DataFrame:
    """The score-threshold curve of `protocol` with `protocol` and `setting` columns in front
    (`truth`: boxes, or points for the POINT_PROTOCOLS)."""
    if protocol == DSFNET_F1:
        curve, setting = pr_curve_dsfnet(detections, truth, iou_threshold=0.0), "IoU > 0"
    elif protocol == CENTRE_DISTANCE:
        curve = pr_curve_distance(detections, truth, max_distance=CENTRE_DISTANCE_PX)
        setting = f"centre distance < {CENTRE_DISTANCE_PX:g} px"
    else:
        curve = pr_curve_points(box_centre_points(detections, with_scores=True), truth,
                                max_distance=POINT_CURVE_DISTANCE_PX)
        setting = f"point distance <= {POINT_CURVE_DISTANCE_PX:g} px"
    curve.insert(0, "setting", setting)
    curve.insert(0, "protocol", protocol)
    return curve[list(PR_CURVE_COLUMNS)]


# --------------------------------------------------------------------------- documents


PROTOCOL_TITLES = {
    DSFNET_F1: "DSFNet/MICML P/R/F1 (Hungarian matching on IoU, score > 0.3)",
    CENTRE_DISTANCE: f"P/R/F1 with centre distance < {CENTRE_DISTANCE_PX:g} px (HiEUM), score > 0.3",
    COCO_AP50: "COCO box AP (pycocotools)",
    DRONECROWD_LMAP: "DroneCrowd localisation AP (box centres against annotated points)",
}

PROTOCOL_NOTES = {
    DSFNET_F1: [f"Row '{MEAN_ROW}': P, R and F1 averaged over videos (so its F1 is not the F1 of its P and R); "
                "TP/FP/FN summed. IoU > 0 is MICML's setting, 0.05/0.1/0.2 DSFNet's."],
    CENTRE_DISTANCE: [f"Row '{MEAN_ROW}': P, R and F1 averaged over videos; TP/FP/FN summed."],
    COCO_AP50: [f"Row '{POOLED_ROW}': one pycocotools run over every frame of the split (DSFNet's test.py "
                "number), not an average of the video rows. AP is over IoU 0.5:0.95; – where a video has "
                "no objects."],
    DRONECROWD_LMAP: [f"Row '{POOLED_ROW}': all sequences pooled, as the DroneCrowd toolkit does. L-mAP is the "
                      "mean AP over distance thresholds 1..25 px; a sequence without any detection is skipped "
                      "(toolkit behaviour)."],
}


def protocol_document(protocol: str, table: pd.DataFrame, context: str, notes: Sequence[str] = ()) -> TableDocument:
    if protocol == DSFNET_F1:
        sections = [TableSection(f"IoU > {threshold:g}", rows.drop(columns="iou_threshold").reset_index(drop=True))
                    for threshold, rows in table.groupby("iou_threshold", sort=True)]
    elif protocol == CENTRE_DISTANCE:
        sections = [TableSection("", table.drop(columns="max_distance"))]
    else:
        sections = [TableSection("", table)]
    return TableDocument(f"{context}: {PROTOCOL_TITLES[protocol]}", table, sections,
                         [*PROTOCOL_NOTES[protocol], *notes])
