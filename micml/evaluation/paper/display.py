"""How the paper tables show their numbers: percentages with intervals, display names, the
partial mark, and the per-dataset sections of the main and ablation tables."""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from micml.evaluation.paper.runs import INTERVAL, INTERVAL_PARTS, PARTIAL, PARTIAL_MARK, SEEDS
from micml.tables import TableSection

DISPLAY_NAMES = {"precision": "P", "recall": "R", "f1": "F1", "ap50": "AP50", "lmap": "L-mAP"}
BUDGET_DISPLAY = {"steps": "steps", "samples": "samples", "train_seconds": "train s"}


def display_name(column: str) -> str:
    """'f1_iou0.05' -> 'F1 IoU>0.05'; 'ap50' -> 'AP50'."""
    metric, _, threshold = column.partition("_iou")
    if threshold:
        return f"{DISPLAY_NAMES[metric]} IoU>{threshold}"
    return DISPLAY_NAMES.get(column, column)


def metric_columns(frame: pd.DataFrame) -> list[str]:
    """The metrics of an aggregated frame ('f1_iou0' for the columns 'f1_iou0_mean', ...)."""
    metrics = [column.removesuffix("_mean") for column in frame.columns if column.endswith("_mean")]
    return [metric for metric in metrics if metric.partition("_iou")[0] in DISPLAY_NAMES]


def interval_cell(row: Mapping, metric: str, scale: float = 100.0) -> str | None:
    """'89.90 ± 1.20 [87.10, 92.70]' in % (no ± with one seed, no [..] without an interval);
    '(n=2)' appended where the metric has fewer seeds than the row; None (a dash) when not run."""
    mean, std, low, high, n = (row[f"{metric}_{part}"] for part in INTERVAL_PARTS)
    if not np.isfinite(mean):
        return None
    text = f"{mean * scale:.2f}"
    if np.isfinite(std):
        text += f" ± {std * scale:.2f}"
    if np.isfinite(low) and np.isfinite(high):
        text += f" [{low * scale:.2f}, {high * scale:.2f}]"
    if SEEDS in row and n != seed_count(row[SEEDS]):
        text += f" (n={n})"
    return text


def with_n(cell: str | None, n) -> str | None:
    """'66.19 ± 7.64 [47.22, 85.16] (n=3)': where no n column stands beside the cell."""
    return None if cell is None or "(n=" in cell else f"{cell} (n={int(n)})"


def seed_count(seeds) -> int:
    return len(str(seeds).split()) if isinstance(seeds, str) else 0


def partially_scored(frame: pd.DataFrame) -> set[str]:
    """Models with a partial score in some row (not-run rows have no flag)."""
    return set(frame.loc[frame[PARTIAL].eq(True), "model"])


def marked(names: Iterable[str], partial: Iterable[bool]) -> list[str]:
    """Names of methods with a partial score get the mark that the notes explain."""
    return [name + PARTIAL_MARK if flag else name for name, flag in zip(names, partial)]


def per_dataset_sections(frame: pd.DataFrame, datasets: Sequence[str], leading: Sequence[str]) -> list[TableSection]:
    """Per dataset: a section with `leading` columns (the first marked when partial), n, the
    metrics at IoU > 0 and AP50/L-mAP as 'mean ± std [low, high]' in %, the training budget and
    the interval method; then, where the frame has them, one with P/R/F1 at the stricter IoUs
    (a single row of 13 intervals is too wide to read)."""
    metrics = metric_columns(frame)
    headline = [metric for metric in metrics if metric.partition("_iou")[2] in ("", "0")]
    stricter = [metric for metric in metrics if metric not in headline]
    sections = []
    for dataset in datasets:
        rows = frame[frame["dataset"] == dataset].reset_index(drop=True)
        shown = interval_section(rows, leading, headline)
        for column, label in BUDGET_DISPLAY.items():
            shown[label] = rows[column].astype(float).round(1)
        shown[INTERVAL] = rows[INTERVAL]
        sections.append(TableSection(dataset, shown))
        if stricter:
            sections.append(TableSection(f"{dataset}: stricter IoU", interval_section(rows, leading, stricter)))
    return sections


def interval_section(rows: pd.DataFrame, leading: Sequence[str], metrics: Sequence[str]) -> pd.DataFrame:
    """`leading` columns (the first marked when partial), n, and a 'mean ± std [low, high]' cell per metric."""
    shown = pd.DataFrame({column: rows[column] for column in leading})
    shown[leading[0]] = marked(rows[leading[0]], rows[PARTIAL].eq(True))
    shown["n"] = [seed_count(seeds) for seeds in rows[SEEDS]]
    for metric in metrics:
        shown[display_name(metric)] = [interval_cell(row, metric) for _, row in rows.iterrows()]
    return shown
