"""The paper's tables, built from whatever the workflow has produced under ``results/``.

```
<out_dir>/paper_main.{csv,md,html}                methods x datasets: P/R/F1 at IoU > 0, 0.05, 0.1, 0.2, AP50,
                                                  each as mean, std, 95 % interval and n over seeds; training budget
<out_dir>/paper_main_f1.png                       F1 (IoU > 0) per method and dataset with its 95 % interval
<out_dir>/paper_paired.{csv,md,html}              paired F1 differences (micml - dsfnet, ...) on the same seeds
<out_dir>/paper_per_video_<dataset>.{csv,md,html} per-video P/R/F1 (IoU > 0) of every method, mean over seeds
<out_dir>/paper_ablation.{csv,md,html}            the eight variants of the registry, per dataset
<out_dir>/paper_efficiency.{csv,md,html}          parameters, GMAC/GFLOPs, measured frames/s
```
Inputs, per dataset, model and seed (paths from :mod:`micml.layout`): ``metrics/summary.json``
and ``dsfnet_f1.csv`` (written by :func:`micml.evaluation.report_tables.evaluate_predictions`;
summary.json's ``training`` block gives the budget), ``predictions/<split>/predict.json``
(frames/s), and ``results/tables/models.csv`` (parameters and GFLOPs, from :mod:`micml.diagnostics`).

Every metric is aggregated over the seeds asked for (see :mod:`micml.evaluation.stats`): with
two or more seeds a t interval over the seeds, with one a bootstrap over its test videos,
labelled in the `interval` column; the CSV has ``<metric>_mean``, ``_std``, ``_low``, ``_high``
and ``_n``.

Nothing is invented and nothing is dropped: a model, seed or dataset that has not been run yet
keeps its row (the interval is over the seeds present, n says how many), with empty cells in the
CSV, a dash in Markdown/HTML, and a note saying which file is missing. A metric that is not a
protocol of a dataset (AP50 on DroneCrowd) is empty with a note too. A score from `micml evaluate
--allow-partial` (summary.json `partial: true`) never passes for a full one: its CSV rows have
`partial` true and a note, Markdown/HTML mark the method with † and say under the table what was
left out. CSV values are fractions; Markdown and HTML show percentages with two decimals.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from micml import layout
from micml.evaluation.matfiles import PREDICT_SUMMARY
from micml.evaluation.report_tables import (
    DSFNET_IOU_THRESHOLDS,
    MEAN_ROW,
    SUMMARY_FILE,
    TABLE_SUFFIXES,
    TableDocument,
    TableSection,
    iou_key,
)
from micml.evaluation.stats import BOOTSTRAP_RESAMPLES, NO_VALUE, Interval, paired_difference, seed_interval
from micml.catalog import HEADLINE_PAIRS, METHOD, VARIANTS, describe

# The ablation table's rows: every variant, in micml.catalog's order (no torch import).
ABLATION_VARIANTS = VARIANTS
MODELS_TABLE = Path("tables") / "models.csv"
PER_VIDEO_METRICS = "dsfnet_f1.csv"
SUMMARY_RELATIVE = f"metrics/{SUMMARY_FILE}"
PER_VIDEO_RELATIVE = f"metrics/{PER_VIDEO_METRICS}"
NOTE = "note"
PARTIAL = "partial"
PARTIAL_MARK = " †"
INTERVAL = "interval"
SEEDS = "seeds"
INTERVAL_PARTS = ("mean", "std", "low", "high", "n")
# summary.json `training` key -> paper_main column (each the mean over the seeds present)
BUDGET_COLUMNS = {"steps": "steps", "samples": "samples", "seconds": "train_seconds"}
PAIRED_METRIC = "f1_iou0"
F1_FIGURE = "paper_main_f1.png"


# --------------------------------------------------------------------------- reading results


def read_json(path: Path) -> dict | None:
    """The document, or None when the file does not exist (not yet run)."""
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def summary_path(results_dir: Path, dataset: str, model: str, seed: int) -> Path:
    return layout.metrics_dir(results_dir, dataset, model, seed) / SUMMARY_FILE


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

    def missing_runs(self, results_dir: Path, dataset: str, model: str, missing: Sequence[int],
                     asked: Sequence[int], relative: str) -> str:
        """Record that `relative` of the runs of `missing` seeds does not exist; returns the row's
        note ('' when none is missing)."""
        if not missing:
            return ""
        pattern = str(layout.run_dir(results_dir, dataset, "<model>", "<k>") / relative)
        label = model if len(missing) == len(asked) else f"{model} ({seeds_text(missing)})"
        models = self.not_run.setdefault((dataset, pattern), [])
        if label not in models:
            models.append(label)
        paths = [str(layout.run_dir(results_dir, dataset, model, seed) / relative) for seed in missing]
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
    parts.append(notes.missing_runs(results_dir, dataset, model, missing, list(runs), SUMMARY_RELATIVE))
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


# --------------------------------------------------------------------------- metric rows


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
            per_video = (per_video_values(layout.metrics_dir(results_dir, dataset, model, scored[0])
                                          / PER_VIDEO_METRICS, thresholds) if len(scored) == 1 else {})
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


# --------------------------------------------------------------------------- display


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


# --------------------------------------------------------------------------- the tables


def main_table(results_dir: Path, datasets: Sequence[str], models: Sequence[str],
               seeds: Sequence[int]) -> TableDocument:
    notes = Notes("P, R and F1 are the DSFNet/MICML protocol (Hungarian matching, score > 0.3), averaged over the "
                  "videos of the test split; AP50 is COCO's (pycocotools) over all test frames.")
    notes.add(interval_explanation(seeds))
    frame = accuracy_rows(results_dir, datasets, models, seeds, DSFNET_IOU_THRESHOLDS, notes)
    budget_notes(frame, notes)
    machine_note(results_dir, datasets, models, seeds, notes)
    partial = partially_scored(frame)
    overview = pd.DataFrame({"method": marked(models, [model in partial for model in models])})
    for dataset in datasets:
        rows = frame[frame["dataset"] == dataset].set_index("model").reindex(list(models))
        overview[dataset] = [with_n(interval_cell(row, "f1_iou0"), row["f1_iou0_n"]) for _, row in rows.iterrows()]
    sections = [TableSection("F1 at IoU > 0, all datasets", overview)]
    sections += per_dataset_sections(frame.rename(columns={"model": "method"}), datasets, ["method"])
    return TableDocument("Detection accuracy per method and dataset (values in %)", frame, sections, notes.lines())


def interval_explanation(seeds: Sequence[int]) -> str:
    return (f"Cells: mean ± std [95 % interval] over the seeds run ({seeds_text(seeds)} asked for; n: how many "
            "were run). With n >= 2 the interval is Student's t over the seeds. With n = 1 it is a percentile "
            f"bootstrap over the test videos of that one run ({BOOTSTRAP_RESAMPLES:,} resamples): how much the "
            "score depends on the videos, not on the seed; AP50 and L-mAP, pooled over all videos, then have "
            "no interval. The `interval` column names the method of each row.")


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
    tables = {seed: read_per_video_f1(layout.metrics_dir(results_dir, dataset, model, seed) / PER_VIDEO_METRICS)
              for seed in seeds}
    runs = {seed: read_json(summary_path(results_dir, dataset, model, seed)) if tables[seed] is not None else None
            for seed in seeds}
    parts = [notes.partial_score(runs[seed], summary_path(results_dir, dataset, model, seed), dataset, model)
             for seed in present(tables)]
    parts.append(notes.missing_runs(results_dir, dataset, model, [seed for seed in seeds if tables[seed] is None],
                                    seeds, PER_VIDEO_RELATIVE))
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


def ablation_table(results_dir: Path, datasets: Sequence[str], seeds: Sequence[int]) -> TableDocument:
    notes = Notes("P/R/F1 at IoU > 0, score > 0.3, averaged over test videos. A variant not in the config's "
                  "`models` list is not trained: add it there to fill its row.")
    notes.add(interval_explanation(seeds))
    frame = accuracy_rows(results_dir, datasets, ABLATION_VARIANTS, seeds, (0.0,), notes)
    budget_notes(frame, notes)
    frame.insert(2, "description", [describe(model) for model in frame["model"]])
    sections = per_dataset_sections(frame.rename(columns={"model": "variant"}), datasets, ["variant", "description"])
    return TableDocument("Ablation: static, temporal, fused and motion-module variants (values in %)", frame,
                         sections, notes.lines())


# --------------------------------------------------------------------------- paired differences


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
    table = read_per_video_f1(layout.metrics_dir(results_dir, dataset, model, seed) / PER_VIDEO_METRICS)
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


# --------------------------------------------------------------------------- efficiency


def efficiency_table(results_dir: Path, datasets: Sequence[str], models: Sequence[str], seeds: Sequence[int],
                     split: str) -> TableDocument:
    notes = Notes("Parameters used at inference and in total; GMAC/GFLOPs of one eval forward of a 5-frame clip "
                  "at the given side; frames/s as measured by the test run, mean over the seeds run (device "
                  "notes below).")
    costs_path = results_dir / MODELS_TABLE
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
            relative = Path("predictions") / split / PREDICT_SUMMARY
            runs = {seed: read_json(layout.run_dir(results_dir, dataset, model, seed) / relative) for seed in seeds}
            missing = [seed for seed, summary in runs.items() if summary is None]
            row_notes.append(notes.missing_runs(results_dir, dataset, model, missing, seeds, str(relative)))
            for summary in filter(None, runs.values()):
                measured = measured_on.setdefault(measurement_settings(summary), [])
                if f"{model} on {dataset}" not in measured:
                    measured.append(f"{model} on {dataset}")
            speeds = [number(summary.get("frames_per_second")) for summary in runs.values() if summary is not None]
            row[f"fps_{dataset}"] = float(np.mean(speeds)) if speeds else math.nan
        rows.append({**row, NOTE: "; ".join(note for note in row_notes if note)})
    for settings, runs in measured_on.items():
        notes.add(f"frames/s measured on {settings}: {', '.join(runs)}")
    frame = pd.DataFrame(rows)
    shown = frame.drop(columns=NOTE).rename(columns=efficiency_display_names(frame.columns))
    return TableDocument("Model size, compute and measured speed", frame, [TableSection("", shown)], notes.lines())


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


# --------------------------------------------------------------------------- entry point


def paper_table_names(datasets: Iterable[str]) -> list[str]:
    """Stems of the tables `write_paper_tables` writes (each as .csv, .md and .html)."""
    return ["paper_main", "paper_paired", *[f"paper_per_video_{dataset}" for dataset in datasets], "paper_ablation",
            "paper_efficiency"]


def paper_table_files(datasets: Iterable[str]) -> list[str]:
    """Every file `write_paper_tables` writes: the tables and the F1 figure."""
    return [stem + suffix for stem in paper_table_names(datasets) for suffix in TABLE_SUFFIXES] + [F1_FIGURE]


def write_paper_tables(results_dir: str | os.PathLike, datasets: Sequence[str], models: Sequence[str],
                       out_dir: str | os.PathLike, *, seeds: Sequence[int],
                       split: str = "test") -> dict[str, pd.DataFrame]:
    """Write every paper table, over the runs of `seeds` (the config's `seeds`), and the F1 figure
    into `out_dir` (see the module docstring); returns {stem: CSV frame}."""
    from micml.evaluation.plots import plot_main_f1  # plots reads this module's variant list

    results_dir, out_dir = Path(results_dir), Path(out_dir)
    datasets, models, seeds = list(datasets), list(models), checked_seeds(seeds)
    documents = {"paper_main": main_table(results_dir, datasets, models, seeds),
                 "paper_paired": paired_table(results_dir, datasets, models, seeds)}
    for dataset in datasets:
        documents[f"paper_per_video_{dataset}"] = per_video_table(results_dir, dataset, models, seeds)
    documents["paper_ablation"] = ablation_table(results_dir, datasets, seeds)
    documents["paper_efficiency"] = efficiency_table(results_dir, datasets, models, seeds, split)
    for stem, document in documents.items():
        document.write(out_dir / stem)
    plot_main_f1(documents["paper_main"].csv, out_dir / F1_FIGURE)
    return {stem: document.csv for stem, document in documents.items()}
