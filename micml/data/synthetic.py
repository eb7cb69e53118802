"""The embedded synthetic default dataset: satellite-like video of small moving vehicles.

A seeded, procedural generator. Each video shows textured ground (multi-scale noise; with
`scenery="rich"` also crop fields, building blocks with shadows and trees), one to a few roads
(straight or bent polylines with shoulders; rich roads get lane markings and sometimes a
parking lot), small vehicles that MOVE along the
lanes at constant speed, and look-alike PARKED vehicles (same appearance distribution, on road
shoulders, in parking lots or off-road) that never move. Only moving vehicles are labelled, as
in the real benchmarks: a detector must use time to reject the parked ones.

Conventions (what `SyntheticVideo` holds):
- `frames`: uint8 array (T, H, W, 3) in BGR order (what cv2.imwrite expects).
- Frame indices are 1-based, as in every native format.
- Boxes are float `[x1, y1, x2, y2]` on the continuous image plane where pixel (row i, col j)
  covers [j, j+1) x [i, i+1): `x2 = x1 + width`, an exclusive end like COCO's `x + w`.
  A box is the axis-aligned extent of the vehicle's body (its shadow excluded).
- `boxes[f] = (N x 4 boxes clipped to the frame, N track ids)`; `unclipped_boxes[f]` holds the
  same rows before clipping (VISO and DroneCrowd keep boxes running past the border).
- Visibility: a moving vehicle is labelled in a frame when at least `MIN_VISIBLE_FRACTION` of its
  body is visible, i.e. inside the frame and not under an occluder (a tree canopy or a bridge
  over the road). Hidden vehicles are dropped, as the real benchmarks drop objects one cannot
  see; the label comes back when the vehicle reappears (same track id).
- Camera shake: every frame is the scene seen through a camera offset drawn uniformly in
  [-jitter_px, jitter_px]^2 around a fixed origin (so frame-to-frame shake is up to 2*jitter_px),
  applied to the whole frame with bilinear resampling; labels carry the same shift.

Determinism: video `index` of `split` depends only on (seed, split, index). Its seed sequence is
`SeedSequence(seed, spawn_key=(split_number, index))`, which is exactly the child that
`SeedSequence(seed).spawn(...)[split_number].spawn(...)[index]` would give, built directly so that
regenerating one video never touches the others. Inside a video, separate child streams drive the
layout, the parked vehicles, the moving vehicles, the occluders, the camera and the sensor noise,
so that changing the parked or moving counts, the occlusion probability, the shake or the noise
leaves the rest of the video unchanged (the tests compare such pairs pixel by pixel). Knobs the
layout depends on (vehicle sizes set the lane width, top speed how far roads extend) change it.

Public API: `SyntheticSpec`, `DIFFICULTY_PRESETS`, `spec_from_settings`, `generate_video`,
`split_videos`, `SyntheticVideo`; `micml.data.render` writes videos into the native formats.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Sequence

import cv2
import numpy as np

from micml.catalog import SPLITS

# Scenery of a video: "plain" is textured ground and asphalt roads only (the static clutter a
# detector must learn to ignore is the parked vehicles); "rich" adds crop fields, buildings,
# trees, parking lots and lane markings, whose vehicle-sized bright dashes and roof ridges are
# more static look-alikes (slower to learn in a short CPU schedule; see DIFFICULTY_PRESETS).
SCENERIES = ("plain", "rich")

# A vehicle is labelled while at least this share of its body is inside the frame and not
# under an occluder: a third keeps a half-visible vehicle at the border (still detectable),
# and drops slivers and vehicles hidden under a canopy or bridge.
MIN_VISIBLE_FRACTION = 1.0 / 3.0

# The scene extends this far past each frame border so that camera shake never looks outside
# it; a constant (not derived from jitter_px) so that the scene does not depend on the shake.
MAX_JITTER_PX = 8.0
_SCENE_MARGIN = int(MAX_JITTER_PX) + 2

# BGR luma weights (ITU-R BT.601), to set a vehicle's contrast against its background.
_LUMA = np.array([0.114, 0.587, 0.299], np.float32)


# ---------------------------------------------------------------------------------------------
# The specification
# ---------------------------------------------------------------------------------------------

class SpecError(ValueError):
    """A bad synthetic spec or settings key or value; the message names the key."""


class SpecTypeError(SpecError, TypeError):
    """A spec value of the wrong type (also a ValueError, so `micml` reports it like the others)."""


@dataclass(frozen=True)
class SyntheticSpec:
    """Everything that decides the synthetic dataset. Defaults = the "default" preset.

    Geometry: train and val videos share one size (`train_*`), as RsCarData keeps its validation
    videos among the training videos, whose frames all have one size; test videos are larger
    (`width`, `height`, `n_frames`), as RsCarData's full test frames are larger than its
    training crops. The default is sized so that the whole workflow (training three models and
    testing them) runs on a 2-core CPU: 6 train + 2 val videos of 160x160 x 36 frames, and
    3 test videos of 256x256 x 60 frames. Test videos are that long because the first 4 frames
    of a video lack a full 5-frame history (the first frame stands in for the missing ones, as
    in the reference), so movers look parked there: a motion detector finds 2 % of them in
    frame 1, ~50 % in frame 2. They weigh 1.3 % of a real 300-frame test video, 13 % of a
    30-frame one (which cost DSFNet 0.03 F1), 7 % of a 60-frame one.

    Ranges are (low, high) pairs sampled uniformly. Intensities are fractions of full scale
    (1.0 = 255 grey levels).
    """

    seed: int = 0
    train_width: int = 160
    train_height: int = 160
    train_frames: int = 36
    width: int = 256
    height: int = 256
    n_frames: int = 60
    n_train: int = 6
    n_val: int = 2
    n_test: int = 3
    fps: float = 10.0
    # Body length along the direction of travel, px; width = length x width ratio.
    vehicle_length_px: tuple[float, float] = (5.0, 12.0)
    vehicle_width_ratio: tuple[float, float] = (0.45, 0.6)
    # |vehicle luma - background luma|.
    contrast: tuple[float, float] = (0.2, 0.45)
    # Share of vehicles darker than their background (the others are brighter).
    dark_fraction: float = 0.0
    speed_px_per_frame: tuple[float, float] = (1.0, 3.0)
    # Up to this many movers are placed (fewer when the lanes are full); ignored when
    # dense_traffic fills every lane.
    moving_per_video: tuple[int, int] = (16, 30)
    parked_per_video: tuple[int, int] = (16, 28)
    roads_per_video: tuple[int, int] = (1, 3)
    # Dense traffic: every lane is filled as a queue (vehicles of a lane share its speed and
    # follow 0.5-1.5 mean lengths apart).
    dense_traffic: bool = False
    # Std of the independent per-frame Gaussian sensor noise.
    noise_sigma: float = 0.015
    # Camera offset per frame, uniform in [-jitter_px, jitter_px] per axis.
    jitter_px: float = 0.25
    # Chance that a road gets an occluder (tree canopy or bridge) across it.
    occlusion_probability: float = 0.3
    # What surrounds the roads (see SCENERIES): "rich" adds crop fields, buildings with
    # shadows, trees, parking lots and lane markings, all static look-alike texture.
    scenery: str = "plain"

    def __post_init__(self) -> None:
        for spec_field in dataclasses.fields(self):
            value = _coerced(spec_field.name, getattr(self, spec_field.name), spec_field.default)
            object.__setattr__(self, spec_field.name, value)
        _check_values(self)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "SyntheticSpec":
        """Build from a plain dict (e.g. parsed YAML); unknown keys and wrong types are errors."""
        known = {spec_field.name for spec_field in dataclasses.fields(cls)}
        unknown = sorted(set(config) - known)
        if unknown:
            raise SpecError(f"SyntheticSpec: unknown key(s) {', '.join(map(repr, unknown))}; "
                             f"known keys: {', '.join(sorted(known))}")
        return cls(**dict(config))

    def geometry(self, split: str) -> tuple[int, int, int]:
        """(width, height, n_frames) of the videos of `split`."""
        _check_split(split)
        if split == "test":
            return self.width, self.height, self.n_frames
        return self.train_width, self.train_height, self.train_frames

    def count(self, split: str) -> int:
        """Number of videos in `split`."""
        _check_split(split)
        return {"train": self.n_train, "val": self.n_val, "test": self.n_test}[split]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (ranges as lists) that `from_config` turns back into this spec."""
        return {name: list(value) if isinstance(value, tuple) else value
                for name, value in dataclasses.asdict(self).items()}


# Difficulty knobs of each preset (sizes and counts are not part of a preset).
#   easy:     close to CPU_CALIBRATION section B: bright 5-12 px vehicles at 1-3 px/frame, a
#             few per video, plain scenery, no shake, no occlusion.
#   default:  what a 2-core CPU can learn in the default workflow's budget (a few hundred
#             steps) while a single-frame detector still cannot tell the parked look-alikes from
#             the movers: dense traffic (16-30 movers) of clearly visible vehicles among as many
#             parked ones, plain scenery, quarter-pixel camera shake, occluders on 30 % of roads.
#             Rich scenery is slower to learn early on (DSFNet, crop 96, batch 4, val F1 after
#             80 steps: 0.64 rich, 0.85 plain; after 320 both ~0.91) and costs MICML's short
#             CPU schedule (112 steps: test F1 0.79 rich, 0.82 plain).
#   moderate: rich scenery, faint (contrast from 0.08), dark and slow (from 0.4 px/frame)
#             vehicles, half-pixel shake (DSFNet val F1 0.72 after 320 steps on a variant).
#   hard:     tiny (3-8 px), low contrast (0.03-0.2), slow (0.3-1.2 px/frame), dense traffic,
#             1 px shake, frequent occlusion: for GPU runs.
DIFFICULTY_PRESETS: dict[str, dict[str, Any]] = {
    "easy": dict(vehicle_length_px=(5.0, 12.0), vehicle_width_ratio=(0.45, 0.6), contrast=(0.2, 0.45),
                 dark_fraction=0.0, speed_px_per_frame=(1.0, 3.0), moving_per_video=(3, 10),
                 parked_per_video=(3, 10), roads_per_video=(1, 3), dense_traffic=False,
                 noise_sigma=0.015, jitter_px=0.0, occlusion_probability=0.0, scenery="plain"),
    "default": dict(vehicle_length_px=(5.0, 12.0), vehicle_width_ratio=(0.45, 0.6), contrast=(0.2, 0.45),
                    dark_fraction=0.0, speed_px_per_frame=(1.0, 3.0), moving_per_video=(16, 30),
                    parked_per_video=(16, 28), roads_per_video=(1, 3), dense_traffic=False,
                    noise_sigma=0.015, jitter_px=0.25, occlusion_probability=0.3, scenery="plain"),
    "moderate": dict(vehicle_length_px=(4.0, 14.0), vehicle_width_ratio=(0.4, 0.6), contrast=(0.08, 0.4),
                     dark_fraction=0.35, speed_px_per_frame=(0.4, 2.5), moving_per_video=(8, 16),
                     parked_per_video=(6, 12), roads_per_video=(1, 3), dense_traffic=False,
                     noise_sigma=0.02, jitter_px=0.5, occlusion_probability=0.3, scenery="rich"),
    "hard": dict(vehicle_length_px=(3.0, 8.0), vehicle_width_ratio=(0.4, 0.65), contrast=(0.03, 0.2),
                 dark_fraction=0.5, speed_px_per_frame=(0.3, 1.2), moving_per_video=(10, 30),
                 parked_per_video=(10, 25), roads_per_video=(2, 4), dense_traffic=True,
                 noise_sigma=0.03, jitter_px=1.0, occlusion_probability=0.6, scenery="rich"),
}

_SETTINGS_KEYS = ("preset", "seed", "overrides")


def spec_from_settings(settings: Mapping[str, Any]) -> SyntheticSpec:
    """The spec for the workflow's `synthetic:` config section: {preset, seed, overrides}.

    The preset's knobs come first, then `seed`, then `overrides` (any SyntheticSpec field).
    """
    unknown = sorted(set(settings) - set(_SETTINGS_KEYS))
    if unknown:
        raise SpecError(f"synthetic settings: unknown key(s) {', '.join(map(repr, unknown))}; "
                         f"expected {', '.join(_SETTINGS_KEYS)}")
    preset = settings.get("preset", "default")
    if preset not in DIFFICULTY_PRESETS:
        raise SpecError(f"synthetic settings: preset {preset!r} is not one of {', '.join(DIFFICULTY_PRESETS)}")
    overrides = settings.get("overrides") or {}
    if not isinstance(overrides, Mapping):
        raise SpecTypeError(f"synthetic settings: 'overrides' must be a mapping of SyntheticSpec fields, "
                        f"got {type(overrides).__name__}")
    config = dict(DIFFICULTY_PRESETS[preset])
    if "seed" in settings:
        config["seed"] = settings["seed"]
    config.update(overrides)
    return SyntheticSpec.from_config(config)


def _coerced(name: str, value: Any, default: Any) -> Any:
    """`value` converted to the kind of `default`, or a TypeError that names the key."""
    def fail(expected: str) -> None:
        raise SpecTypeError(f"SyntheticSpec.{name}: expected {expected}, got {value!r} ({type(value).__name__})")

    if isinstance(default, bool):
        if not isinstance(value, (bool, np.bool_)):
            fail("true or false")
        return bool(value)
    if isinstance(default, int):
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
            fail("an integer")
        return int(value)
    if isinstance(default, float):
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
            fail("a number")
        return float(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            fail("a string")
        return value
    if isinstance(default, tuple):
        element_kind = "integers" if isinstance(default[0], int) else "numbers"
        if not isinstance(value, (list, tuple)) or len(value) != 2:
            fail(f"a pair [low, high] of {element_kind}")
        try:
            return tuple(_coerced(name, element, default[0]) for element in value)
        except SpecTypeError:
            fail(f"a pair [low, high] of {element_kind}")
    raise AssertionError(f"SyntheticSpec.{name}: no rule for a default of type {type(default).__name__}")


def _check_values(spec: SyntheticSpec) -> None:
    def fail(name: str, expected: str) -> None:
        raise SpecError(f"SyntheticSpec.{name}: expected {expected}, got {getattr(spec, name)!r}")

    for name in ("train_width", "train_height", "width", "height"):
        if getattr(spec, name) < 16:
            fail(name, "at least 16 px")
    for name in ("train_frames", "n_frames"):
        if getattr(spec, name) < 1:
            fail(name, "at least 1 frame")
    for name in ("seed", "n_train", "n_val", "n_test"):
        if getattr(spec, name) < 0:
            fail(name, "a non-negative integer")
    if spec.fps <= 0:
        fail("fps", "a positive number")
    ranges = {"vehicle_length_px": (1.5, 64.0), "vehicle_width_ratio": (0.05, 1.0), "contrast": (0.0, 1.0),
              "speed_px_per_frame": (0.0, 64.0), "moving_per_video": (0, 10_000),
              "parked_per_video": (0, 10_000), "roads_per_video": (0, 16)}
    for name, (lowest, highest) in ranges.items():
        low, high = getattr(spec, name)
        if not lowest <= low <= high <= highest:
            fail(name, f"low <= high, both within [{lowest}, {highest}]")
    smallest_side = min(spec.train_width, spec.train_height, spec.width, spec.height)
    if spec.vehicle_length_px[1] > smallest_side / 2:
        fail("vehicle_length_px", f"vehicles at most half the smallest frame side ({smallest_side} px)")
    for name in ("dark_fraction", "occlusion_probability"):
        if not 0.0 <= getattr(spec, name) <= 1.0:
            fail(name, "a probability in [0, 1]")
    if spec.noise_sigma < 0:
        fail("noise_sigma", "a non-negative number")
    if not 0.0 <= spec.jitter_px <= MAX_JITTER_PX:
        fail("jitter_px", f"a number in [0, {MAX_JITTER_PX:g}]")
    if spec.scenery not in SCENERIES:
        fail("scenery", f"one of {', '.join(SCENERIES)}")


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split {split!r} is not one of {', '.join(SPLITS)}")


# ---------------------------------------------------------------------------------------------
# The generated video
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class VehicleTrack:
    """What a moving vehicle was drawn with (for tests and dataset statistics)."""

    track_id: int
    length: float
    width: float
    speed: float  # px per frame along its lane
    contrast: float
    dark: bool


@dataclass
class SyntheticVideo:
    name: str
    split: str
    fps: float
    frames: np.ndarray  # (T, H, W, 3) uint8 BGR
    boxes: dict[int, tuple[np.ndarray, np.ndarray]]  # frame (1-based) -> (N x 4 clipped, N track ids)
    unclipped_boxes: dict[int, np.ndarray]  # frame -> N x 4, same rows as boxes[frame]
    camera_offsets: np.ndarray  # (T, 2) [dx, dy]: image = scene shifted by -offset
    tracks: dict[int, VehicleTrack]  # every mover, also one never visible enough to be labelled
    parked_boxes: np.ndarray  # (P, 4) parked vehicles, image coordinates at zero camera offset

    @property
    def n_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def height(self) -> int:
        return int(self.frames.shape[1])

    @property
    def width(self) -> int:
        return int(self.frames.shape[2])

    def n_labelled_boxes(self) -> int:
        return sum(len(ids) for _, ids in self.boxes.values())


class SplitVideos(Sequence):
    """The videos of one split, generated on access (so a writer holds one video at a time)."""

    def __init__(self, spec: SyntheticSpec, split: str):
        _check_split(split)
        self.spec, self.split = spec, split

    def __len__(self) -> int:
        return self.spec.count(self.split)

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if not -len(self) <= index < len(self):
            raise IndexError(f"{self.split} has {len(self)} videos, no index {index}")
        return generate_video(self.spec, self.split, index % len(self))

    def __iter__(self) -> Iterator[SyntheticVideo]:
        return (generate_video(self.spec, self.split, i) for i in range(len(self)))


def split_videos(spec: SyntheticSpec, split: str) -> SplitVideos:
    return SplitVideos(spec, split)


def video_name(split: str, index: int) -> str:
    return f"{split}_{index:03d}"


def generate_video(spec: SyntheticSpec, split: str, index: int) -> SyntheticVideo:
    """Video `index` of `split`; depends only on (spec, split, index)."""
    _check_split(split)
    if not 0 <= index < spec.count(split):
        raise ValueError(f"{split} has {spec.count(split)} videos in this spec, no index {index}")
    width, height, n_frames = spec.geometry(split)
    video_seed = np.random.SeedSequence(spec.seed, spawn_key=(SPLITS.index(split), index))
    streams = dict(zip(("layout", "parked", "moving", "occluders", "camera", "noise"),
                       (np.random.default_rng(child) for child in video_seed.spawn(6))))

    margin = _SCENE_MARGIN
    layout = _build_layout(streams["layout"], spec, width, height, n_frames, margin)
    parked = _place_parked(streams["parked"], spec, layout)
    _draw_vehicles(layout.canvas, parked.centres, parked.headings, parked.look)
    movers = _place_movers(streams["moving"], spec, layout, n_frames)
    occluders = _build_occluders(streams["occluders"], spec, layout)
    offsets = _camera_offsets(streams["camera"], n_frames, spec.jitter_px)

    frames = np.empty((n_frames, height, width, 3), np.uint8)
    boxes, unclipped = {}, {}
    for t in range(n_frames):
        canvas = layout.canvas.copy()
        centres, headings = movers.pose(t)
        _draw_vehicles(canvas, centres, headings, movers.look)
        unoccluded = occluders.apply(canvas, centres, headings, movers.look)
        shift = offsets[t] + margin
        frames[t] = _sensor_frame(canvas, shift, width, height, spec.noise_sigma, streams["noise"])
        world_boxes = _body_boxes(centres, headings, movers.look.length, movers.look.width)
        boxes[t + 1], unclipped[t + 1] = _frame_labels(world_boxes - np.tile(shift, 2), unoccluded,
                                                       movers.track_ids, width, height)

    return SyntheticVideo(
        name=video_name(split, index), split=split, fps=spec.fps, frames=frames, boxes=boxes,
        unclipped_boxes=unclipped, camera_offsets=offsets, tracks=movers.tracks(),
        parked_boxes=_body_boxes(parked.centres, parked.headings, parked.look.length,
                                 parked.look.width) - margin)


def _frame_labels(image_boxes: np.ndarray, unoccluded: np.ndarray, track_ids: np.ndarray,
                  width: int, height: int):
    """(clipped boxes, ids) and unclipped boxes of the vehicles visible enough to be labelled."""
    clipped = image_boxes.copy()
    clipped[:, 0::2] = clipped[:, 0::2].clip(0, width)
    clipped[:, 1::2] = clipped[:, 1::2].clip(0, height)
    in_frame = _area(clipped) / np.maximum(_area(image_boxes), 1e-9)
    labelled = in_frame * unoccluded >= MIN_VISIBLE_FRACTION
    return (clipped[labelled], track_ids[labelled]), image_boxes[labelled]


def _area(boxes: np.ndarray) -> np.ndarray:
    return (boxes[:, 2] - boxes[:, 0]).clip(0) * (boxes[:, 3] - boxes[:, 1]).clip(0)


def _camera_offsets(rng: np.random.Generator, n_frames: int, jitter_px: float) -> np.ndarray:
    if jitter_px == 0:
        return np.zeros((n_frames, 2))
    return rng.uniform(-jitter_px, jitter_px, size=(n_frames, 2))


def _sensor_frame(canvas: np.ndarray, shift: np.ndarray, width: int, height: int,
                  noise_sigma: float, rng: np.random.Generator) -> np.ndarray:
    """The frame the camera sees: the scene shifted by `shift` (sub-pixel), plus sensor noise."""
    warp = np.array([[1, 0, shift[0]], [0, 1, shift[1]]], np.float64)
    frame = cv2.warpAffine(canvas, warp, (width, height), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                           borderMode=cv2.BORDER_REFLECT)
    if noise_sigma > 0:
        frame += noise_sigma * rng.standard_normal(frame.shape, dtype=np.float32)
    return np.clip(frame * 255.0 + 0.5, 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# Geometry helpers
# ---------------------------------------------------------------------------------------------

class _Path:
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

    def offset(self, distance: float) -> "_Path":
        """The parallel polyline `distance` px to the left-hand normal (-sin, cos), mitred."""
        normals = np.stack([-np.sin(self.segment_headings), np.cos(self.segment_headings)], axis=1)
        vertex_normals = np.empty_like(self.points)
        vertex_normals[0], vertex_normals[-1] = normals[0], normals[-1]
        mitres = normals[:-1] + normals[1:]
        mitres /= np.linalg.norm(mitres, axis=1, keepdims=True)
        # Scale so that the offset line stays `distance` from both adjacent segments.
        vertex_normals[1:-1] = mitres / np.sum(mitres * normals[1:], axis=1, keepdims=True)
        return _Path(self.points + distance * vertex_normals)

    def reversed(self) -> "_Path":
        return _Path(self.points[::-1])


def _rect_corners(centre, heading: float, length: float, width: float) -> np.ndarray:
    along = np.array([math.cos(heading), math.sin(heading)]) * length / 2
    across = np.array([-math.sin(heading), math.cos(heading)]) * width / 2
    centre = np.asarray(centre, np.float64)
    return np.stack([centre + along + across, centre + along - across,
                     centre - along - across, centre - along + across])


def _cv_points(points: np.ndarray) -> np.ndarray:
    """Continuous coordinates -> cv2 fixed-point (shift 4) pixel-index coordinates."""
    return np.round((np.asarray(points) - 0.5) * 16).astype(np.int32)


def _fill_polygon(mask: np.ndarray, corners: np.ndarray, value=255, antialiased=False) -> None:
    cv2.fillPoly(mask, [_cv_points(corners)], value, cv2.LINE_AA if antialiased else cv2.LINE_8, 4)


def _polygon_overlaps(mask: np.ndarray, corners: np.ndarray) -> bool:
    """Whether the polygon touches a set pixel of `mask` (or leaves the mask)."""
    low = np.floor(corners.min(axis=0)).astype(int) - 1
    high = np.ceil(corners.max(axis=0)).astype(int) + 1
    if low[0] < 0 or low[1] < 0 or high[0] > mask.shape[1] or high[1] > mask.shape[0]:
        return True
    local = np.zeros((high[1] - low[1], high[0] - low[0]), np.uint8)
    _fill_polygon(local, corners - low)
    return bool(np.any(local & mask[low[1]:high[1], low[0]:high[0]]))


def _body_boxes(centres: np.ndarray, headings: np.ndarray, lengths: np.ndarray, widths: np.ndarray) -> np.ndarray:
    """Axis-aligned extents [x1, y1, x2, y2] of rotated rectangular bodies."""
    cos, sin = np.abs(np.cos(headings)), np.abs(np.sin(headings))
    half_x = cos * lengths / 2 + sin * widths / 2
    half_y = sin * lengths / 2 + cos * widths / 2
    return np.stack([centres[:, 0] - half_x, centres[:, 1] - half_y,
                     centres[:, 0] + half_x, centres[:, 1] + half_y], axis=1).reshape(-1, 4)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cell: int) -> np.ndarray:
    """Roughly unit-variance noise with features about `cell` px wide (bicubic up-sampling)."""
    height, width = shape
    grid = rng.standard_normal((height // cell + 3, width // cell + 3)).astype(np.float32)
    big = cv2.resize(grid, (grid.shape[1] * cell, grid.shape[0] * cell), interpolation=cv2.INTER_CUBIC)
    return big[cell:cell + height, cell:cell + width]


def _tinted(tint, luma) -> np.ndarray:
    """Colour(s) with the hue of `tint` and the given luma, clipped to [0, 1]."""
    tint = np.asarray(tint, np.float32)
    luma = np.asarray(luma, np.float32)
    return np.clip(tint * (luma / (tint @ _LUMA))[..., None], 0.0, 1.0)


def _paint(canvas: np.ndarray, alpha: np.ndarray, colour) -> None:
    """canvas <- canvas*(1-alpha) + colour*alpha, colour a BGR triple or a per-pixel image."""
    alpha = alpha[..., None]
    canvas *= 1.0 - alpha
    canvas += alpha * colour


Window = tuple[slice, slice]  # (rows, columns) of the canvas


def _window(shape: tuple[int, int], points: np.ndarray, pad: int = 2) -> Window | None:
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


def _window_origin(window: Window) -> np.ndarray:
    return np.array([window[1].start, window[0].start], np.float64)


def _window_shape(window: Window) -> tuple[int, int]:
    return window[0].stop - window[0].start, window[1].stop - window[1].start


def _polygon_alpha(window: Window, corners: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage of a polygon inside `window`, float32 in [0, 1]."""
    mask = np.zeros(_window_shape(window), np.uint8)
    _fill_polygon(mask, corners - _window_origin(window), antialiased=True)
    return mask.astype(np.float32) / 255


def _line_alpha(window: Window, ends: np.ndarray) -> np.ndarray:
    mask = np.zeros(_window_shape(window), np.uint8)
    local = _cv_points(ends - _window_origin(window))
    cv2.line(mask, tuple(local[0]), tuple(local[1]), 255, 1, cv2.LINE_AA, 4)
    return mask.astype(np.float32) / 255


# ---------------------------------------------------------------------------------------------
# Static layout: ground, fields, roads, parking lots, buildings, trees
# ---------------------------------------------------------------------------------------------

_GROUND_TINTS = ((0.80, 1.00, 1.15), (0.85, 1.08, 0.95), (1.0, 1.0, 1.0))  # arid, green, urban (BGR)
_FIELD_TINTS = ((0.75, 1.15, 0.90), (0.70, 1.05, 1.15), (0.80, 0.95, 1.20), (0.9, 1.1, 1.0))
_TREE_TINT = (0.75, 1.20, 0.80)


@dataclass
class _Road:
    centre: _Path
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
class _Lane:
    path: _Path  # oriented in the direction of travel
    road: int


@dataclass
class _Layout:
    canvas: np.ndarray  # (Hc, Wc, 3) float32 BGR, the static scene in world coordinates
    margin: int  # world = image + margin (+ camera offset)
    width: int
    height: int
    roads: list[_Road]
    lanes: list[_Lane]
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
        return float(np.mean(patch @ _LUMA))


def _build_layout(rng: np.random.Generator, spec: SyntheticSpec, width: int, height: int,
                  n_frames: int, margin: int) -> _Layout:
    shape = (height + 2 * margin, width + 2 * margin)
    mean_length = float(np.mean(spec.vehicle_length_px))
    lane_width = max(3.0, 0.6 * mean_length + 1.5)
    sun_angle = rng.uniform(0, 2 * np.pi)
    layout = _Layout(canvas=_ground(rng, shape), margin=margin, width=width, height=height, roads=[], lanes=[],
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
        luma += amplitude * _smooth_noise(rng, shape, cell)
    tint = np.asarray(_GROUND_TINTS[rng.integers(len(_GROUND_TINTS))], np.float32)
    return np.clip(luma[..., None] * (tint / (tint @ _LUMA)), 0, 1).astype(np.float32)


def _add_fields(rng: np.random.Generator, layout: _Layout) -> None:
    """Rotated crop fields with row stripes."""
    height, width = layout.canvas.shape[:2]
    for _ in range(rng.integers(1, 2 + (height * width) // 12000)):
        size = rng.uniform(30, 110, size=2)
        corners = cv2.boxPoints(((rng.uniform(0, width), rng.uniform(0, height)), tuple(size),
                                 rng.uniform(0, 180))) + 0.5
        angle, period = rng.uniform(0, np.pi), rng.uniform(3, 8)
        base, tint = rng.uniform(0.3, 0.55), _FIELD_TINTS[rng.integers(len(_FIELD_TINTS))]
        window = _window((height, width), corners)
        if window is None:
            continue
        ys, xs = np.mgrid[window].astype(np.float32) + 0.5
        luma = base + 0.025 * np.sin(2 * np.pi * (xs * math.cos(angle) + ys * math.sin(angle)) / period)
        _paint(layout.canvas[window], _polygon_alpha(window, corners), _tinted(tint, luma))


def _add_road(rng: np.random.Generator, layout: _Layout, road_mask: np.ndarray, reach: float,
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
    cv2.polylines(road_mask, [_cv_points(road.centre.points)], False, 255, int(round(road.full_width)) + 2,
                  cv2.LINE_8, 4)
    layout.roads.append(road)
    index = len(layout.roads) - 1
    for lane in range(road.n_lanes):
        offset = (lane - (road.n_lanes - 1) / 2) * road.lane_width
        path = road.centre.offset(offset)
        # Right-hand traffic: lanes on one side drive forward, the others backward.
        layout.lanes.append(_Lane(path if offset > 0 else path.reversed(), index))
    # Movers use the inner 80 % of their lane (widths are capped at 0.8 lane), so the mask of
    # where no one may park leaves the outer tenth of the outer lanes to shoulder parking.
    cv2.polylines(layout.lane_mask, [_cv_points(road.centre.points)], False, 255,
                  int(round(road.lanes_width - 0.2 * road.lane_width)), cv2.LINE_8, 4)
    _paint_road(rng, layout.canvas, road, markings)


def _crosses_cleanly(road: _Road, distance_to_roads: np.ndarray) -> bool:
    """Whether `road` meets the existing roads only at crossings (at about 40 deg or more), and
    never runs alongside one: the stretch of it near another road must stay short."""
    height, width = distance_to_roads.shape
    points, _ = road.centre.at(np.arange(0, road.centre.length, 1.0))
    inside = np.all((points >= 0) & (points < [width, height]), axis=1)
    columns, rows = points[inside].astype(int).T
    near = distance_to_roads[rows, columns] < road.full_width / 2 + 8
    return np.count_nonzero(near) <= 3 * (road.full_width + 8)


def _propose_road(rng: np.random.Generator, layout: _Layout, reach: float) -> _Road:
    height, width = layout.canvas.shape[:2]
    start = rng.uniform([0.2 * width, 0.2 * height], [0.8 * width, 0.8 * height])
    heading = rng.uniform(0, 2 * np.pi)
    bent = rng.random() < 0.5
    limits = (-reach, -reach, width + reach, height + reach)
    forward = _grow_polyline(rng, start, heading, bent, limits)
    backward = _grow_polyline(rng, start, heading + np.pi, bent, limits)
    concrete = rng.random() < 0.3  # light concrete roads make dark vehicles the visible ones
    return _Road(centre=_Path(np.concatenate([backward[::-1], forward[1:]])),
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


def _paint_road(rng: np.random.Generator, canvas: np.ndarray, road: _Road, markings: bool) -> None:
    height, width = canvas.shape[:2]
    mask = np.zeros((height, width), np.uint8)
    cv2.polylines(mask, [_cv_points(road.centre.points)], False, 255, int(round(road.full_width)), cv2.LINE_AA, 4)
    texture = (road.luma + 0.015 * _smooth_noise(rng, (height, width), 2)
               + 0.01 * _smooth_noise(rng, (height, width), 12))
    _paint(canvas, mask.astype(np.float32) / 255, _tinted((1.0, 1.0, 1.02), texture))
    if not markings:
        return

    # Markings: solid edge lines, a centre line, dashed lines between same-direction lanes.
    # Dashes are a few px long, i.e. static vehicle-sized bright marks, as on real roads.
    marks = np.zeros((height, width), np.uint8)
    half = road.lanes_width / 2
    for side in (-1, 1):
        cv2.polylines(marks, [_cv_points(road.centre.offset(side * half).points)], False, 160, 1, cv2.LINE_AA, 4)
    dividers = [(k - road.n_lanes / 2) * road.lane_width for k in range(1, road.n_lanes)]
    for offset in dividers:
        line = road.centre.offset(offset)
        if offset == 0 and road.n_lanes == 4:
            cv2.polylines(marks, [_cv_points(line.points)], False, 200, 1, cv2.LINE_AA, 4)
            continue
        dash, period = 0.5 * road.lane_width + 1, 2.2 * road.lane_width
        for start in np.arange(rng.uniform(0, period), line.length - dash, period):
            ends, _ = line.at(np.array([start, start + dash]))
            cv2.line(marks, tuple(_cv_points(ends[0])), tuple(_cv_points(ends[1])), 220, 1, cv2.LINE_AA, 4)
    _paint(canvas, marks.astype(np.float32) / 255 * 0.7, _tinted((1, 1, 1), min(road.luma + 0.3, 0.9)))


def _road_points_in_image(rng: np.random.Generator, layout: _Layout, path: _Path, count: int):
    """Up to `count` random (arc length, point, heading) on `path` inside the image."""
    s = rng.uniform(0, path.length, size=max(count * 8, 32))
    points, headings = path.at(s)
    keep = layout.in_image(points)
    return s[keep][:count], points[keep][:count], headings[keep][:count]


def _add_parking_lot(rng: np.random.Generator, layout: _Layout, road: _Road, blocked: np.ndarray,
                     lot_mask: np.ndarray, mean_length: float) -> None:
    """A lot beside the road with two rows of perpendicular slots."""
    _, points, headings = _road_points_in_image(rng, layout, road.centre, 1)
    if len(points) == 0:
        return
    side = rng.choice([-1.0, 1.0])
    slot_width, slot_depth = 0.95 * layout.lane_width, 1.3 * mean_length + 1
    n_slots = int(rng.integers(3, 8))
    along = np.array([math.cos(headings[0]), math.sin(headings[0])])
    normal = side * np.array([-along[1], along[0]])
    gap = road.full_width / 2 + 2
    lot_centre = points[0] + normal * (gap + slot_depth)
    corners = _rect_corners(lot_centre, headings[0], n_slots * slot_width + 2, 2 * slot_depth + 2)
    if _polygon_overlaps(blocked, corners):
        return
    _fill_polygon(lot_mask, corners)
    mask = np.zeros(lot_mask.shape, np.uint8)
    _fill_polygon(mask, corners, antialiased=True)
    _paint(layout.canvas, mask.astype(np.float32) / 255, _tinted((1, 1, 1), rng.uniform(0.48, 0.6)))
    lines = np.zeros(lot_mask.shape, np.uint8)
    for row in (-0.5, 0.5):
        for k in range(n_slots):
            centre = lot_centre + row * slot_depth * normal + (k - (n_slots - 1) / 2) * slot_width * along
            layout.parking_slots.append((centre, headings[0] + np.pi / 2))
            edge = centre + slot_width / 2 * along
            ends = np.stack([edge - slot_depth * 0.45 * normal, edge + slot_depth * 0.45 * normal])
            cv2.line(lines, tuple(_cv_points(ends[0])), tuple(_cv_points(ends[1])), 180, 1, cv2.LINE_AA, 4)
    _paint(layout.canvas, lines.astype(np.float32) / 255 * 0.6, _tinted((1, 1, 1), 0.8))


def _add_buildings(rng: np.random.Generator, layout: _Layout, blocked: np.ndarray) -> None:
    """Rectangular roofs (bright or dark, with a ridge line) casting a shadow along the sun."""
    height, width = layout.canvas.shape[:2]
    occupied = blocked.copy()
    for _ in range(int(rng.integers(2, 3 + (height * width) // 3500))):
        size = rng.uniform(6, 24, size=2)
        centre = rng.uniform([0, 0], [width, height])
        angle = rng.uniform(0, np.pi) if not layout.roads or rng.random() < 0.3 else \
            layout.roads[0].centre.segment_headings[0]
        corners = _rect_corners(centre, angle, size[0], size[1])
        shadow = corners + layout.sun * rng.uniform(1.5, 4)
        if _polygon_overlaps(occupied, corners) or _polygon_overlaps(occupied, shadow):
            continue
        _fill_polygon(occupied, corners)
        _fill_polygon(occupied, shadow)
        _fill_polygon(layout.obstacle_mask, corners)
        roof = rng.uniform(0.22, 0.34) if rng.random() < 0.25 else rng.uniform(0.5, 0.8)
        window = _window((height, width), np.concatenate([corners, shadow]))
        view = layout.canvas[window]
        _paint(view, _polygon_alpha(window, shadow) * 0.45, np.zeros(3, np.float32))
        _paint(view, _polygon_alpha(window, corners), _tinted((1.0, 0.98, 0.97), roof))
        ridge = _rect_corners(centre, angle, size[0] * 0.8, 0)[:2]
        _paint(view, _line_alpha(window, ridge) * 0.3, _tinted((1, 1, 1), roof * 0.7))


def _add_trees(rng: np.random.Generator, layout: _Layout, blocked: np.ndarray) -> None:
    """Dark green canopy blobs off the roads (static texture, not occluders)."""
    height, width = layout.canvas.shape[:2]
    for _ in range(int(rng.integers(2, 3 + (height * width) // 4000))):
        centre = rng.uniform([0, 0], [width, height])
        radius = rng.uniform(2, 6)
        square = _rect_corners(centre, 0.0, 2 * radius, 2 * radius)
        if _polygon_overlaps(blocked | layout.obstacle_mask, square):
            continue
        window, alpha, colour = _canopy(rng, layout.canvas.shape[:2], centre, radius)
        _paint(layout.canvas[window], alpha, colour)
        layout.obstacle_mask[window][alpha > 0.5] = 255


def _canopy(rng: np.random.Generator, shape, centre, radius):
    """(window, alpha, colour) of a tree canopy: a few overlapping discs, textured dark green."""
    centre = np.asarray(centre, np.float64)
    discs = [(centre + rng.uniform(-radius, radius, size=2) * 0.7, radius * rng.uniform(0.6, 1.0))
             for _ in range(int(rng.integers(3, 6)))]
    window = _window(shape, np.stack([centre - 2 * radius, centre + 2 * radius]))
    origin = _window_origin(window)
    mask = np.zeros(_window_shape(window), np.uint8)
    for disc_centre, disc_radius in discs:
        cv2.circle(mask, tuple(_cv_points(disc_centre - origin)), int(round(disc_radius * 16)), 255, -1,
                   cv2.LINE_AA, 4)
    luma = rng.uniform(0.16, 0.26) + 0.03 * _smooth_noise(rng, mask.shape, 2)
    return window, mask.astype(np.float32) / 255, _tinted(_TREE_TINT, luma)


# ---------------------------------------------------------------------------------------------
# Vehicles: appearance, placement, drawing
# ---------------------------------------------------------------------------------------------

# Muted, as seen from orbit: white, grey and black cars are common, then red, blue, beige.
_VEHICLE_TINTS = ((1.0, 1.0, 1.0), (1.0, 1.0, 1.0), (1.0, 1.0, 1.0), (1.0, 1.0, 1.0),
                  (0.75, 0.85, 1.3), (1.25, 0.98, 0.85), (0.9, 1.02, 1.06))


@dataclass
class _Look:
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
                  lengths: np.ndarray, widths: np.ndarray, sun: np.ndarray) -> _Look:
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
    return _Look(length=lengths, width=widths, corner_radius=widths * rng.uniform(0, 0.35, size=n),
                 colour=_tinted(tints, luma), contrast=np.abs(luma - background_luma), dark=dark,
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


def _vehicle_patches(centres: np.ndarray, headings: np.ndarray, look: _Look):
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


def _draw_vehicles(canvas: np.ndarray, centres: np.ndarray, headings: np.ndarray, look: _Look) -> None:
    if len(look) == 0:
        return
    body, windshield, shadow, origins = _vehicle_patches(centres, headings, look)
    for i, region in _canvas_regions(canvas.shape[:2], origins, body.shape[1]):
        patch = (slice(region[1].start - origins[i, 1], region[1].stop - origins[i, 1]),
                 slice(region[0].start - origins[i, 0], region[0].stop - origins[i, 0]))
        view = canvas[region[1], region[0]]
        cover = body[i][patch][..., None]
        view *= 1.0 - 0.45 * (shadow[i][patch] * (1 - body[i][patch]))[..., None]
        colour = look.colour[i] * (1.0 - 0.55 * windshield[i][patch])[..., None]
        view *= 1.0 - cover
        view += cover * colour


def _canvas_regions(shape, origins: np.ndarray, size: int):
    """(vehicle index, (x slice, y slice)) for each patch that overlaps the canvas."""
    height, width = shape
    for i, (x0, y0) in enumerate(origins):
        xs = slice(max(x0, 0), min(x0 + size, width))
        ys = slice(max(y0, 0), min(y0 + size, height))
        if xs.start < xs.stop and ys.start < ys.stop:
            yield i, (xs, ys)


@dataclass
class _Parked:
    centres: np.ndarray
    headings: np.ndarray
    look: _Look


def _place_parked(rng: np.random.Generator, spec: SyntheticSpec, layout: _Layout) -> _Parked:
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
            corners = _rect_corners(pose[0], pose[1], length + 1, width + 1)
            if not _polygon_overlaps(blocked, corners):
                _fill_polygon(blocked, corners)
                centres.append(pose[0]), headings.append(pose[1]), lengths.append(length), widths.append(width)
                break
    centres = np.array(centres, np.float64).reshape(-1, 2)
    background = np.array([layout.luma_at(c) for c in centres])
    look = _sample_looks(rng, spec, background, np.array(lengths), np.array(widths), layout.sun)
    return _Parked(centres, np.array(headings, np.float64), look)


def _parked_pose(rng: np.random.Generator, layout: _Layout, free_slots: list, width: float):
    """(centre, heading) of one parking candidate, or None when the drawn kind has no room."""
    kind = rng.choice(["shoulder", "lot", "off-road"], p=[0.4, 0.3, 0.3])
    if kind == "shoulder" and layout.roads:
        road = layout.roads[rng.integers(len(layout.roads))]
        side = rng.choice([-1.0, 1.0])
        shoulder = road.centre.offset(side * (road.lanes_width / 2 + road.shoulder_width / 2))
        _, points, heading = _road_points_in_image(rng, layout, shoulder, 1)
        if len(points):
            return points[0], float(heading[0] + rng.choice([0, np.pi]))
        return None
    if kind == "lot" and free_slots:
        centre, heading = layout.parking_slots[free_slots.pop()]
        return centre + rng.uniform(-0.4, 0.4, 2), float(heading + rng.choice([0, np.pi]) + rng.uniform(-0.1, 0.1))
    if kind == "off-road":
        return rng.uniform(layout.image_low, layout.image_high), float(rng.uniform(0, 2 * np.pi))
    return None


class _Movers:
    """Vehicles driving along lanes at constant speed: arc length s(t) = s0 + speed * t."""

    def __init__(self, lanes: list[_Lane], lane_index, start, speed, look: _Look):
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


def _place_movers(rng: np.random.Generator, spec: SyntheticSpec, layout: _Layout, n_frames: int) -> _Movers:
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
    return _Movers(layout.lanes, lanes, starts, speeds, look)


def _random_candidates(rng, spec: SyntheticSpec, layout: _Layout, n_frames: int, attempts: int):
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


def _queued_candidates(rng, spec: SyntheticSpec, layout: _Layout, n_frames: int, mean_length: float):
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


# ---------------------------------------------------------------------------------------------
# Occluders: tree canopies and bridges over roads, drawn above the moving vehicles
# ---------------------------------------------------------------------------------------------

class _Occluders:
    def __init__(self, shape: tuple[int, int]):
        self.alpha = np.zeros(shape, np.float32)
        self.colour = np.zeros(shape + (3,), np.float32)
        self.empty = True

    def add(self, window: Window, alpha: np.ndarray, colour: np.ndarray) -> None:
        covered, colours = self.alpha[window], self.colour[window]
        on_top = alpha > covered
        colours[on_top] = colour[on_top]
        np.maximum(covered, alpha, out=covered)
        self.empty = False

    def apply(self, canvas: np.ndarray, centres: np.ndarray, headings: np.ndarray, look: _Look) -> np.ndarray:
        """Paint the occluders over `canvas`; return each vehicle's unoccluded body fraction."""
        unoccluded = np.ones(len(look))
        if self.empty:
            return unoccluded
        if len(look):
            body, _, _, origins = _vehicle_patches(centres, headings, look)
            for i, (xs, ys) in _canvas_regions(self.alpha.shape, origins, body.shape[1]):
                patch = body[i][ys.start - origins[i, 1]:ys.stop - origins[i, 1],
                                xs.start - origins[i, 0]:xs.stop - origins[i, 0]]
                unoccluded[i] = 1.0 - float(np.sum(patch * self.alpha[ys, xs])) / max(float(body[i].sum()), 1e-9)
        _paint(canvas, self.alpha, self.colour)
        return unoccluded


def _build_occluders(rng: np.random.Generator, spec: SyntheticSpec, layout: _Layout) -> _Occluders:
    occluders = _Occluders(layout.canvas.shape[:2])
    for road in layout.roads:
        if rng.random() >= spec.occlusion_probability:
            continue
        _, points, headings = _road_points_in_image(rng, layout, road.centre, 1)
        if not len(points):
            continue
        if rng.random() < 0.5:
            radius = min(rng.uniform(0.25, 0.45) * road.full_width + 2, 12.0)
            centre = points[0] + rng.uniform(-0.25, 0.25, 2) * road.lanes_width
            occluders.add(*_canopy(rng, layout.canvas.shape[:2], centre, radius))
        else:
            occluders.add(*_bridge(rng, layout.canvas.shape[:2], points[0], headings[0], road))
    return occluders


def _bridge(rng: np.random.Generator, shape, centre, road_heading: float, road: _Road):
    """(window, alpha, colour) of a concrete deck crossing the road at right angles, with railings."""
    deck = rng.uniform(5, 11)
    corners = _rect_corners(centre, road_heading + np.pi / 2, road.full_width + 10, deck)
    luma = rng.uniform(0.55, 0.7)
    window = _window(shape, corners)
    colour = np.broadcast_to(_tinted((1, 1, 1), luma), _window_shape(window) + (3,)).copy()
    for side in (corners[[0, 3]], corners[[1, 2]]):
        _paint(colour, _line_alpha(window, side) * 0.6, _tinted((1, 1, 1), luma * 0.6))
    return window, _polygon_alpha(window, corners), colour
