"""What a unified dataset holds: one table row per split, and a figure.

The table gives, per split (and for all splits together): videos, frames, objects, tracks,
objects per frame, quantiles of object width / height / area in pixels, quantiles of object
speed in px/frame, and the frame size(s). Speed is the displacement of a box centre between
consecutive annotated frames of one track, divided by the frame gap; without track ids it is
NaN. The figure shows the object-size distribution (sqrt(area), per split) beside the
annotated frame with the most objects (test split first), its boxes drawn.

A dataset without annotations (a user's own video) gets the same table with zero objects,
and a figure with an unannotated sample frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from micml.tables import markdown_table
from micml.catalog import SPLITS
from micml.data.unified import UnifiedDataset, Video, read_image
from micml.io import atomic_write, write_text

QUANTILES = (5, 25, 50, 75, 95)
MEASURES = ("width", "height", "area", "speed")
ALL_SPLITS = "all"
FIGURE_SIZE_IN = (13.0, 5.5)
FIGURE_DPI = 100
SPLIT_COLOURS = {"train": "tab:blue", "val": "tab:orange", "test": "tab:green"}


@dataclass
class SplitStats:
    """Everything the table needs from one split, kept as raw arrays so splits can be pooled."""

    videos: int = 0
    frames: int = 0
    tracks: int = 0
    frame_sizes: set[tuple[int, int]] = field(default_factory=set)
    widths: list[np.ndarray] = field(default_factory=list)
    heights: list[np.ndarray] = field(default_factory=list)
    speeds: list[np.ndarray] = field(default_factory=list)

    def merged(self, other: "SplitStats") -> "SplitStats":
        return SplitStats(self.videos + other.videos, self.frames + other.frames, self.tracks + other.tracks,
                          self.frame_sizes | other.frame_sizes, self.widths + other.widths,
                          self.heights + other.heights, self.speeds + other.speeds)

    def values(self, measure: str) -> np.ndarray:
        if measure == "area":
            return self.values("width") * self.values("height")
        arrays = {"width": self.widths, "height": self.heights, "speed": self.speeds}[measure]
        return np.concatenate(arrays) if arrays else np.zeros(0)


# ----------------------------------------------------------------------------- entry point

def summarize_dataset(root: Path | str, out_csv: Path | str, out_md: Path | str, out_png: Path | str) -> pd.DataFrame:
    """Write the summary table (CSV + Markdown) and figure (PNG) of the unified dataset at `root`."""
    dataset = UnifiedDataset(root)
    title = Path(root).name
    videos = {split: dataset.videos(split) for split in SPLITS}
    stats = {split: split_stats(videos[split]) for split in SPLITS}
    table = summary_table(stats)
    write_text(Path(out_csv), table.to_csv(index=False))
    write_text(Path(out_md), f"# Dataset summary: {title}\n\n{markdown_table(display_table(table))}\n\n{_notes()}\n")
    figure = summary_figure(dataset, videos, stats, title)
    _save_figure(figure, Path(out_png))
    return table


# ----------------------------------------------------------------------------- statistics

def split_stats(videos: Sequence[Video]) -> SplitStats:
    stats = SplitStats()
    for video in videos:
        record = video.record
        stats.videos += 1
        stats.frames += record.n_frames
        stats.frame_sizes.add((record.width, record.height))
        for boxes in video.boxes.values():
            stats.widths.append((boxes[:, 2] - boxes[:, 0]).astype(np.float64))
            stats.heights.append((boxes[:, 3] - boxes[:, 1]).astype(np.float64))
        speeds, tracks = track_speeds(video)
        stats.speeds.append(speeds)
        stats.tracks += tracks
    return stats


def track_speeds(video: Video) -> tuple[np.ndarray, int]:
    """Centre speeds (px/frame) between consecutive annotated frames of each track, and the
    number of tracks. Boxes without a track id (-1) contribute nothing. Vectorised: DroneCrowd
    has millions of boxes."""
    if not video.boxes:
        return np.zeros(0), 0
    order = sorted(video.boxes)
    boxes = np.concatenate([video.boxes[f] for f in order]).astype(np.float64)
    tracks = np.concatenate([video.track_ids.get(f, np.full(len(video.boxes[f]), -1)) for f in order])
    frames = np.concatenate([np.full(len(video.boxes[f]), f) for f in order])
    known = tracks >= 0
    boxes, tracks, frames = boxes[known], tracks[known], frames[known]
    by_track = np.lexsort((frames, tracks))  # sorted by track, then frame
    boxes, tracks, frames = boxes[by_track], tracks[by_track], frames[by_track]
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    gaps = np.diff(frames)
    same = (np.diff(tracks) == 0) & (gaps > 0)  # a duplicated (frame, track) pair has no speed
    steps = np.hypot(*np.diff(centres, axis=0).T)
    return steps[same] / gaps[same], int(np.unique(tracks).size)


def summary_table(stats: dict[str, SplitStats]) -> pd.DataFrame:
    """One row per split plus `all`; quantile columns are `<measure>_p<q>`."""
    pooled = SplitStats()
    for split in SPLITS:
        pooled = pooled.merged(stats[split])
    rows = [table_row(split, stats[split]) for split in SPLITS] + [table_row(ALL_SPLITS, pooled)]
    return pd.DataFrame(rows)


def table_row(split: str, stats: SplitStats) -> dict:
    objects = int(stats.values("width").size)
    row = {
        "split": split,
        "videos": stats.videos,
        "frames": stats.frames,
        "objects": objects,
        "tracks": stats.tracks,
        "objects_per_frame": objects / stats.frames if stats.frames else math.nan,
    }
    for measure in MEASURES:
        values = stats.values(measure)
        quantiles = np.percentile(values, QUANTILES) if values.size else [math.nan] * len(QUANTILES)
        row.update({f"{measure}_p{q}": float(value) for q, value in zip(QUANTILES, quantiles)})
    row["frame_sizes"] = ";".join(f"{w}x{h}" for w, h in sorted(stats.frame_sizes))
    return row


# ----------------------------------------------------------------------------- markdown

def display_table(table: pd.DataFrame) -> pd.DataFrame:
    """The table for reading: the five quantiles of one measure in one cell."""
    shown = table[["split", "videos", "frames", "objects", "tracks"]].copy()
    shown["objects/frame"] = table["objects_per_frame"].map(_number)
    labels = {"width": "width px", "height": "height px", "area": "area px²", "speed": "speed px/frame"}
    for measure in MEASURES:
        columns = [f"{measure}_p{q}" for q in QUANTILES]
        shown[f"{labels[measure]} (p5/25/50/75/95)"] = table[columns].apply(
            lambda row: " / ".join(_number(v) for v in row) if row.notna().any() else "–", axis=1)
    shown["frame size"] = table["frame_sizes"].replace("", "–")
    return shown


def _number(value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.2f}"


def _notes() -> str:
    return ("Sizes are box width/height/area in pixels; speed is the distance between box centres of one "
            "track in consecutive annotated frames, divided by the frame gap (– when the dataset has no "
            "track ids). The CSV holds every quantile in its own column.")


# ----------------------------------------------------------------------------- figure

def summary_figure(dataset: UnifiedDataset, videos: dict[str, list[Video]], stats: dict[str, SplitStats],
                   title: str) -> Figure:
    figure = Figure(figsize=FIGURE_SIZE_IN, dpi=FIGURE_DPI, layout="constrained")
    size_axes, frame_axes = figure.subplots(1, 2, width_ratios=(1, 1.3))
    draw_size_histogram(size_axes, stats)
    draw_sample_frame(frame_axes, dataset, videos)
    figure.suptitle(f"{title}: dataset summary")
    return figure


def draw_size_histogram(axes, stats: dict[str, SplitStats]) -> None:
    sizes = {split: np.sqrt(stats[split].values("area")) for split in SPLITS}
    axes.set_title("object size")
    axes.set_xlabel("sqrt(box area) [px]")
    if not any(values.size for values in sizes.values()):
        axes.text(0.5, 0.5, "no annotations", ha="center", va="center", transform=axes.transAxes, fontsize=14)
        axes.set_xticks([])
        axes.set_yticks([])
        return
    pooled = np.concatenate([values for values in sizes.values() if values.size])
    bins = np.histogram_bin_edges(pooled, bins=min(50, max(5, int(np.sqrt(pooled.size)))))
    for split, values in sizes.items():
        if values.size:
            axes.hist(values, bins=bins, histtype="step", linewidth=1.5, color=SPLIT_COLOURS[split],
                      label=f"{split} ({values.size} boxes)")
    axes.set_ylabel("boxes")
    axes.legend()


def draw_sample_frame(axes, dataset: UnifiedDataset, videos: dict[str, list[Video]]) -> None:
    axes.set_axis_off()
    choice = sample_frame(videos)
    if choice is None:
        axes.text(0.5, 0.5, "no frames", ha="center", va="center", transform=axes.transAxes)
        return
    split, video, frame = choice
    image = cv2.cvtColor(read_image(dataset.frame_path(video.record.name, frame)), cv2.COLOR_BGR2RGB)
    axes.imshow(image)
    boxes = video.frame_boxes(frame)
    for x1, y1, x2, y2 in boxes.tolist():
        axes.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor="red", linewidth=0.8))
    what = f"{len(boxes)} boxes" if len(boxes) else "no annotations"
    axes.set_title(f"{split} / {video.record.name} / frame {frame}: {what}")


def sample_frame(videos: dict[str, list[Video]]) -> tuple[str, Video, int] | None:
    """The annotated frame with most objects, test split first; else the first frame there is."""
    for split in ("test", "val", "train"):
        best = None
        for video in videos[split]:
            for frame in sorted(video.boxes):
                count = len(video.boxes[frame])
                if count and (best is None or count > best[0]):
                    best = (count, video, frame)
        if best is not None:
            return split, best[1], best[2]
    for split in ("test", "val", "train"):
        if videos[split]:
            return split, videos[split][0], 1
    return None


# ----------------------------------------------------------------------------- output

def _save_figure(figure: Figure, path: Path) -> None:
    # Agg via the Figure's own canvas: no pyplot, no display
    atomic_write(path, lambda stream: figure.savefig(stream, format="png"))
