"""Evaluate one prediction folder against a unified dataset, and write the metric tables.

```
<out_dir>/<protocol>.csv|.md|.html   per video plus a summary row (CSV for machines, Markdown for
                                      people, HTML for the Snakemake report, which shows HTML and
                                      images but only offers CSV/Markdown as downloads)
<out_dir>/pr_curve.csv               precision/recall over score thresholds, one block per protocol
                                      that has a curve (long format: protocol, setting, threshold...)
<out_dir>/summary.json               the headline numbers the paper tables read
```

Protocols (the dataset's ``meta.json`` lists which apply; see :mod:`micml.evaluation`):

* ``dsfnet_f1`` at IoU > 0, 0.05, 0.1, 0.2 (MICML reports IoU > 0, DSFNet the others), score > 0.3;
  summary row ``mean``: P, R, F1 averaged over videos (the published number), TP/FP/FN summed.
* ``centre_distance``: box centres closer than 5 px (HiEUM), same rows.
* ``coco_ap50``: COCO AP50 (and AP, AP75, AR) per video; summary row ``all`` pools every frame of
  the split in one pycocotools run, as DSFNet's ``test.py`` does.
* ``dronecrowd_lmap``: L-mAP and AP@10/15/20 of detected box centres against the annotated points
  (the box centres before clipping to the frame, `Video.frame_points`) per video; summary row
  ``all`` pools every sequence, as the DroneCrowd toolkit does.

Which frames count: every frame of every video of the split, frames without objects as empty
ground truth (false positives there count). Every one of them needs a .mat file (an empty one
when nothing was detected, as `micml test` writes): the reference evaluator reads a missing file
as "no detections", so a lost video silently lowered its score. Missing frames, and .mat files of
frames the split lacks, are refused naming them; ``allow_partial=True`` scores the frames present
instead, and the summary, the titles and the notes of every table say `partial` with the list.
"""

from __future__ import annotations

import html
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from micml.catalog import CURVE_PROTOCOLS, KNOWN_PROTOCOLS, POINT_PROTOCOLS
from micml.data.unified import UnifiedDataset, Video
from micml.evaluation.coco import coco_ap50
from micml.evaluation.dsfnet import centre_distance, dsfnet_f1, pr_curve_distance, pr_curve_dsfnet
from micml.evaluation.matfiles import PREDICT_SUMMARY, atomic_write, read_detection_dir
from micml.evaluation.points import dronecrowd_lmap, pr_curve_points
from micml.paths import check_output_apart
from micml.tables import format_cell, markdown_table, write_table

DSFNET_IOU_THRESHOLDS = (0.0, 0.05, 0.1, 0.2)
SCORE_THRESHOLD = 0.3
CENTRE_DISTANCE_PX = 5.0
# DroneCrowd's PR curve needs one distance; 10 px is the smallest threshold the toolkit reports.
POINT_CURVE_DISTANCE_PX = 10.0
LMAP_COLUMNS = ("L-mAP", "AP@10", "AP@15", "AP@20")
COCO_COLUMNS = ("AP50", "AP", "AP75", "AR")
MEAN_ROW = "mean"  # unweighted mean over videos (dsfnet_f1, centre_distance)
POOLED_ROW = "all"  # one evaluation over all videos together (coco_ap50, dronecrowd_lmap)
SUMMARY_FILE = "summary.json"
PR_CURVE_FILE = "pr_curve.csv"
PR_CURVE_COLUMNS = ("protocol", "setting", "score_threshold", "tp", "fp", "fn", "precision", "recall", "f1")
TABLE_SUFFIXES = (".csv", ".md", ".html")
GAPS_SHOWN = 5  # missing or extra frames named in a message; the count says how many more

Boxes = dict[str, dict[int, np.ndarray]]


class EvaluationSetupError(ValueError):
    """A dataset or protocol list that cannot be evaluated; the message says what to change."""


class IncompletePredictionsError(EvaluationSetupError):
    """Predictions that do not cover the split frame for frame; the message names the gaps."""


# --------------------------------------------------------------------------- table documents


@dataclass
class TableSection:
    """One table of a document, shown under its own heading in Markdown and HTML."""

    heading: str
    frame: pd.DataFrame


@dataclass
class TableDocument:
    """A table written three ways: `csv` (machine-readable, full precision), and the `sections`
    (formatted for reading) as Markdown and as self-contained HTML for the Snakemake report."""

    title: str
    csv: pd.DataFrame
    sections: list[TableSection]
    notes: list[str] = field(default_factory=list)

    def write(self, stem: Path | str) -> list[Path]:
        stem = Path(stem)
        paths = [stem.with_name(stem.name + suffix) for suffix in TABLE_SUFFIXES]
        write_table(self.csv, paths[0], None)
        write_text(paths[1], self.markdown())
        write_text(paths[2], self.html())
        return paths

    def markdown(self) -> str:
        parts = [f"# {self.title}\n"]
        for section in self.sections:
            heading = f"## {section.heading}\n\n" if section.heading else ""
            parts.append(heading + markdown_table(section.frame))
        if self.notes:
            parts.append("Notes:\n\n" + "".join(f"- {note}\n" for note in self.notes))
        return "\n".join(parts)

    def html(self) -> str:
        body = [f"<h1>{html.escape(self.title)}</h1>"]
        for section in self.sections:
            if section.heading:
                body.append(f"<h2>{html.escape(section.heading)}</h2>")
            body.append(html_table(section.frame))
        if self.notes:
            items = "".join(f"<li>{html.escape(note)}</li>" for note in self.notes)
            body.append(f"<p>Notes:</p><ul>{items}</ul>")
        return HTML_PAGE.format(title=html.escape(self.title), body="\n".join(body))


HTML_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; font-size: 14px; margin: 1.5em; color: #1e293b; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; }}
th, td {{ border-bottom: 1px solid #cbd5e1; padding: 0.25em 0.7em; }}
th {{ background: #e2e8f0; text-align: left; }}
td.number {{ text-align: right; font-variant-numeric: tabular-nums; }}
tr:nth-child(even) td {{ background: #f8fafc; }}
</style></head>
<body>
{body}
</body></html>
"""


def html_table(frame: pd.DataFrame) -> str:
    """An HTML table with the same cell text as `micml.tables.markdown_table` (dash for missing)."""
    numeric = [pd.api.types.is_numeric_dtype(frame[column]) for column in frame.columns]
    header = "".join(f"<th>{html.escape(str(column))}</th>" for column in frame.columns)
    rows = []
    for values in frame.itertuples(index=False):
        cells = []
        for value, is_number in zip(values, numeric):
            text = str(value) if isinstance(value, str) else format_cell(value)
            css = ' class="number"' if is_number else ""
            cells.append(f"<td{css}>{html.escape(text)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table>\n<thead><tr>{header}</tr></thead>\n<tbody>\n" + "\n".join(rows) + "\n</tbody>\n</table>"


def write_text(path: Path | str, text: str) -> None:
    data = text.encode()
    atomic_write(Path(path), lambda stream: stream.write(data))


def write_json(path: Path | str, document: Mapping) -> None:
    write_text(path, json.dumps(json_safe(document), indent=2) + "\n")


def json_safe(value):
    """NaN becomes null: json.dumps would write a bare NaN, which is not JSON."""
    if isinstance(value, Mapping):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return None if math.isnan(value) else float(value)
    return value


# --------------------------------------------------------------------------- inputs


def ground_truth_boxes(videos: Sequence[Video]) -> Boxes:
    """{video: {frame: M x 4}} for every frame of every video, empty frames included."""
    return {video.record.name: {frame: reference_dtype(video.frame_boxes(frame))
                                for frame in range(1, video.record.n_frames + 1)}
            for video in videos}


def ground_truth_points(videos: Sequence[Video]) -> Boxes:
    """{video: {frame: M x 2}}: where each object was annotated, for the point protocol."""
    return {video.record.name: {frame: video.frame_points(frame) for frame in range(1, video.record.n_frames + 1)}
            for video in videos}


def reference_dtype(boxes: np.ndarray) -> np.ndarray:
    """Integral boxes as int64, like the reference's boxes parsed from xml, others as float64.

    numpy then promotes our float32 detections against them exactly as in the reference, so
    IoUs, and therefore the Hungarian assignments and their ties, come out bit for bit the same.
    """
    integral = boxes.size > 0 and bool(np.all(boxes == np.round(boxes)))
    return boxes.astype(np.int64 if integral else np.float64)


def box_centre_points(boxes: Boxes, *, with_scores: bool) -> Boxes:
    """Boxes [x1, y1, x2, y2(, score)] -> points [x, y(, score)] (DroneCrowd's point protocol)."""
    points: Boxes = {}
    for video, frames in boxes.items():
        points[video] = {}
        for frame, rows in frames.items():
            rows = np.asarray(rows, dtype=np.float64).reshape(-1, 5 if with_scores else 4)
            centres = (rows[:, :2] + rows[:, 2:4]) / 2
            points[video][frame] = np.column_stack([centres, rows[:, 4]]) if with_scores else centres
    return points


def dataset_protocols(dataset: UnifiedDataset, requested: Iterable[str] | None) -> list[str]:
    if not dataset.meta.get("annotated", True):
        raise EvaluationSetupError(f"{dataset.root}: this dataset has no annotations (a plain video), so there "
                                   "is nothing to evaluate; run detection only (`micml detect`)")
    protocols = list(dataset.meta.get("protocols", ()) if requested is None else requested)
    unknown = [name for name in protocols if name not in KNOWN_PROTOCOLS]
    if unknown:
        source = dataset.root / "meta.json" if requested is None else "the protocols argument"
        raise EvaluationSetupError(f"unknown protocol(s) {unknown} in {source}; known protocols: "
                                   f"{', '.join(KNOWN_PROTOCOLS)}")
    if not protocols:
        raise EvaluationSetupError(f"{dataset.root / 'meta.json'}: lists no evaluation protocol; re-run the "
                                   f"conversion or pass protocols=... (known: {', '.join(KNOWN_PROTOCOLS)})")
    return protocols


# --------------------------------------------------------------------------- coverage


@dataclass
class Coverage:
    """How the .mat files of a prediction folder cover the frames of a split.

    `missing`: frames of the split without a .mat file, per video. `extra`: .mat files of frames
    (or whole videos) that the split lacks, per video.
    """

    missing: dict[str, list[int]]
    extra: dict[str, list[int]]

    @property
    def missing_count(self) -> int:
        return sum(map(len, self.missing.values()))

    def record(self, truth: Boxes) -> dict:
        """The summary.json entry of a partial score: whole videos, then frames of the others."""
        whole = [video for video, frames in self.missing.items() if len(frames) == len(truth[video])]
        return {"count": self.missing_count, "videos": whole,
                "frames": {video: frames for video, frames in self.missing.items() if video not in whole}}


def prediction_coverage(detections: Boxes, truth: Boxes) -> Coverage:
    missing = {video: [frame for frame in frames if frame not in detections.get(video, {})]
               for video, frames in truth.items()}
    extra = {video: [frame for frame in frames if frame not in truth.get(video, {})]
             for video, frames in detections.items()}
    return Coverage({video: frames for video, frames in missing.items() if frames},
                    {video: sorted(frames) for video, frames in extra.items() if frames})


def gap_list(gaps: Mapping[str, list[int]], truth: Boxes) -> str:
    """'video 003 (all 60 frames), video 002 frame 5, ...': the first GAPS_SHOWN gaps."""
    items, count = [], 0
    for video, frames in gaps.items():
        if video not in truth or len(frames) == len(truth[video]):
            whole = "" if video not in truth else "all "
            named = [f"video {video} ({whole}{len(frames)} frame{'s' if len(frames) > 1 else ''})"]
        else:
            named = [f"video {video} frame {frame}" for frame in frames[:GAPS_SHOWN]]
            count += len(frames) - len(named)
        items += named
        count += len(named)
    return ", ".join(items[:GAPS_SHOWN]) + (", ..." if count > GAPS_SHOWN else "")


def check_coverage(coverage: Coverage, truth: Boxes, mat_root: Path, split: str, allow_partial: bool) -> None:
    """Refuse .mat files of frames the split lacks, and missing frames unless `allow_partial`."""
    if coverage.extra:
        count = sum(map(len, coverage.extra.values()))
        raise IncompletePredictionsError(
            f"{mat_root}: {count} .mat file(s) name frames that the {split!r} split does not hold "
            f"({gap_list(coverage.extra, truth)}); they are predictions of another split or dataset: "
            f"re-run `micml test` on this split, or remove them")
    total = sum(map(len, truth.values()))
    if coverage.missing_count == total:
        raise IncompletePredictionsError(
            f"{mat_root}: no .mat file for any of the {total} frames of the {split!r} split; run `micml test` "
            "(or the workflow's test and export_mat rules) on this split first")
    if coverage.missing and not allow_partial:
        raise IncompletePredictionsError(
            f"{mat_root}: no .mat file for {coverage.missing_count} of {total} frames of the {split!r} split, in "
            f"{len(coverage.missing)} of {len(truth)} videos ({gap_list(coverage.missing, truth)}); re-run "
            "`micml test` to predict every frame, or pass --allow-partial (allow_partial=True) to score only the "
            "frames present, marked partial")


def covered_truth(truth: Boxes, coverage: Coverage) -> Boxes:
    """The ground truth of the frames that have predictions (videos without any are left out)."""
    kept = {video: {frame: boxes for frame, boxes in frames.items() if frame not in coverage.missing.get(video, ())}
            for video, frames in truth.items()}
    return {video: frames for video, frames in kept.items() if frames}


def partial_note(coverage: Coverage, truth: Boxes) -> str:
    return (f"PARTIAL score: {coverage.missing_count} of {sum(map(len, truth.values()))} frames had no prediction "
            f"and are left out ({gap_list(coverage.missing, truth)}); see `missing` in {SUMMARY_FILE}")


# --------------------------------------------------------------------------- protocols


def per_video_table(table: pd.DataFrame) -> pd.DataFrame:
    """dsfnet_f1 / centre_distance output (indexed by video, `mean` last) with `video` as a column."""
    frame = table.reset_index()
    frame["video"] = frame["video"].astype(str)
    return frame


def evaluate_dsfnet_f1(detections: Boxes, truth: Boxes) -> tuple[pd.DataFrame, dict]:
    tables, headline = [], {}
    for threshold in DSFNET_IOU_THRESHOLDS:
        table = per_video_table(dsfnet_f1(detections, truth, iou_threshold=threshold,
                                          score_threshold=SCORE_THRESHOLD))
        table.insert(0, "iou_threshold", threshold)
        tables.append(table)
        headline[iou_key(threshold)] = summary_row(table)
    summary = {"score_threshold": SCORE_THRESHOLD, "iou_thresholds": headline}
    return pd.concat(tables, ignore_index=True), summary


def iou_key(threshold: float) -> str:
    """The summary.json key of an IoU threshold: '0', '0.05', '0.1', '0.2'."""
    return f"{threshold:g}"


def summary_row(table: pd.DataFrame) -> dict:
    row = table[table["video"] == MEAN_ROW].iloc[0]
    return {name: row[name] for name in ("precision", "recall", "f1", "tp", "fp", "fn")}


def evaluate_centre_distance(detections: Boxes, truth: Boxes) -> tuple[pd.DataFrame, dict]:
    table = per_video_table(centre_distance(detections, truth, max_distance=CENTRE_DISTANCE_PX,
                                            score_threshold=SCORE_THRESHOLD))
    table.insert(0, "max_distance", CENTRE_DISTANCE_PX)
    summary = {"max_distance": CENTRE_DISTANCE_PX, "score_threshold": SCORE_THRESHOLD, **summary_row(table)}
    return table, summary


def per_video_and_pooled(metric, detections: Boxes, truth: Boxes, columns: Sequence[str]) -> pd.DataFrame:
    """`metric` run on each video alone, then once on all of them together (row `all`)."""
    rows = []
    for video in truth:
        only = {video: detections.get(video, {})}
        rows.append({"video": video, **pick(metric(only, {video: truth[video]}), columns)})
    rows.append({"video": POOLED_ROW, **pick(metric(detections, truth), columns)})
    return pd.DataFrame(rows, columns=["video", *columns])


def pick(result: Mapping[str, float], columns: Sequence[str]) -> dict:
    return {column: result.get(column, math.nan) for column in columns}


def evaluate_coco_ap50(detections: Boxes, truth: Boxes) -> tuple[pd.DataFrame, dict]:
    # The size breakdown (AP_small...) triples pycocotools' pure-Python loop and no table uses it.
    def metric(dets, gt):
        return coco_ap50(dets, gt, size_breakdown=False)

    table = per_video_and_pooled(metric, detections, truth, COCO_COLUMNS)
    return table, pooled_summary(table, COCO_COLUMNS)


def evaluate_dronecrowd_lmap(detections: Boxes, truth_points: Boxes) -> tuple[pd.DataFrame, dict]:
    points = box_centre_points(detections, with_scores=True)
    table = per_video_and_pooled(dronecrowd_lmap, points, truth_points, LMAP_COLUMNS)
    return table, pooled_summary(table, LMAP_COLUMNS)


def pooled_summary(table: pd.DataFrame, columns: Sequence[str]) -> dict:
    row = table[table["video"] == POOLED_ROW].iloc[0]
    return {column: row[column] for column in columns}



EVALUATORS = {
    "dsfnet_f1": evaluate_dsfnet_f1,
    "centre_distance": evaluate_centre_distance,
    "coco_ap50": evaluate_coco_ap50,
    "dronecrowd_lmap": evaluate_dronecrowd_lmap,
}


def pr_curve_rows(protocol: str, detections: Boxes, truth: Boxes) -> pd.DataFrame:
    """The score-threshold curve of `protocol` with `protocol` and `setting` columns in front
    (`truth`: boxes, or points for the POINT_PROTOCOLS)."""
    if protocol == "dsfnet_f1":
        curve, setting = pr_curve_dsfnet(detections, truth, iou_threshold=0.0), "IoU > 0"
    elif protocol == "centre_distance":
        curve = pr_curve_distance(detections, truth, max_distance=CENTRE_DISTANCE_PX)
        setting = f"centre distance < {CENTRE_DISTANCE_PX:g} px"
    else:
        curve = pr_curve_points(box_centre_points(detections, with_scores=True), truth,
                                max_distance=POINT_CURVE_DISTANCE_PX)
        setting = f"point distance <= {POINT_CURVE_DISTANCE_PX:g} px"
    curve.insert(0, "setting", setting)
    curve.insert(0, "protocol", protocol)
    return curve[list(PR_CURVE_COLUMNS)]


# --------------------------------------------------------------------------- documents


PROTOCOL_TITLES = {
    "dsfnet_f1": "DSFNet/MICML P/R/F1 (Hungarian matching on IoU, score > 0.3)",
    "centre_distance": f"P/R/F1 with centre distance < {CENTRE_DISTANCE_PX:g} px (HiEUM), score > 0.3",
    "coco_ap50": "COCO box AP (pycocotools)",
    "dronecrowd_lmap": "DroneCrowd localisation AP (box centres against annotated points)",
}

PROTOCOL_NOTES = {
    "dsfnet_f1": [f"Row '{MEAN_ROW}': P, R and F1 averaged over videos (so its F1 is not the F1 of its P and R); "
                  "TP/FP/FN summed. IoU > 0 is MICML's setting, 0.05/0.1/0.2 DSFNet's."],
    "centre_distance": [f"Row '{MEAN_ROW}': P, R and F1 averaged over videos; TP/FP/FN summed."],
    "coco_ap50": [f"Row '{POOLED_ROW}': one pycocotools run over every frame of the split (DSFNet's test.py "
                  "number), not an average of the video rows. AP is over IoU 0.5:0.95; – where a video has "
                  "no objects."],
    "dronecrowd_lmap": [f"Row '{POOLED_ROW}': all sequences pooled, as the DroneCrowd toolkit does. L-mAP is the "
                        "mean AP over distance thresholds 1..25 px; a sequence without any detection is skipped "
                        "(toolkit behaviour)."],
}


def protocol_document(protocol: str, table: pd.DataFrame, context: str, notes: Sequence[str] = ()) -> TableDocument:
    if protocol == "dsfnet_f1":
        sections = [TableSection(f"IoU > {threshold:g}", rows.drop(columns="iou_threshold").reset_index(drop=True))
                    for threshold, rows in table.groupby("iou_threshold", sort=True)]
    elif protocol == "centre_distance":
        sections = [TableSection("", table.drop(columns="max_distance"))]
    else:
        sections = [TableSection("", table)]
    return TableDocument(f"{context}: {PROTOCOL_TITLES[protocol]}", table, sections,
                         [*PROTOCOL_NOTES[protocol], *notes])


def metric_files(protocols: Iterable[str]) -> list[str]:
    """Names of the files `evaluate_predictions` writes into its out_dir for these protocols."""
    names = [SUMMARY_FILE, PR_CURVE_FILE]
    for protocol in protocols:
        names += [protocol + suffix for suffix in TABLE_SUFFIXES]
    return names


# --------------------------------------------------------------------------- entry point


def evaluate_predictions(dataset_root: str | os.PathLike, predictions_dir: str | os.PathLike, split: str,
                         out_dir: str | os.PathLike, *, protocols: Sequence[str] | None = None,
                         allow_partial: bool = False) -> dict[str, pd.DataFrame]:
    """Score `predictions_dir/mat/` against `split` of the unified dataset at `dataset_root`.

    Runs every protocol the dataset's meta.json lists (or `protocols`), writes the files named in
    the module docstring into `out_dir` and returns {protocol: table, 'pr_curve': curves}.
    Predictions must cover the split exactly (`check_coverage`); `allow_partial` scores the
    frames present and marks every output partial.
    """
    check_output_apart(out_dir, dataset_root, predictions_dir, what="metrics folder")
    dataset = UnifiedDataset(dataset_root)
    chosen = dataset_protocols(dataset, protocols)
    videos = dataset.videos(split)
    if not videos:
        raise EvaluationSetupError(f"{dataset.annotation_file(split)}: the {split!r} split holds no video; "
                                   "evaluate another split or check the conversion's split options")
    split_truth = ground_truth_boxes(videos)
    mat_root = Path(predictions_dir) / "mat"
    detections = read_detection_dir(mat_root)
    coverage = prediction_coverage(detections, split_truth)
    check_coverage(coverage, split_truth, mat_root, split, allow_partial)
    truth = covered_truth(split_truth, coverage)
    truth_points = covered_truth(ground_truth_points(videos), coverage)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # titles name the model by its folder in the results layout: results/<dataset>/<model>/predictions/<split>
    context = f"{Path(dataset_root).name} / {split} / {Path(predictions_dir).parent.parent.name}"
    notes = [partial_note(coverage, split_truth)] if coverage.missing else []
    if notes:
        context += " (PARTIAL)"

    tables: dict[str, pd.DataFrame] = {}
    headline: dict[str, dict] = {}
    reference = {protocol: truth_points if protocol in POINT_PROTOCOLS else truth for protocol in chosen}
    for protocol in chosen:
        tables[protocol], headline[protocol] = EVALUATORS[protocol](detections, reference[protocol])
        protocol_document(protocol, tables[protocol], context, notes).write(out_dir / protocol)
    curves = [pr_curve_rows(protocol, detections, reference[protocol])
              for protocol in chosen if protocol in CURVE_PROTOCOLS]
    tables["pr_curve"] = pd.concat(curves, ignore_index=True) if curves else pd.DataFrame(columns=PR_CURVE_COLUMNS)
    write_table(tables["pr_curve"], out_dir / PR_CURVE_FILE, None)
    missing = coverage.record(split_truth) if coverage.missing else None
    write_json(out_dir / SUMMARY_FILE, summary_document(dataset_root, predictions_dir, split, chosen, truth,
                                                        detections, headline, missing))
    return tables


def summary_document(dataset_root, predictions_dir, split: str, protocols: Sequence[str], truth: Boxes,
                     detections: Boxes, headline: Mapping[str, dict], missing: Mapping | None = None) -> dict:
    """The headline numbers over the frames scored; `partial` with the `missing` frames when those
    are fewer than the split's."""
    counted = [rows for video in truth for frame, rows in detections.get(video, {}).items() if frame in truth[video]]
    predicted_path = Path(predictions_dir) / PREDICT_SUMMARY
    predicted = json.loads(predicted_path.read_text()) if predicted_path.is_file() else {}
    return {
        "dataset": Path(dataset_root).name,
        "split": split,
        "predictions": str(predictions_dir),
        # Of the checkpoint that made the predictions (predict.json): its weights, and the seed,
        # steps, samples, seconds and machine of its training.
        "weights_sha256": predicted.get("weights_sha256"),
        "training": predicted.get("training") or {},
        "protocols": list(protocols),
        "partial": missing is not None,
        **({"missing": dict(missing)} if missing is not None else {}),
        "videos": len(truth),
        "frames": sum(len(frames) for frames in truth.values()),
        "objects": sum(len(boxes) for frames in truth.values() for boxes in frames.values()),
        "detections": sum(len(rows) for rows in counted),
        **headline,
    }
