"""Figures of the evaluation: PR curves, per-video F1, training curves, qualitative overlays.

Every function writes one PNG through a bare `matplotlib.figure.Figure` (the Agg canvas; no
pyplot state, no display needed) and tolerates missing inputs the way the tables do: a model
without results is named in the figure as "not available" instead of being dropped silently.

Qualitative overlays use exactly the matching of ``dsfnet_f1``: detections with score > 0.3,
one-to-one Hungarian matching on IoU, a match when IoU > 0. Matched detections are true
positives (green), the other kept detections false positives (red), unmatched objects false
negatives (yellow). Boxes are drawn into the frame's pixels (not as vector patches), with a
line width scaled to the frame, so that they stay visible when a 1024 px frame is shown small.
"""

from __future__ import annotations

import math
import os
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import cv2
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from micml import layout
from micml.data.unified import UnifiedDataset, Video, read_image
from micml.evaluation.dsfnet import keep_confident
from micml.evaluation.matching import match_boxes_by_iou
from micml.evaluation.matfiles import atomic_write, frame_mat_path, read_frame_mat
from micml.evaluation.paper import ABLATION_VARIANTS
from micml.evaluation.report_tables import MEAN_ROW, PR_CURVE_FILE, SCORE_THRESHOLD, reference_dtype

FIGURE_DPI = 100
# RGB, pure so that they stand out on grey satellite ground and can be found in the image.
TP_COLOUR = (0, 255, 0)
FP_COLOUR = (255, 0, 0)
FN_COLOUR = (255, 255, 0)
LOSS_PANELS = ("total", "hm", "wh", "reg")
LOSS_TITLES = {"total": "total loss", "hm": "heat-map focal loss", "wh": "size L1 loss (x0.1 in total)",
               "reg": "offset L1 loss"}
# Rolling mean over logged training rows: the raw per-iteration losses are too noisy to compare.
SMOOTHING_ROWS = 10
QUALITATIVE_PANEL_PX = 480  # the side a frame gets in the figure
TITLE_WIDTH_CHARACTERS = 90  # a 6-inch figure's title at font size 9
DSFNET_F1_FILE = "dsfnet_f1.csv"
TRAINING_LOG = "log.csv"
SEED_LINESTYLES = ("-", "--", ":", "-.")  # one colour per model, one dash pattern per seed
# Per model: one path (one run) or {seed: path}.
RunPaths = Mapping[str, "str | os.PathLike | Mapping[int, str | os.PathLike]"]


def save_figure(figure: Figure, path: str | os.PathLike) -> Path:
    """Write the figure as PNG atomically (a killed job never leaves a half-written image)."""
    path = Path(path)
    atomic_write(path, lambda stream: figure.savefig(stream, format="png", dpi=FIGURE_DPI))
    return path


def with_missing(title: str, missing: Sequence[str], what: str) -> str:
    """The title, plus a second line naming the models left out because their input is missing."""
    return f"{title}\nnot available ({what}): {', '.join(missing)}" if missing else title


def model_colours(models: Iterable[str]) -> dict[str, tuple]:
    """A colour per model: the registry's variants always get the same one, so a model looks the
    same in every figure whatever else is plotted; other names take the remaining colours in order."""
    from matplotlib import colormaps

    palette = colormaps["tab10"]
    others = [model for model in dict.fromkeys(models) if model not in ABLATION_VARIANTS]
    index = {**{variant: i for i, variant in enumerate(ABLATION_VARIANTS)},
             **{model: len(ABLATION_VARIANTS) + i for i, model in enumerate(others)}}
    return {model: palette(index[model] % palette.N) for model in models}


# --------------------------------------------------------------------------- runs per seed


def per_seed(paths: RunPaths) -> dict[str, dict[int | None, Path | None]]:
    """{model: {seed: path}}; a model given a single path is one run without a seed (seed None)."""
    return {model: ({seed: Path(path) if path is not None else None for seed, path in runs.items()}
                    if isinstance(runs, Mapping) else {None: Path(runs) if runs is not None else None})
            for model, runs in paths.items()}


def read_runs(paths: RunPaths) -> tuple[dict[str, dict[int | None, pd.DataFrame]], list[str]]:
    """The CSV of every run that exists, per model and seed, and the missing ones by name:
    'model' when none of its seeds exists, 'model (seed 1, 2)' when some do not."""
    tables: dict[str, dict[int | None, pd.DataFrame]] = {}
    missing = []
    for model, runs in per_seed(paths).items():
        found = {seed: pd.read_csv(path, dtype={"video": str}) for seed, path in runs.items()
                 if path is not None and path.is_file()}
        absent = [seed for seed in runs if seed not in found]
        if found:
            tables[model] = found
        if absent:
            missing.append(model if not found else f"{model} (seed {', '.join(map(str, absent))})")
    return tables, missing


def run_label(model: str, seed: int | None) -> str:
    return model if seed is None else f"{model} seed {seed}"


def seed_style(index: int) -> str:
    return SEED_LINESTYLES[index % len(SEED_LINESTYLES)]


def dataset_run_paths(results: str | os.PathLike, dataset: str, models: Sequence[str], seeds: Sequence[int],
                      folder_of, name: str) -> dict[str, dict[int, Path]]:
    """{model: {seed: folder_of(results, dataset, model, seed) / name}}: one file of every run of a
    dataset (`folder_of`: a folder function of micml.layout)."""
    return {model: {seed: folder_of(results, dataset, model, seed) / name for seed in seeds} for model in models}


def plot_dataset_figures(results: str | os.PathLike, dataset: str, models: Sequence[str], seeds: Sequence[int], *,
                         pr_png: str | os.PathLike, per_video_png: str | os.PathLike,
                         training_png: str | os.PathLike) -> None:
    """The three per-dataset figures over every model and seed, from the runs under `results`."""
    def runs(folder_of, name):
        return dataset_run_paths(results, dataset, models, seeds, folder_of, name)

    plot_pr_curves(dataset, runs(layout.metrics_dir, PR_CURVE_FILE), pr_png)
    plot_per_video_f1(dataset, runs(layout.metrics_dir, DSFNET_F1_FILE), per_video_png)
    plot_training_curves(runs(layout.train_dir, TRAINING_LOG), training_png, title=f"{dataset}: training")


# --------------------------------------------------------------------------- PR curves


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


# --------------------------------------------------------------------------- per-video F1


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
    figure = Figure(figsize=(max(6.0, 1.0 + 0.5 * len(groups) * max(1, len(per_model))), 4.5), dpi=FIGURE_DPI,
                    layout="constrained")
    axes = figure.subplots()
    width = 0.8 / max(1, len(per_model))
    positions = np.arange(len(groups))
    for index, (model, f1) in enumerate(per_model.items()):
        rows = f1.reindex(groups)
        seeds = int(rows["n"].max()) if rows["n"].notna().any() else 0
        errors = np.nan_to_num(rows["std"].to_numpy(dtype=float)) if seeds >= 2 else None
        axes.bar(positions + (index - (len(per_model) - 1) / 2) * width, np.nan_to_num(rows["mean"].to_numpy(float)),
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


# --------------------------------------------------------------------------- the paper's F1 with intervals


def plot_main_f1(paper_main: pd.DataFrame, out_png: str | os.PathLike) -> Path:
    """F1 at IoU > 0 per dataset (groups) and model (bars) from paper_main's CSV frame, with its
    95 % interval as the error bar (none where the table has none) and n under each bar."""
    datasets = list(dict.fromkeys(paper_main["dataset"]))
    models = list(dict.fromkeys(paper_main["model"]))
    colours = model_colours(models)
    figure = Figure(figsize=(max(6.0, 1.5 + 0.6 * len(datasets) * max(1, len(models))), 4.5), dpi=FIGURE_DPI,
                    layout="constrained")
    axes = figure.subplots()
    width = 0.8 / max(1, len(models))
    positions = np.arange(len(datasets))
    rows = paper_main.set_index(["dataset", "model"])
    not_run = []
    for index, model in enumerate(models):
        at = positions + (index - (len(models) - 1) / 2) * width
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


# --------------------------------------------------------------------------- training curves


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


# --------------------------------------------------------------------------- qualitative overlays


@dataclass
class FrameOutcome:
    """Boxes of one frame split by the dsfnet_f1 matching."""

    true_positives: np.ndarray  # detection boxes matched to an object
    false_positives: np.ndarray  # kept detections without a match
    false_negatives: np.ndarray  # objects without a match

    def counts(self) -> tuple[int, int, int]:
        return len(self.true_positives), len(self.false_positives), len(self.false_negatives)


def classify_frame(detections: np.ndarray, gt: np.ndarray, *, score_threshold: float = SCORE_THRESHOLD,
                   iou_threshold: float = 0.0) -> FrameOutcome:
    """TP/FP/FN boxes with the same filter and one-to-one matching as `dsfnet_f1`."""
    kept = keep_confident(np.asarray(detections).reshape(-1, 5), score_threshold)
    gt = np.asarray(gt).reshape(-1, 4)
    matching = match_boxes_by_iou(kept, gt, iou_threshold)
    matched_dets = np.zeros(len(kept), bool)
    matched_dets[matching.det_index] = True
    matched_gt = np.zeros(len(gt), bool)
    matched_gt[matching.gt_index] = True
    return FrameOutcome(kept[matched_dets, :4], kept[~matched_dets, :4], gt[~matched_gt, :4])


def line_thickness(image_shape: Sequence[int], panel_px: int = QUALITATIVE_PANEL_PX) -> int:
    """Pixels of a box outline so that it is still ~1.5 px wide once the frame is scaled to the panel."""
    return max(1, math.ceil(1.5 * max(image_shape[:2]) / panel_px))


def draw_outcome(image_rgb: np.ndarray, outcome: FrameOutcome, thickness: int) -> np.ndarray:
    """A copy of the frame with FN, FP and then TP outlines drawn into its pixels."""
    canvas = np.ascontiguousarray(image_rgb.copy())
    for boxes, colour in ((outcome.false_negatives, FN_COLOUR), (outcome.false_positives, FP_COLOUR),
                          (outcome.true_positives, TP_COLOUR)):
        for x1, y1, x2, y2 in np.asarray(boxes, float).tolist():
            # cv2 wants integer corners; the outline lies just outside the box so it does not hide the object.
            top_left = (int(math.floor(x1)) - thickness // 2 - 1, int(math.floor(y1)) - thickness // 2 - 1)
            bottom_right = (int(math.ceil(x2)) + thickness // 2, int(math.ceil(y2)) + thickness // 2)
            cv2.rectangle(canvas, top_left, bottom_right, colour, thickness, lineType=cv2.LINE_8)
    return canvas


def choose_frames(videos: Sequence[Video], count: int) -> list[tuple[str, int]]:
    """`count` (video, frame) pairs: in turn over the videos, each one's frames with most objects
    first (busy frames show most), so that every video appears before any appears twice."""
    ranked = [[(video.record.name, frame) for frame in
               sorted(range(1, video.record.n_frames + 1), key=lambda f: (-len(video.frame_boxes(f)), f))]
              for video in videos]
    chosen: list[tuple[str, int]] = []
    for depth in range(max((len(frames) for frames in ranked), default=0)):
        for frames in ranked:
            if depth < len(frames) and len(chosen) < count:
                chosen.append(frames[depth])
    return chosen


def plot_qualitative(dataset_root: str | os.PathLike, predictions_dir: str | os.PathLike, split: str,
                     out_png: str | os.PathLike, *, frames: Sequence[tuple[str, int]] | None = None,
                     max_frames: int = 4, score_threshold: float = SCORE_THRESHOLD, iou_threshold: float = 0.0,
                     title: str | None = None) -> dict[str, int]:
    """Frames of `split` with TP (green), FP (red) and FN (yellow) boxes; returns the total counts.

    `frames` lists (video, frame) pairs to show; by default `max_frames` busy frames spread over
    the videos (see `choose_frames`). Detections come from `predictions_dir/mat/` (a missing file
    means no detections).
    """
    dataset = UnifiedDataset(dataset_root)
    videos = {video.record.name: video for video in dataset.videos(split)}
    chosen = list(frames) if frames is not None else choose_frames(list(videos.values()), max_frames)
    if not chosen:
        raise ValueError(f"{dataset.annotation_file(split)}: split {split!r} has no frame to show")
    columns = min(len(chosen), 2 if len(chosen) == 4 else 3)
    rows = math.ceil(len(chosen) / columns)
    panel_in = QUALITATIVE_PANEL_PX / FIGURE_DPI
    first = videos[chosen[0][0]].record if chosen[0][0] in videos else None
    aspect = first.height / first.width if first else 1.0
    # at least 8 inches wide, or a single panel's title and legend would be cut
    figure = Figure(figsize=(max(8.0, panel_in * columns), panel_in * aspect * rows + 1.4), dpi=FIGURE_DPI,
                    layout="constrained")
    axes_grid = figure.subplots(rows, columns, squeeze=False)
    totals = np.zeros(3, int)
    for axes, (video, frame) in zip(axes_grid.flat, chosen):
        outcome = frame_outcome(dataset, videos, Path(predictions_dir), video, frame, score_threshold, iou_threshold)
        image = cv2.cvtColor(read_image(dataset.frame_path(video, frame)), cv2.COLOR_BGR2RGB)
        axes.imshow(draw_outcome(image, outcome, line_thickness(image.shape)), interpolation="nearest")
        tp, fp, fn = outcome.counts()
        totals += (tp, fp, fn)
        axes.set_title(f"{video} / frame {frame}: TP {tp}, FP {fp}, FN {fn}", fontsize=9)
    for axes in axes_grid.flat:
        axes.set_axis_off()
    figure.legend(handles=legend_handles(*totals), loc="outside lower center", ncols=3, fontsize=9)
    figure.suptitle(title or f"{Path(dataset_root).name} / {split}\ndetections with score > {score_threshold:g}, "
                             f"matched one-to-one at IoU > {iou_threshold:g} (as in the F1 tables)", fontsize=11)
    save_figure(figure, out_png)
    return {"tp": int(totals[0]), "fp": int(totals[1]), "fn": int(totals[2])}


def frame_outcome(dataset: UnifiedDataset, videos: Mapping[str, Video], predictions_dir: Path, video: str,
                  frame: int, score_threshold: float, iou_threshold: float) -> FrameOutcome:
    if video not in videos:
        raise ValueError(f"{dataset.root}: no video {video!r} in this split; videos: {', '.join(videos)}")
    mat = frame_mat_path(predictions_dir / "mat", video, frame)
    detections = read_frame_mat(mat) if mat.is_file() else np.zeros((0, 5), np.float32)
    gt = reference_dtype(videos[video].frame_boxes(frame))
    return classify_frame(detections, gt, score_threshold=score_threshold, iou_threshold=iou_threshold)


def legend_handles(tp: int, fp: int, fn: int) -> list[Patch]:
    def outline(colour, text):
        return Patch(facecolor="none", edgecolor=np.array(colour) / 255, linewidth=2, label=text)

    return [outline(TP_COLOUR, f"TP: matched detection ({tp})"),
            outline(FP_COLOUR, f"FP: false alarm ({fp})"),
            outline(FN_COLOUR, f"FN: missed object ({fn})")]
