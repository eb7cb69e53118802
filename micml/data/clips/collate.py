"""Batches of clips for a DataLoader."""

from __future__ import annotations

import torch


def collate_clips(samples: list[dict]) -> dict:
    """Stack tensors; keep per-sample boxes, video names and frame numbers as lists."""
    batch = {key: torch.stack([s[key] for s in samples]) for key in ("input", "hm", "wh", "reg", "ind", "reg_mask")}
    batch["n_dropped"] = sum(s["n_dropped"] for s in samples)
    for key in ("boxes", "video", "frame"):
        batch[key] = [s[key] for s in samples]
    return batch
