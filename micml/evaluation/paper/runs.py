"""What the paper tables read of each run, found through :mod:`micml.layout`, and the notes
that say what is missing or partial.

Per dataset, model and seed: ``metrics/summary.json`` and ``metrics/dsfnet_f1.csv`` (written by
:func:`micml.evaluation.evaluate.evaluate_predictions`), ``predictions/<split>/predict.json``;
and ``tables/models.csv``. A file not there yet is a run not made yet: None, never an error.
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from micml import layout
from micml.detections import PREDICT_SUMMARY
from micml.evaluation.evaluate import DSFNET_F1_TABLE, SUMMARY_FILE

MODELS_TABLE = "models.csv"
NOTE = "note"
PARTIAL = "partial"
PARTIAL_MARK = " †"
INTERVAL = "interval"
SEEDS = "seeds"
INTERVAL_PARTS = ("mean", "std", "low", "high", "n")


def read_json(path: Path) -> dict | None:
    """The document, or None when the file does not exist (not yet run)."""
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def summary_path(results_dir: Path, dataset: str, model: str, seed: int) -> Path:
    return layout.metrics_dir(results_dir, dataset, model, seed) / SUMMARY_FILE


def per_video_path(results_dir: Path, dataset: str, model: str, seed: int) -> Path:
    return layout.metrics_dir(results_dir, dataset, model, seed) / DSFNET_F1_TABLE


def predict_summary_path(results_dir: Path, dataset: str, model: str, seed: int, split: str) -> Path:
    return layout.predictions_dir(results_dir, dataset, model, seed, split) / PREDICT_SUMMARY


def models_table_path(results_dir: Path) -> Path:
    """Parameters and GFLOPs of every variant (rule model_table, `micml.diagnostics`)."""
    return layout.tables_dir(results_dir) / MODELS_TABLE


def read_summaries(results_dir: Path, dataset: str, model: str, seeds: Sequence[int]) -> dict[int, dict | None]:
    """summary.json of each seed's run, None for a seed not run yet."""
    return {seed: read_json(summary_path(results_dir, dataset, model, seed)) for seed in seeds}


def present(runs: Mapping[int, object]) -> list[int]:
    return [seed for seed, run in runs.items() if run is not None]


def checked_seeds(seeds: Iterable[int]) -> list[int]:
    seeds = [int(seed) for seed in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"paper tables: seeds must be a non-empty list of distinct integers, found {seeds}; "
                         "pass the config's `seeds`")
    return seeds


def seeds_text(seeds: Iterable[int]) -> str:
    seeds = list(seeds)
    return f"seed{'s' if len(seeds) != 1 else ''} {', '.join(map(str, seeds))}"


class Notes:
    """The notes under a table: an explanation first, then what is missing, each said once.

    Runs that do not exist yet are grouped per dataset and missing file, so a table with many
    absent variants gets one line per dataset instead of one per cell.
    """

    def __init__(self, explanation: str):
        self.items: list[str] = [explanation]
        self.not_run: dict[tuple[str, str], list[str]] = {}  # (dataset, path pattern) -> models (and seeds)

    def add(self, text: str) -> str:
        if text not in self.items:
            self.items.append(text)
        return text

    def missing_runs(self, dataset: str, model: str, missing: Sequence[int], asked: Sequence[int],
                     path_of: Callable[[str, int | str], Path]) -> str:
        """Record that the file `path_of(model, seed)` of the runs of `missing` seeds does not exist;
        returns the row's note ('' when none is missing)."""
        if not missing:
            return ""
        pattern = str(path_of("<model>", "<k>"))
        label = model if len(missing) == len(asked) else f"{model} ({seeds_text(missing)})"
        models = self.not_run.setdefault((dataset, pattern), [])
        if label not in models:
            models.append(label)
        paths = [str(path_of(model, seed)) for seed in missing]
        return f"not run yet: {', '.join(paths)} {'is' if len(paths) == 1 else 'are'} missing"

    def partial_score(self, summary: Mapping | None, path: Path, dataset: str, model: str) -> str:
        """Record that `summary` (read from `path`) scores only part of the split; returns the
        row's note, '' for a complete score or a run not made yet."""
        if not (summary or {}).get(PARTIAL):
            return ""
        missing = summary.get("missing", {})
        videos = f"; videos without any: {', '.join(missing['videos'])}" if missing.get("videos") else ""
        note = (f"PARTIAL score: {missing.get('count', 'some')} frames without predictions were left out{videos} "
                f"(see {path})")
        self.add(f"{PARTIAL_MARK.strip()} {model} on {dataset}: {note}")
        return note

    def lines(self) -> list[str]:
        grouped = [f"not run yet on {dataset}: {', '.join(models)} (no {pattern})"
                   for (dataset, pattern), models in self.not_run.items()]
        return self.items + grouped


def run_notes(notes: Notes, results_dir: Path, dataset: str, model: str, runs: Mapping[int, dict | None]) -> str:
    """The row note of one model on one dataset: partial scores of its seeds, then the seeds not run."""
    parts = [notes.partial_score(summary, summary_path(results_dir, dataset, model, seed), dataset, model)
             for seed, summary in runs.items()]
    missing = [seed for seed, summary in runs.items() if summary is None]
    parts.append(notes.missing_runs(dataset, model, missing, list(runs), partial(summary_path, results_dir, dataset)))
    return "; ".join(part for part in parts if part)


def any_partial(runs: Mapping[int, dict | None]) -> bool | None:
    """True when a seed's score is partial; None when no seed was run (not-run rows have no flag)."""
    scored = [summary for summary in runs.values() if summary is not None]
    return None if not scored else any(bool(summary.get(PARTIAL)) for summary in scored)


def dataset_protocols(results_dir: Path, dataset: str, models: Iterable[str], seeds: Sequence[int]) -> list[str] | None:
    """The protocols recorded by any evaluated run of `dataset`; None while none is evaluated."""
    for model in models:
        for summary in read_summaries(results_dir, dataset, model, seeds).values():
            if summary is not None:
                return list(summary.get("protocols", ()))
    return None


def read_per_video_f1(path: Path, iou_threshold: float | None = 0.0) -> pd.DataFrame | None:
    """P/R/F1 indexed by video (mean row included) at `iou_threshold` (None: every threshold, with
    an `iou_threshold` column), or None when not evaluated yet."""
    if not path.is_file():
        return None
    table = pd.read_csv(path, dtype={"video": str})
    if iou_threshold is None:
        return table.set_index("video")[["iou_threshold", "precision", "recall", "f1"]]
    return table[np.isclose(table["iou_threshold"], iou_threshold)].set_index("video")[["precision", "recall", "f1"]]
