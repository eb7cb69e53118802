"""What the workflow writes from tracks: a run's tracking table, the paper's tracking table and
the figure of track trails over a frame."""

from __future__ import annotations

import math
import os
from typing import Sequence

import cv2
import numpy as np
import pandas as pd

from micml import io, layout
from micml.tables import write_table
from micml.tracking.mot import read_mot
from micml.tracking.pipeline import TRACKS_SUFFIX, evaluate_split
from micml.tracking.sources import frame_path, split_videos
from micml.tracking.trails import trails_image

COMBINED = "COMBINED"
FIGURE_MIN_WIDTH = 480  # px per panel: small frames are enlarged so that ids and trails stay legible
METRIC_COLUMNS = ("HOTA", "DetA", "AssA", "MOTA", "IDF1", "IDSW", "count_MAE", "count_RMSE",
                  "objects_found", "objects_true")


def write_run_tracking(tracks_dir: str | os.PathLike, dataset_root: str | os.PathLike, split: str,
                       threshold: float, csv_path: str | os.PathLike, md_path: str | os.PathLike,
                       title: str = "") -> pd.DataFrame:
    """metrics/tracking.{csv,md} of one run: a row per video and the COMBINED row; the note
    (why association metrics are missing, if they are) in a `note` column."""
    table, note = evaluate_split(tracks_dir, dataset_root, split, threshold)
    table["note"] = note
    write_table(table, csv_path, md_path, title=title + (f" ({note})" if note else ""))
    return table


def paper_tracking_table(results: str | os.PathLike, datasets: Sequence[str], models: Sequence[str],
                         seeds: Sequence[int]) -> pd.DataFrame:
    """One row per dataset x model: each metric's mean over the seeds (combined over the
    test videos), the number of seeds, and the note of datasets without track ids."""
    rows = []
    for dataset in datasets:
        for model in models:
            runs = [pd.read_csv(path, keep_default_na=False, na_values=[""]).set_index("video").loc[COMBINED]
                    for seed in seeds
                    if (path := layout.tracking_metrics_path(results, dataset, model, seed, "csv")).is_file()]
            row = {"dataset": dataset, "model": model, "seeds": len(runs)}
            for column in METRIC_COLUMNS:
                values = [float(run[column]) for run in runs if column in run and not pd.isna(run[column])]
                row[column] = float(np.mean(values)) if values else math.nan
            row["note"] = next((str(run["note"]) for run in runs if isinstance(run.get("note"), str) and run["note"]), "")
            rows.append(row)
    return pd.DataFrame(rows, columns=["dataset", "model", "seeds", *METRIC_COLUMNS, "note"])


def write_paper_tracking(results: str | os.PathLike, datasets: Sequence[str], models: Sequence[str],
                         seeds: Sequence[int], csv_path: str | os.PathLike, md_path: str | os.PathLike) -> pd.DataFrame:
    table = paper_tracking_table(results, datasets, models, seeds)
    write_table(table, csv_path, md_path,
                title="Tracking and counting on the test split (TrackEval; mean over seeds; "
                      "count errors per frame; objects = distinct track ids)")
    return table


def write_trails_figure(results: str | os.PathLike, dataset_root: str | os.PathLike, dataset: str,
                        models: Sequence[str], seed: int, split: str, out_path: str | os.PathLike) -> None:
    """One panel per model: the tracks of its run with `seed` on the split's first video, all
    trails up to the video's middle frame drawn over that frame."""
    video = split_videos(dataset_root, split)[0]
    frame = max(1, video.record.n_frames // 2)
    image = cv2.imread(str(frame_path(dataset_root, video.record.name, frame)))
    if image is None:  # the frame files are the converter's; an unreadable one should not stop the figure
        image = np.zeros((video.record.height, video.record.width, 3), np.uint8)
    scale = max(1, FIGURE_MIN_WIDTH // image.shape[1])
    image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    panels = []
    for model in models:
        tracks = read_mot(layout.tracks_dir(results, dataset, model, seed, split) / f"{video.record.name}{TRACKS_SUFFIX}")
        tracks[:, 2:6] *= scale
        panel = trails_image(image, tracks, frame)
        cv2.putText(panel, f"{model}: {len(np.unique(tracks[:, 1]))} tracks", (4, 14), cv2.FONT_HERSHEY_SIMPLEX,
                    0.4, (255, 255, 255), 1, cv2.LINE_AA)
        panels.append(panel)
    ok, png = cv2.imencode(".png", np.concatenate(panels, axis=1))
    io.write_bytes(out_path, png.tobytes())
