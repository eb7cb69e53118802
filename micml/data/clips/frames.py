"""Decoded frames, cached: neighbouring clips share most of their frames."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from micml.data.unified import UnifiedDataset, read_image


class FrameCache:
    """Small LRU of decoded frames, one per worker process (each worker holds its own copy).

    Neighbouring clips of a video share four of five frames and clamped clips repeat frame 1, so
    this keeps a clip to at most one decode per distinct frame.
    """

    def __init__(self, capacity: int = 16):
        self.capacity = capacity
        self._frames: OrderedDict[tuple[str, int], np.ndarray] = OrderedDict()

    def get(self, dataset: UnifiedDataset, video: str, frame: int) -> np.ndarray:
        key = (video, frame)
        if key in self._frames:
            self._frames.move_to_end(key)
            return self._frames[key]
        image = read_image(dataset.frame_path(video, frame))
        self._frames[key] = image
        if len(self._frames) > self.capacity:
            self._frames.popitem(last=False)
        return image
