"""Partial predictions never score silently (issue 20, item 5). A prediction folder that misses a
test video or frames, holds frames the dataset lacks, or has an empty mat/ stops `micml evaluate`
with one line naming the gaps and how many; `--allow-partial` scores the frames present and says
`partial` in summary.json, in the metric tables and in every paper table built from them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from micml import layout
from micml.cli import main as micml
from micml.data.unified import UnifiedWriter
from micml.evaluation.paper import write_paper_tables
from micml.evaluation.evaluate import IncompletePredictionsError, evaluate_predictions
from test_bad_input import one_line_error
from test_reliability_paths import snapshot
from test_reports import GT, PREDICTIONS, grey_frames, toy_dataset, write_predictions  # noqa: F401 (fixture)

pytestmark = pytest.mark.reliability


def predictions_without(tmp_path: Path, drop_videos=(), drop_frames=(), add=()) -> Path:
    """The complete toy predictions (every frame of v1 and v2) with gaps or extras, in the
    results layout: results/toy/dsfnet/predictions/test/mat."""
    frames = {video: dict(rows) for video, rows in PREDICTIONS.items() if video not in drop_videos}
    for video, frame in drop_frames:
        del frames[video][frame]
    for video, frame in add:
        frames.setdefault(video, {})[frame] = []
    return write_predictions(tmp_path / "results" / "toy" / "dsfnet" / "predictions" / "test", frames)


def evaluate(capsys, dataset: Path, predictions: Path, out: Path, *extra: str) -> str:
    """`micml evaluate` that must fail in one line, leaving the predictions as they were and
    writing no metrics; returns the line."""
    before = snapshot(predictions)
    message = one_line_error(capsys, "evaluate", dataset, predictions, out, *extra)
    assert snapshot(predictions) == before and not out.exists()
    return message


def test_complete_predictions_are_scored_and_say_so(toy_dataset, tmp_path):
    predictions = predictions_without(tmp_path)
    assert micml(["evaluate", str(toy_dataset), str(predictions), str(tmp_path / "metrics")]) == 0
    summary = json.loads((tmp_path / "metrics" / "summary.json").read_text())
    assert summary["partial"] is False and "missing" not in summary


def test_a_missing_test_video_is_refused_naming_it(capsys, toy_dataset, tmp_path):
    message = evaluate(capsys, toy_dataset, predictions_without(tmp_path, drop_videos=["v2"]), tmp_path / "metrics")
    assert "no .mat file for 2 of 5 frames of the 'test' split, in 1 of 2 videos (video v2 (all 2 frames))" in message
    assert "--allow-partial" in message


def test_missing_frames_are_refused_naming_them(capsys, toy_dataset, tmp_path):
    predictions = predictions_without(tmp_path, drop_frames=[("v1", 3), ("v2", 2)])
    message = evaluate(capsys, toy_dataset, predictions, tmp_path / "metrics")
    assert "no .mat file for 2 of 5 frames" in message and "video v1 frame 3, video v2 frame 2" in message


@pytest.mark.parametrize("extra, named", [
    ([("v1", 4)], "video v1 frame 4"), ([("zz", 1), ("zz", 2)], "video zz (2 frames)"),
    ([("t1", 1)], "video t1 (1 frame)")])  # t1 is a train video
def test_frames_the_split_lacks_are_refused_even_when_partial_is_allowed(capsys, toy_dataset, tmp_path, extra, named):
    predictions = predictions_without(tmp_path, add=extra)
    for allow in ([], ["--allow-partial"]):
        message = evaluate(capsys, toy_dataset, predictions, tmp_path / "metrics", *allow)
        assert f"{len(extra)} .mat file(s) name frames that the 'test' split does not hold ({named})" in message


def test_an_empty_mat_folder_is_refused_even_when_partial_is_allowed(capsys, toy_dataset, tmp_path):
    predictions = tmp_path / "predictions"
    (predictions / "mat").mkdir(parents=True)
    for allow in ([], ["--allow-partial"]):
        assert "no .mat file for any of the 5 frames" in evaluate(capsys, toy_dataset, predictions,
                                                                  tmp_path / "metrics", *allow)


def test_metrics_inside_the_predictions_or_the_dataset_are_refused(capsys, toy_dataset, tmp_path):
    predictions = predictions_without(tmp_path)
    dataset_before = snapshot(toy_dataset)
    for out in (predictions, predictions / "mat", toy_dataset / "metrics"):
        assert "metrics folder" in one_line_error(capsys, "evaluate", toy_dataset, predictions, out)
    assert snapshot(toy_dataset) == dataset_before
    assert sorted(path.name for path in predictions.iterdir()) == ["mat"]


# --------------------------------------------------------------------------- --allow-partial


@pytest.fixture
def partial_metrics(toy_dataset, tmp_path) -> Path:
    """v2 missing and v1 frame 3 missing, scored with --allow-partial into the results layout."""
    predictions = predictions_without(tmp_path, drop_videos=["v2"], drop_frames=[("v1", 3)])
    out = layout.metrics_dir(tmp_path / "results", "toy", "dsfnet", 0)
    assert micml(["evaluate", str(toy_dataset), str(predictions), str(out), "--allow-partial"]) == 0
    return out


def test_allow_partial_writes_partial_and_the_missing_list(partial_metrics):
    summary = json.loads((partial_metrics / "summary.json").read_text())
    assert summary["partial"] is True
    assert summary["missing"] == {"count": 3, "videos": ["v2"], "frames": {"v1": [3]}}
    assert (summary["videos"], summary["frames"]) == (1, 2)  # what was scored


def test_allow_partial_scores_exactly_the_frames_present(partial_metrics, tmp_path):
    """The partial score equals a complete evaluation of a dataset holding only those frames."""
    writer = UnifiedWriter(tmp_path / "data" / "toy_v1", protocols=("dsfnet_f1", "coco_ap50", "centre_distance"))
    writer.add_video("v1", "test", grey_frames(2), {frame: GT["v1"][frame] for frame in (1, 2)})
    only = {"v1": {frame: PREDICTIONS["v1"][frame] for frame in (1, 2)}}
    tables = evaluate_predictions(writer.commit(), write_predictions(tmp_path / "only", only), "test",
                                  tmp_path / "only_metrics")
    for name in ("dsfnet_f1", "coco_ap50", "centre_distance"):
        written = pd.read_csv(partial_metrics / f"{name}.csv", dtype={"video": str})
        pd.testing.assert_frame_equal(written, tables[name], check_dtype=False)
    assert list(written["video"]) == ["v1", "mean"]


def test_every_metric_table_says_partial(partial_metrics):
    for name in ("dsfnet_f1", "coco_ap50", "centre_distance"):
        for suffix in (".md", ".html"):
            text = (partial_metrics / f"{name}{suffix}").read_text()
            assert "(PARTIAL)" in text and "PARTIAL score: 3 of 5 frames had no prediction" in text, name + suffix


def test_paper_tables_carry_the_partial_flag_into_every_row_that_uses_it(partial_metrics, tmp_path):
    results = tmp_path / "results"
    write_paper_tables(results, ["toy"], ["dsfnet"], tmp_path / "tables", seeds=[0])
    for stem in ("paper_main", "paper_per_video_toy"):
        csv = pd.read_csv(tmp_path / "tables" / f"{stem}.csv", keep_default_na=False, na_values=[""])
        assert csv["partial"].all() and csv["note"].str.startswith("PARTIAL score: 3 frames").all(), stem
        for suffix in (".md", ".html"):
            text = (tmp_path / "tables" / f"{stem}{suffix}").read_text()
            assert "dsfnet †" in text and "† dsfnet on toy: PARTIAL score" in text, stem + suffix
    ablation = pd.read_csv(tmp_path / "tables" / "paper_ablation.csv", keep_default_na=False, na_values=[""])
    assert ablation.set_index("model").loc["dsfnet", "partial"]


def test_the_library_call_refuses_partial_predictions_by_default(toy_dataset, tmp_path):
    predictions = predictions_without(tmp_path, drop_videos=["v2"])
    with pytest.raises(IncompletePredictionsError, match="video v2"):
        evaluate_predictions(toy_dataset, predictions, "test", tmp_path / "metrics")
    shutil.rmtree(predictions / "mat" / "v1")
    with pytest.raises(IncompletePredictionsError, match="any of the 5 frames"):
        evaluate_predictions(toy_dataset, predictions, "test", tmp_path / "metrics", allow_partial=True)
