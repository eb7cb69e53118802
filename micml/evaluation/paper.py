"""The paper's tables, built from whatever the workflow has produced under ``results/``.

```
<out_dir>/paper_main.{csv,md,html}                methods x datasets: P/R/F1 at IoU > 0, 0.05, 0.1, 0.2, AP50
<out_dir>/paper_per_video_<dataset>.{csv,md,html} per-video P/R/F1 (IoU > 0) of every method
<out_dir>/paper_ablation.{csv,md,html}            the eight variants of the registry, per dataset
<out_dir>/paper_efficiency.{csv,md,html}          parameters, GMAC/GFLOPs, measured frames/s
```
Inputs, per dataset and model: ``results/<dataset>/<model>/metrics/summary.json`` and
``dsfnet_f1.csv`` (written by :func:`micml.evaluation.report_tables.evaluate_predictions`),
``results/<dataset>/<model>/predictions/<split>/predict.json`` (frames/s) and
``results/tables/models.csv`` (parameters and GFLOPs, from :mod:`micml.diagnostics`).

Nothing is invented and nothing is dropped: a model or dataset that has not been run yet keeps
its row, with empty cells in the CSV, a dash in Markdown/HTML, and a note saying which file is
missing. A metric that is not a protocol of a dataset (AP50 on DroneCrowd) is empty with a note
too. A score from `micml evaluate --allow-partial` (summary.json `partial: true`) never passes
for a full one: its CSV rows have `partial` true and a note, Markdown/HTML mark the method with
† and say under the table what was left out. CSV values are fractions; Markdown and HTML show
percentages with two decimals.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import pandas as pd

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

# micml.models.VARIANTS, in the registry's order, written out so that reading results needs no torch
# import (a test checks that the two agree).
ABLATION_VARIANTS = ("centernet", "dsfnet_static", "dsfnet_dynamic", "dsfnet", "micml", "micml_motion_at_test",
                     "micml_no_adapter", "micml_no_mining")
MODELS_TABLE = Path("tables") / "models.csv"
PER_VIDEO_METRICS = "dsfnet_f1.csv"
NOTE = "note"
PARTIAL = "partial"
PARTIAL_MARK = " †"


# --------------------------------------------------------------------------- reading results


def metrics_dir(results_dir: Path, dataset: str, model: str) -> Path:
    return results_dir / dataset / model / "metrics"


def read_json(path: Path) -> dict | None:
    """The document, or None when the file does not exist (not yet run)."""
    if not path.is_file():
        return None
    return json.loads(path.read_text())


class Notes:
    """The notes under a table: an explanation first, then what is missing, each said once.

    Runs that do not exist yet are grouped per dataset and missing file, so a table with many
    absent variants gets one line per dataset instead of one per cell.
    """

    def __init__(self, explanation: str):
        self.items: list[str] = [explanation]
        self.not_run: dict[tuple[str, str], list[str]] = {}  # (dataset, path pattern) -> models

    def add(self, text: str) -> str:
        if text not in self.items:
            self.items.append(text)
        return text

    def missing_run(self, results_dir: Path, dataset: str, model: str, relative: str) -> str:
        """Record that `results_dir/dataset/model/relative` does not exist; returns the row's note."""
        pattern = f"{results_dir / dataset}/<model>/{relative}"
        models = self.not_run.setdefault((dataset, pattern), [])
        if model not in models:
            models.append(model)
        return f"not run yet: {results_dir / dataset / model / relative} is missing"

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


def dataset_protocols(results_dir: Path, dataset: str, models: Iterable[str]) -> list[str] | None:
    """The protocols recorded by any evaluated model of `dataset`; None while none is evaluated."""
    for model in models:
        summary = read_json(metrics_dir(results_dir, dataset, model) / SUMMARY_FILE)
        if summary is not None:
            return list(summary.get("protocols", ()))
    return None


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


def number(value) -> float:
    return math.nan if value is None else float(value)


def extra_metrics(results_dir: Path, datasets: Sequence[str], models: Sequence[str]) -> list[str]:
    """AP50 always (the paper's column); L-mAP only when some dataset uses DroneCrowd's protocol."""
    protocols = {name for dataset in datasets for name in dataset_protocols(results_dir, dataset, models) or ()}
    return ["ap50", *(["lmap"] if "dronecrowd_lmap" in protocols else [])]


def accuracy_rows(results_dir: Path, datasets: Sequence[str], models: Sequence[str], thresholds: Sequence[float],
                  notes: Notes) -> pd.DataFrame:
    """One row per (dataset, model): the accuracy values, or empty cells and a note."""
    extra = extra_metrics(results_dir, datasets, models)
    rows = []
    for dataset in datasets:
        for model in models:
            path = metrics_dir(results_dir, dataset, model) / SUMMARY_FILE
            summary = read_json(path)
            note = (notes.partial_score(summary, path, dataset, model) if summary is not None
                    else notes.missing_run(results_dir, dataset, model, f"metrics/{SUMMARY_FILE}"))
            rows.append({"dataset": dataset, "model": model, **accuracy_values(summary or {}, thresholds, extra),
                         PARTIAL: None if summary is None else bool(summary.get(PARTIAL)), NOTE: note})
        protocols = dataset_protocols(results_dir, dataset, models)
        for column, protocol, _, label in EXTRA_METRICS:
            if column in extra and protocols is not None and protocol not in protocols:
                notes.add(f"{label} on {dataset}: not one of its protocols ({', '.join(protocols)})")
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- display


DISPLAY_NAMES = {"precision": "P", "recall": "R", "f1": "F1", "ap50": "AP50", "lmap": "L-mAP"}


def display_name(column: str) -> str:
    """'f1_iou0.05' -> 'F1 IoU>0.05'; 'ap50' -> 'AP50'."""
    metric, _, threshold = column.partition("_iou")
    if threshold:
        return f"{DISPLAY_NAMES[metric]} IoU>{threshold}"
    return DISPLAY_NAMES.get(column, column)


def as_percent(frame: pd.DataFrame, columns: Iterable[str]) -> pd.DataFrame:
    shown = frame.copy()
    for column in columns:
        shown[column] = (shown[column].astype(float) * 100).round(2)
    return shown


def metric_columns(frame: pd.DataFrame) -> list[str]:
    return [column for column in frame.columns if column.partition("_iou")[0] in DISPLAY_NAMES]


def partially_scored(frame: pd.DataFrame) -> set[str]:
    """Models with a partial score in some row (not-run rows have no flag)."""
    return set(frame.loc[frame[PARTIAL].eq(True), "model"])


def marked(names: Iterable[str], partial: Iterable[bool]) -> list[str]:
    """Names of methods with a partial score get the mark that the notes explain."""
    return [name + PARTIAL_MARK if flag else name for name, flag in zip(names, partial)]


def per_dataset_sections(frame: pd.DataFrame, datasets: Sequence[str], leading: Sequence[str]) -> list[TableSection]:
    """A section per dataset: `leading` columns (the first marked when partial) then the metrics,
    in %, with display names."""
    metrics = metric_columns(frame)
    sections = []
    for dataset in datasets:
        rows = frame[frame["dataset"] == dataset].reset_index(drop=True)
        rows[leading[0]] = marked(rows[leading[0]], rows[PARTIAL].eq(True))
        rows = rows[[*leading, *metrics]]
        shown = as_percent(rows, metrics).rename(columns={column: display_name(column) for column in metrics})
        sections.append(TableSection(dataset, shown))
    return sections


# --------------------------------------------------------------------------- the four tables


def main_table(results_dir: Path, datasets: Sequence[str], models: Sequence[str]) -> TableDocument:
    notes = Notes("P, R and F1 are the DSFNet/MICML protocol (Hungarian matching, score > 0.3), averaged over the "
                  "videos of the test split; AP50 is COCO's (pycocotools) over all test frames.")
    frame = accuracy_rows(results_dir, datasets, models, DSFNET_IOU_THRESHOLDS, notes)
    overview = frame.pivot(index="model", columns="dataset", values="f1_iou0").reindex(index=list(models),
                                                                                         columns=list(datasets))
    overview = as_percent(overview.reset_index().rename(columns={"model": "method"}), datasets)
    partial = partially_scored(frame)
    overview["method"] = marked(overview["method"], [model in partial for model in overview["method"]])
    sections = [TableSection("F1 at IoU > 0, all datasets", overview)]
    sections += per_dataset_sections(frame.rename(columns={"model": "method"}), datasets, ["method"])
    return TableDocument("Detection accuracy per method and dataset (values in %)", frame, sections, notes.lines())


def per_video_table(results_dir: Path, dataset: str, models: Sequence[str]) -> TableDocument:
    notes = Notes(f"P/R/F1 at IoU > 0, score > 0.3; row '{MEAN_ROW}' is the unweighted mean over videos.")
    per_model: dict[str, pd.DataFrame | None] = {}
    missing_notes: dict[str, str] = {}
    partial_models: set[str] = set()
    for model in models:
        per_model[model] = read_per_video_f1(metrics_dir(results_dir, dataset, model) / PER_VIDEO_METRICS)
        if per_model[model] is None:
            missing_notes[model] = notes.missing_run(results_dir, dataset, model, f"metrics/{PER_VIDEO_METRICS}")
        else:
            summary_path = metrics_dir(results_dir, dataset, model) / SUMMARY_FILE
            missing_notes[model] = notes.partial_score(read_json(summary_path), summary_path, dataset, model)
            if missing_notes[model]:
                partial_models.add(model)
    videos = video_order(per_model.values())
    rows = []
    for model, table in per_model.items():
        for video in videos:
            known = table is not None and video in table.index
            rows.append({"video": video, "model": model,
                         **{metric: float(table.loc[video, metric]) if known else math.nan
                            for metric in ("precision", "recall", "f1")},
                         PARTIAL: None if table is None else model in partial_models, NOTE: missing_notes[model]})
    frame = pd.DataFrame(rows, columns=["video", "model", "precision", "recall", "f1", PARTIAL, NOTE])
    return TableDocument(f"{dataset}: per-video accuracy (values in %)", frame,
                         [TableSection("", per_video_display(frame, models, videos))], notes.lines())


def read_per_video_f1(path: Path) -> pd.DataFrame | None:
    """P/R/F1 at IoU > 0 indexed by video (mean row included), or None when not evaluated yet."""
    if not path.is_file():
        return None
    table = pd.read_csv(path, dtype={"video": str})
    return table[table["iou_threshold"] == 0.0].set_index("video")[["precision", "recall", "f1"]]


def video_order(tables: Iterable[pd.DataFrame | None]) -> list[str]:
    """Videos in first-seen order over the models' tables, the mean row last."""
    videos: list[str] = []
    for table in tables:
        if table is not None:
            videos += [video for video in table.index if video not in videos and video != MEAN_ROW]
    return videos + [MEAN_ROW]


def per_video_display(frame: pd.DataFrame, models: Sequence[str], videos: Sequence[str]) -> pd.DataFrame:
    """Rows videos, columns '<model> P', '<model> R', '<model> F1', in %."""
    shown = pd.DataFrame({"video": list(videos)})
    for model in models:
        rows = frame[frame["model"] == model].set_index("video").reindex(videos)
        label = marked([model], [model in partially_scored(frame)])[0]
        for metric in ("precision", "recall", "f1"):
            shown[f"{label} {DISPLAY_NAMES[metric]}"] = (rows[metric].astype(float) * 100).round(2).to_numpy()
    return shown


def ablation_table(results_dir: Path, datasets: Sequence[str]) -> TableDocument:
    from micml.models import describe  # imports torch: only needed for this table

    notes = Notes("P/R/F1 at IoU > 0, score > 0.3, averaged over test videos. A variant not in the config's "
                  "`models` list is not trained: add it there to fill its row.")
    frame = accuracy_rows(results_dir, datasets, ABLATION_VARIANTS, (0.0,), notes)
    frame.insert(2, "description", [describe(model) for model in frame["model"]])
    sections = per_dataset_sections(frame.rename(columns={"model": "variant"}), datasets, ["variant", "description"])
    return TableDocument("Ablation: static, temporal, fused and motion-module variants (values in %)", frame,
                         sections, notes.lines())


def efficiency_table(results_dir: Path, datasets: Sequence[str], models: Sequence[str], split: str) -> TableDocument:
    notes = Notes("Parameters used at inference and in total; GMAC/GFLOPs of one eval forward of a 5-frame clip "
                  "at the given side; frames/s as measured by the test run (device notes below).")
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
            path = results_dir / dataset / model / "predictions" / split / PREDICT_SUMMARY
            summary = read_json(path)
            if summary is None:
                row_notes.append(notes.missing_run(results_dir, dataset, model,
                                                   f"predictions/{split}/{PREDICT_SUMMARY}"))
            else:
                measured_on.setdefault(measurement_settings(summary), []).append(f"{model} on {dataset}")
            row[f"fps_{dataset}"] = number((summary or {}).get("frames_per_second"))
        rows.append({**row, NOTE: "; ".join(row_notes)})
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
    return ["paper_main", *[f"paper_per_video_{dataset}" for dataset in datasets], "paper_ablation",
            "paper_efficiency"]


def paper_table_files(datasets: Iterable[str]) -> list[str]:
    return [stem + suffix for stem in paper_table_names(datasets) for suffix in TABLE_SUFFIXES]


def write_paper_tables(results_dir: str | os.PathLike, datasets: Sequence[str], models: Sequence[str],
                       out_dir: str | os.PathLike, *, split: str = "test") -> dict[str, pd.DataFrame]:
    """Write every paper table into `out_dir` (see the module docstring); returns {stem: CSV frame}."""
    results_dir, out_dir = Path(results_dir), Path(out_dir)
    datasets, models = list(datasets), list(models)
    documents = {"paper_main": main_table(results_dir, datasets, models)}
    for dataset in datasets:
        documents[f"paper_per_video_{dataset}"] = per_video_table(results_dir, dataset, models)
    documents["paper_ablation"] = ablation_table(results_dir, datasets)
    documents["paper_efficiency"] = efficiency_table(results_dir, datasets, models, split)
    for stem, document in documents.items():
        document.write(out_dir / stem)
    return {stem: document.csv for stem, document in documents.items()}
