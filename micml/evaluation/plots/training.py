"""Training curves: losses, learning rate and validation P/R/F1 of every run from its log.csv."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from micml import layout
from micml.evaluation.plots.common import (
    FIGURE_DPI,
    RunPaths,
    model_colours,
    read_runs,
    save_figure,
    seed_style,
    with_missing,
)

LOSS_PANELS = ("total", "hm", "wh", "reg")
LOSS_TITLES = {"total": "total loss", "hm": "heat-map focal loss", "wh": "size L1 loss (x0.1 in total)",
               "reg": "offset L1 loss"}
# Rolling mean over logged training rows: the raw per-iteration losses are too noisy to compare.
SMOOTHING_ROWS = 10


def log_label(path: Path) -> tuple[str, int | None]:
    """The run of a log.csv: results/<dataset>/<model>/seed<k>/train/log.csv -> ('<model>', k);
    without a seed folder, the folder above train/ and no seed."""
    folder = path.parent.parent if path.parent.name == "train" else path.parent
    seed = folder.name.removeprefix(layout.SEED_PREFIX)
    if folder.name.startswith(layout.SEED_PREFIX) and seed.isdigit():
        return folder.parent.name, int(seed)
    return folder.name, None


def training_runs(log_csv_paths: RunPaths | Sequence[str | os.PathLike]) -> RunPaths:
    """{model: {seed: log.csv}} from a list of log.csv paths (the run named by their folders)."""
    if isinstance(log_csv_paths, Mapping):
        return log_csv_paths
    runs: dict[str, dict[int | None, Path]] = {}
    for path in map(Path, log_csv_paths):
        model, seed = log_label(path)
        runs.setdefault(model, {})[seed] = path
    return runs


def plot_training_curves(log_csv_paths: RunPaths | Sequence[str | os.PathLike], out_png: str | os.PathLike, *,
                         title: str = "training") -> Path:
    """Loss components against the global iteration, learning rate, and validation P/R/F1
    against the epoch: one line per run, the model's colour, a dash pattern per seed.

    `log_csv_paths`: {model: log.csv or {seed: log.csv}}, or a list of log.csv paths (named by
    their model and seed folders). Losses are drawn raw (faint) and as a centred rolling mean over
    10 logged rows.
    """
    paths = training_runs(log_csv_paths)
    runs, missing = read_runs(paths)
    colours = model_colours(paths)
    figure = Figure(figsize=(15, 8), dpi=FIGURE_DPI, layout="constrained")
    grid = figure.subplots(2, 3)
    loss_axes = dict(zip(LOSS_PANELS, grid.flat[:4]))
    lr_axes, val_axes = grid.flat[4], grid.flat[5]
    for model, logs in runs.items():
        for index, (seed, log) in enumerate(logs.items()):
            # one legend entry per model: seeds share its colour
            label = (model if len(logs) == 1 else f"{model} ({len(logs)} seeds)") if index == 0 else None
            draw_run(loss_axes, lr_axes, val_axes, log, label, colours[model], seed_style(index))
    for name, axes in loss_axes.items():
        axes.set(title=LOSS_TITLES[name], xlabel="iteration (global step)", ylabel="loss")
        use_log_scale_if_positive(axes)
    lr_axes.set(title="learning rate", xlabel="iteration (global step)", ylabel="lr")
    val_axes.set(title="validation (dotted P, dashed R)", xlabel="epoch", ylabel="F1 / P / R", ylim=(0, 1.02))
    for axes in grid.flat:
        axes.grid(alpha=0.3)
        if axes.get_legend_handles_labels()[0]:
            axes.legend(fontsize=8)
    if not runs:
        val_axes.text(0.5, 0.5, "no training log", ha="center", va="center", transform=val_axes.transAxes)
    figure.suptitle(with_missing(f"{title}: losses, learning rate and validation", missing, "no log.csv: not trained"))
    return save_figure(figure, out_png)


def draw_run(loss_axes: Mapping, lr_axes, val_axes, log: pd.DataFrame, label: str | None, colour,
             linestyle: str) -> None:
    """One run's losses, learning rate and validation scores."""
    train = log[log["kind"] == "train"].sort_values("step")
    validation = log[log["kind"] == "val"].sort_values("epoch")
    for name, axes in loss_axes.items():
        draw_loss(axes, train, name, label, colour, linestyle)
    lr_axes.plot(train["step"], train["lr"], linestyle, color=colour, label=label)
    if len(validation):
        val_axes.plot(validation["epoch"], validation["f1"], "o" + linestyle, color=colour,
                      label=f"{label} F1" if label else None)
        val_axes.plot(validation["epoch"], validation["precision"], ":", color=colour, alpha=0.7)
        val_axes.plot(validation["epoch"], validation["recall"], "--", color=colour, alpha=0.7)


def draw_loss(axes, train: pd.DataFrame, name: str, label: str | None, colour, linestyle: str = "-") -> None:
    values = pd.to_numeric(train[name], errors="coerce")
    axes.plot(train["step"], values, color=colour, alpha=0.25, linewidth=0.8)
    smooth = values.rolling(SMOOTHING_ROWS, min_periods=1, center=True).mean()  # centred: no lag
    axes.plot(train["step"], smooth, linestyle, color=colour, linewidth=1.6, label=label)


def use_log_scale_if_positive(axes) -> None:
    data = [line.get_ydata() for line in axes.get_lines()]
    values = np.concatenate([np.asarray(y, float) for y in data]) if data else np.zeros(0)
    values = values[np.isfinite(values)]
    if values.size and values.min() > 0 and values.max() / values.min() > 20:
        axes.set_yscale("log")
