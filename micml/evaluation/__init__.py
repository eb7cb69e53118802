"""Evaluation protocols that reproduce the published evaluators' numbers.

* ``dsfnet_f1``: DSFNet/MICML ``evaluation.py`` (Hungarian on IoU, P/R/F1 per video, mean).
* ``centre_distance``: HiEUM's variant of the same evaluator (centres closer than 5 px).
* ``coco_ap50``: COCO box AP through pycocotools (DSFNet's ``test.py`` AP50).
* ``dronecrowd_lmap``: DroneCrowd VID toolkit L-mAP (greedy point matching, AP at 1..25 px).
* ``pr_curve_*``: the same matchings over a grid of score thresholds.

The detection files they read (.mat, COCO results json, CSV) are :mod:`micml.detections`'s.
"""

from micml.evaluation.coco import coco_ap50, coco_image_ids
from micml.evaluation.dsfnet import (
    EvaluationInputError,
    MatchCountEvaluator,
    centre_distance,
    centre_distance_evaluator,
    dsfnet_f1,
    iou_evaluator,
    pr_curve_distance,
    pr_curve_dsfnet,
    precision_recall_f1,
)
from micml.evaluation.matching import Matching, box_iou, greedy_point_matches
from micml.evaluation.points import dronecrowd_lmap, pr_curve_points, voc_ap

__all__ = [
    "EvaluationInputError",
    "MatchCountEvaluator",
    "Matching",
    "box_iou",
    "centre_distance",
    "centre_distance_evaluator",
    "coco_ap50",
    "coco_image_ids",
    "dronecrowd_lmap",
    "dsfnet_f1",
    "greedy_point_matches",
    "iou_evaluator",
    "pr_curve_distance",
    "pr_curve_dsfnet",
    "pr_curve_points",
    "precision_recall_f1",
    "voc_ap",
]
