"""The clip dataset: samples of one split of a unified dataset, with their CenterNet targets.

Randomness is a pure function of (seed, epoch, index), so a sample is identical whichever worker
or process draws it and a resumed run sees the same data as an uninterrupted one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from micml.data.clips.augmentation import Augmentation
from micml.data.clips.frames import FrameCache
from micml.data.clips.geometry import (SEQ_LEN, as_size, clip_frame_indices, clip_to_image, crop_clip,
                                       crop_window_for, pad_to_multiple)
from micml.data.clips.normalisation import REFERENCE_NORMALISATION, Normalisation
from micml.data.targets import MAX_OBJECTS, build_targets
from micml.data.unified import UnifiedDataset, Video


class ClipDataset(Dataset):
    """Clips of one split of a unified dataset, with CenterNet targets, as tensors.

    `train=True`: every frame of every video is a sample, randomly cropped to `crop_size` and
    augmented. `train=False`: full frames (or a centre crop of `crop_size`) padded to a multiple
    of 16, no augmentation; `max_frames` keeps that many evenly spaced samples.
    Call `set_epoch` before each epoch so that augmentation changes from epoch to epoch.
    `normalisation` is the model's (`normalisation_for_weights`), the reference's by default.
    """

    def __init__(self, root: Path | str, split: str, *, train: bool, crop_size: int | Sequence[int] | None = None,
                 seed: int = 0, augment: Augmentation | dict | bool | None = None, object_crop_prob: float = 0.5,
                 max_objects: int = MAX_OBJECTS, max_frames: int | None = None, seq_len: int = SEQ_LEN,
                 cache_frames: int = 16, normalisation: Normalisation | None = None):
        self.dataset = UnifiedDataset(root)
        self.split = split
        self.train = train
        self.crop_hw = as_size(crop_size)
        if train and self.crop_hw is None:
            raise ValueError("ClipDataset(train=True) needs a crop_size")
        self.seed = seed
        self.epoch = 0
        self.augment = Augmentation.from_config(augment) if train else Augmentation.from_config(False)
        self.object_crop_prob = object_crop_prob
        self.max_objects = max_objects
        self.seq_len = seq_len
        self.normalisation = normalisation or REFERENCE_NORMALISATION
        self.cache = FrameCache(cache_frames)
        self.videos: list[Video] = self.dataset.videos(split)
        self.items = [(v, frame) for v, video in enumerate(self.videos)
                      for frame in range(1, video.record.n_frames + 1)]
        if max_frames is not None and len(self.items) > max_frames:
            keep = np.linspace(0, len(self.items) - 1, max_frames).round().astype(int)
            self.items = [self.items[i] for i in keep]

    def __len__(self) -> int:
        return len(self.items)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def rng_for(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, index])

    def __getitem__(self, index: int) -> dict:
        video_index, frame = self.items[index]
        video = self.videos[video_index]
        frames = np.stack([self.cache.get(self.dataset, video.record.name, f)
                           for f in clip_frame_indices(frame, self.seq_len)])
        boxes = video.frame_boxes(frame).astype(np.float32)
        if self.train:
            frames, boxes = self._augment(self.rng_for(index), frames, boxes)
        else:
            frames, boxes = self._centre(frames, boxes)
        targets = build_targets(boxes, frames.shape[1], frames.shape[2], self.max_objects)
        clip = torch.from_numpy(frames.transpose(3, 0, 1, 2).copy())  # (3, T, H, W)
        return {
            "input": clip,
            "hm": torch.from_numpy(targets.hm),
            "wh": torch.from_numpy(targets.wh),
            "reg": torch.from_numpy(targets.reg),
            "ind": torch.from_numpy(targets.ind),
            "reg_mask": torch.from_numpy(targets.reg_mask),
            "n_dropped": targets.n_dropped,
            "boxes": clip_to_image(boxes, frames.shape[1], frames.shape[2]),
            "video": video.record.name,
            "frame": frame,
        }

    def _augment(self, rng: np.random.Generator, frames: np.ndarray, boxes: np.ndarray):
        """Crop and augment uint8 frames; returns normalised frames and their boxes."""
        top_left = crop_window_for(rng, frames.shape[1:3], self.crop_hw, boxes, self.object_crop_prob)
        frames, boxes = crop_clip(frames, boxes, top_left, self.crop_hw)
        return self.augment.apply(rng, frames, boxes, self.normalisation)

    def _centre(self, frames: np.ndarray, boxes: np.ndarray):
        """Normalised full frames (or their centre crop) padded for the network, and their boxes."""
        if self.crop_hw is not None:
            height, width = frames.shape[1:3]
            top_left = (max(height - self.crop_hw[0], 0) // 2, max(width - self.crop_hw[1], 0) // 2)
            frames, boxes = crop_clip(frames, boxes, top_left, self.crop_hw)
        return self.normalisation(pad_to_multiple(frames)), boxes
