"""A generated video (`SyntheticVideo`), the videos of a split, and `generate_video`, which
composes the scene, the vehicles, the occluders, the camera shake and the sensor noise."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import cv2
import numpy as np

from micml.catalog import SPLITS
from micml.data.synthetic.geometry import body_boxes
from micml.data.synthetic.occluders import build_occluders
from micml.data.synthetic.scenery import build_layout
from micml.data.synthetic.spec import MAX_JITTER_PX, SyntheticSpec, check_split
from micml.data.synthetic.vehicles import VehicleTrack, draw_vehicles, place_movers, place_parked

# A vehicle is labelled while at least this share of its body is inside the frame and not
# under an occluder: a third keeps a half-visible vehicle at the border (still detectable),
# and drops slivers and vehicles hidden under a canopy or bridge.
MIN_VISIBLE_FRACTION = 1.0 / 3.0

# The scene extends this far past each frame border so that camera shake never looks outside
# it; a constant (not derived from jitter_px) so that the scene does not depend on the shake.
SCENE_MARGIN = int(MAX_JITTER_PX) + 2


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
        check_split(split)
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
    check_split(split)
    if not 0 <= index < spec.count(split):
        raise ValueError(f"{split} has {spec.count(split)} videos in this spec, no index {index}")
    width, height, n_frames = spec.geometry(split)
    video_seed = np.random.SeedSequence(spec.seed, spawn_key=(SPLITS.index(split), index))
    streams = dict(zip(("layout", "parked", "moving", "occluders", "camera", "noise"),
                       (np.random.default_rng(child) for child in video_seed.spawn(6))))

    margin = SCENE_MARGIN
    layout = build_layout(streams["layout"], spec, width, height, n_frames, margin)
    parked = place_parked(streams["parked"], spec, layout)
    draw_vehicles(layout.canvas, parked.centres, parked.headings, parked.look)
    movers = place_movers(streams["moving"], spec, layout, n_frames)
    occluders = build_occluders(streams["occluders"], spec, layout)
    offsets = _camera_offsets(streams["camera"], n_frames, spec.jitter_px)

    frames = np.empty((n_frames, height, width, 3), np.uint8)
    boxes, unclipped = {}, {}
    for t in range(n_frames):
        canvas = layout.canvas.copy()
        centres, headings = movers.pose(t)
        draw_vehicles(canvas, centres, headings, movers.look)
        unoccluded = occluders.apply(canvas, centres, headings, movers.look)
        shift = offsets[t] + margin
        frames[t] = _sensor_frame(canvas, shift, width, height, spec.noise_sigma, streams["noise"])
        world_boxes = body_boxes(centres, headings, movers.look.length, movers.look.width)
        boxes[t + 1], unclipped[t + 1] = _frame_labels(world_boxes - np.tile(shift, 2), unoccluded,
                                                       movers.track_ids, width, height)

    return SyntheticVideo(
        name=video_name(split, index), split=split, fps=spec.fps, frames=frames, boxes=boxes,
        unclipped_boxes=unclipped, camera_offsets=offsets, tracks=movers.tracks(),
        parked_boxes=body_boxes(parked.centres, parked.headings, parked.look.length,
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

