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
and ``dsfnet_f1.csv`` (written by :func:`micml.evaluation.evaluate.evaluate_predictions`;
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

Modules: `runs` (the files read, found through :mod:`micml.layout`, and the notes on what is
missing), `aggregate` (metrics over seeds), `display` (cells and sections), then one per table:
`main`, `paired`, `per_video`, `ablation`, `efficiency`. None imports torch or `micml.models`:
the ablation's variants and descriptions come from :mod:`micml.catalog`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

import pandas as pd

from micml.evaluation.paper.ablation import ABLATION_VARIANTS, ablation_table
from micml.evaluation.paper.efficiency import efficiency_table
from micml.evaluation.paper.main import main_table
from micml.evaluation.paper.paired import paired_table
from micml.evaluation.paper.per_video import per_video_table
from micml.evaluation.paper.runs import checked_seeds
from micml.evaluation.plots import plot_main_f1
from micml.tables import TABLE_SUFFIXES

__all__ = ["ABLATION_VARIANTS", "F1_FIGURE", "paper_table_files", "paper_table_names", "write_paper_tables"]

F1_FIGURE = "paper_main_f1.png"


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
