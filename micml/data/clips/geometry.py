"""Where a clip's pixels come from: its frame indices, crop window, flips and padding.

A clip is the current frame t of one video plus its predecessors: temporal index k holds frame
max(t - k, 1) (reference coco_rsdata.py:173-182), so t=3 gives frames 3, 2, 1, 1, 1. Boxes are
(N, 4) float32 x1, y1, x2, y2 in pixels of the frame they belong to.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

SEQ_LEN = 5
PAD_PIXEL = 127  # grey, ~0 after the reference's normalisation
SIZE_MULTIPLE = 16  # the network halves the resolution four times


def clip_frame_indices(frame: int, seq_len: int = SEQ_LEN) -> list[int]:
    """1-based frames of the clip whose current frame is `frame`: index k is max(frame - k, 1)."""
    return [max(frame - k, 1) for k in range(seq_len)]


def as_size(size: int | Sequence[int] | None) -> tuple[int, int] | None:
    """(height, width) from an int or a pair; None stays None."""
    if size is None:
        return None
    if isinstance(size, int):
        return size, size
    height, width = size
    return int(height), int(width)


def crop_window_for(rng: np.random.Generator, frame_hw: tuple[int, int], crop_hw: tuple[int, int],
                    boxes: np.ndarray, object_crop_prob: float) -> tuple[int, int]:
    """Top-left (y0, x0) of a crop window; `micml.data.clips` (step 1) says why it favours objects."""
    (height, width), (crop_h, crop_w) = frame_hw, crop_hw
    max_y0, max_x0 = max(height - crop_h, 0), max(width - crop_w, 0)
    if len(boxes) and rng.random() < object_crop_prob:
        x1, y1, x2, y2 = boxes[rng.integers(len(boxes))]
        cx, cy = int((x1 + x2) / 2), int((y1 + y2) / 2)
        # windows [x0, x0 + crop_w) containing cx: x0 in [cx - crop_w + 1, cx]
        x0 = rng.integers(max(cx - crop_w + 1, 0), min(cx, max_x0) + 1)
        y0 = rng.integers(max(cy - crop_h + 1, 0), min(cy, max_y0) + 1)
        return int(y0), int(x0)
    return int(rng.integers(max_y0 + 1)), int(rng.integers(max_x0 + 1))


def crop_clip(frames: np.ndarray, boxes: np.ndarray, top_left: tuple[int, int],
              crop_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Cut (T, H, W, 3) frames to the window, padding with grey past the frame; shift the boxes.

    Boxes with no area inside the window are removed. The others keep their full extent, relative
    to the window, even where they run past its edge: build_targets then treats the crop edge as
    the reference treats an image edge (full size, centre clipped onto the edge pixel), instead of
    training on the size and centre of whatever sliver the window happened to cut.
    """
    (y0, x0), (crop_h, crop_w) = top_left, crop_hw
    part = frames[:, y0:y0 + crop_h, x0:x0 + crop_w]
    out = np.full((frames.shape[0], crop_h, crop_w, frames.shape[3]), PAD_PIXEL, frames.dtype)
    out[:, :part.shape[1], :part.shape[2]] = part
    shifted = boxes - np.array([x0, y0, x0, y0], np.float32)
    inside = (shifted[:, 2] > 0) & (shifted[:, 3] > 0) & (shifted[:, 0] < crop_w) & (shifted[:, 1] < crop_h)
    return out, shifted[inside]


def clip_to_image(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """Boxes cut to [0, width] x [0, height]: the visible part, as converters store frame-edge boxes.

    Validation scores detections against these, as it scores full frames against the converters'
    boxes.
    """
    clipped = boxes.copy()
    clipped[:, [0, 2]] = np.clip(clipped[:, [0, 2]], 0, width)
    clipped[:, [1, 3]] = np.clip(clipped[:, [1, 3]], 0, height)
    return clipped


def pad_to_multiple(frames: np.ndarray, multiple: int = SIZE_MULTIPLE) -> np.ndarray:
    """Pad (T, H, W, 3) right/bottom with grey so H and W are multiples of `multiple`."""
    height, width = frames.shape[1:3]
    pad_h, pad_w = -height % multiple, -width % multiple
    if not (pad_h or pad_w):
        return frames
    return np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), constant_values=PAD_PIXEL)


def flip_clip(frames: np.ndarray, boxes: np.ndarray, horizontal: bool, vertical: bool) -> tuple[np.ndarray, np.ndarray]:
    """Mirror (T, H, W, C) frames and their boxes: pixel column j -> W-1-j, box edge x -> W - x."""
    height, width = frames.shape[1:3]
    boxes = boxes.copy()
    if horizontal:
        frames = frames[:, :, ::-1]
        boxes[:, [0, 2]] = width - boxes[:, [2, 0]]
    if vertical:
        frames = frames[:, ::-1]
        boxes[:, [1, 3]] = height - boxes[:, [3, 1]]
    return np.ascontiguousarray(frames), boxes
