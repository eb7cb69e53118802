"""paper_main: methods x datasets, P/R/F1 at every IoU threshold and AP50 (L-mAP where a
dataset has it) over the seeds, with the training budget."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd

from micml.evaluation.paper.aggregate import accuracy_rows, budget_notes, machine_note
from micml.evaluation.paper.display import interval_cell, marked, partially_scored, per_dataset_sections, with_n
from micml.evaluation.paper.runs import Notes, seeds_text
from micml.evaluation.protocols import DSFNET_IOU_THRESHOLDS
from micml.evaluation.stats import BOOTSTRAP_RESAMPLES
from micml.tables import TableDocument, TableSection

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
