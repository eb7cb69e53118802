"""paper_per_video_<dataset>: P/R/F1 (IoU > 0) of every method per test video, mean over seeds."""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from micml.evaluation.paper.display import DISPLAY_NAMES, marked, partially_scored
from micml.evaluation.paper.runs import (
    NOTE,
    PARTIAL,
    Notes,
    any_partial,
    per_video_path,
    present,
    read_json,
    read_per_video_f1,
    summary_path,
)
from micml.evaluation.protocols import MEAN_ROW
from micml.tables import TableDocument, TableSection

def per_video_table(results_dir: Path, dataset: str, models: Sequence[str], seeds: Sequence[int]) -> TableDocument:
    notes = Notes(f"P/R/F1 at IoU > 0, score > 0.3, each the mean over the seeds run (n; ± std in the F1 column "
                  f"with n >= 2); row '{MEAN_ROW}' is the unweighted mean over videos.")
    per_model = {model: per_video_runs(results_dir, dataset, model, seeds, notes) for model in models}
    videos = video_order(table for tables, _, _ in per_model.values() for table in tables.values())
    rows = [{"video": video, "model": model, **per_video_means(tables, video), PARTIAL: partial, NOTE: note}
            for model, (tables, partial, note) in per_model.items() for video in videos]
    frame = pd.DataFrame(rows, columns=["video", "model", *PER_VIDEO_COLUMNS, PARTIAL, NOTE])
    return TableDocument(f"{dataset}: per-video accuracy (values in %)", frame,
                         [TableSection("", per_video_display(frame, models, videos))], notes.lines())


def per_video_runs(results_dir: Path, dataset: str, model: str, seeds: Sequence[int],
                   notes: Notes) -> tuple[dict[int, pd.DataFrame], bool | None, str]:
    """The per-video tables of the seeds run, whether one is partial, and the rows' note."""
    tables = {seed: read_per_video_f1(per_video_path(results_dir, dataset, model, seed)) for seed in seeds}
    runs = {seed: read_json(summary_path(results_dir, dataset, model, seed)) if tables[seed] is not None else None
            for seed in seeds}
    parts = [notes.partial_score(runs[seed], summary_path(results_dir, dataset, model, seed), dataset, model)
             for seed in present(tables)]
    parts.append(notes.missing_runs(dataset, model, [seed for seed in seeds if tables[seed] is None], seeds,
                                    partial(per_video_path, results_dir, dataset)))
    return ({seed: tables[seed] for seed in present(tables)}, any_partial(runs),
            "; ".join(part for part in parts if part))


PER_VIDEO_COLUMNS = ("precision_mean", "precision_std", "recall_mean", "recall_std", "f1_mean", "f1_std", "n")


def per_video_means(tables: Mapping[int, pd.DataFrame], video: str) -> dict[str, float]:
    """Mean and std (ddof 1; NaN with one seed) of P/R/F1 of `video` over the seeds that scored it."""
    rows = pd.DataFrame([table.loc[video] for table in tables.values() if video in table.index],
                        columns=["precision", "recall", "f1"])
    values = {}
    for metric in ("precision", "recall", "f1"):
        column = rows[metric].astype(float)
        values[f"{metric}_mean"] = float(column.mean()) if len(column) else math.nan
        values[f"{metric}_std"] = float(column.std(ddof=1)) if len(column) >= 2 else math.nan
    return {**values, "n": len(rows)}


def video_order(tables: Iterable[pd.DataFrame]) -> list[str]:
    """Videos in first-seen order over the runs' tables, the mean row last."""
    videos: list[str] = []
    for table in tables:
        videos += [video for video in table.index if video not in videos and video != MEAN_ROW]
    return videos + [MEAN_ROW]


def per_video_display(frame: pd.DataFrame, models: Sequence[str], videos: Sequence[str]) -> pd.DataFrame:
    """Rows videos, columns '<model> P', '<model> R', '<model> F1' (means over seeds), in %."""
    shown = pd.DataFrame({"video": list(videos)})
    for model in models:
        rows = frame[frame["model"] == model].set_index("video").reindex(videos)
        label = marked([model], [model in partially_scored(frame)])[0]
        for metric in ("precision", "recall"):
            shown[f"{label} {DISPLAY_NAMES[metric]}"] = (rows[f"{metric}_mean"].astype(float) * 100).round(2).to_numpy()
        several = rows["n"].fillna(0).max() >= 2
        f1 = [(f"{mean * 100:.2f} ± {std * 100:.2f}" if np.isfinite(std) else f"{mean * 100:.2f}")
              if np.isfinite(mean) else None for mean, std in zip(rows["f1_mean"], rows["f1_std"])]
        shown[f"{label} F1"] = f1 if several else (rows["f1_mean"].astype(float) * 100).round(2).to_numpy()
    return shown
