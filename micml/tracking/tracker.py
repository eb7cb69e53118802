"""Online multi-object tracking on detections of 5-20 px objects.

Such an object may move farther between two frames than its own size, so boxes of consecutive
frames often do not overlap and IoU association (SORT, ByteTrack) loses them. Association here
costs the distance between a detection's centre and the centre the track's constant-velocity
model predicts for that frame; pairs farther apart than `max_distance` are never matched, and
the rest are assigned optimally (`scipy.optimize.linear_sum_assignment`).

The motion model is an alpha-beta filter: the steady-state Kalman filter of constant velocity,
with the two gains as its parameters instead of noise covariances. It is a few vectorised
numpy lines over all tracks at once. Libraries looked at (December 2026): norfair 2.3.0
requires numpy < 2 (our pin is 2.4.6); filterpy 2.0.0 keeps one Python KalmanFilter object per
track, about 100x slower per frame than the vectorised update for no gain in accuracy on this
model; lap 0.5.13 solves the same assignment as scipy, which is already pinned and fast at the
size of a frame's cost matrix (at most a few hundred objects).

A track is born from a detection no track claimed, is confirmed after `min_hits` matched
frames (its first frames then get its id too), dies as a tentative track at its first miss,
and ends as a confirmed one after more than `max_misses` frames in a row without a match.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Iterable, Mapping

import numpy as np
from scipy.optimize import linear_sum_assignment

UNTRACKED = -1  # track id of a detection that belongs to no confirmed track
TRACK_COLUMNS = ("frame", "id", "x1", "y1", "x2", "y2", "score")


@dataclass(frozen=True)
class TrackerSettings:
    """Tracker parameters (config `tracking:`). The defaults are the best by HOTA of
    `micml.tracking.tune`'s grid on the val split of synthetic_viso, detections of centernet
    trained with config/config.yaml's schedule: HOTA 0.410, IDSW 1 against 0.380, IDSW 18 for
    the first guess (12 px, 3 hits, 3 misses). A track starts without a velocity, so an object
    moving more than `max_distance` px per frame needs a larger one."""

    min_score: float = 0.3  # detections below take no part (the evaluation's score threshold)
    max_distance: float = 6.0  # px between predicted and detected centre that can still match
    min_hits: int = 2  # matched frames before a track is confirmed and reported
    max_misses: int = 8  # frames in a row a confirmed track may go unmatched (coasting on its velocity)
    position_gain: float = 0.8  # alpha: how far the position moves from prediction to detection
    velocity_gain: float = 0.4  # beta: how much of the residual per frame enters the velocity

    @classmethod
    def from_mapping(cls, values: Mapping[str, object] | None) -> "TrackerSettings":
        """Settings from a config mapping; keys that are not tracker parameters are ignored."""
        names = {field.name for field in fields(cls)}
        return cls(**{key: value for key, value in (values or {}).items() if key in names})


class Tracker:
    """Feed `update` the detections of each frame in increasing frame order."""

    def __init__(self, settings: TrackerSettings = TrackerSettings()):
        self.settings = settings
        self.frame: int | None = None
        self.position = np.zeros((0, 2))
        self.velocity = np.zeros((0, 2))
        self.hits = np.zeros(0, np.int64)
        self.misses = np.zeros(0, np.int64)
        self.key = np.zeros(0, np.int64)  # internal key of each live track
        self._next_key = 0
        self._public_id: dict[int, int] = {}  # key -> confirmed track id (1-based)
        self._members: dict[int, list[tuple[int, int]]] = {}  # key -> [(frame, detection index)]
        self._frames: dict[int, np.ndarray] = {}  # frame -> its detections (N x 5)

    # ------------------------------------------------------------------ per frame

    def update(self, frame: int, detections: np.ndarray) -> np.ndarray:
        """Track one frame; returns the id of each detection's confirmed track so far
        (`UNTRACKED` for low scores and tracks not yet confirmed)."""
        detections = np.asarray(detections, np.float64).reshape(-1, 5)
        if self.frame is not None and frame <= self.frame:
            raise ValueError(f"frame {frame} after frame {self.frame}: give frames in increasing order")
        step = 1 if self.frame is None else frame - self.frame
        self.frame = frame
        self._frames[frame] = detections
        predicted = self.position + self.velocity * step
        candidates = np.flatnonzero(detections[:, 4] >= self.settings.min_score)
        centres = (detections[candidates, :2] + detections[candidates, 2:4]) / 2
        track_rows, detection_rows = self._associate(predicted, centres)

        matched = np.zeros(len(self.key), bool)
        matched[track_rows] = True
        residual = centres[detection_rows] - predicted[track_rows]
        self.position = predicted
        self.position[track_rows] += self.settings.position_gain * residual
        self.velocity[track_rows] += self.settings.velocity_gain * residual / step
        self.hits[track_rows] += 1
        self.misses[track_rows] = 0
        self.misses[~matched] += step
        for track_row, detection_row in zip(track_rows, detection_rows):
            self._members[self.key[track_row]].append((frame, candidates[detection_row]))
        self._confirm()
        self._drop_lost()
        unclaimed = np.setdiff1d(np.arange(len(candidates)), detection_rows)
        self._start(frame, candidates[unclaimed], centres[unclaimed])
        return self._ids_of_frame(frame, len(detections))

    def _associate(self, predicted: np.ndarray, centres: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if len(predicted) == 0 or len(centres) == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        distance = np.linalg.norm(predicted[:, None, :] - centres[None, :, :], axis=2)
        too_far = distance > self.settings.max_distance
        # a pair out of reach costs more than any set of pairs in reach, so it is chosen only
        # where nothing else is left, and then dropped below
        rows, cols = linear_sum_assignment(np.where(too_far, 1e6 + distance, distance))
        keep = ~too_far[rows, cols]
        return rows[keep], cols[keep]

    def _confirm(self) -> None:
        for key in self.key[self.hits >= self.settings.min_hits]:
            if key not in self._public_id:
                self._public_id[key] = len(self._public_id) + 1

    def _drop_lost(self) -> None:
        confirmed = np.array([key in self._public_id for key in self.key], bool)
        lost = np.where(confirmed, self.misses > self.settings.max_misses, self.misses > 0)
        for key in self.key[lost & ~confirmed]:
            del self._members[key]  # never confirmed: its detections stay untracked
        keep = ~lost
        self.position, self.velocity = self.position[keep], self.velocity[keep]
        self.hits, self.misses, self.key = self.hits[keep], self.misses[keep], self.key[keep]

    def _start(self, frame: int, indices: np.ndarray, centres: np.ndarray) -> None:
        keys = np.arange(self._next_key, self._next_key + len(indices))
        self._next_key += len(indices)
        for key, index in zip(keys, indices):
            self._members[key] = [(frame, int(index))]
        self.position = np.concatenate([self.position, centres])
        self.velocity = np.concatenate([self.velocity, np.zeros_like(centres)])
        self.hits = np.concatenate([self.hits, np.ones(len(indices), np.int64)])
        self.misses = np.concatenate([self.misses, np.zeros(len(indices), np.int64)])
        self.key = np.concatenate([self.key, keys])
        self._confirm()  # min_hits 1 confirms at birth

    def _ids_of_frame(self, frame: int, n_detections: int) -> np.ndarray:
        ids = np.full(n_detections, UNTRACKED, np.int64)
        for key in self.key:
            if key in self._public_id:
                last_frame, index = self._members[key][-1]
                if last_frame == frame:
                    ids[index] = self._public_id[key]
        return ids

    # ------------------------------------------------------------------ results

    def detection_ids(self) -> dict[int, np.ndarray]:
        """frame -> the final track id of each of its detections, a track's tentative frames
        included (`UNTRACKED` for detections of no confirmed track)."""
        ids = {frame: np.full(len(detections), UNTRACKED, np.int64) for frame, detections in self._frames.items()}
        for key, public_id in self._public_id.items():
            for frame, index in self._members[key]:
                ids[frame][index] = public_id
        return ids

    def tracks(self) -> np.ndarray:
        """Rows (frame, id, x1, y1, x2, y2, score) of every confirmed track, by frame then id."""
        rows = [[frame, public_id, *self._frames[frame][index]]
                for key, public_id in self._public_id.items() for frame, index in self._members[key]]
        table = np.asarray(rows, np.float64).reshape(-1, len(TRACK_COLUMNS))
        return table[np.lexsort((table[:, 1], table[:, 0]))]


def track_frames(frames: Mapping[int, np.ndarray] | Iterable[tuple[int, np.ndarray]],
                 settings: TrackerSettings = TrackerSettings()) -> np.ndarray:
    """Track one video given {frame: N x 5 [x1, y1, x2, y2, score]}; returns `Tracker.tracks()`."""
    items = sorted(frames.items()) if isinstance(frames, Mapping) else frames
    tracker = Tracker(settings)
    for frame, detections in items:
        tracker.update(int(frame), detections)
    return tracker.tracks()
