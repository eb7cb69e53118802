"""Figures of the evaluation: PR curves, per-video F1, training curves, qualitative overlays.

Every function writes one PNG through a bare `matplotlib.figure.Figure` (the Agg canvas; no
pyplot state, no display needed) and tolerates missing inputs the way the tables do: a model
without results is named in the figure as "not available" instead of being dropped silently.

* :mod:`.curves`: precision-recall, per-video F1, the paper's F1 with intervals;
* :mod:`.training`: losses, learning rate and validation scores from each run's log.csv;
* :mod:`.qualitative`: TP/FP/FN boxes drawn into frames;
* `plot_dataset_figures`: the three per-dataset figures of the workflow, from the runs found
  through :mod:`micml.layout`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

from micml import layout
from micml.evaluation.evaluate import DSFNET_F1_TABLE, PR_CURVE_FILE
from micml.evaluation.plots.common import model_colours
from micml.evaluation.plots.curves import plot_main_f1, plot_per_video_f1, plot_pr_curves
from micml.evaluation.plots.qualitative import FN_COLOUR, FP_COLOUR, TP_COLOUR, classify_frame, plot_qualitative
from micml.evaluation.plots.training import plot_training_curves

__all__ = ["FN_COLOUR", "FP_COLOUR", "TP_COLOUR", "classify_frame", "dataset_run_paths", "model_colours",
           "plot_dataset_figures", "plot_main_f1", "plot_per_video_f1", "plot_pr_curves", "plot_qualitative",
           "plot_training_curves"]

RunFile = Callable[[str | os.PathLike, str, str, int], Path]


def dataset_run_paths(results: str | os.PathLike, dataset: str, models: Sequence[str], seeds: Sequence[int],
                      path_of: RunFile) -> dict[str, dict[int, Path]]:
    """{model: {seed: path_of(results, dataset, model, seed)}}: one file of every run of a dataset."""
    return {model: {seed: path_of(results, dataset, model, seed) for seed in seeds} for model in models}


def in_folder(folder_of: RunFile, name: str) -> RunFile:
    """The path function of the file `name` in a run folder of micml.layout (`folder_of`)."""
    return lambda results, dataset, model, seed: folder_of(results, dataset, model, seed) / name


def plot_dataset_figures(results: str | os.PathLike, dataset: str, models: Sequence[str], seeds: Sequence[int], *,
                         pr_png: str | os.PathLike, per_video_png: str | os.PathLike,
                         training_png: str | os.PathLike) -> None:
    """The three per-dataset figures over every model and seed, from the runs under `results`."""
    def runs(path_of):
        return dataset_run_paths(results, dataset, models, seeds, path_of)

    plot_pr_curves(dataset, runs(in_folder(layout.metrics_dir, PR_CURVE_FILE)), pr_png)
    plot_per_video_f1(dataset, runs(in_folder(layout.metrics_dir, DSFNET_F1_TABLE)), per_video_png)
    plot_training_curves(runs(layout.training_log), training_png, title=f"{dataset}: training")
