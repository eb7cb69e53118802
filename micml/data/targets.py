"""CenterNet training targets at output stride 1 (reference coco_rsdata.py:200-258, spec 4.6).

For every box of the current frame: a Gaussian peak on the heat map at the integer centre, and,
in one of `max_objects` slots, its size (`wh`), the sub-pixel remainder of its centre (`reg`), the
flat index of the centre pixel (`ind`) and a validity flag (`reg_mask`).

More boxes than slots: every box is still drawn on the heat map (so it never becomes a negative
there), but only the first `max_objects` get size/offset targets; `n_dropped` counts the others
so that the training loop can report them (the reference drops them silently).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MAX_OBJECTS = 256  # reference opt.K
MIN_OVERLAP = 0.7


def gaussian_radius(height: float, width: float, min_overlap: float = MIN_OVERLAP) -> int:
    """CenterNet's peak radius for a box of `height` x `width` pixels.

    This is CenterNet's formula as shipped (each root divided by 2 instead of 2a), kept for
    fidelity with the reference: 4x4 -> 1, 8x8 -> 2, 16x16 -> 4, 30x30 -> 8.
    """
    h, w, o = float(math.ceil(height)), float(math.ceil(width)), min_overlap
    b1 = h + w
    c1 = w * h * (1 - o) / (1 + o)
    r1 = (b1 + math.sqrt(b1 ** 2 - 4 * c1)) / 2
    b2 = 2 * (h + w)
    c2 = (1 - o) * w * h
    r2 = (b2 + math.sqrt(b2 ** 2 - 16 * c2)) / 2
    b3 = -2 * o * (h + w)
    c3 = (o - 1) * w * h
    r3 = (b3 + math.sqrt(b3 ** 2 - 16 * o * c3)) / 2
    return max(0, int(min(r1, r2, r3)))


def peak_kernel(radius: int) -> np.ndarray:
    """(2r+1) x (2r+1) Gaussian with sigma = (2r+1)/6 and value exactly 1 at the centre.

    Values below float32 epsilon times the peak are zeroed, as CenterNet does, so the tails do not
    leave a faint non-zero floor that the focal loss would treat as 'near an object'.
    """
    diameter = 2 * radius + 1
    sigma = diameter / 6.0
    offsets = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-(offsets[:, None] ** 2 + offsets[None, :] ** 2) / (2 * sigma * sigma))
    kernel[kernel < np.finfo(np.float32).eps * kernel.max()] = 0
    return kernel.astype(np.float32)


def draw_peak_max(heatmap: np.ndarray, centre: tuple[int, int], radius: int) -> None:
    """Merge `peak_kernel(radius)` into `heatmap` (H x W) at integer `centre` (x, y) by element-wise max."""
    kernel = peak_kernel(radius)
    height, width = heatmap.shape
    x, y = centre
    left, right = min(x, radius), min(width - x, radius + 1)
    top, bottom = min(y, radius), min(height - y, radius + 1)
    if left + right <= 0 or top + bottom <= 0:
        return
    region = heatmap[y - top:y + bottom, x - left:x + right]
    patch = kernel[radius - top:radius + bottom, radius - left:radius + right]
    np.maximum(region, patch, out=region)


@dataclass
class CenterNetTargets:
    hm: np.ndarray        # 1 x H x W float32, peaks = 1 at object centres
    wh: np.ndarray        # K x 2 float32, (width, height) in output pixels
    reg: np.ndarray       # K x 2 float32, centre minus its integer pixel, in [0, 1)
    ind: np.ndarray       # K int64, y_int * W + x_int
    reg_mask: np.ndarray  # K uint8, 1 for filled slots
    n_objects: int        # boxes that became targets (drawn on hm)
    n_dropped: int        # of those, boxes without a slot because K was exceeded


def build_targets(boxes: np.ndarray, height: int, width: int, max_objects: int = MAX_OBJECTS) -> CenterNetTargets:
    """Targets for `boxes` (N x 4 [x1,y1,x2,y2], pixels) on an output of `height` x `width`.

    The reference's rule (coco_rsdata.py:231-242, spec 4.6), including at the image edge: width,
    height and centre come from the box as given; then width is clipped to [0, width-1], height to
    [0, height-1], boxes left without area skipped, and the centre clipped into the image. So a box
    running past the edge keeps its full size and gets its peak on the edge pixel, and one ending
    exactly at the far edge (x2 == width) keeps x2 - x1 and its true centre. Training crops pass
    boxes relative to the crop without cutting them to it (micml.data.clips.crop_clip), so a crop
    edge is treated as the reference treats an image edge.

    Deviation: a box with no area inside the image is skipped; the reference would draw a peak
    for it at the clipped centre, on an edge pixel where nothing of it is visible.
    """
    hm = np.zeros((1, height, width), np.float32)
    wh = np.zeros((max_objects, 2), np.float32)
    reg = np.zeros((max_objects, 2), np.float32)
    ind = np.zeros(max_objects, np.int64)
    reg_mask = np.zeros(max_objects, np.uint8)
    n_objects = 0
    for box in np.asarray(boxes, np.float32).reshape(-1, 4):
        if not overlaps_image(box, height, width):
            continue
        size, centre = size_and_centre(box, height, width)
        if size[0] <= 0 or size[1] <= 0:
            continue
        centre_int = centre.astype(np.int64)  # floor: the centre was clipped to be non-negative
        draw_peak_max(hm[0], (int(centre_int[0]), int(centre_int[1])), gaussian_radius(size[1], size[0]))
        if n_objects < max_objects:
            wh[n_objects] = size
            reg[n_objects] = centre - centre_int
            ind[n_objects] = centre_int[1] * width + centre_int[0]
            reg_mask[n_objects] = 1
        n_objects += 1
    return CenterNetTargets(hm, wh, reg, ind, reg_mask, n_objects, max(0, n_objects - max_objects))


def overlaps_image(box: np.ndarray, height: int, width: int) -> bool:
    """Whether [x1, y1, x2, y2] covers some area of the [0, width] x [0, height] image."""
    x1, y1, x2, y2 = box
    return bool(x2 > 0 and y2 > 0 and x1 < width and y1 < height)


def size_and_centre(box: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(w, h) and centre (x, y) of a box by the reference's rule: from the box as given, then clipped.

    Sizes are clipped to [0, size-1] and the centre to the pixel range [0, size-1] of each axis.
    """
    x1, y1, x2, y2 = box
    last = np.array([width - 1, height - 1], np.float32)
    size = np.clip(np.array([x2 - x1, y2 - y1], np.float32), 0, last)
    centre = np.clip(np.array([(x1 + x2) / 2, (y1 + y2) / 2], np.float32), 0, last)
    return size, centre
