"""Drawing tracks: each track's box, id and the trail of its recent centres, in a colour of its own.

`TrailPainter` draws frame by frame (the annotated video of `micml detect --track`);
`trails_image` draws every track up to one frame over that frame (the workflow's figure).
"""

from __future__ import annotations

import colorsys
from collections import deque

import cv2
import numpy as np

DEFAULT_TRAIL_FRAMES = 30  # 3 s at VISO's 10 frames/s: long enough to show direction and speed
FONT = cv2.FONT_HERSHEY_SIMPLEX
GOLDEN_RATIO = 0.618033988749895  # hue step that keeps consecutive ids far apart in colour


def track_colour(track_id: int) -> tuple[int, int, int]:
    """A bright BGR colour, the same for an id in every frame."""
    red, green, blue = colorsys.hsv_to_rgb((track_id * GOLDEN_RATIO) % 1.0, 0.9, 1.0)
    return int(blue * 255), int(green * 255), int(red * 255)


def centres(boxes: np.ndarray) -> np.ndarray:
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    return (boxes[:, :2] + boxes[:, 2:]) / 2


def draw_track(canvas: np.ndarray, track_id: int, trail: np.ndarray, box: np.ndarray | None) -> None:
    """Draw in place: the trail (K x 2 centres, oldest first), then the box and its id."""
    colour = track_colour(track_id)
    if len(trail) > 1:
        cv2.polylines(canvas, [np.round(trail).astype(np.int32).reshape(-1, 1, 2)], False, colour, 1, cv2.LINE_AA)
    if box is not None:
        x1, y1, x2, y2 = (int(round(value)) for value in box)
        cv2.rectangle(canvas, (x1, y1), (x2, y2), colour, 1)
        cv2.putText(canvas, str(track_id), (x1, max(y1 - 2, 8)), FONT, 0.35, colour, 1, cv2.LINE_AA)


class TrailPainter:
    """Feed `paint` each frame's boxes and track ids in order; ids below 0 are drawn as plain
    boxes (detections of no confirmed track)."""

    def __init__(self, trail_frames: int = DEFAULT_TRAIL_FRAMES, plain_colour=(0, 255, 0)):
        self.trail_frames = trail_frames
        self.plain_colour = plain_colour
        self.trails: dict[int, deque[tuple[int, np.ndarray]]] = {}
        self.frame = 0

    def paint(self, image: np.ndarray, boxes: np.ndarray, ids: np.ndarray) -> np.ndarray:
        self.frame += 1
        canvas = image.copy()
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        for box, track_id, centre in zip(boxes, np.asarray(ids).reshape(-1), centres(boxes)):
            if track_id < 0:
                x1, y1, x2, y2 = (int(round(value)) for value in box)
                cv2.rectangle(canvas, (x1, y1), (x2, y2), self.plain_colour, 1)
            else:
                self.trails.setdefault(int(track_id), deque()).append((self.frame, centre))
        current = {int(track_id): box for box, track_id in zip(boxes, np.asarray(ids).reshape(-1)) if track_id >= 0}
        for track_id in list(self.trails):
            trail = self.trails[track_id]
            while trail and trail[0][0] <= self.frame - self.trail_frames:
                trail.popleft()
            if not trail:
                del self.trails[track_id]
                continue
            draw_track(canvas, track_id, np.array([point for _, point in trail]), current.get(track_id))
        return canvas


def trails_image(image: np.ndarray, tracks: np.ndarray, frame: int) -> np.ndarray:
    """`image` (frame `frame`) with the whole trail of every track up to that frame, and the
    boxes of the tracks present in it; tracks are rows (frame, id, x1, y1, x2, y2, score)."""
    canvas = image.copy()
    tracks = np.asarray(tracks, np.float64).reshape(-1, 7)
    for track_id in np.unique(tracks[tracks[:, 0] <= frame, 1]):
        rows = tracks[(tracks[:, 1] == track_id) & (tracks[:, 0] <= frame)]
        rows = rows[np.argsort(rows[:, 0])]
        present = rows[rows[:, 0] == frame]
        draw_track(canvas, int(track_id), centres(rows[:, 2:6]), present[0, 2:6] if len(present) else None)
    return canvas
