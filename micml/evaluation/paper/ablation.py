"""paper_ablation: every variant of :mod:`micml.catalog` per dataset, with its description."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from micml.catalog import VARIANTS, describe
from micml.evaluation.paper.aggregate import accuracy_rows, budget_notes
from micml.evaluation.paper.display import per_dataset_sections
from micml.evaluation.paper.main import interval_explanation
from micml.evaluation.paper.runs import Notes
from micml.tables import TableDocument

# The ablation table's rows: every variant, in micml.catalog's order (no torch import).
ABLATION_VARIANTS = VARIANTS


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
