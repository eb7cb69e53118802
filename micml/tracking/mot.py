"""MOTChallenge text files: one box per line, `frame,id,x,y,w,h,score,-1,-1,-1`.

Frames are 1-based, (x, y) is the top-left corner, w and h the size in pixels; the last three
columns (3-D position, unused in 2-D tracking) are -1. A detections file (det.txt) has the same
columns with id -1. Tracker output and detections are sorted by frame, which the reader checks
(a file out of order was written by something else and would be tracked wrongly); ground-truth
files are often sorted by id instead, and are read with `by_frame=False`. An id may appear once
per frame.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from micml import io

MOT_COLUMNS = ("frame", "id", "x", "y", "w", "h", "score", "x3d", "y3d", "z3d")
REQUIRED_COLUMNS = 7  # frame..score; the 3-D columns may be left out (MOT15 gt files have 6 or 9)
NO_3D = -1


class TrackFileError(ValueError):
    """A MOT-format file that cannot be read; the message names the file and the fix."""


def write_mot(path: str | os.PathLike, tracks: np.ndarray) -> None:
    """Write rows (frame, id, x1, y1, x2, y2, score) as a MOTChallenge file (atomically), by
    frame then id."""
    tracks = np.asarray(tracks, np.float64).reshape(-1, 7)
    tracks = tracks[np.lexsort((tracks[:, 1], tracks[:, 0]))]
    lines = [f"{int(frame)},{int(track)},{x1:.2f},{y1:.2f},{x2 - x1:.2f},{y2 - y1:.2f},{score:.4f},-1,-1,-1"
             for frame, track, x1, y1, x2, y2, score in tracks.tolist()]
    io.write_text(path, "".join(line + "\n" for line in lines))


def read_mot(path: str | os.PathLike, *, by_frame: bool = True) -> np.ndarray:
    """A MOTChallenge file -> rows (frame, id, x1, y1, x2, y2, score), float64, in file order;
    `by_frame` refuses a file whose frames go backwards."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise TrackFileError(f"{path}: cannot read the MOT file ({error.strerror}); check the path") from None
    rows = []
    previous_frame = 0
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        row = _parse_line(path, number, line)
        if by_frame and row[0] < previous_frame:
            raise TrackFileError(f"{path}: line {number} has frame {int(row[0])} after frame {int(previous_frame)}; "
                                 "sort the lines by frame (e.g. `sort -t, -k1,1n -k2,2n`)")
        previous_frame = row[0]
        rows.append(row)
    table = np.asarray(rows, np.float64).reshape(-1, 7)
    _check_unique_ids(path, table)
    return table


def _check_unique_ids(path: Path, table: np.ndarray) -> None:
    tracked = table[table[:, 1] >= 0]
    pairs, counts = np.unique(tracked[:, :2], axis=0, return_counts=True)
    if (counts > 1).any():
        frame, track = pairs[np.argmax(counts > 1)]
        raise TrackFileError(f"{path}: id {int(track)} appears {counts.max()} times in frame {int(frame)}; "
                             "give each track one box per frame")


def _parse_line(path: Path, number: int, line: str) -> list[float]:
    cells = line.replace(" ", "").split(",")
    if len(cells) < REQUIRED_COLUMNS:
        raise TrackFileError(f"{path}: line {number} has {len(cells)} columns, needs at least {REQUIRED_COLUMNS} "
                             f"({','.join(MOT_COLUMNS[:REQUIRED_COLUMNS])}); write MOTChallenge columns "
                             f"{','.join(MOT_COLUMNS)}")
    try:
        frame, track, x, y, w, h, score = (float(cell) for cell in cells[:REQUIRED_COLUMNS])
    except ValueError:
        raise TrackFileError(f"{path}: line {number} is not numeric ({line.strip()[:80]}); write MOTChallenge "
                             f"columns {','.join(MOT_COLUMNS)}") from None
    if frame < 1 or frame != int(frame) or not np.isfinite([x, y, w, h, score]).all() or w < 0 or h < 0:
        raise TrackFileError(f"{path}: line {number} needs an integer frame >= 1 and finite x, y, w >= 0, h >= 0, "
                             f"score ({line.strip()[:80]})")
    return [frame, track, x, y, x + w, y + h, score]


def frames_of(rows: np.ndarray) -> dict[int, np.ndarray]:
    """Rows (frame, id, x1, y1, x2, y2, score) -> {frame: rows of that frame}."""
    rows = np.asarray(rows, np.float64).reshape(-1, 7)
    frames = rows[:, 0].astype(np.int64)
    return {int(frame): rows[frames == frame] for frame in np.unique(frames)}
