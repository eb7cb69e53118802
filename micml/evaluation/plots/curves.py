"""Accuracy figures: precision-recall curves and per-video F1 of one dataset over models and
seeds, and the paper's F1 with its intervals."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from micml.evaluation.plots.common import (
    FIGURE_DPI,
    RunPaths,
    model_colours,
    read_runs,
    run_label,
    save_figure,
    seed_style,
    with_missing,
)
from micml.evaluation.protocols import MEAN_ROW, SCORE_THRESHOLD

TITLE_WIDTH_CHARACTERS = 90  # a 6-inch figure's title at font size 9


def grouped_bar_axes(n_groups: int, n_series: int, *, inches_per_bar: float, margin: float):
    """A figure wide enough for `n_groups` groups of `n_series` bars: (figure, axes, group centres,
    bar width), the bars of a group filling 80 % of its unit slot."""
    figure = Figure(figsize=(max(6.0, margin + inches_per_bar * n_groups * max(1, n_series)), 4.5), dpi=FIGURE_DPI,
                    layout="constrained")
    return figure, figure.subplots(), np.arange(n_groups), 0.8 / max(1, n_series)


def bar_positions(centres: np.ndarray, width: float, index: int, n_series: int) -> np.ndarray:
    """x of the `index`-th series' bars, the series side by side around each group centre."""
    return centres + (index - (n_series - 1) / 2) * width


def plot_pr_curves(dataset: str, pr_curves: RunPaths, out_png: str | os.PathLike) -> Path:
    """Precision against recall per model and seed, one panel per protocol found in the `pr_curve.csv`s.

    `pr_curves` maps a model name to its metrics/pr_curve.csv, or to {seed: pr_curve.csv}: one
    line per seed, in the model's colour and a dash pattern per seed. A dot marks each run's
    operating point at score 0.3 (the threshold of the F1 tables); the legend gives the best F1
    on the curve.
    """
    runs, missing = read_runs(pr_curves)
    panels = list(dict.fromkeys((protocol, setting) for tables in runs.values() for table in tables.values()
                                for protocol, setting in zip(table["protocol"], table["setting"])))
    colours = model_colours(pr_curves)
    figure = Figure(figsize=(5.5 * max(1, len(panels)), 5), dpi=FIGURE_DPI, layout="constrained")
    axes_list = figure.subplots(1, max(1, len(panels)), squeeze=False)[0]
    for axes, (protocol, setting) in zip(axes_list, panels):
        for model, tables in runs.items():
            for index, (seed, table) in enumerate(tables.items()):
                curve = table[(table["protocol"] == protocol) & (table["setting"] == setting)]
                if len(curve):
                    draw_pr_curve(axes, curve.sort_values("score_threshold"), run_label(model, seed), colours[model],
                                  seed_style(index))
        axes.set_title(f"{protocol} ({setting})")
        axes.legend(loc="lower left", fontsize=8)
    if not panels:
        axes_list[0].text(0.5, 0.5, "no PR curve available", ha="center", va="center", transform=axes_list[0].transAxes)
    for axes in axes_list:
        axes.set(xlabel="recall", ylabel="precision", xlim=(0, 1.02), ylim=(0, 1.02))
        axes.grid(alpha=0.3)
    figure.suptitle(with_missing(f"{dataset}: precision-recall over score thresholds", missing, "no pr_curve.csv"))
    return save_figure(figure, out_png)


def draw_pr_curve(axes, curve: pd.DataFrame, label: str, colour, linestyle: str = "-") -> None:
    # Thresholds that keep no detection have no precision (the tables write 0 there): not drawn.
    curve = curve[curve["tp"] + curve["fp"] > 0]
    if curve.empty:
        return
    best = curve["f1"].max()
    axes.plot(curve["recall"], curve["precision"], linestyle, color=colour, label=f"{label} (best F1 {best:.3f})")
    at_default = curve[np.isclose(curve["score_threshold"], SCORE_THRESHOLD)]
    if len(at_default):
        axes.plot(at_default["recall"], at_default["precision"], "o", color=colour, markersize=6)


def f1_over_seeds(tables: Mapping[int | None, pd.DataFrame], iou_threshold: float) -> pd.DataFrame:
    """Per video: F1 mean, std (ddof 1, NaN with one seed) and n over the seeds' dsfnet_f1.csv."""
    per_seed = pd.DataFrame({seed: table[np.isclose(table["iou_threshold"], iou_threshold)].set_index("video")["f1"]
                             for seed, table in tables.items()})
    return pd.DataFrame({"mean": per_seed.mean(axis=1), "std": per_seed.std(axis=1, ddof=1),
                         "n": per_seed.notna().sum(axis=1)})


def plot_per_video_f1(dataset: str, f1_tables: RunPaths, out_png: str | os.PathLike, *,
                      iou_threshold: float = 0.0) -> Path:
    """Grouped bars: F1 per test video (and the video mean) for each model, the mean over its
    seeds with the std over seeds as an error bar where two or more seeds were run.

    `f1_tables` maps a model name to its metrics/dsfnet_f1.csv, or to {seed: dsfnet_f1.csv};
    bars use the rows at `iou_threshold` (0: MICML's setting).
    """
    runs, missing = read_runs(f1_tables)
    per_model = {model: f1_over_seeds(tables, iou_threshold) for model, tables in runs.items()}
    videos = list(dict.fromkeys(video for f1 in per_model.values() for video in f1.index if video != MEAN_ROW))
    groups = videos + [MEAN_ROW]
    colours = model_colours(f1_tables)
    figure, axes, positions, width = grouped_bar_axes(len(groups), len(per_model), inches_per_bar=0.5, margin=1.0)
    for index, (model, f1) in enumerate(per_model.items()):
        rows = f1.reindex(groups)
        seeds = int(rows["n"].max()) if rows["n"].notna().any() else 0
        errors = np.nan_to_num(rows["std"].to_numpy(dtype=float)) if seeds >= 2 else None
        axes.bar(bar_positions(positions, width, index, len(per_model)), np.nan_to_num(rows["mean"].to_numpy(float)),
                 width, yerr=errors, capsize=3 if errors is not None else 0, color=colours[model],
                 label=model if seeds <= 1 else f"{model} (mean ± std, {seeds} seeds)")
    crowded = len(groups) > 8  # DroneCrowd has 30 test sequences: slanted labels stay readable
    axes.set_xticks(positions, groups, rotation=45 if crowded else 0, ha="right" if crowded else "center")
    axes.set(ylabel=f"F1 (IoU > {iou_threshold:g}, score > {SCORE_THRESHOLD:g})", ylim=(0, 1.05), xlabel="video")
    axes.grid(axis="y", alpha=0.3)
    if per_model:
        axes.legend(fontsize=8, ncols=min(4, len(per_model)))
    else:
        axes.text(0.5, 0.5, "no evaluated model", ha="center", va="center", transform=axes.transAxes)
    axes.set_title(with_missing(f"{dataset}: F1 per test video ('{MEAN_ROW}' = average over videos)", missing,
                                "no dsfnet_f1.csv"))
    return save_figure(figure, out_png)


def plot_main_f1(paper_main: pd.DataFrame, out_png: str | os.PathLike) -> Path:
    """F1 at IoU > 0 per dataset (groups) and model (bars) from paper_main's CSV frame, with its
    95 % interval as the error bar (none where the table has none) and n under each bar."""
    datasets = list(dict.fromkeys(paper_main["dataset"]))
    models = list(dict.fromkeys(paper_main["model"]))
    colours = model_colours(models)
    figure, axes, positions, width = grouped_bar_axes(len(datasets), len(models), inches_per_bar=0.6, margin=1.5)
    rows = paper_main.set_index(["dataset", "model"])
    not_run = []
    for index, model in enumerate(models):
        at = bar_positions(positions, width, index, len(models))
        values = rows.xs(model, level="model").reindex(datasets)
        mean = values["f1_iou0_mean"].to_numpy(float)
        below, above = mean - values["f1_iou0_low"].to_numpy(float), values["f1_iou0_high"].to_numpy(float) - mean
        axes.bar(at, np.nan_to_num(mean), width, color=colours[model], label=model)
        has_interval = np.isfinite(below) & np.isfinite(above)  # no bar where the table has no interval
        axes.errorbar(at[has_interval], mean[has_interval], yerr=[below[has_interval], above[has_interval]],
                      fmt="none", ecolor="black", capsize=4)
        for x, n, value in zip(at, values["f1_iou0_n"], mean):
            if np.isfinite(value):
                axes.text(x, 0.01, f"n={n:g}", ha="center", va="bottom", fontsize=7, rotation=90)
        not_run += [f"{model} on {dataset}" for dataset, value in zip(datasets, mean) if not np.isfinite(value)]
    axes.set_xticks(positions, datasets)
    axes.set(ylabel=f"F1 (IoU > 0, score > {SCORE_THRESHOLD:g})", ylim=(0, 1.05))
    axes.grid(axis="y", alpha=0.3)
    if models:
        axes.legend(fontsize=8, ncols=min(4, len(models)))
    scored = paper_main[np.isfinite(paper_main["f1_iou0_mean"].astype(float))]
    methods = sorted(set(scored["interval"].astype(str).str.split(";").str[0]))
    intervals = textwrap.fill(f"error bars: 95 % interval ({'; '.join(methods)})", TITLE_WIDTH_CHARACTERS)
    axes.set_title(with_missing(f"F1 at IoU > 0 per method and dataset\n{intervals}", not_run, "not run"), fontsize=9)
    return save_figure(figure, out_png)
