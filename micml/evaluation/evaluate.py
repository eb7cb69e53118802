"""Evaluate one prediction folder against a unified dataset, and write the metric tables.

```
<out_dir>/<protocol>.csv|.md|.html   per video plus a summary row (CSV for machines, Markdown for
                                      people, HTML for the Snakemake report, which shows HTML and
                                      images but only offers CSV/Markdown as downloads)
<out_dir>/pr_curve.csv               precision/recall over score thresholds, one block per protocol
                                      that has a curve (long format: protocol, setting, threshold...)
<out_dir>/summary.json               the headline numbers the paper tables read
```

The protocols (the dataset's ``meta.json`` lists which apply) are :mod:`micml.evaluation.protocols`.

Which frames count: every frame of every video of the split, frames without objects as empty
ground truth (false positives there count). Every one of them needs a .mat file (an empty one
when nothing was detected, as `micml test` writes): the reference evaluator reads a missing file
as "no detections", so a lost video silently lowered its score. Missing frames, and .mat files of
frames the split lacks, are refused naming them; ``allow_partial=True`` scores the frames present
instead, and the summary, the titles and the notes of every table say `partial` with the list.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from micml.catalog import CURVE_PROTOCOLS, DSFNET_F1, KNOWN_PROTOCOLS, POINT_PROTOCOLS
from micml.data.unified import UnifiedDataset, Video
from micml.detections import MAT_DIR, PREDICT_SUMMARY, read_detection_dir
from micml.evaluation.protocols import (
    EVALUATORS,
    PR_CURVE_COLUMNS,
    Boxes,
    pr_curve_rows,
    protocol_document,
    reference_dtype,
)
from micml.io import write_json
from micml.paths import check_output_apart
from micml.tables import TABLE_SUFFIXES, write_table

SUMMARY_FILE = "summary.json"
PR_CURVE_FILE = "pr_curve.csv"
DSFNET_F1_TABLE = f"{DSFNET_F1}.csv"  # per video and IoU threshold: the paper's per-video tables and bootstrap
GAPS_SHOWN = 5  # missing or extra frames named in a message; the count says how many more


class EvaluationSetupError(ValueError):
    """A dataset or protocol list that cannot be evaluated; the message says what to change."""


class IncompletePredictionsError(EvaluationSetupError):
    """Predictions that do not cover the split frame for frame; the message names the gaps."""


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


# --------------------------------------------------------------------------- entry point


def metric_files(protocols: Iterable[str]) -> list[str]:
    """Names of the files `evaluate_predictions` writes into its out_dir for these protocols."""
    names = [SUMMARY_FILE, PR_CURVE_FILE]
    for protocol in protocols:
        names += [protocol + suffix for suffix in TABLE_SUFFIXES]
    return names


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
    mat_root = Path(predictions_dir) / MAT_DIR
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
    write_json(out_dir / SUMMARY_FILE, json_safe(summary_document(dataset_root, predictions_dir, split, chosen, truth,
                                                                  detections, headline, missing)))
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
