"""Validation during training: detections of the val split, scored with the DSFNet F1 protocol.

Boxes are decoded by inference's own decoder (`micml.inference.decode`), so the F1 that chooses
best.pt scores the boxes that `micml test` would give (without tiling and soft-NMS).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from micml.data.clips import ClipDataset, collate_clips
from micml.engine.config import TrainingConfig, amp_on
from micml.engine.errors import TrainingError
from micml.inference.decode import decode
from micml.precision import autocast

Validator = Callable[[nn.Module, ClipDataset, torch.device], Mapping[str, float]]
METRICS = ("precision", "recall", "f1", "tp", "fp", "fn")


def decode_detections(output: Mapping[str, torch.Tensor], top_k: int) -> list[np.ndarray]:
    """Per image N x 5 [x1, y1, x2, y2, score], N <= top_k (`micml.inference.decode.decode`)."""
    return decode(output, top_k)


def pooled_f1(detections: Mapping, ground_truth: Mapping, *, iou_threshold: float = 0.0,
              score_threshold: float = 0.3) -> dict[str, float]:
    """The `mean` row of `micml.evaluation.dsfnet_f1`: P, R and F1 averaged over videos (counts
    pooled per video; Hungarian matching on IoU, a match when IoU > `iou_threshold`)."""
    from micml.evaluation import dsfnet_f1  # late: pandas and friends are not needed to train

    table = dsfnet_f1(detections, ground_truth, iou_threshold=iou_threshold, score_threshold=score_threshold)
    mean = table.loc["mean"]
    return {name: float(mean[name]) for name in METRICS}


def make_f1_validator(config: TrainingConfig) -> Validator:
    """The built-in validation: decode every val clip, score with the DSFNet F1 protocol."""

    def validate(model: nn.Module, dataset: ClipDataset, device: torch.device) -> dict[str, float]:
        loader = DataLoader(dataset, batch_size=1, shuffle=False, num_workers=config.num_workers,
                            collate_fn=collate_clips)
        detections: dict = {}
        ground_truth: dict = {}
        with torch.inference_mode(), autocast(device, amp_on(device, config.amp)):
            for batch in loader:
                output = model(batch["input"].to(device))
                for video, frame, boxes, dets in zip(batch["video"], batch["frame"], batch["boxes"],
                                                     decode_detections(output, config.val_top_k)):
                    detections.setdefault(video, {})[frame] = dets
                    ground_truth.setdefault(video, {})[frame] = boxes
        return pooled_f1(detections, ground_truth, iou_threshold=config.val_iou_threshold,
                         score_threshold=config.val_score_threshold)

    return validate


def make_val_set(config: TrainingConfig, dataset_root: Path) -> ClipDataset | None:
    """The val clips validation runs on; None when the run never validates."""
    if not config.val_interval:
        return None
    val_set = ClipDataset(dataset_root, "val", train=False, crop_size=config.val_crop_size,
                          max_objects=config.max_objects, max_frames=config.val_max_frames,
                          normalisation=config.normalisation)
    if len(val_set) == 0:
        raise TrainingError(
            f"{dataset_root}: the val split has no frames, and the best checkpoint is chosen on val "
            "(never on test). Re-convert the dataset with a validation hold-out, or set val_interval: 0 "
            "to train without validation (best.pt is then the last epoch)")
    return val_set
