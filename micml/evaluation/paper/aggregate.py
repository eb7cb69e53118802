"""The metric rows of the paper tables: each metric of a (dataset, model) over the seeds run,
as an interval (:mod:`micml.evaluation.stats`), with the training budget and where it ran.

With two or more seeds a t interval over the seeds, with one a bootstrap over its test videos,
labelled in the `interval` column; the CSV has ``<metric>_mean``, ``_std``, ``_low``, ``_high``
and ``_n``.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from micml.evaluation.paper.display import display_name
from micml.evaluation.paper.runs import (
    INTERVAL,
    INTERVAL_PARTS,
    NOTE,
    PARTIAL,
    SEEDS,
    Notes,
    any_partial,
    dataset_protocols,
    per_video_path,
    present,
    read_per_video_f1,
    read_summaries,
    run_notes,
)
from micml.evaluation.protocols import MEAN_ROW, iou_key
from micml.evaluation.stats import NO_VALUE, Interval, seed_interval

# summary.json `training` key -> paper_main column (each the mean over the seeds present)
BUDGET_COLUMNS = {"steps": "steps", "samples": "samples", "seconds": "train_seconds"}


# Metrics beside P/R/F1: column, the protocol that yields it, its name in summary.json, and in text.
EXTRA_METRICS = (("ap50", "coco_ap50", "AP50", "AP50"), ("lmap", "dronecrowd_lmap", "L-mAP", "L-mAP"))


def accuracy_values(summary: Mapping, thresholds: Sequence[float], extra: Sequence[str]) -> dict[str, float]:
    """P/R/F1 (dsfnet_f1, video mean) at `thresholds` and the `extra` metrics, from one summary.json."""
    at_iou = summary.get("dsfnet_f1", {}).get("iou_thresholds", {})
    values = {}
    for threshold in thresholds:
        scores = at_iou.get(iou_key(threshold), {})
        for metric in ("precision", "recall", "f1"):
            values[f"{metric}_iou{iou_key(threshold)}"] = number(scores.get(metric))
    for column, protocol, key, _ in EXTRA_METRICS:
        if column in extra:
            values[column] = number(summary.get(protocol, {}).get(key))
    return values


def per_video_values(path: Path, thresholds: Sequence[float]) -> dict[str, list[float]]:
    """{metric column: its per-video values} from one run's dsfnet_f1.csv, for the bootstrap over
    videos; {} when the file is missing. AP50 and L-mAP are pooled over all videos: none."""
    table = read_per_video_f1(path, None)
    if table is None:
        return {}
    videos = table[table.index != MEAN_ROW]
    values = {}
    for threshold in thresholds:
        rows = videos[np.isclose(videos["iou_threshold"], threshold)]
        for metric in ("precision", "recall", "f1"):
            values[f"{metric}_iou{iou_key(threshold)}"] = rows[metric].astype(float).tolist()
    return values


def number(value) -> float:
    return math.nan if value is None else float(value)


def extra_metrics(results_dir: Path, datasets: Sequence[str], models: Sequence[str], seeds: Sequence[int]) -> list[str]:
    """AP50 always (the paper's column); L-mAP only when some dataset uses DroneCrowd's protocol."""
    protocols = {name for dataset in datasets
                 for name in dataset_protocols(results_dir, dataset, models, seeds) or ()}
    return ["ap50", *(["lmap"] if "dronecrowd_lmap" in protocols else [])]


def interval_names(metric: str) -> list[str]:
    """`<metric>_mean`, `_std`, `_low`, `_high`, `_n`: the CSV's spelling of an interval."""
    return [f"{metric}_{part}" for part in INTERVAL_PARTS]


def interval_columns(metric: str, interval: Interval) -> dict[str, float]:
    return {name: getattr(interval, part) for name, part in zip(interval_names(metric), INTERVAL_PARTS)}


def interval_label(methods: Mapping[str, str]) -> str:
    """The row's interval method; metrics that got another one (AP50 with one seed) are named."""
    shown = {metric: method for metric, method in methods.items() if method != NO_VALUE} or methods
    usual = Counter(shown.values()).most_common(1)[0][0]
    others = [f"{display_name(metric)}: {method}" for metric, method in shown.items() if method != usual]
    return "; ".join([usual, *others])


def aggregated(values_by_seed: Mapping[int, Mapping[str, float]], per_video: Mapping[str, Sequence[float]],
               metrics: Sequence[str]) -> dict:
    """Every metric's interval columns over the seeds, and the row's `interval` method."""
    row, methods = {}, {}
    for metric in metrics:
        interval = seed_interval({seed: values[metric] for seed, values in values_by_seed.items()},
                                 per_video=per_video.get(metric))
        row.update(interval_columns(metric, interval))
        methods[metric] = interval.method
    return {**row, INTERVAL: interval_label(methods)}


def budget_values(summaries: Sequence[dict], notes: Notes, dataset: str, model: str) -> dict[str, float]:
    """Mean training steps, samples and seconds over the seeds whose summary.json records them."""
    blocks = [summary.get("training") or {} for summary in summaries]
    recorded = [block for block in blocks if block.get("steps") is not None]
    if summaries and len(recorded) < len(summaries):
        notes.add(f"training budget of {model} on {dataset}: not recorded in {len(summaries) - len(recorded)} of "
                  f"{len(summaries)} summary.json (scored before budgets were recorded; re-run its evaluation)")
    return {column: float(np.mean([float(block[key]) for block in recorded])) if recorded else math.nan
            for key, column in BUDGET_COLUMNS.items()}


def accuracy_rows(results_dir: Path, datasets: Sequence[str], models: Sequence[str], seeds: Sequence[int],
                  thresholds: Sequence[float], notes: Notes) -> pd.DataFrame:
    """One row per (dataset, model): every metric aggregated over the seeds present, the training
    budget, or empty cells and a note."""
    extra = extra_metrics(results_dir, datasets, models, seeds)
    metrics = list(accuracy_values({}, thresholds, extra))
    rows = []
    for dataset in datasets:
        for model in models:
            runs = read_summaries(results_dir, dataset, model, seeds)
            scored = present(runs)
            values = {seed: accuracy_values(runs[seed], thresholds, extra) for seed in scored}
            # one seed: the interval is over its test videos instead
            per_video = (per_video_values(per_video_path(results_dir, dataset, model, scored[0]), thresholds)
                         if len(scored) == 1 else {})
            rows.append({"dataset": dataset, "model": model, **aggregated(values, per_video, metrics),
                         **budget_values([runs[seed] for seed in scored], notes, dataset, model),
                         SEEDS: " ".join(map(str, scored)), PARTIAL: any_partial(runs),
                         NOTE: run_notes(notes, results_dir, dataset, model, runs)})
        protocols = dataset_protocols(results_dir, dataset, models, seeds)
        for column, protocol, _, label in EXTRA_METRICS:
            if column in extra and protocols is not None and protocol not in protocols:
                notes.add(f"{label} on {dataset}: not one of its protocols ({', '.join(protocols)})")
    return pd.DataFrame(rows)


def budget_notes(frame: pd.DataFrame, notes: Notes) -> None:
    """Say at what budget the models of each dataset were compared: equal steps, or which differ."""
    for dataset, rows in frame.groupby("dataset", sort=False):
        trained = rows.dropna(subset=["steps"])
        if trained.empty:
            continue
        steps = dict(zip(trained["model"], trained["steps"]))
        if len(set(steps.values())) == 1:
            notes.add(f"Training budget on {dataset}: every model compared at equal steps "
                      f"({next(iter(steps.values())):g} steps; samples = steps x batch).")
        else:
            listed = ", ".join(f"{model} {value:g}" for model, value in steps.items())
            notes.add(f"Training budget on {dataset}: UNEQUAL steps ({listed}): differences compare training "
                      "budgets as well as methods.")


def machine_note(results_dir: Path, datasets: Sequence[str], models: Sequence[str], seeds: Sequence[int],
                 notes: Notes) -> None:
    """Where the runs were trained: scores are reproduced exactly only on the same CPU kind and threads."""
    machines: dict[str, int] = {}
    for dataset in datasets:
        for model in models:
            for summary in read_summaries(results_dir, dataset, model, seeds).values():
                block = (summary or {}).get("training") or {}
                if block:
                    machine = (f"{block.get('device', '?')}, {block.get('threads', '?')} threads, "
                               f"torch {block.get('torch', '?')}")
                    machines[machine] = machines.get(machine, 0) + 1
    for machine, runs in machines.items():
        notes.add(f"Trained on {machine}: {runs} run{'s' if runs != 1 else ''}.")
