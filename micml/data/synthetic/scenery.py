"""The static scene of a video: ground, crop fields, roads and lanes, parking lots, buildings, trees."""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from micml.data.synthetic.geometry import (LUMA, Polyline, canvas_window, cv_points, fill_polygon, line_alpha,
                                           paint, polygon_alpha, polygon_overlaps, rect_corners, smooth_noise,
                                           tinted, window_origin, window_shape)
from micml.data.synthetic.spec import SyntheticSpec

_GROUND_TINTS = ((0.80, 1.00, 1.15), (0.85, 1.08, 0.95), (1.0, 1.0, 1.0))  # arid, green, urban (BGR)
_FIELD_TINTS = ((0.75, 1.15, 0.90), (0.70, 1.05, 1.15), (0.80, 0.95, 1.20), (0.9, 1.1, 1.0))
_TREE_TINT = (0.75, 1.20, 0.80)


@dataclass
class Road:
    centre: Polyline
    n_lanes: int
    lane_width: float
    shoulder_width: float
    luma: float

    @property
    def lanes_width(self) -> float:
        return self.n_lanes * self.lane_width

    @property
    def full_width(self) -> float:
        return self.lanes_width + 2 * self.shoulder_width


@dataclass
class Lane:
    path: Polyline  # oriented in the direction of travel
    road: int


@dataclass
class Layout:
    canvas: np.ndarray  # (Hc, Wc, 3) float32 BGR, the static scene in world coordinates
    margin: int  # world = image + margin (+ camera offset)
    width: int
    height: int
    roads: list[Road]
    lanes: list[Lane]
    parking_slots: list[tuple[np.ndarray, float]]  # (centre, heading of a parked vehicle)
    lane_mask: np.ndarray  # uint8, the drivable lanes (no parking there)
    obstacle_mask: np.ndarray  # uint8, buildings and trees (no parking there either)
    sun: np.ndarray  # unit vector along which shadows fall
    lane_width: float

    @property
    def image_low(self) -> np.ndarray:
        return np.array([self.margin, self.margin], np.float64)

    @property
    def image_high(self) -> np.ndarray:
        return np.array([self.margin + self.width, self.margin + self.height], np.float64)

    def in_image(self, points: np.ndarray) -> np.ndarray:
        return np.all((points >= self.image_low) & (points < self.image_high), axis=-1)

    def luma_at(self, point) -> float:
        x, y = np.clip(np.asarray(point).astype(int), 0, [self.canvas.shape[1] - 1, self.canvas.shape[0] - 1])
        patch = self.canvas[max(y - 1, 0):y + 2, max(x - 1, 0):x + 2]
        return float(np.mean(patch @ LUMA))


def build_layout(rng: np.random.Generator, spec: SyntheticSpec, width: int, height: int,
                  n_frames: int, margin: int) -> Layout:
    shape = (height + 2 * margin, width + 2 * margin)
    mean_length = float(np.mean(spec.vehicle_length_px))
    lane_width = max(3.0, 0.6 * mean_length + 1.5)
    sun_angle = rng.uniform(0, 2 * np.pi)
    layout = Layout(canvas=_ground(rng, shape), margin=margin, width=width, height=height, roads=[], lanes=[],
                     parking_slots=[], lane_mask=np.zeros(shape, np.uint8), obstacle_mask=np.zeros(shape, np.uint8),
                     sun=np.array([math.cos(sun_angle), math.sin(sun_angle)]), lane_width=lane_width)
    rich = spec.scenery == "rich"
    if rich:
        _add_fields(rng, layout)
    # Roads run past the scene far enough for a vehicle to drive in during the video.
    reach = spec.speed_px_per_frame[1] * n_frames + spec.vehicle_length_px[1] + 8
    road_mask = np.zeros(shape, np.uint8)
    for _ in range(rng.integers(spec.roads_per_video[0], spec.roads_per_video[1] + 1)):
        _add_road(rng, layout, road_mask, reach, markings=rich)
    if not rich:
        return layout
    lot_mask = np.zeros(shape, np.uint8)
    for road in layout.roads:
        if rng.random() < 0.4:
            _add_parking_lot(rng, layout, road, road_mask | lot_mask, lot_mask, mean_length)
    _add_buildings(rng, layout, road_mask | lot_mask)
    _add_trees(rng, layout, road_mask | lot_mask)
    return layout


def _ground(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Multi-scale noise texture (features from 3 to 64 px), tinted arid, green or urban."""
    luma = np.full(shape, rng.uniform(0.36, 0.5), np.float32)
    for cell, amplitude in ((64, 0.05), (24, 0.035), (8, 0.02), (3, 0.012)):
        luma += amplitude * smooth_noise(rng, shape, cell)
    tint = np.asarray(_GROUND_TINTS[rng.integers(len(_GROUND_TINTS))], np.float32)
    return np.clip(luma[..., None] * (tint / (tint @ LUMA)), 0, 1).astype(np.float32)


def _add_fields(rng: np.random.Generator, layout: Layout) -> None:
    """Rotated crop fields with row stripes."""
    height, width = layout.canvas.shape[:2]
    for _ in range(rng.integers(1, 2 + (height * width) // 12000)):
        size = rng.uniform(30, 110, size=2)
        corners = cv2.boxPoints(((rng.uniform(0, width), rng.uniform(0, height)), tuple(size),
                                 rng.uniform(0, 180))) + 0.5
        angle, period = rng.uniform(0, np.pi), rng.uniform(3, 8)
        base, tint = rng.uniform(0.3, 0.55), _FIELD_TINTS[rng.integers(len(_FIELD_TINTS))]
        window = canvas_window((height, width), corners)
        if window is None:
            continue
        ys, xs = np.mgrid[window].astype(np.float32) + 0.5
        luma = base + 0.025 * np.sin(2 * np.pi * (xs * math.cos(angle) + ys * math.sin(angle)) / period)
        paint(layout.canvas[window], polygon_alpha(window, corners), tinted(tint, luma))


def _add_road(rng: np.random.Generator, layout: Layout, road_mask: np.ndarray, reach: float,
              markings: bool) -> None:
    """A road that crosses the existing ones rather than running alongside them (a few tries)."""
    distance_to_roads = (cv2.distanceTransform(np.where(road_mask > 0, 0, 255).astype(np.uint8), cv2.DIST_L2, 3)
                         if road_mask.any() else None)
    for _attempt in range(6):
        road = _propose_road(rng, layout, reach)
        if distance_to_roads is None or _crosses_cleanly(road, distance_to_roads):
            break
    else:
        return
    cv2.polylines(road_mask, [cv_points(road.centre.points)], False, 255, int(round(road.full_width)) + 2,
                  cv2.LINE_8, 4)
    layout.roads.append(road)
    index = len(layout.roads) - 1
    for lane in range(road.n_lanes):
        offset = (lane - (road.n_lanes - 1) / 2) * road.lane_width
        path = road.centre.offset(offset)
        # Right-hand traffic: lanes on one side drive forward, the others backward.
        layout.lanes.append(Lane(path if offset > 0 else path.reversed(), index))
    # Movers use the inner 80 % of their lane (widths are capped at 0.8 lane), so the mask of
    # where no one may park leaves the outer tenth of the outer lanes to shoulder parking.
    cv2.polylines(layout.lane_mask, [cv_points(road.centre.points)], False, 255,
                  int(round(road.lanes_width - 0.2 * road.lane_width)), cv2.LINE_8, 4)
    _paint_road(rng, layout.canvas, road, markings)


def _crosses_cleanly(road: Road, distance_to_roads: np.ndarray) -> bool:
    """Whether `road` meets the existing roads only at crossings (at about 40 deg or more), and
    never runs alongside one: the stretch of it near another road must stay short."""
    height, width = distance_to_roads.shape
    points, _ = road.centre.at(np.arange(0, road.centre.length, 1.0))
    inside = np.all((points >= 0) & (points < [width, height]), axis=1)
    columns, rows = points[inside].astype(int).T
    near = distance_to_roads[rows, columns] < road.full_width / 2 + 8
    return np.count_nonzero(near) <= 3 * (road.full_width + 8)


def _propose_road(rng: np.random.Generator, layout: Layout, reach: float) -> Road:
    height, width = layout.canvas.shape[:2]
    start = rng.uniform([0.2 * width, 0.2 * height], [0.8 * width, 0.8 * height])
    heading = rng.uniform(0, 2 * np.pi)
    bent = rng.random() < 0.5
    limits = (-reach, -reach, width + reach, height + reach)
    forward = _grow_polyline(rng, start, heading, bent, limits)
    backward = _grow_polyline(rng, start, heading + np.pi, bent, limits)
    concrete = rng.random() < 0.3  # light concrete roads make dark vehicles the visible ones
    return Road(centre=Polyline(np.concatenate([backward[::-1], forward[1:]])),
                 n_lanes=4 if rng.random() < 0.2 else 2, lane_width=layout.lane_width,
                 shoulder_width=0.9 * layout.lane_width,
                 luma=rng.uniform(0.5, 0.62) if concrete else rng.uniform(0.26, 0.4))


def _grow_polyline(rng, start, heading, bent, limits) -> np.ndarray:
    """Vertices from `start` until past `limits`; bent roads turn up to 35 deg per vertex and
    stay within 60 deg of their first heading (so a road never curls back on itself)."""
    points, direction = [np.asarray(start, np.float64)], heading
    x_low, y_low, x_high, y_high = limits
    while x_low <= points[-1][0] <= x_high and y_low <= points[-1][1] <= y_high:
        if bent:
            direction = heading + np.clip(direction - heading + rng.uniform(-0.6, 0.6), -1.05, 1.05)
            step = rng.uniform(40, 100)
        else:
            step = 4 * max(x_high - x_low, y_high - y_low)
        points.append(points[-1] + step * np.array([math.cos(direction), math.sin(direction)]))
    return np.array(points)


def _paint_road(rng: np.random.Generator, canvas: np.ndarray, road: Road, markings: bool) -> None:
    height, width = canvas.shape[:2]
    mask = np.zeros((height, width), np.uint8)
    cv2.polylines(mask, [cv_points(road.centre.points)], False, 255, int(round(road.full_width)), cv2.LINE_AA, 4)
    texture = (road.luma + 0.015 * smooth_noise(rng, (height, width), 2)
               + 0.01 * smooth_noise(rng, (height, width), 12))
    paint(canvas, mask.astype(np.float32) / 255, tinted((1.0, 1.0, 1.02), texture))
    if not markings:
        return

    # Markings: solid edge lines, a centre line, dashed lines between same-direction lanes.
    # Dashes are a few px long, i.e. static vehicle-sized bright marks, as on real roads.
    marks = np.zeros((height, width), np.uint8)
    half = road.lanes_width / 2
    for side in (-1, 1):
        cv2.polylines(marks, [cv_points(road.centre.offset(side * half).points)], False, 160, 1, cv2.LINE_AA, 4)
    dividers = [(k - road.n_lanes / 2) * road.lane_width for k in range(1, road.n_lanes)]
    for offset in dividers:
        line = road.centre.offset(offset)
        if offset == 0 and road.n_lanes == 4:
            cv2.polylines(marks, [cv_points(line.points)], False, 200, 1, cv2.LINE_AA, 4)
            continue
        dash, period = 0.5 * road.lane_width + 1, 2.2 * road.lane_width
        for start in np.arange(rng.uniform(0, period), line.length - dash, period):
            ends, _ = line.at(np.array([start, start + dash]))
            cv2.line(marks, tuple(cv_points(ends[0])), tuple(cv_points(ends[1])), 220, 1, cv2.LINE_AA, 4)
    paint(canvas, marks.astype(np.float32) / 255 * 0.7, tinted((1, 1, 1), min(road.luma + 0.3, 0.9)))


def road_points_in_image(rng: np.random.Generator, layout: Layout, path: Polyline, count: int):
    """Up to `count` random (arc length, point, heading) on `path` inside the image."""
    s = rng.uniform(0, path.length, size=max(count * 8, 32))
    points, headings = path.at(s)
    keep = layout.in_image(points)
    return s[keep][:count], points[keep][:count], headings[keep][:count]


def _add_parking_lot(rng: np.random.Generator, layout: Layout, road: Road, blocked: np.ndarray,
                     lot_mask: np.ndarray, mean_length: float) -> None:
    """A lot beside the road with two rows of perpendicular slots."""
    _, points, headings = road_points_in_image(rng, layout, road.centre, 1)
    if len(points) == 0:
        return
    side = rng.choice([-1.0, 1.0])
    slot_width, slot_depth = 0.95 * layout.lane_width, 1.3 * mean_length + 1
    n_slots = int(rng.integers(3, 8))
    along = np.array([math.cos(headings[0]), math.sin(headings[0])])
    normal = side * np.array([-along[1], along[0]])
    gap = road.full_width / 2 + 2
    lot_centre = points[0] + normal * (gap + slot_depth)
    corners = rect_corners(lot_centre, headings[0], n_slots * slot_width + 2, 2 * slot_depth + 2)
    if polygon_overlaps(blocked, corners):
        return
    fill_polygon(lot_mask, corners)
    mask = np.zeros(lot_mask.shape, np.uint8)
    fill_polygon(mask, corners, antialiased=True)
    paint(layout.canvas, mask.astype(np.float32) / 255, tinted((1, 1, 1), rng.uniform(0.48, 0.6)))
    lines = np.zeros(lot_mask.shape, np.uint8)
    for row in (-0.5, 0.5):
        for k in range(n_slots):
            centre = lot_centre + row * slot_depth * normal + (k - (n_slots - 1) / 2) * slot_width * along
            layout.parking_slots.append((centre, headings[0] + np.pi / 2))
            edge = centre + slot_width / 2 * along
            ends = np.stack([edge - slot_depth * 0.45 * normal, edge + slot_depth * 0.45 * normal])
            cv2.line(lines, tuple(cv_points(ends[0])), tuple(cv_points(ends[1])), 180, 1, cv2.LINE_AA, 4)
    paint(layout.canvas, lines.astype(np.float32) / 255 * 0.6, tinted((1, 1, 1), 0.8))


def _add_buildings(rng: np.random.Generator, layout: Layout, blocked: np.ndarray) -> None:
    """Rectangular roofs (bright or dark, with a ridge line) casting a shadow along the sun."""
    height, width = layout.canvas.shape[:2]
    occupied = blocked.copy()
    for _ in range(int(rng.integers(2, 3 + (height * width) // 3500))):
        size = rng.uniform(6, 24, size=2)
        centre = rng.uniform([0, 0], [width, height])
        angle = rng.uniform(0, np.pi) if not layout.roads or rng.random() < 0.3 else \
            layout.roads[0].centre.segment_headings[0]
        corners = rect_corners(centre, angle, size[0], size[1])
        shadow = corners + layout.sun * rng.uniform(1.5, 4)
        if polygon_overlaps(occupied, corners) or polygon_overlaps(occupied, shadow):
            continue
        fill_polygon(occupied, corners)
        fill_polygon(occupied, shadow)
        fill_polygon(layout.obstacle_mask, corners)
        roof = rng.uniform(0.22, 0.34) if rng.random() < 0.25 else rng.uniform(0.5, 0.8)
        window = canvas_window((height, width), np.concatenate([corners, shadow]))
        view = layout.canvas[window]
        paint(view, polygon_alpha(window, shadow) * 0.45, np.zeros(3, np.float32))
        paint(view, polygon_alpha(window, corners), tinted((1.0, 0.98, 0.97), roof))
        ridge = rect_corners(centre, angle, size[0] * 0.8, 0)[:2]
        paint(view, line_alpha(window, ridge) * 0.3, tinted((1, 1, 1), roof * 0.7))


def _add_trees(rng: np.random.Generator, layout: Layout, blocked: np.ndarray) -> None:
    """Dark green canopy blobs off the roads (static texture, not occluders)."""
    height, width = layout.canvas.shape[:2]
    for _ in range(int(rng.integers(2, 3 + (height * width) // 4000))):
        centre = rng.uniform([0, 0], [width, height])
        radius = rng.uniform(2, 6)
        square = rect_corners(centre, 0.0, 2 * radius, 2 * radius)
        if polygon_overlaps(blocked | layout.obstacle_mask, square):
            continue
        window, alpha, colour = canopy(rng, layout.canvas.shape[:2], centre, radius)
        paint(layout.canvas[window], alpha, colour)
        layout.obstacle_mask[window][alpha > 0.5] = 255


def canopy(rng: np.random.Generator, shape, centre, radius):
    """(window, alpha, colour) of a tree canopy: a few overlapping discs, textured dark green."""
    centre = np.asarray(centre, np.float64)
    discs = [(centre + rng.uniform(-radius, radius, size=2) * 0.7, radius * rng.uniform(0.6, 1.0))
             for _ in range(int(rng.integers(3, 6)))]
    window = canvas_window(shape, np.stack([centre - 2 * radius, centre + 2 * radius]))
    origin = window_origin(window)
    mask = np.zeros(window_shape(window), np.uint8)
    for disc_centre, disc_radius in discs:
        cv2.circle(mask, tuple(cv_points(disc_centre - origin)), int(round(disc_radius * 16)), 255, -1,
                   cv2.LINE_AA, 4)
    luma = rng.uniform(0.16, 0.26) + 0.03 * smooth_noise(rng, mask.shape, 2)
    return window, mask.astype(np.float32) / 255, tinted(_TREE_TINT, luma)


