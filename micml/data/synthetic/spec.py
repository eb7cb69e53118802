"""What decides a synthetic dataset: `SyntheticSpec`, its checks, and the difficulty presets."""

from __future__ import annotations

import dataclasses
import numbers
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from micml.catalog import SPLITS

# Scenery of a video: "plain" is textured ground and asphalt roads only (the static clutter a
# detector must learn to ignore is the parked vehicles); "rich" adds crop fields, buildings,
# trees, parking lots and lane markings, whose vehicle-sized bright dashes and roof ridges are
# more static look-alikes (slower to learn in a short CPU schedule; see DIFFICULTY_PRESETS).
SCENERIES = ("plain", "rich")

# The largest camera shake a spec may ask for: the scene extends past each frame border by a
# margin derived from it (videos.SCENE_MARGIN), so that shake never looks outside the scene.
MAX_JITTER_PX = 8.0


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
        check_split(split)
        if split == "test":
            return self.width, self.height, self.n_frames
        return self.train_width, self.train_height, self.train_frames

    def count(self, split: str) -> int:
        """Number of videos in `split`."""
        check_split(split)
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


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split {split!r} is not one of {', '.join(SPLITS)}")

