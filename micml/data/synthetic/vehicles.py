"""Vehicles: appearance, drawing, the parked look-alikes and the movers driving along lanes."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from micml.data.synthetic.geometry import fill_polygon, polygon_overlaps, rect_corners, tinted
from micml.data.synthetic.scenery import Lane, Layout, road_points_in_image
from micml.data.synthetic.spec import SyntheticSpec


@dataclass(frozen=True)
class VehicleTrack:
    """What a moving vehicle was drawn with (for tests and dataset statistics)."""

    track_id: int
    length: float
    width: float
    speed: float  # px per frame along its lane
    contrast: float
    dark: bool


# Muted, as seen from orbit: white, grey and black cars are common, then red, blue, beige.
_VEHICLE_TINTS = ((1.0, 1.0, 1.0), (1.0, 1.0, 1.0), (1.0, 1.0, 1.0), (1.0, 1.0, 1.0),
                  (0.75, 0.85, 1.3), (1.25, 0.98, 0.85), (0.9, 1.02, 1.06))


@dataclass
class Look:
    """Appearance arrays, one entry per vehicle."""

    length: np.ndarray
    width: np.ndarray
    corner_radius: np.ndarray
    colour: np.ndarray  # (N, 3) BGR
    windshield: np.ndarray  # distance of the windshield stripe from the front, px; nan = none
    shadow: np.ndarray  # (N, 2) offset of the shadow, px; zero = none
    contrast: np.ndarray
    dark: np.ndarray

    def __len__(self) -> int:
        return len(self.length)


def _vehicle_size(rng: np.random.Generator, spec: SyntheticSpec, max_width: float) -> tuple[float, float]:
    """(length, width); widths are capped so that a vehicle fits its lane."""
    length = rng.uniform(*spec.vehicle_length_px)
    return length, float(np.clip(length * rng.uniform(*spec.vehicle_width_ratio), 1.0, max_width))


def _sample_looks(rng: np.random.Generator, spec: SyntheticSpec, background_luma: np.ndarray,
                  lengths: np.ndarray, widths: np.ndarray, sun: np.ndarray) -> Look:
    n = len(background_luma)
    contrast = rng.uniform(*spec.contrast, size=n)
    dark = rng.random(n) < spec.dark_fraction
    # Flip the polarity where the wanted luma does not exist (a bright car on bright concrete).
    target = background_luma + np.where(dark, -contrast, contrast)
    impossible = (target < 0.03) | (target > 0.97)
    dark = np.where(impossible, ~dark, dark)
    luma = np.clip(background_luma + np.where(dark, -contrast, contrast), 0.02, 0.98)
    tints = np.asarray(_VEHICLE_TINTS, np.float32)[rng.integers(len(_VEHICLE_TINTS), size=n)]
    tints = tints * rng.uniform(0.95, 1.05, size=(n, 3)).astype(np.float32)
    has_windshield = (rng.random(n) < 0.7) & (lengths >= 5)
    has_shadow = rng.random(n) < 0.6
    return Look(length=lengths, width=widths, corner_radius=widths * rng.uniform(0, 0.35, size=n),
                 colour=tinted(tints, luma), contrast=np.abs(luma - background_luma), dark=dark,
                 windshield=np.where(has_windshield, lengths * rng.uniform(0.2, 0.35, size=n), np.nan),
                 shadow=np.where(has_shadow[:, None], sun * (0.3 * widths + 0.5)[:, None], 0.0))


def _coverage(dx: np.ndarray, dy: np.ndarray, heading, half_length, half_width, radius) -> np.ndarray:
    """Anti-aliased coverage of rounded rectangles from a signed distance (1 px wide ramp)."""
    cos, sin = np.cos(heading), np.sin(heading)
    u = dx * cos + dy * sin
    v = -dx * sin + dy * cos
    qx = np.abs(u) - (half_length - radius)
    qy = np.abs(v) - (half_width - radius)
    outside = np.hypot(np.maximum(qx, 0), np.maximum(qy, 0))
    inside = np.minimum(np.maximum(qx, qy), 0)
    return np.clip(0.5 - (outside + inside - radius), 0, 1), u


def vehicle_patches(centres: np.ndarray, headings: np.ndarray, look: Look):
    """Per-vehicle (body, windshield, shadow) coverage patches (N, P, P) and their top-left pixels."""
    reach = 0.5 * np.hypot(look.length.max(), look.width.max()) + np.abs(look.shadow).max() + 2
    half = int(math.ceil(reach))
    origins = np.floor(centres).astype(int) - half
    pixel_centres = np.arange(2 * half + 1) + 0.5
    dx = origins[:, 0, None, None] + pixel_centres[None, None, :] - centres[:, 0, None, None]
    dy = origins[:, 1, None, None] + pixel_centres[None, :, None] - centres[:, 1, None, None]
    heading = headings[:, None, None]
    half_length, half_width = look.length[:, None, None] / 2, look.width[:, None, None] / 2
    radius = look.corner_radius[:, None, None]
    body, u = _coverage(dx, dy, heading, half_length, half_width, radius)
    stripe_centre = half_length - look.windshield[:, None, None]
    stripe_half = np.maximum(0.4, 0.06 * look.length)[:, None, None]
    windshield = np.nan_to_num(np.clip(stripe_half + 0.5 - np.abs(u - stripe_centre), 0, 1)) * body
    shadow, _ = _coverage(dx - look.shadow[:, 0, None, None], dy - look.shadow[:, 1, None, None],
                          heading, half_length, half_width, radius)
    return body.astype(np.float32), windshield.astype(np.float32), shadow.astype(np.float32), origins


def draw_vehicles(canvas: np.ndarray, centres: np.ndarray, headings: np.ndarray, look: Look) -> None:
    if len(look) == 0:
        return
    body, windshield, shadow, origins = vehicle_patches(centres, headings, look)
    for i, region in canvas_regions(canvas.shape[:2], origins, body.shape[1]):
        patch = (slice(region[1].start - origins[i, 1], region[1].stop - origins[i, 1]),
                 slice(region[0].start - origins[i, 0], region[0].stop - origins[i, 0]))
        view = canvas[region[1], region[0]]
        cover = body[i][patch][..., None]
        view *= 1.0 - 0.45 * (shadow[i][patch] * (1 - body[i][patch]))[..., None]
        colour = look.colour[i] * (1.0 - 0.55 * windshield[i][patch])[..., None]
        view *= 1.0 - cover
        view += cover * colour


def canvas_regions(shape, origins: np.ndarray, size: int):
    """(vehicle index, (x slice, y slice)) for each patch that overlaps the canvas."""
    height, width = shape
    for i, (x0, y0) in enumerate(origins):
        xs = slice(max(x0, 0), min(x0 + size, width))
        ys = slice(max(y0, 0), min(y0 + size, height))
        if xs.start < xs.stop and ys.start < ys.stop:
            yield i, (xs, ys)


@dataclass
class Parked:
    centres: np.ndarray
    headings: np.ndarray
    look: Look


def place_parked(rng: np.random.Generator, spec: SyntheticSpec, layout: Layout) -> Parked:
    """Parked look-alikes on road shoulders, in parking lots and off-road; never in a lane."""
    wanted = int(rng.integers(spec.parked_per_video[0], spec.parked_per_video[1] + 1))
    blocked = layout.lane_mask | layout.obstacle_mask
    free_slots = list(rng.permutation(len(layout.parking_slots)))
    centres, headings, lengths, widths = [], [], [], []
    for _ in range(wanted):
        length, width = _vehicle_size(rng, spec, 0.8 * layout.lane_width)
        for _attempt in range(20):
            pose = _parked_pose(rng, layout, free_slots, width)
            if pose is None:
                continue
            corners = rect_corners(pose[0], pose[1], length + 1, width + 1)
            if not polygon_overlaps(blocked, corners):
                fill_polygon(blocked, corners)
                centres.append(pose[0]), headings.append(pose[1]), lengths.append(length), widths.append(width)
                break
    centres = np.array(centres, np.float64).reshape(-1, 2)
    background = np.array([layout.luma_at(c) for c in centres])
    look = _sample_looks(rng, spec, background, np.array(lengths), np.array(widths), layout.sun)
    return Parked(centres, np.array(headings, np.float64), look)


def _parked_pose(rng: np.random.Generator, layout: Layout, free_slots: list, width: float):
    """(centre, heading) of one parking candidate, or None when the drawn kind has no room."""
    kind = rng.choice(["shoulder", "lot", "off-road"], p=[0.4, 0.3, 0.3])
    if kind == "shoulder" and layout.roads:
        road = layout.roads[rng.integers(len(layout.roads))]
        side = rng.choice([-1.0, 1.0])
        shoulder = road.centre.offset(side * (road.lanes_width / 2 + road.shoulder_width / 2))
        _, points, heading = road_points_in_image(rng, layout, shoulder, 1)
        if len(points):
            return points[0], float(heading[0] + rng.choice([0, np.pi]))
        return None
    if kind == "lot" and free_slots:
        centre, heading = layout.parking_slots[free_slots.pop()]
        return centre + rng.uniform(-0.4, 0.4, 2), float(heading + rng.choice([0, np.pi]) + rng.uniform(-0.1, 0.1))
    if kind == "off-road":
        return rng.uniform(layout.image_low, layout.image_high), float(rng.uniform(0, 2 * np.pi))
    return None


class Movers:
    """Vehicles driving along lanes at constant speed: arc length s(t) = s0 + speed * t."""

    def __init__(self, lanes: list[Lane], lane_index, start, speed, look: Look):
        self.lanes = lanes
        self.lane_index = np.asarray(lane_index, int)
        self.start = np.asarray(start, np.float64)
        self.speed = np.asarray(speed, np.float64)
        self.look = look
        self.track_ids = np.arange(1, len(self.start) + 1)

    def pose(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        centres = np.zeros((len(self.start), 2))
        headings = np.zeros(len(self.start))
        for lane in np.unique(self.lane_index):
            rows = self.lane_index == lane
            centres[rows], headings[rows] = self.lanes[lane].path.at(self.start[rows] + self.speed[rows] * t)
        return centres, headings

    def tracks(self) -> dict[int, VehicleTrack]:
        return {int(tid): VehicleTrack(int(tid), float(self.look.length[i]), float(self.look.width[i]),
                                       float(self.speed[i]), float(self.look.contrast[i]), bool(self.look.dark[i]))
                for i, tid in enumerate(self.track_ids)}


def place_movers(rng: np.random.Generator, spec: SyntheticSpec, layout: Layout, n_frames: int) -> Movers:
    """Moving vehicles, each visible in at least one frame and never overlapping another in its lane."""
    times = np.arange(n_frames)
    mean_length = float(np.mean(spec.vehicle_length_px))
    lanes, starts, speeds, lengths, widths = [], [], [], [], []
    if spec.dense_traffic:
        candidates = _queued_candidates(rng, spec, layout, n_frames, mean_length)
    else:
        wanted = int(rng.integers(spec.moving_per_video[0], spec.moving_per_video[1] + 1))
        candidates = _random_candidates(rng, spec, layout, n_frames, attempts=30 * wanted)
    for lane, start, speed, length, width in candidates:
        if not spec.dense_traffic and len(starts) == wanted:
            break
        path = layout.lanes[lane].path
        points, _ = path.at(start + speed * times)
        if not layout.in_image(points).any():
            continue
        clear = all(np.all(np.abs((start - other_start) + (speed - other_speed) * times)
                           >= (length + other_length) / 2 + 1.0)
                    for other_lane, other_start, other_speed, other_length in zip(lanes, starts, speeds, lengths)
                    if other_lane == lane)
        if clear:
            lanes.append(lane), starts.append(start), speeds.append(speed)
            lengths.append(length), widths.append(width)
    background = np.array([layout.roads[layout.lanes[lane].road].luma for lane in lanes])
    look = _sample_looks(rng, spec, background, np.array(lengths), np.array(widths), layout.sun)
    return Movers(layout.lanes, lanes, starts, speeds, look)


def _random_candidates(rng, spec: SyntheticSpec, layout: Layout, n_frames: int, attempts: int):
    """(lane, start arc, speed, length, width) drawn independently; the caller rejects collisions."""
    if not layout.lanes:
        return
    for _ in range(attempts):
        lane = int(rng.integers(len(layout.lanes)))
        speed = rng.uniform(*spec.speed_px_per_frame)
        travel = speed * (n_frames - 1)
        length, width = _vehicle_size(rng, spec, 0.8 * layout.lane_width)
        path_length = layout.lanes[lane].path.length
        if path_length > travel:
            yield lane, rng.uniform(0, path_length - travel), speed, length, width


def _queued_candidates(rng, spec: SyntheticSpec, layout: Layout, n_frames: int, mean_length: float):
    """Dense traffic: each lane filled as a queue sharing the lane's speed."""
    for lane, item in enumerate(layout.lanes):
        speed = rng.uniform(*spec.speed_px_per_frame)
        end = item.path.length - speed * (n_frames - 1)
        position = rng.uniform(0, mean_length)
        while True:
            length, width = _vehicle_size(rng, spec, 0.8 * layout.lane_width)
            if position + length > end:
                break
            yield lane, position + length / 2, speed, length, width
            position += length + rng.uniform(0.5, 1.5) * mean_length


