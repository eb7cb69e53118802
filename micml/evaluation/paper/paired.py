"""paper_paired: paired F1 differences (micml - dsfnet, ...) on the seeds both models were run with."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import pandas as pd

from micml.catalog import HEADLINE_PAIRS, METHOD
from micml.evaluation.paper.ablation import ABLATION_VARIANTS
from micml.evaluation.paper.aggregate import accuracy_values, interval_columns, interval_names
from micml.evaluation.paper.display import interval_cell, marked
from micml.evaluation.paper.runs import (
    INTERVAL,
    NOTE,
    PARTIAL,
    SEEDS,
    Notes,
    per_video_path,
    present,
    read_per_video_f1,
    read_summaries,
    seeds_text,
)
from micml.evaluation.protocols import MEAN_ROW
from micml.evaluation.stats import BOOTSTRAP_RESAMPLES, paired_difference
from micml.tables import TableDocument, TableSection

PAIRED_METRIC = "f1_iou0"


def compared_pairs(models: Sequence[str]) -> list[tuple[str, str]]:
    """(a, b) for a - b: micml - dsfnet, dsfnet - centernet, then each other variant - micml
    (each pair once, in whichever order came first)."""
    pairs = list(HEADLINE_PAIRS)
    pairs += [(variant, METHOD) for variant in dict.fromkeys([*ABLATION_VARIANTS, *models]) if variant != METHOD]
    unique: list[tuple[str, str]] = []
    for a, b in pairs:
        if (a, b) not in unique and (b, a) not in unique:
            unique.append((a, b))
    return unique


def f1_by_seed(runs: Mapping[int, dict | None]) -> dict[int, float]:
    return {seed: accuracy_values(summary, (0.0,), ())[PAIRED_METRIC] for seed, summary in runs.items()
            if summary is not None}


def f1_by_video(results_dir: Path, dataset: str, model: str, seed: int) -> dict[str, float] | None:
    table = read_per_video_f1(per_video_path(results_dir, dataset, model, seed))
    return None if table is None else {video: float(f1) for video, f1 in table["f1"].items() if video != MEAN_ROW}


def paired_row(results_dir: Path, dataset: str, a: str, b: str, runs: Mapping[str, Mapping[int, dict | None]]) -> dict:
    a_f1, b_f1 = f1_by_seed(runs[a]), f1_by_seed(runs[b])
    shared = [seed for seed in a_f1 if seed in b_f1]
    videos = ({"a_by_video": f1_by_video(results_dir, dataset, a, shared[0]),
               "b_by_video": f1_by_video(results_dir, dataset, b, shared[0])} if len(shared) == 1 else {})
    difference = paired_difference(a_f1, b_f1, **videos)
    partial = any(bool(runs[model][seed].get(PARTIAL)) for model in (a, b) for seed in shared)
    note = "" if shared else f"no seed run by both ({a}: {seeds_text(a_f1)}; {b}: {seeds_text(b_f1)})"
    if partial:
        note = "uses a PARTIAL score (see paper_main's notes)"
    return {"dataset": dataset, "pair": f"{a} - {b}", "model_a": a, "model_b": b,
            **interval_columns(f"{PAIRED_METRIC}_diff", difference.interval),
            "same_sign": difference.same_sign, SEEDS: " ".join(map(str, difference.seeds)),
            INTERVAL: difference.interval.method, PARTIAL: partial, NOTE: note}


def paired_table(results_dir: Path, datasets: Sequence[str], models: Sequence[str],
                 seeds: Sequence[int]) -> TableDocument:
    notes = Notes("a - b: F1 at IoU > 0 of a minus that of b, in percentage points, on the seeds both were run "
                  "with: mean ± std [95 % Student's t interval] of the seeds' differences. With one shared seed, a "
                  f"paired percentile bootstrap over the test videos both were scored on ({BOOTSTRAP_RESAMPLES:,} "
                  "resamples; the headline stays the difference of the two runs). 'same sign': the seeds whose "
                  "own difference has the sign of the mean.")
    pairs = compared_pairs(models)
    names = list(dict.fromkeys(name for pair in pairs for name in pair))
    rows = []
    for dataset in datasets:
        runs = {model: read_summaries(results_dir, dataset, model, seeds) for model in names}
        run = {model for model in names if present(runs[model])}
        left_out = [f"{a} - {b}" for a, b in pairs if not {a, b} <= run and {a, b} & set(models)]
        if left_out:
            notes.add(f"not compared on {dataset} (a model not run): {', '.join(left_out)}")
        rows += [paired_row(results_dir, dataset, a, b, runs) for a, b in pairs if {a, b} <= run]
    columns = ["dataset", "pair", "model_a", "model_b",
               *interval_names(f"{PAIRED_METRIC}_diff"), "same_sign", SEEDS, INTERVAL,
               PARTIAL, NOTE]
    frame = pd.DataFrame(rows, columns=columns)
    sections = [TableSection(dataset, paired_display(frame[frame["dataset"] == dataset])) for dataset in datasets]
    return TableDocument("Paired differences in F1 at IoU > 0 (percentage points)", frame, sections, notes.lines())


def paired_display(rows: pd.DataFrame) -> pd.DataFrame:
    metric = f"{PAIRED_METRIC}_diff"
    return pd.DataFrame({
        "a - b": marked(rows["pair"], rows[PARTIAL]),
        "n": rows[f"{metric}_n"].astype(int),
        "ΔF1 IoU>0": [interval_cell(row, metric) for _, row in rows.iterrows()],
        "same sign": [f"{same} of {n}" for same, n in zip(rows["same_sign"], rows[f"{metric}_n"])],
        INTERVAL: rows[INTERVAL],
    })
