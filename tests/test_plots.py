"""Figures: valid PNGs of the expected size, drawn with the expected colours in the expected places."""

from __future__ import annotations

import csv
import struct
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from micml import layout
from micml.data.unified import UnifiedWriter
from micml.engine.records import LOG_FIELDS
from micml.evaluation import dsfnet_f1
from micml.detections import frame_mat_path, write_frame_mat
from micml.evaluation.plots import (
    FN_COLOUR,
    FP_COLOUR,
    TP_COLOUR,
    classify_frame,
    model_colours,
    plot_dataset_figures,
    plot_main_f1,
    plot_per_video_f1,
    plot_pr_curves,
    plot_qualitative,
    plot_training_curves,
)
from micml.evaluation.evaluate import evaluate_predictions

GREY = 128


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def read_rgb(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def colour_pixels(image: np.ndarray, rgb, tolerance: int = 12) -> np.ndarray:
    return np.all(np.abs(image.astype(int) - np.array(rgb)) <= tolerance, axis=-1)


def rgb255(colour) -> tuple[int, int, int]:
    return tuple(int(round(channel * 255)) for channel in colour[:3])


# --------------------------------------------------------------------------- a small evaluated dataset


GT = {1: [[8, 8, 16, 16], [24, 36, 32, 44]], 2: [[8, 8, 16, 16]]}
# frame 1: one hit (top left), one false alarm (top right, away from any object), the object at the
# bottom is missed, and a low-score box that is ignored; frame 2: the same object hit.
DETECTIONS = {1: [[8, 8, 16, 16, 0.9], [52, 24, 60, 32, 0.8], [24, 36, 32, 44, 0.1]], 2: [[9, 8, 17, 16, 0.7]]}


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    writer = UnifiedWriter(tmp_path / "toy", protocols=("dsfnet_f1", "centre_distance"))
    writer.add_video("v1", "test", [np.full((48, 64, 3), GREY, np.uint8) for _ in range(2)], GT)
    return writer.commit()


@pytest.fixture
def predictions(tmp_path: Path) -> Path:
    root = layout.predictions_dir(tmp_path / "results", "toy", "micml", 0, "test")
    for frame, rows in DETECTIONS.items():
        write_frame_mat(frame_mat_path(root / "mat", "v1", frame), rows)
    return root


@pytest.fixture
def metrics(dataset, predictions, tmp_path) -> Path:
    out_dir = layout.metrics_dir(tmp_path / "results", "toy", "micml", 0)
    evaluate_predictions(dataset, predictions, "test", out_dir)
    return out_dir


# --------------------------------------------------------------------------- comparison plots


def test_pr_curves_compare_models_and_name_the_missing_one(metrics, tmp_path):
    # a second model: the same curve with precision halved, so the two lines differ
    curve = pd.read_csv(metrics / "pr_curve.csv")
    curve["precision"] /= 2
    other = tmp_path / "dsfnet_pr_curve.csv"
    curve.to_csv(other, index=False)
    models = {"micml": metrics / "pr_curve.csv", "dsfnet": other, "centernet": tmp_path / "absent.csv"}
    out = plot_pr_curves("toy", models, tmp_path / "plots" / "pr.png")
    assert png_size(out) == (1100, 500)  # one 5.5 x 5 inch panel per protocol (dsfnet_f1, centre_distance)
    image = read_rgb(out)
    colours = model_colours(models)
    for model in ("micml", "dsfnet"):
        assert colour_pixels(image, rgb255(colours[model]), 20).sum() > 200, model
    assert colour_pixels(image, rgb255(colours["centernet"]), 20).sum() < 20  # no line for a missing model


def test_per_video_f1_bars(metrics, tmp_path):
    out = plot_per_video_f1("toy", {"micml": metrics / "dsfnet_f1.csv", "dsfnet": tmp_path / "absent.csv"},
                            tmp_path / "bars.png")
    width, height = png_size(out)
    assert width >= 600 and height == 450
    image = read_rgb(out)
    micml_blue = rgb255(model_colours(["micml"])["micml"])
    assert colour_pixels(image, micml_blue).sum() > 500  # two bars: v1 and the mean


def write_log(path: Path, scale: float) -> Path:
    """A training log.csv of 40 steps (losses falling with the step, times `scale`) and two validations."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, LOG_FIELDS)
        writer.writeheader()
        for step in range(1, 41):
            losses = {"hm": scale * 5 / step, "wh": scale * 3 / step, "reg": 0.2 / step ** 0.5}
            writer.writerow({"kind": "train", "epoch": 1 + (step - 1) // 10, "iteration": 1 + (step - 1) % 10,
                             "step": step, "lr": 5e-4 if step <= 30 else 5e-5, **losses,
                             "total": losses["hm"] + 0.1 * losses["wh"] + losses["reg"], "dropped_objects": 0,
                             "seconds": 0.5})
            if step % 20 == 0:
                writer.writerow({"kind": "val", "epoch": step // 10, "iteration": 10, "step": step, "lr": 5e-4,
                                 "precision": 0.5, "recall": 0.4 + step / 100, "f1": 0.45 + step / 200,
                                 "seconds": 3.0})
    return path


def test_training_curves_from_log_csv(tmp_path):
    colours = model_colours(["micml", "dsfnet"])
    results = tmp_path / "results"
    paths = [write_log(layout.train_dir(results, "toy", model, seed) / "log.csv", scale * (1 + seed / 4))
             for model, scale in (("micml", 1.0), ("dsfnet", 2.0)) for seed in (0, 1)]
    out = plot_training_curves(paths + [layout.train_dir(results, "toy", "centernet", 0) / "log.csv"],
                               tmp_path / "train.png")
    assert png_size(out) == (1500, 800)
    image = read_rgb(out)
    for model in ("micml", "dsfnet"):  # runs are named by their model and seed folders above train/
        assert colour_pixels(image, rgb255(colours[model]), 20).sum() > 1000, model


def test_training_curves_draw_one_line_per_seed(tmp_path):
    one = write_log(tmp_path / "s0" / "log.csv", 1.0)
    two = write_log(tmp_path / "s1" / "log.csv", 3.0)
    single = read_rgb(plot_training_curves({"micml": {0: one}}, tmp_path / "one.png"))
    both = read_rgb(plot_training_curves({"micml": {0: one, 1: two}}, tmp_path / "both.png"))
    blue = rgb255(model_colours(["micml"])["micml"])
    assert colour_pixels(both, blue, 20).sum() > 1.3 * colour_pixels(single, blue, 20).sum()


def test_per_video_f1_over_seeds_has_error_bars(metrics, tmp_path):
    shifted = pd.read_csv(metrics / "dsfnet_f1.csv", dtype={"video": str})
    shifted["f1"] -= 0.3
    other = tmp_path / "seed1_dsfnet_f1.csv"
    shifted.to_csv(other, index=False)
    one = read_rgb(plot_per_video_f1("toy", {"micml": {0: metrics / "dsfnet_f1.csv"}}, tmp_path / "one.png"))
    two = read_rgb(plot_per_video_f1("toy", {"micml": {0: metrics / "dsfnet_f1.csv", 1: other}}, tmp_path / "two.png"))
    blue = rgb255(model_colours(["micml"])["micml"])
    assert colour_pixels(two, blue).sum() < colour_pixels(one, blue).sum()  # the mean over seeds is lower
    black = colour_pixels(two, (0, 0, 0), 40) & ~colour_pixels(one, (0, 0, 0), 40)
    assert black.sum() > 20  # error bars (std over the two seeds) drawn where one seed has none


def test_dataset_figures_read_every_seed_through_the_layout(metrics, tmp_path):
    results = tmp_path / "results"
    write_log(layout.train_dir(results, "toy", "micml", 0) / "log.csv", 1.0)
    plots = layout.dataset_plots_dir(results, "toy")
    plot_dataset_figures(results, "toy", ["micml", "dsfnet"], [0, 1], pr_png=plots / "pr.png",
                         per_video_png=plots / "bars.png", training_png=plots / "train.png")
    for name in ("pr.png", "bars.png", "train.png"):
        assert png_size(plots / name)[0] > 500, name


def test_main_f1_figure_has_interval_error_bars(tmp_path):
    nan = float("nan")
    frame = pd.DataFrame({"dataset": ["toy", "toy", "viso", "viso"], "model": ["dsfnet", "micml"] * 2,
                          "f1_iou0_mean": [0.6, 0.7, 0.5, nan], "f1_iou0_low": [0.5, 0.65, nan, nan],
                          "f1_iou0_high": [0.7, 0.75, nan, nan], "f1_iou0_n": [3, 3, 1, 0],
                          "interval": ["t over seeds"] * 2 + ["none (one seed, fewer than two videos)", "none (no run)"]})
    out = plot_main_f1(frame, tmp_path / "f1.png")
    image = read_rgb(out)
    colours = model_colours(["dsfnet", "micml"])
    for model in ("dsfnet", "micml"):
        assert colour_pixels(image, rgb255(colours[model]), 20).sum() > 1000, model


# --------------------------------------------------------------------------- qualitative overlays


def test_classify_frame_splits_boxes_like_dsfnet_f1():
    outcome = classify_frame(np.array(DETECTIONS[1], np.float32), np.array(GT[1]))
    np.testing.assert_array_equal(outcome.true_positives, [[8, 8, 16, 16]])
    np.testing.assert_array_equal(outcome.false_positives, [[52, 24, 60, 32]])
    np.testing.assert_array_equal(outcome.false_negatives, [[24, 36, 32, 44]])
    table = dsfnet_f1({"v": {1: np.array(DETECTIONS[1], np.float32)}}, {"v": {1: np.array(GT[1])}})
    assert tuple(table.loc["v", ["tp", "fp", "fn"]]) == outcome.counts()


def frame_region(image: np.ndarray) -> tuple[int, int, int, int]:
    """Bounding box (x0, y0, x1, y1) of the grey frame inside the figure: the rows and columns that
    are mostly grey (anti-aliased text elsewhere has a few grey pixels too)."""
    grey = colour_pixels(image, (GREY, GREY, GREY), 3)
    rows = np.flatnonzero(grey.sum(axis=1) > 0.5 * grey.sum(axis=1).max())
    columns = np.flatnonzero(grey.sum(axis=0) > 0.5 * grey.sum(axis=0).max())
    return columns.min(), rows.min(), columns.max() + 1, rows.max() + 1


def test_qualitative_draws_each_outcome_in_its_colour_at_its_box(dataset, predictions, tmp_path):
    out = tmp_path / "qualitative.png"
    totals = plot_qualitative(dataset, predictions, "test", out, frames=[("v1", 1)])
    assert totals == {"tp": 1, "fp": 1, "fn": 1}
    image = read_rgb(out)
    x0, y0, x1, y1 = frame_region(image)
    scale = (x1 - x0) / 64
    assert scale == pytest.approx((y1 - y0) / 48, rel=0.05) and scale > 4  # the 64 x 48 frame, enlarged

    def figure_pixel(x: float, y: float) -> tuple[int, int]:
        return int(x0 + x * scale), int(y0 + y * scale)

    for (bx1, by1, bx2, by2), colour in (((8, 8, 16, 16), TP_COLOUR), ((52, 24, 60, 32), FP_COLOUR),
                                         ((24, 36, 32, 44), FN_COLOUR)):
        # the outline runs one frame pixel outside the box: sample the middle of its left and top edges
        for x, y in (((bx1 - 0.5), (by1 + by2) / 2), ((bx1 + bx2) / 2, by1 - 0.5)):
            px, py = figure_pixel(x, y)
            assert tuple(image[py, px]) == pytest.approx(colour, abs=12), (colour, x, y)
        inside_x, inside_y = figure_pixel((bx1 + bx2) / 2, (by1 + by2) / 2)
        assert tuple(image[inside_y, inside_x]) == pytest.approx((GREY,) * 3, abs=3)  # the object stays visible
    # exactly one outline per colour: the score-0.1 box (on the missed object) is not drawn as a second FP
    inside_frame = image[y0:y1, x0:x1]
    outline_frame_pixels = 4 * (8 + 1)  # an 8 px box outlined by a 1 px line just outside it
    for colour in (TP_COLOUR, FP_COLOUR, FN_COLOUR):
        expected = outline_frame_pixels * scale * scale  # each frame pixel covers scale x scale figure pixels
        assert colour_pixels(inside_frame, colour).sum() == pytest.approx(expected, rel=0.2), colour


def test_qualitative_totals_equal_the_f1_table_over_all_frames(dataset, predictions, metrics, tmp_path):
    totals = plot_qualitative(dataset, predictions, "test", tmp_path / "all.png", frames=[("v1", 1), ("v1", 2)])
    table = pd.read_csv(metrics / "dsfnet_f1.csv", dtype={"video": str})
    mean = table[(table["iou_threshold"] == 0) & (table["video"] == "mean")].iloc[0]
    assert (totals["tp"], totals["fp"], totals["fn"]) == (mean.tp, mean.fp, mean.fn)


def test_qualitative_default_frames_spread_over_videos(dataset, predictions, tmp_path):
    out = tmp_path / "default.png"
    totals = plot_qualitative(dataset, predictions, "test", out, max_frames=4)
    # one video with two frames: both are shown, busiest (frame 1) first
    assert totals == {"tp": 2, "fp": 1, "fn": 1}
    width, height = png_size(out)
    assert width == 960 and 400 < height < 600
