"""Metric tables and paper tables on a hand-made dataset with hand-made .mat predictions."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from micml import layout
from micml.data.unified import UnifiedWriter
from micml.detections import frame_mat_path, write_frame_mat
from micml.evaluation.paper import paper_table_files, write_paper_tables
from micml.evaluation.evaluate import EvaluationSetupError, evaluate_predictions, metric_files
from micml.tables import TableDocument, TableSection

EPS = 1e-7


def prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    """The reference's P, R, F1 (epsilon in every denominator)."""
    precision, recall = tp / (tp + fp + EPS), tp / (tp + fn + EPS)
    return precision, recall, 2 * precision * recall / (precision + recall + EPS)


def grey_frames(count: int, width: int = 64, height: int = 48) -> list[np.ndarray]:
    return [np.full((height, width, 3), 128, np.uint8) for _ in range(count)]


# v1: frame 1 holds A and B, frame 2 holds C, frame 3 is empty. v2: D in frame 1, E in frame 2.
GT = {
    "v1": {1: [[10, 10, 20, 20], [30, 30, 40, 40]], 2: [[10, 10, 20, 20]]},
    "v2": {1: [[5, 5, 15, 15]], 2: [[40, 20, 50, 30]]},
}
PREDICTIONS = {
    "v1": {
        1: [[10, 10, 20, 20, 0.9],  # A exactly: IoU 1, centres 0 px apart
            [33, 30, 43, 40, 0.8],  # B: IoU 70/130 = 0.54, centres 3 px apart
            [50, 5, 60, 15, 0.2]],  # below the 0.3 score threshold: ignored by P/R/F1
        2: [[19, 10, 29, 20, 0.7]],  # C by a 1 px sliver: IoU 10/190 = 0.0526, centres 9 px apart
        3: [[0, 0, 8, 8, 0.5]],  # on a frame without objects: a false positive
    },
    "v2": {
        # exactly 0.3 in float32 is not > 0.3 in float32: dropped, as by the reference
        1: [[5, 5, 15, 15, 0.95], [30, 0, 40, 10, 0.4], [60, 40, 62, 42, 0.3]],
        2: [],  # an empty .mat: no detections, E is missed
    },
}
# (tp, fp, fn) per video and IoU threshold, counted by hand from the comments above
EXPECTED_COUNTS = {
    0.0: {"v1": (3, 1, 0), "v2": (1, 1, 1)},
    0.05: {"v1": (3, 1, 0), "v2": (1, 1, 1)},
    0.1: {"v1": (2, 2, 1), "v2": (1, 1, 1)},
    0.2: {"v1": (2, 2, 1), "v2": (1, 1, 1)},
}
EXPECTED_CENTRE_COUNTS = {"v1": (2, 2, 1), "v2": (1, 1, 1)}
# COCO AP50 (101-point): v1 ranks TP, TP, FP, FP, FP with 3 objects: precision 1 up to recall 2/3,
# i.e. on recall points 0.00..0.66; v2 ranks TP, FP, FP with 2 objects: 0.00..0.50; all videos
# pooled rank TP, TP, TP, then only FPs with 5 objects: 0.00..0.60.
EXPECTED_AP50 = {"v1": 67 / 101, "v2": 51 / 101, "all": 61 / 101}


def write_predictions(root: Path, predictions: dict) -> Path:
    for video, frames in predictions.items():
        for frame, rows in frames.items():
            write_frame_mat(frame_mat_path(root / "mat", video, frame), rows)
    return root


@pytest.fixture
def toy_dataset(tmp_path: Path) -> Path:
    writer = UnifiedWriter(tmp_path / "data" / "toy", protocols=("dsfnet_f1", "coco_ap50", "centre_distance"))
    writer.add_video("v1", "test", grey_frames(3), GT["v1"])
    writer.add_video("v2", "test", grey_frames(2), GT["v2"])
    writer.add_video("t1", "train", grey_frames(2), {1: [[1, 1, 5, 5]]})
    return writer.commit()


@pytest.fixture
def toy_predictions(tmp_path: Path) -> Path:
    return write_predictions(layout.predictions_dir(tmp_path / "results", "toy", "dsfnet", 0, "test"), PREDICTIONS)


@pytest.fixture
def evaluated(toy_dataset, toy_predictions, tmp_path):
    out_dir = layout.metrics_dir(tmp_path / "results", "toy", "dsfnet", 0)
    return evaluate_predictions(toy_dataset, toy_predictions, "test", out_dir), out_dir


def expected_rows(counts: dict[str, tuple[int, int, int]]) -> dict[str, tuple]:
    rows = {video: (*count, *prf(*count)) for video, count in counts.items()}
    ratios = np.array([row[3:] for row in rows.values()]).mean(axis=0)
    totals = np.array([row[:3] for row in rows.values()]).sum(axis=0)
    rows["mean"] = (*totals, *ratios)
    return rows


def assert_rows(table: pd.DataFrame, expected: dict[str, tuple]) -> None:
    table = table.set_index("video")
    assert list(table.index) == list(expected)
    for video, (tp, fp, fn, precision, recall, f1) in expected.items():
        row = table.loc[video]
        assert (row.tp, row.fp, row.fn) == (tp, fp, fn), video
        assert (row.precision, row.recall, row.f1) == pytest.approx((precision, recall, f1), rel=1e-12, abs=1e-15)


# --------------------------------------------------------------------------- evaluate_predictions


def test_dsfnet_f1_csv_holds_exact_counts_and_ratios_per_iou_threshold(evaluated):
    tables, out_dir = evaluated
    written = pd.read_csv(out_dir / "dsfnet_f1.csv", dtype={"video": str})
    assert list(written.columns) == ["iou_threshold", "video", "tp", "fp", "fn", "precision", "recall", "f1"]
    assert sorted(written["iou_threshold"].unique()) == [0.0, 0.05, 0.1, 0.2]
    for threshold, counts in EXPECTED_COUNTS.items():
        rows = written[np.isclose(written["iou_threshold"], threshold)].drop(columns="iou_threshold")
        assert_rows(rows, expected_rows(counts))
    pd.testing.assert_frame_equal(tables["dsfnet_f1"], written, check_dtype=False)


def test_centre_distance_csv(evaluated):
    _, out_dir = evaluated
    written = pd.read_csv(out_dir / "centre_distance.csv", dtype={"video": str})
    assert (written["max_distance"] == 5.0).all()
    assert_rows(written.drop(columns="max_distance"), expected_rows(EXPECTED_CENTRE_COUNTS))


def test_coco_ap50_per_video_and_pooled(evaluated):
    _, out_dir = evaluated
    written = pd.read_csv(out_dir / "coco_ap50.csv", dtype={"video": str}).set_index("video")
    assert list(written.index) == ["v1", "v2", "all"]
    for video, ap50 in EXPECTED_AP50.items():
        assert written.loc[video, "AP50"] == pytest.approx(ap50, rel=1e-12)
    assert set(written.columns) == {"AP50", "AP", "AP75", "AR"}


def test_summary_json_names_the_weights_of_the_predictions(toy_dataset, toy_predictions, tmp_path):
    (toy_predictions / "predict.json").write_text(json.dumps({"weights_sha256": "ab" * 32}))
    evaluate_predictions(toy_dataset, toy_predictions, "test", tmp_path / "metrics")
    assert json.loads((tmp_path / "metrics" / "summary.json").read_text())["weights_sha256"] == "ab" * 32


def test_summary_json_holds_the_headline_numbers(evaluated):
    _, out_dir = evaluated
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["dataset"] == "toy" and summary["split"] == "test"
    assert summary["protocols"] == ["dsfnet_f1", "coco_ap50", "centre_distance"]
    assert (summary["videos"], summary["frames"], summary["objects"]) == (2, 5, 5)
    assert summary["detections"] == 8  # every exported row on an evaluated frame, whatever its score
    at_zero = summary["dsfnet_f1"]["iou_thresholds"]["0"]
    mean = expected_rows(EXPECTED_COUNTS[0.0])["mean"]
    assert (at_zero["tp"], at_zero["fp"], at_zero["fn"]) == mean[:3]
    assert at_zero["f1"] == pytest.approx(mean[5], rel=1e-12)
    assert set(summary["dsfnet_f1"]["iou_thresholds"]) == {"0", "0.05", "0.1", "0.2"}
    assert summary["coco_ap50"]["AP50"] == pytest.approx(EXPECTED_AP50["all"], rel=1e-12)
    assert summary["centre_distance"]["f1"] == pytest.approx(expected_rows(EXPECTED_CENTRE_COUNTS)["mean"][5])


def test_pr_curve_at_the_table_threshold_equals_the_table(evaluated):
    _, out_dir = evaluated
    curve = pd.read_csv(out_dir / "pr_curve.csv")
    assert set(curve["protocol"]) == {"dsfnet_f1", "centre_distance"}  # coco_ap50 has no curve
    for protocol, counts in (("dsfnet_f1", EXPECTED_COUNTS[0.0]), ("centre_distance", EXPECTED_CENTRE_COUNTS)):
        row = curve[(curve["protocol"] == protocol) & np.isclose(curve["score_threshold"], 0.3)].iloc[0]
        mean = expected_rows(counts)["mean"]
        assert (row.tp, row.fp, row.fn) == mean[:3]
        assert row.f1 == pytest.approx(mean[5], rel=1e-12)
    # at threshold 0 the 0.2 detection (a false positive) is kept too
    low = curve[(curve["protocol"] == "dsfnet_f1") & (curve["score_threshold"] == 0.0)].iloc[0]
    assert (low.tp, low.fp) == (4, 4)


def test_every_announced_file_is_written_and_the_markdown_shows_the_mean_row(evaluated):
    _, out_dir = evaluated
    announced = metric_files(["dsfnet_f1", "coco_ap50", "centre_distance"])
    assert sorted(announced) == sorted(path.name for path in out_dir.iterdir())
    markdown = (out_dir / "dsfnet_f1.md").read_text()
    assert markdown.count("## IoU > ") == 4
    assert "| mean |" in markdown
    html = (out_dir / "coco_ap50.html").read_text()
    assert "<table>" in html and "<td>all</td>" in html and "0.604" in html  # 61/101 = 0.6040


def test_protocols_argument_overrides_the_dataset_list(toy_dataset, toy_predictions, tmp_path):
    tables = evaluate_predictions(toy_dataset, toy_predictions, "test", tmp_path / "m", protocols=["centre_distance"])
    assert set(tables) == {"centre_distance", "pr_curve"}
    assert sorted(path.name for path in (tmp_path / "m").iterdir()) == sorted(metric_files(["centre_distance"]))


def test_unknown_protocol_and_unannotated_dataset_are_refused(toy_dataset, toy_predictions, tmp_path):
    with pytest.raises(EvaluationSetupError, match="known protocols: dsfnet_f1"):
        evaluate_predictions(toy_dataset, toy_predictions, "test", tmp_path / "m", protocols=["f2"])
    writer = UnifiedWriter(tmp_path / "video", annotated=False, protocols=())
    writer.add_video("clip", "test", grey_frames(2))
    with pytest.raises(EvaluationSetupError, match="no annotations"):
        evaluate_predictions(writer.commit(), toy_predictions, "test", tmp_path / "m")


def test_dronecrowd_lmap_on_box_centres_skips_sequences_without_detections(tmp_path):
    def head(x, y):  # DroneCrowd heads are 20 x 20 boxes around the annotated point
        return [x - 10, y - 10, x + 10, y + 10]

    writer = UnifiedWriter(tmp_path / "crowd", protocols=("dronecrowd_lmap", "dsfnet_f1"))
    writer.add_video("s1", "test", grey_frames(1, 160, 80), {1: [head(50, 50), head(100, 50)]})
    writer.add_video("s2", "test", grey_frames(1, 160, 80), {1: [head(30, 30)]})
    writer.commit()
    # the higher-scored detection is 5 px from its head: a false positive below 5 px, a hit from 5 px
    predictions = write_predictions(tmp_path / "pred", {"s1": {1: [[*head(53, 54), 0.9], [*head(100, 50), 0.8]]},
                                                       "s2": {1: []}})
    tables = evaluate_predictions(tmp_path / "crowd", predictions, "test", tmp_path / "metrics")
    lmap = tables["dronecrowd_lmap"].set_index("video")
    # AP is 0.25 at 1..4 px (FP then TP) and 1 at 5..25 px: L-mAP = (4 x 0.25 + 21) / 25
    assert lmap.loc["s1", "L-mAP"] == pytest.approx(22 / 25, rel=1e-12)
    assert lmap.loc["s1", ["AP@10", "AP@15", "AP@20"]].tolist() == [1.0, 1.0, 1.0]
    assert lmap.loc["s2", "L-mAP"] == 0.0
    # the toolkit skips s2 (no detection at all), so its missed head does not lower the pooled AP
    assert lmap.loc["all", "L-mAP"] == pytest.approx(22 / 25, rel=1e-12)
    summary = json.loads((tmp_path / "metrics" / "summary.json").read_text())
    assert summary["dronecrowd_lmap"]["L-mAP"] == pytest.approx(22 / 25, rel=1e-12)
    curve = tables["pr_curve"]
    assert set(curve["protocol"]) == {"dronecrowd_lmap", "dsfnet_f1"}
    at_10px = curve[(curve["protocol"] == "dronecrowd_lmap") & np.isclose(curve["score_threshold"], 0.3)].iloc[0]
    assert (at_10px.tp, at_10px.fp, at_10px.fn) == (2, 0, 0)


# --------------------------------------------------------------------------- table documents


def test_table_document_writes_matching_csv_markdown_and_html(tmp_path):
    frame = pd.DataFrame({"model": ["a|b", "c"], "f1": [0.5, math.nan]})
    paths = TableDocument("Title <x>", frame, [TableSection("Part", frame)], ["a note"]).write(tmp_path / "t")
    assert [path.name for path in paths] == ["t.csv", "t.md", "t.html"]
    assert paths[0].read_text() == "model,f1\na|b,0.5\nc,\n"
    markdown = paths[1].read_text()
    assert markdown.startswith("# Title <x>\n") and "## Part" in markdown and "| c | – |" in markdown
    assert "- a note" in markdown
    html = paths[2].read_text()
    assert "<h1>Title &lt;x&gt;</h1>" in html and "<td>a|b</td>" in html
    assert '<td class="number">–</td>' in html and "<li>a note</li>" in html


# --------------------------------------------------------------------------- paper tables


@pytest.fixture
def results(evaluated, tmp_path) -> Path:
    """results/ with dsfnet seed 0 evaluated on `toy`, micml never run, and `viso` not run at all."""
    results_dir = tmp_path / "results"
    (results_dir / "tables").mkdir()
    pd.DataFrame({"variant": ["dsfnet", "micml"], "params_inference": [7546319, 7546319],
                  "params_total": [7546319, 8763919], "gmac_512": [10.5, 10.5],
                  "gflops_512": [21.0, 21.0]}).to_csv(results_dir / "tables" / "models.csv", index=False)
    predict = {"device": "cpu", "tile": None, "batch_size": 4, "frames_per_second": 2.5}
    (layout.predictions_dir(results_dir, "toy", "dsfnet", 0, "test") / "predict.json").write_text(json.dumps(predict))
    return results_dir


EXPECTED_F1 = expected_rows(EXPECTED_COUNTS[0.0])  # toy's per-video and mean F1 at IoU > 0 (dsfnet, seed 0)


def add_run(results: Path, model: str, seed: int, f1_shift: float, training: dict | None = None) -> Path:
    """Another run made from dsfnet seed 0's metrics: F1 at IoU > 0 moved by `f1_shift` in
    summary.json and in every video of dsfnet_f1.csv; `training` as summary.json's budget."""
    source, target = layout.metrics_dir(results, "toy", "dsfnet", 0), layout.metrics_dir(results, "toy", model, seed)
    target.mkdir(parents=True, exist_ok=True)
    summary = json.loads((source / "summary.json").read_text())
    summary["dsfnet_f1"]["iou_thresholds"]["0"]["f1"] += f1_shift
    summary["training"] = training or {}
    (target / "summary.json").write_text(json.dumps(summary))
    per_video = pd.read_csv(source / "dsfnet_f1.csv", dtype={"video": str})
    per_video.loc[per_video["iou_threshold"] == 0.0, "f1"] += f1_shift
    per_video.to_csv(target / "dsfnet_f1.csv", index=False)
    return target


def budget(seed: int, steps: int, seconds: float) -> dict:
    return {"seed": seed, "steps": steps, "samples": steps * 8, "seconds": seconds, "device": "Test CPU",
            "threads": 2, "torch": "2.0"}


def test_paper_tables_need_the_seeds(results, tmp_path):
    with pytest.raises(TypeError):
        write_paper_tables(results, ["toy"], ["dsfnet"], tmp_path / "out")  # no silent default seed
    with pytest.raises(ValueError, match="seeds"):
        write_paper_tables(results, ["toy"], ["dsfnet"], tmp_path / "out", seeds=[])


def test_paper_main_one_seed_bootstraps_over_videos_and_shows_missing_runs(results, tmp_path):
    out_dir = tmp_path / "tables_out"
    tables = write_paper_tables(results, ["toy", "viso"], ["dsfnet", "micml"], out_dir, seeds=[0])
    assert sorted(path.name for path in out_dir.iterdir()) == sorted(paper_table_files(["toy", "viso"]))
    main = pd.read_csv(out_dir / "paper_main.csv", keep_default_na=False, na_values=[""], dtype={"seeds": str})
    assert list(zip(main["dataset"], main["model"])) == [("toy", "dsfnet"), ("toy", "micml"),
                                                         ("viso", "dsfnet"), ("viso", "micml")]
    metrics = [f"{metric}_iou{key}" for key in ("0", "0.05", "0.1", "0.2") for metric in ("precision", "recall", "f1")]
    metrics.append("ap50")
    assert list(main.columns) == ["dataset", "model",
                                  *[f"{metric}_{part}" for metric in metrics
                                    for part in ("mean", "std", "low", "high", "n")],
                                  "interval", "steps", "samples", "train_seconds", "seeds", "partial", "note"]
    dsfnet = main.iloc[0]
    for threshold, key in ((0.0, "0"), (0.05, "0.05"), (0.1, "0.1"), (0.2, "0.2")):
        assert dsfnet[f"f1_iou{key}_mean"] == pytest.approx(expected_rows(EXPECTED_COUNTS[threshold])["mean"][5],
                                                            rel=1e-9)
    # one seed: no std over seeds; the interval resamples the two videos' F1, so it spans theirs
    assert dsfnet["f1_iou0_n"] == 1 and pd.isna(dsfnet["f1_iou0_std"])
    video_f1 = sorted((EXPECTED_F1["v1"][5], EXPECTED_F1["v2"][5]))
    assert (dsfnet["f1_iou0_low"], dsfnet["f1_iou0_high"]) == (pytest.approx(video_f1[0]), pytest.approx(video_f1[1]))
    assert dsfnet["ap50_mean"] == pytest.approx(61 / 101, rel=1e-9)
    assert pd.isna(dsfnet["ap50_low"])  # pooled over all frames: nothing to resample, no interval
    assert dsfnet["interval"] == "bootstrap over videos; AP50: none (one seed, no per-video values)"
    assert dsfnet["seeds"] == "0" and pd.isna(dsfnet["steps"])
    assert pd.isna(dsfnet["note"])
    assert "lmap_mean" not in main.columns  # no dataset here uses DroneCrowd's protocol
    missing = main.iloc[1:]
    assert missing.filter(regex="_(mean|std|low|high)$").isna().all().all() and (missing["f1_iou0_n"] == 0).all()
    assert all("not run yet" in note for note in missing["note"])
    assert "micml/seed0/metrics/summary.json is missing" in main.iloc[1]["note"]

    markdown = (out_dir / "paper_main.md").read_text()
    micml_row = next(line for line in markdown.splitlines() if line.startswith("| micml | 0 |"))
    assert set(cell.strip() for cell in micml_row.strip("|").split("|")[2:-1]) == {"–"}
    assert "not run yet on toy: micml (no " in markdown and "not run yet on viso: dsfnet, micml (no " in markdown
    cell = f"{EXPECTED_F1['mean'][5] * 100:.2f} [{video_f1[0] * 100:.2f}, {video_f1[1] * 100:.2f}]"
    assert f"| dsfnet | {cell} (n=1) | – |" in markdown  # overview: F1 on toy with its interval, viso not run
    assert f"| dsfnet | 1 | " in markdown and f"| {cell} |" in markdown  # toy's section: n in its own column
    assert "training budget of dsfnet on toy: not recorded in 1 of 1 summary.json" in markdown
    assert tables["paper_main"].shape == main.shape


def test_paper_main_aggregates_seeds_with_a_t_interval_and_the_budget(results, tmp_path):
    from scipy import stats

    shifts = {0: 0.0, 1: -0.1, 2: 0.05}
    for seed, shift in shifts.items():
        add_run(results, "micml", seed, shift, budget(seed, 160, 10.0 + seed))
    add_run(results, "centernet", 0, 0.0, budget(0, 200, 5.0))  # seeds 1 and 2 not run yet
    tables = write_paper_tables(results, ["toy"], ["dsfnet", "micml", "centernet"], tmp_path / "out",
                                seeds=[0, 1, 2])
    main = tables["paper_main"].set_index("model")
    values = np.array([EXPECTED_F1["mean"][5] + shift for shift in shifts.values()])
    half = stats.t.ppf(0.975, 2) * values.std(ddof=1) / np.sqrt(3)
    micml = main.loc["micml"]
    assert (micml["f1_iou0_mean"], micml["f1_iou0_std"], micml["f1_iou0_n"]) == (
        pytest.approx(values.mean()), pytest.approx(values.std(ddof=1)), 3)
    assert (micml["f1_iou0_low"], micml["f1_iou0_high"]) == (pytest.approx(values.mean() - half),
                                                             pytest.approx(values.mean() + half))
    assert micml["precision_iou0_std"] == pytest.approx(0.0)  # only F1 moved between the seeds
    assert micml["interval"] == "t over seeds" and micml["seeds"] == "0 1 2"
    assert (micml["steps"], micml["samples"], micml["train_seconds"]) == (160, 1280, pytest.approx(11.0))
    centernet = main.loc["centernet"]  # one seed of three: the interval over its videos, n = 1
    assert centernet["f1_iou0_n"] == 1 and centernet["interval"].startswith("bootstrap over videos")
    assert "seed1/metrics/summary.json" in centernet["note"] and "seed2/" in centernet["note"]
    markdown = (tmp_path / "out" / "paper_main.md").read_text()
    assert "not run yet on toy: dsfnet (seeds 1, 2), centernet (seeds 1, 2) (no " in markdown
    assert (f"| micml | {values.mean() * 100:.2f} ± {values.std(ddof=1) * 100:.2f} "
            f"[{(values.mean() - half) * 100:.2f}, {(values.mean() + half) * 100:.2f}] (n=3) |") in markdown
    assert "Training budget on toy: UNEQUAL steps (micml 160, centernet 200)" in markdown
    assert "Trained on Test CPU, 2 threads, torch 2.0: 4 runs." in markdown


def test_paper_paired_differences_on_shared_seeds(results, tmp_path):
    from scipy import stats

    micml_shift, dsfnet_shift = {0: 0.1, 1: 0.2, 2: -0.05}, {1: 0.0, 2: 0.05}
    for seed, shift in micml_shift.items():
        add_run(results, "micml", seed, shift)
    for seed, shift in dsfnet_shift.items():  # dsfnet seed 0 is the evaluated run itself
        add_run(results, "dsfnet", seed, shift)
    write_paper_tables(results, ["toy"], ["dsfnet", "micml", "centernet"], tmp_path / "out", seeds=[0, 1, 2])
    paired = pd.read_csv(tmp_path / "out" / "paper_paired.csv", keep_default_na=False, na_values=[""])
    assert list(paired.columns) == ["dataset", "pair", "model_a", "model_b", "f1_iou0_diff_mean", "f1_iou0_diff_std",
                                    "f1_iou0_diff_low", "f1_iou0_diff_high", "f1_iou0_diff_n", "same_sign", "seeds",
                                    "interval", "partial", "note"]
    assert paired["pair"].tolist() == ["micml - dsfnet"]  # only pairs of which both were run
    row = paired.iloc[0]
    differences = np.array([0.1, 0.2 - 0.0, -0.05 - 0.05])
    half = stats.t.ppf(0.975, 2) * differences.std(ddof=1) / np.sqrt(3)
    assert row["f1_iou0_diff_mean"] == pytest.approx(differences.mean())
    assert (row["f1_iou0_diff_low"], row["f1_iou0_diff_high"]) == (pytest.approx(differences.mean() - half),
                                                                   pytest.approx(differences.mean() + half))
    assert (row["f1_iou0_diff_n"], row["same_sign"], row["interval"]) == (3, 2, "t over seeds")
    markdown = (tmp_path / "out" / "paper_paired.md").read_text()
    assert "| micml - dsfnet | 3 |" in markdown and "| 2 of 3 |" in markdown
    assert "not compared on toy (a model not run): dsfnet - centernet, centernet - micml" in markdown


def test_paper_paired_one_seed_pairs_the_videos(results, tmp_path):
    add_run(results, "micml", 0, 0.1)  # every video 0.1 better than dsfnet
    write_paper_tables(results, ["toy"], ["dsfnet", "micml"], tmp_path / "out", seeds=[0])
    row = pd.read_csv(tmp_path / "out" / "paper_paired.csv").iloc[0]
    assert row["interval"] == "bootstrap over videos" and row["f1_iou0_diff_n"] == 1
    assert (row["f1_iou0_diff_mean"], row["f1_iou0_diff_low"], row["f1_iou0_diff_high"]) == (
        pytest.approx(0.1), pytest.approx(0.1), pytest.approx(0.1))


def test_paper_per_video_table(results, tmp_path):
    add_run(results, "dsfnet", 1, 0.1)
    write_paper_tables(results, ["toy", "viso"], ["dsfnet", "micml"], tmp_path / "out", seeds=[0, 1])
    per_video = pd.read_csv(tmp_path / "out" / "paper_per_video_toy.csv", dtype={"video": str})
    dsfnet = per_video[per_video["model"] == "dsfnet"].set_index("video")
    assert list(dsfnet.index) == ["v1", "v2", "mean"]
    for video in ("v1", "v2", "mean"):  # seeds 0 and 1, the second 0.1 higher: mean +0.05, std 0.1 / sqrt(2)
        assert dsfnet.loc[video, "f1_mean"] == pytest.approx(EXPECTED_F1[video][5] + 0.05, rel=1e-9)
        assert dsfnet.loc[video, "f1_std"] == pytest.approx(0.1 / np.sqrt(2))
        assert dsfnet.loc[video, "n"] == 2
    micml = per_video[per_video["model"] == "micml"]
    assert micml[["precision_mean", "recall_mean", "f1_mean"]].isna().all().all()
    assert micml["note"].str.contains("not run").all() and (micml["n"] == 0).all()
    markdown = (tmp_path / "out" / "paper_per_video_toy.md").read_text()
    assert "| video | dsfnet P | dsfnet R | dsfnet F1 | micml P | micml R | micml F1 |" in markdown
    mean_f1 = (EXPECTED_F1["v1"][5] + 0.05) * 100
    assert f"| {mean_f1:.2f} ± {0.1 / np.sqrt(2) * 100:.2f} |" in markdown
    never_run = pd.read_csv(tmp_path / "out" / "paper_per_video_viso.csv")
    assert never_run["video"].tolist() == ["mean", "mean"] and never_run["f1_mean"].isna().all()


def test_paper_ablation_lists_every_variant(results, tmp_path):
    tables = write_paper_tables(results, ["toy"], ["dsfnet", "micml"], tmp_path / "out", seeds=[0])
    ablation = tables["paper_ablation"]
    assert ablation["model"].tolist() == ["centernet", "dsfnet_static", "dsfnet_dynamic", "dsfnet", "micml",
                                          "micml_motion_at_test", "micml_no_adapter", "micml_no_mining"]
    present = ablation.set_index("model")
    assert present.loc["dsfnet", "f1_iou0_mean"] == pytest.approx(EXPECTED_F1["mean"][5])
    assert present.drop(index="dsfnet")["f1_iou0_mean"].isna().all()
    assert (present.drop(index="dsfnet")["note"] != "").all()
    assert present.loc["micml", "description"].startswith("DSFNet + motion module")
    markdown = (tmp_path / "out" / "paper_ablation.md").read_text()
    not_run = [variant for variant in ablation["model"] if variant != "dsfnet"]
    assert (f"not run yet on toy: {', '.join(not_run)} (no {results}/toy/<model>/seed<k>/metrics/summary.json)"
            in markdown)


def test_ablation_variants_are_the_registry_variants():
    from micml.evaluation.paper import ABLATION_VARIANTS
    from micml.models import VARIANTS

    assert ABLATION_VARIANTS == VARIANTS


def test_paper_efficiency_reads_model_table_and_measured_speed(results, tmp_path):
    write_paper_tables(results, ["toy"], ["dsfnet", "micml", "centernet"], tmp_path / "out", seeds=[0])
    efficiency = pd.read_csv(tmp_path / "out" / "paper_efficiency.csv").set_index("model")
    assert efficiency.loc["dsfnet", "params_inference"] == 7546319
    assert efficiency.loc["micml", "params_total"] == 8763919
    assert efficiency.loc["dsfnet", "gflops_512"] == 21.0
    assert efficiency.loc["dsfnet", "fps_toy"] == 2.5
    assert math.isnan(efficiency.loc["micml", "fps_toy"]) and "not run yet" in efficiency.loc["micml", "note"]
    assert math.isnan(efficiency.loc["centernet", "params_inference"])
    assert "not in" in efficiency.loc["centernet", "note"]
    markdown = (tmp_path / "out" / "paper_efficiency.md").read_text()
    assert "| dsfnet | 7,546,319 | 7,546,319 | 10.5 | 21 | 2.5 |" in markdown
    assert "frames/s measured on cpu, whole frames, batch 4: dsfnet on toy" in markdown
