"""COCO box AP through pycocotools (the AP50 that DSFNet reports from ``test.py``).

How the in-memory COCO sets are built:

* image ids: 1, 2, ... over ``ground_truth`` in its order (videos as given, frames sorted);
  only GT frames are images, so detections on other frames are not evaluated (pycocotools
  refuses results for unknown images);
* GT annotations: bbox [x1, y1, x2 - x1, y2 - y1], ``area`` = box width x height (the
  converters write the same value, so AP_small uses the box area), ``iscrowd`` 0,
  category 1;
* detections: like the reference's results json, coordinates converted to [x, y, w, h] and
  box and score rounded to ``decimals`` (2); use ``decimals=None`` to keep full precision.

``max_detections`` becomes ``params.maxDets``; AP, AP50, AP75 and the per-size APs are read
from the accumulated precision table at the *largest* value (COCO's default is 100, the
reference decodes exactly 100 boxes per frame, so the default 1000 changes nothing there but
does not cap denser outputs). pycocotools' own ``summarize`` hard-codes 100 for its first
line; it is printed only with ``verbose=True``. Values are fractions; NaN where pycocotools
has nothing to average (e.g. AP_large without large GT).
"""

from __future__ import annotations

import contextlib
import io
import sys
from typing import Hashable, Mapping, Sequence

import numpy as np

from micml.detections import CATEGORY_ID, xyxy_to_xywh
from micml.evaluation.dsfnet import as_box_array, warn_about_unmatched_videos

Boxes = Mapping[Hashable, Mapping[int, np.ndarray]]


def coco_image_ids(ground_truth: Boxes) -> dict[tuple[Hashable, int], int]:
    """(video, frame) -> image id, numbered from 1 in GT order (frames sorted)."""
    ids: dict[tuple[Hashable, int], int] = {}
    for video, frames in ground_truth.items():
        for frame in sorted(frames):
            ids[(video, frame)] = len(ids) + 1
    return ids


def gt_dataset(ground_truth: Boxes, image_ids: Mapping[tuple[Hashable, int], int]) -> dict:
    images, annotations = [], []
    for (video, frame), image_id in image_ids.items():
        images.append({"id": image_id})
        boxes = as_box_array(ground_truth[video][frame], 4, f"video {video!r} frame {frame} ground truth")
        for x, y, w, h in xyxy_to_xywh(boxes).tolist():
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": CATEGORY_ID,
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
    categories = [{"id": CATEGORY_ID, "name": "object"}]
    return {"images": images, "annotations": annotations, "categories": categories}


def detection_results(
    detections: Boxes, image_ids: Mapping[tuple[Hashable, int], int], decimals: int | None = 2
) -> list[dict]:
    """COCO results list [{image_id, category_id, bbox [x,y,w,h], score}] for GT frames."""
    results = []
    for (video, frame), image_id in image_ids.items():
        rows = detections.get(video, {}).get(frame)
        if rows is None:
            continue
        rows = as_box_array(rows, 5, f"video {video!r} frame {frame} detections")
        boxes = xyxy_to_xywh(rows)
        scores = np.asarray(rows[:, 4], dtype=np.float64)
        if decimals is not None:
            boxes, scores = np.round(boxes, decimals), np.round(scores, decimals)
        for box, score in zip(boxes.tolist(), scores.tolist()):
            results.append({"image_id": image_id, "category_id": CATEGORY_ID, "bbox": box, "score": score})
    return results


def mean_valid(values: np.ndarray) -> float:
    valid = values[values > -1]
    return float(valid.mean()) if valid.size else float("nan")


def coco_ap50(
    detections: Boxes,
    ground_truth: Boxes,
    max_detections: Sequence[int] = (1, 100, 1000),
    decimals: int | None = 2,
    size_breakdown: bool = True,
    verbose: bool = False,
) -> dict[str, float]:
    """COCO box AP of ``detections`` (N x 5 [x1,y1,x2,y2,score]) against GT (M x 4).

    Returns AP (IoU .50:.95), AP50, AP75, AR and, with ``size_breakdown``, AP_small,
    AP_medium, AP_large, all at the largest ``max_detections``. pycocotools' per-image loop
    is pure Python and runs once per area range: ``size_breakdown=False`` evaluates the
    'all' range only and is about 4x faster on large test sets.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    warn_about_unmatched_videos(detections, ground_truth)
    image_ids = coco_image_ids(ground_truth)
    results = detection_results(detections, image_ids, decimals)
    # pycocotools prints progress on stdout; keep it out of logs and CLI output unless asked.
    chatter = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
    with chatter:
        gt = COCO()
        gt.dataset = gt_dataset(ground_truth, image_ids)
        gt.createIndex()
        if results:
            dt = gt.loadRes(results)
        else:  # loadRes cannot take an empty list; an empty result set scores 0 AP
            dt = COCO()
            dt.dataset = {**gt.dataset, "annotations": []}
            dt.createIndex()
        evaluation = COCOeval(gt, dt, "bbox")
        evaluation.params.maxDets = sorted(int(count) for count in max_detections)
        if not size_breakdown:
            evaluation.params.areaRng = evaluation.params.areaRng[:1]
            evaluation.params.areaRngLbl = evaluation.params.areaRngLbl[:1]
        evaluation.evaluate()
        evaluation.accumulate()
        if verbose:
            evaluation.summarize()
            sys.stdout.flush()
    return summary_from_tables(evaluation)


def summary_from_tables(evaluation) -> dict[str, float]:
    """Read the summary numbers from ``eval['precision']`` / ``eval['recall']`` directly."""
    params = evaluation.params
    precision = evaluation.eval["precision"][..., -1]  # T x R x K x A at the largest maxDets
    recall = evaluation.eval["recall"][..., -1]  # T x K x A
    area = {label: index for index, label in enumerate(params.areaRngLbl)}
    iou_50 = int(np.argmin(np.abs(params.iouThrs - 0.5)))
    iou_75 = int(np.argmin(np.abs(params.iouThrs - 0.75)))
    summary = {
        "AP": mean_valid(precision[:, :, :, area["all"]]),
        "AP50": mean_valid(precision[iou_50, :, :, area["all"]]),
        "AP75": mean_valid(precision[iou_75, :, :, area["all"]]),
        "AR": mean_valid(recall[:, :, area["all"]]),
    }
    for label in ("small", "medium", "large"):
        if label in area:
            summary[f"AP_{label}"] = mean_valid(precision[:, :, :, area[label]])
    return summary
