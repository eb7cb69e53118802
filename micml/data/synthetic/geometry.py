"""Geometry and painting helpers the scene, the vehicles and the occluders share.

Coordinates are continuous: pixel (row i, col j) covers [j, j+1) x [i, i+1). Canvases are
float32 BGR in [0, 1]; masks are uint8 drawn by cv2 with 4 bits of sub-pixel precision.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

# BGR luma weights (ITU-R BT.601), to set a vehicle's contrast against its background.
LUMA = np.array([0.114, 0.587, 0.299], np.float32)


class Polyline:
    """A polyline parametrised by arc length (vehicles move along lanes at constant speed)."""

    def __init__(self, points: np.ndarray):
        self.points = np.asarray(points, np.float64)
        segments = np.diff(self.points, axis=0)
        self.cumulative = np.concatenate([[0.0], np.cumsum(np.hypot(segments[:, 0], segments[:, 1]))])
        self.length = float(self.cumulative[-1])
        self.segment_headings = np.arctan2(segments[:, 1], segments[:, 0])

    def at(self, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Points (..., 2) and headings (...) at arc lengths `s`."""
        s = np.asarray(s, np.float64)
        xy = np.stack([np.interp(s, self.cumulative, self.points[:, 0]),
                       np.interp(s, self.cumulative, self.points[:, 1])], axis=-1)
        segment = np.clip(np.searchsorted(self.cumulative, s, side="right") - 1,
                          0, len(self.segment_headings) - 1)
        return xy, self.segment_headings[segment]

    def offset(self, distance: float) -> "Polyline":
        """The parallel polyline `distance` px to the left-hand normal (-sin, cos), mitred."""
        normals = np.stack([-np.sin(self.segment_headings), np.cos(self.segment_headings)], axis=1)
        vertex_normals = np.empty_like(self.points)
        vertex_normals[0], vertex_normals[-1] = normals[0], normals[-1]
        mitres = normals[:-1] + normals[1:]
        mitres /= np.linalg.norm(mitres, axis=1, keepdims=True)
        # Scale so that the offset line stays `distance` from both adjacent segments.
        vertex_normals[1:-1] = mitres / np.sum(mitres * normals[1:], axis=1, keepdims=True)
        return Polyline(self.points + distance * vertex_normals)

    def reversed(self) -> "Polyline":
        return Polyline(self.points[::-1])


def rect_corners(centre, heading: float, length: float, width: float) -> np.ndarray:
    along = np.array([math.cos(heading), math.sin(heading)]) * length / 2
    across = np.array([-math.sin(heading), math.cos(heading)]) * width / 2
    centre = np.asarray(centre, np.float64)
    return np.stack([centre + along + across, centre + along - across,
                     centre - along - across, centre - along + across])


def cv_points(points: np.ndarray) -> np.ndarray:
    """Continuous coordinates -> cv2 fixed-point (shift 4) pixel-index coordinates."""
    return np.round((np.asarray(points) - 0.5) * 16).astype(np.int32)


def fill_polygon(mask: np.ndarray, corners: np.ndarray, value=255, antialiased=False) -> None:
    cv2.fillPoly(mask, [cv_points(corners)], value, cv2.LINE_AA if antialiased else cv2.LINE_8, 4)


def polygon_overlaps(mask: np.ndarray, corners: np.ndarray) -> bool:
    """Whether the polygon touches a set pixel of `mask` (or leaves the mask)."""
    low = np.floor(corners.min(axis=0)).astype(int) - 1
    high = np.ceil(corners.max(axis=0)).astype(int) + 1
    if low[0] < 0 or low[1] < 0 or high[0] > mask.shape[1] or high[1] > mask.shape[0]:
        return True
    local = np.zeros((high[1] - low[1], high[0] - low[0]), np.uint8)
    fill_polygon(local, corners - low)
    return bool(np.any(local & mask[low[1]:high[1], low[0]:high[0]]))


def body_boxes(centres: np.ndarray, headings: np.ndarray, lengths: np.ndarray, widths: np.ndarray) -> np.ndarray:
    """Axis-aligned extents [x1, y1, x2, y2] of rotated rectangular bodies."""
    cos, sin = np.abs(np.cos(headings)), np.abs(np.sin(headings))
    half_x = cos * lengths / 2 + sin * widths / 2
    half_y = sin * lengths / 2 + cos * widths / 2
    return np.stack([centres[:, 0] - half_x, centres[:, 1] - half_y,
                     centres[:, 0] + half_x, centres[:, 1] + half_y], axis=1).reshape(-1, 4)


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cell: int) -> np.ndarray:
    """Roughly unit-variance noise with features about `cell` px wide (bicubic up-sampling)."""
    height, width = shape
    grid = rng.standard_normal((height // cell + 3, width // cell + 3)).astype(np.float32)
    big = cv2.resize(grid, (grid.shape[1] * cell, grid.shape[0] * cell), interpolation=cv2.INTER_CUBIC)
    return big[cell:cell + height, cell:cell + width]


def tinted(tint, luma) -> np.ndarray:
    """Colour(s) with the hue of `tint` and the given luma, clipped to [0, 1]."""
    tint = np.asarray(tint, np.float32)
    luma = np.asarray(luma, np.float32)
    return np.clip(tint * (luma / (tint @ LUMA))[..., None], 0.0, 1.0)


def paint(canvas: np.ndarray, alpha: np.ndarray, colour) -> None:
    """canvas <- canvas*(1-alpha) + colour*alpha, colour a BGR triple or a per-pixel image."""
    alpha = alpha[..., None]
    canvas *= 1.0 - alpha
    canvas += alpha * colour


Window = tuple[slice, slice]  # (rows, columns) of the canvas


def canvas_window(shape: tuple[int, int], points: np.ndarray, pad: int = 2) -> Window | None:
    """The canvas rows and columns around `points`, or None when they are all off the canvas.

    Objects are drawn inside their own window, so that the cost of a scene grows with its
    area and not with area x number of objects."""
    low = np.floor(np.min(points, axis=0)).astype(int) - pad
    high = np.ceil(np.max(points, axis=0)).astype(int) + pad + 1
    x0, y0 = max(low[0], 0), max(low[1], 0)
    x1, y1 = min(high[0], shape[1]), min(high[1], shape[0])
    if x0 >= x1 or y0 >= y1:
        return None
    return slice(y0, y1), slice(x0, x1)


def window_origin(window: Window) -> np.ndarray:
    return np.array([window[1].start, window[0].start], np.float64)


def window_shape(window: Window) -> tuple[int, int]:
    return window[0].stop - window[0].start, window[1].stop - window[1].start


def polygon_alpha(window: Window, corners: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage of a polygon inside `window`, float32 in [0, 1]."""
    mask = np.zeros(window_shape(window), np.uint8)
    fill_polygon(mask, corners - window_origin(window), antialiased=True)
    return mask.astype(np.float32) / 255


def line_alpha(window: Window, ends: np.ndarray) -> np.ndarray:
    mask = np.zeros(window_shape(window), np.uint8)
    local = cv_points(ends - window_origin(window))
    cv2.line(mask, tuple(local[0]), tuple(local[1]), 255, 1, cv2.LINE_AA, 4)
    return mask.astype(np.float32) / 255

