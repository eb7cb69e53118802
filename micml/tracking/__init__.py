"""Tracking and counting the detected moving objects (numpy and scipy; no torch).

* `tracker`: `Tracker`, online multi-object tracking on detections by centre distance with a
  constant-velocity motion model; `track_frames` runs it over one video.
* `mot`: MOTChallenge text files (frame, id, x, y, w, h, score, -1, -1, -1).
* `metrics`: HOTA, DetA, AssA, MOTA, IDF1 and ID switches through TrackEval.
* `counting`: per-frame count errors and distinct objects against the ground truth.
* `sources`: where detections and ground truth are read from (the one import of their readers).
"""

from micml.tracking.tracker import Tracker, TrackerSettings, track_frames

__all__ = ["Tracker", "TrackerSettings", "track_frames"]
