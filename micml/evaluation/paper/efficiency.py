"""paper_efficiency: parameters, GMAC/GFLOPs (results/tables/models.csv) and measured frames/s."""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from micml.evaluation.paper.aggregate import number
from micml.evaluation.paper.runs import NOTE, Notes, models_table_path, predict_summary_path, read_json
from micml.tables import TableDocument, TableSection

def efficiency_table(results_dir: Path, datasets: Sequence[str], models: Sequence[str], seeds: Sequence[int],
                     split: str) -> TableDocument:
    notes = Notes("Parameters used at inference and in total; GMAC/GFLOPs of one eval forward of a 5-frame clip "
                  "at the given side; frames/s as measured by the test run, mean over the seeds run (device "
                  "notes below).")
    costs_path = models_table_path(results_dir)
    costs = pd.read_csv(costs_path).set_index("variant") if costs_path.is_file() else None
    cost_columns = list(costs.columns) if costs is not None else []
    rows = []
    measured_on: dict[str, list[str]] = {}  # measurement settings -> "model on dataset"
    for model in models:
        row: dict = {"model": model}
        row_notes = []
        if costs is None:
            row_notes.append(notes.add(f"parameters and GFLOPs: {costs_path} is missing; run the model_table rule"))
        elif model not in costs.index:
            row_notes.append(notes.add(f"{model}: not in {costs_path}; re-run the model_table rule"))
        for column in cost_columns:
            row[column] = float(costs.loc[model, column]) if model in costs.index else math.nan
        for dataset in datasets:
            path_of = partial(predict_summary_path, results_dir, dataset, split=split)
            row[f"fps_{dataset}"] = measured_speed(path_of, dataset, model, seeds, notes, row_notes, measured_on)
        rows.append({**row, NOTE: "; ".join(note for note in row_notes if note)})
    for settings, runs in measured_on.items():
        notes.add(f"frames/s measured on {settings}: {', '.join(runs)}")
    frame = pd.DataFrame(rows)
    shown = frame.drop(columns=NOTE).rename(columns=efficiency_display_names(frame.columns))
    return TableDocument("Model size, compute and measured speed", frame, [TableSection("", shown)], notes.lines())


def measured_speed(path_of: Callable[[str, int], Path], dataset: str, model: str, seeds: Sequence[int], notes: Notes,
                   row_notes: list[str], measured_on: dict[str, list[str]]) -> float:
    """Mean frames/s of `model` on `dataset` over the seeds' predict.json; notes the missing ones,
    and under which settings each was measured."""
    runs = {seed: read_json(path_of(model, seed)) for seed in seeds}
    missing = [seed for seed, summary in runs.items() if summary is None]
    row_notes.append(notes.missing_runs(dataset, model, missing, seeds, path_of))
    for summary in filter(None, runs.values()):
        measured = measured_on.setdefault(measurement_settings(summary), [])
        if f"{model} on {dataset}" not in measured:
            measured.append(f"{model} on {dataset}")
    speeds = [number(summary.get("frames_per_second")) for summary in runs.values() if summary is not None]
    return float(np.mean(speeds)) if speeds else math.nan


def measurement_settings(predict_summary: Mapping) -> str:
    """'cpu, whole frames, batch 4': what a frames/s number depends on besides the model."""
    tile = f"tiles of {predict_summary['tile']} px" if predict_summary.get("tile") else "whole frames"
    return f"{predict_summary.get('device', '?')}, {tile}, batch {predict_summary.get('batch_size', '?')}"


def efficiency_display_names(columns: Iterable[str]) -> dict[str, str]:
    names = {"params_inference": "params (inference)", "params_total": "params (total)"}
    for column in columns:
        kind, _, size = column.partition("_")
        if kind in ("gmac", "gflops"):
            names[column] = f"{'GMAC' if kind == 'gmac' else 'GFLOPs'} {size}²"
        elif kind == "fps":
            names[column] = f"frames/s {size}"
    return names
