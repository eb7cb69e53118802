"""micml.tracking: the tracker, MOT files, TrackEval metrics and counting."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

from micml.tracking import Tracker, TrackerSettings, track_frames
from micml.tracking.counting import count_table, counting_errors
from micml.tracking.mot import TrackFileError, frames_of, read_mot, write_mot

pytest.importorskip("trackeval")
from micml.tracking.metrics import evaluate_sequences, sequence_data  # noqa: E402

SIZE = 8.0  # px, the objects' side


def box_rows(track_id, frames, start, step):
    """Rows (frame, id, x1, y1, x2, y2, score) of an object moving `step` px per frame."""
    rows = []
    for frame in frames:
        x, y = np.asarray(start, float) + np.asarray(step, float) * (frame - frames[0])
        rows.append([frame, track_id, x, y, x + SIZE, y + SIZE, 1.0])
    return np.asarray(rows)


def as_detections(rows):
    return {frame: group[:, 2:7] for frame, group in frames_of(rows).items()}


def scores(gt, tracks, n_frames):
    return evaluate_sequences({"video": sequence_data(gt, tracks, n_frames)})["video"]


def ids_over_time(tracks, gt):
    """Track id at each ground-truth row (matched by identical box)."""
    ids = []
    for row in gt:
        same = tracks[(tracks[:, 0] == row[0]) & np.all(np.isclose(tracks[:, 2:6], row[2:6]), axis=1)]
        ids.append(int(same[0, 1]) if len(same) else -1)
    return ids


def test_ground_truth_as_detections_scores_perfectly():
    frames = list(range(1, 31))
    # fast movers (more than their size per frame), a slow one, a parked one, one leaving early
    gt = np.concatenate([box_rows(1, frames, (10, 10), (11, 0)), box_rows(2, frames, (300, 40), (-9, 4)),
                         box_rows(3, frames, (50, 200), (0.5, -0.5)), box_rows(4, frames, (400, 400), (0, 0)),
                         box_rows(5, frames[:12], (100, 300), (6, 6))])
    tracks = track_frames(as_detections(gt), TrackerSettings(max_distance=16))  # the gate covers 11 px per frame
    result = scores(gt, tracks, len(frames))
    assert result["MOTA"] == 1.0 and result["IDF1"] == 1.0 and result["IDSW"] == 0
    assert result["HOTA"] == pytest.approx(1.0)


def test_crossing_objects_keep_their_ids():
    frames = list(range(1, 21))
    # their paths cross at frame 11, where their boxes overlap by more than half
    left, right = box_rows(1, frames, (0, 105), (8, 0.5)), box_rows(2, frames, (160, 112), (-8, 0))
    tracks = track_frames(as_detections(np.concatenate([left, right])), TrackerSettings(max_distance=12))
    assert len(set(ids_over_time(tracks, left))) == 1 and -1 not in ids_over_time(tracks, left)
    assert len(set(ids_over_time(tracks, right))) == 1 and -1 not in ids_over_time(tracks, right)
    assert ids_over_time(tracks, left)[0] != ids_over_time(tracks, right)[0]


def test_two_frame_dropout_keeps_the_id():
    settings = TrackerSettings(max_misses=2, max_distance=12)
    frames = list(range(1, 16))
    gt = box_rows(1, frames, (20, 20), (10, 3))
    seen = gt[~np.isin(gt[:, 0], [7, 8])]  # missed in frames 7 and 8, back in 9 where predicted
    detections = as_detections(seen)
    tracks = track_frames({frame: detections.get(frame, np.zeros((0, 5))) for frame in frames}, settings)
    assert set(tracks[:, 1]) == {1} and len(tracks) == len(seen)


def test_dropout_longer_than_allowed_ends_the_track():
    frames = list(range(1, 16))
    seen = box_rows(1, frames, (20, 20), (10, 3))
    seen = seen[~np.isin(seen[:, 0], [7, 8, 9])]
    detections = as_detections(seen)
    tracks = track_frames({frame: detections.get(frame, np.zeros((0, 5))) for frame in frames},
                          TrackerSettings(max_misses=2, max_distance=12))
    assert set(tracks[:, 1]) == {1, 2}


def test_low_scores_and_short_tracks_are_not_reported():
    frames = list(range(1, 11))
    steady = box_rows(1, frames, (0, 0), (5, 0))
    faint = box_rows(2, frames, (100, 100), (5, 0))
    faint[:, 6] = 0.1
    flicker = box_rows(3, [4, 5], (300, 300), (0, 0))  # two frames: fewer than min_hits
    tracker = Tracker(TrackerSettings(min_hits=3))
    for frame, detections in as_detections(np.concatenate([steady, faint, flicker])).items():
        online = tracker.update(frame, detections)
        assert (online[detections[:, 4] < 0.3] == -1).all()
    assert set(tracker.tracks()[:, 1]) == {1} and len(tracker.tracks()) == len(frames)
    # the first two frames were tentative online, and get the id once confirmed
    assert list(tracker.detection_ids()[1]) == [1, -1]


def test_frames_must_increase():
    tracker = Tracker()
    tracker.update(2, np.zeros((0, 5)))
    with pytest.raises(ValueError, match="increasing order"):
        tracker.update(2, np.zeros((0, 5)))


def test_metrics_of_a_small_case_equal_hand_computed_values():
    # one object over 4 frames; the tracker switches its id after frame 2 and adds a false
    # positive far away in frame 4
    gt = box_rows(1, [1, 2, 3, 4], (10, 10), (10, 0))
    tracks = gt.copy()
    tracks[:, 1] = [10, 10, 11, 11]
    tracks = np.concatenate([tracks, [[4, 12, 200, 200, 208, 208, 1.0]]])
    result = scores(gt, tracks, 4)
    # MOTA = 1 - (FN + FP + IDSW) / GT = 1 - (0 + 1 + 1) / 4
    assert result["MOTA"] == pytest.approx(0.5) and result["IDSW"] == 1
    # IDTP 2 (gt 1 <-> track 10), IDFP 5 - 2, IDFN 4 - 2: IDF1 = 2*2 / (2*2 + 3 + 2)
    assert result["IDF1"] == pytest.approx(4 / 9)
    # IoU 1 at every alpha: DetA = TP / (TP + FN + FP) = 4 / 5; each TP's A = 2 / (2 + 2 + 0)
    assert result["DetA"] == pytest.approx(0.8) and result["AssA"] == pytest.approx(0.5)
    assert result["HOTA"] == pytest.approx(math.sqrt(0.8 * 0.5))


def test_counting_errors_of_a_small_case():
    gt = box_rows(1, [1, 2, 3, 4], (10, 10), (10, 0))
    tracks = np.concatenate([gt, [[4, 12, 200, 200, 208, 208, 1.0]]])
    tracks[2:4, 1] = 11
    result = counting_errors({"video": (gt, tracks, 4)})
    # per-frame errors 0, 0, 0, 1
    assert result["count_MAE"] == pytest.approx(0.25) and result["count_RMSE"] == pytest.approx(0.5)
    assert result["objects_found"] == 3 and result["objects_true"] == 1
    no_ids = gt.copy()
    no_ids[:, 1] = -1
    assert math.isnan(counting_errors({"video": (no_ids, tracks, 4)})["objects_true"])


def test_count_table_runs_totals():
    tracks = np.concatenate([box_rows(1, [1, 2, 3], (0, 0), (1, 0)), box_rows(2, [2, 3], (50, 0), (1, 0))])
    table = count_table(tracks, 4)
    assert table["objects"].tolist() == [1, 2, 2, 0]
    assert table["new"].tolist() == [1, 1, 0, 0] and table["distinct_so_far"].tolist() == [1, 2, 2, 2]


def test_mot_file_round_trip(tmp_path):
    tracks = np.concatenate([box_rows(1, [1, 2], (3.5, 4), (2, 0)), box_rows(2, [2], (50, 60), (0, 0))])
    tracks = tracks[np.lexsort((tracks[:, 1], tracks[:, 0]))]
    write_mot(tmp_path / "video.txt", tracks)
    first = (tmp_path / "video.txt").read_text().splitlines()[0]
    assert first == "1,1,3.50,4.00,8.00,8.00,1.0000,-1,-1,-1"
    np.testing.assert_allclose(read_mot(tmp_path / "video.txt"), tracks)


@pytest.mark.parametrize("text, message", [
    ("1,1,10,10,5\n", "line 1 has 5 columns, needs at least 7"),
    ("1,1,10,10,5,5,1,-1,-1,-1\n3,1,12,10,5,5,1,-1,-1,-1\n2,1,11,10,5,5,1,-1,-1,-1\n",
     "line 3 has frame 2 after frame 3"),
    ("1,-1,10,10,5,5,0.9,-1,-1,-1\n2,-1,1,1,5,5,0.9\n1,-1,10,10,5,5,0.9,-1,-1,-1\n",  # detections
     "line 3 has frame 1 after frame 2"),
    ("1,1,10,10,5,5,1\n1,1,30,10,5,5,1\n", "id 1 appears 2 times in frame 1"),
    ("1,1,ten,10,5,5,1\n", "line 1 is not numeric"),
])
def test_bad_mot_file_is_a_one_line_error_naming_it(tmp_path, text, message):
    path = tmp_path / "tracks.txt"
    path.write_text(text)
    with pytest.raises(TrackFileError) as error:
        read_mot(path)
    assert str(path) in str(error.value) and message in str(error.value)
    assert "\n" not in str(error.value)


def test_ground_truth_sorted_by_id_reads_with_by_frame_false(tmp_path):
    path = tmp_path / "gt.txt"
    path.write_text("1,1,10,10,5,5,1,1,1\n2,1,11,10,5,5,1,1,1\n1,2,40,10,5,5,1,1,1\n")
    assert len(read_mot(path, by_frame=False)) == 3


def test_tracking_imports_without_torch():
    code = ("import sys, micml.tracking, micml.tracking.pipeline, micml.tracking.metrics, "
            "micml.tracking.counting, micml.tracking.trails; assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def unified_dataset(root, with_ids: bool):
    """A test split of one 6-frame video with two moving objects."""
    from micml.data.unified import UnifiedWriter

    gt = np.concatenate([box_rows(1, list(range(1, 7)), (4, 4), (4, 0)), box_rows(2, list(range(1, 7)), (4, 40), (3, 1))])
    boxes = {frame: rows[:, 2:6].astype(np.float32) for frame, rows in frames_of(gt).items()}
    ids = {frame: rows[:, 1].astype(np.int64) for frame, rows in frames_of(gt).items()} if with_ids else None
    writer = UnifiedWriter(root)
    writer.add_video("v", "test", [np.zeros((64, 80, 3), np.uint8)] * 6, boxes, ids)
    return writer.commit(), gt


@pytest.mark.parametrize("with_ids", [True, False])
def test_run_tracking_table_and_paper_table(tmp_path, with_ids):
    from micml import layout
    from micml.tracking.pipeline import NO_IDS_NOTE
    from micml.tracking.report import paper_tracking_table, write_run_tracking

    root, gt = unified_dataset(tmp_path / "data", with_ids)
    results = tmp_path / "results"
    tracks_dir = layout.tracks_dir(results, "d", "m", 0, "test")
    write_mot(tracks_dir / "v.txt", gt)  # the ground truth as tracks: a perfect tracker
    table = write_run_tracking(tracks_dir, root, "test", 0.5, layout.tracking_metrics_path(results, "d", "m", 0, "csv"),
                               layout.tracking_metrics_path(results, "d", "m", 0, "md"))
    assert list(table["video"]) == ["v", "COMBINED"]
    paper = paper_tracking_table(results, ["d"], ["m", "absent"], [0]).set_index("model")
    assert paper.loc["m", "count_MAE"] == 0 and paper.loc["m", "objects_found"] == 2
    assert paper.loc["absent", "seeds"] == 0 and math.isnan(paper.loc["absent", "count_MAE"])
    if with_ids:
        assert paper.loc["m", "MOTA"] == 1 and paper.loc["m", "IDSW"] == 0 and paper.loc["m", "objects_true"] == 2
        assert paper.loc["m", "note"] == ""
    else:
        assert math.isnan(paper.loc["m", "HOTA"]) and math.isnan(paper.loc["m", "objects_true"])
        assert paper.loc["m", "note"] == NO_IDS_NOTE
        assert NO_IDS_NOTE in layout.tracking_metrics_path(results, "d", "m", 0, "md").read_text()


def test_schema_and_config_defaults_are_the_tracker_defaults():
    import dataclasses

    import yaml

    from micml.config import REPO_ROOT, load_config
    from micml.tracking.metrics import MOT_THRESHOLD

    schema = yaml.safe_load((REPO_ROOT / "config" / "schema.yaml").read_text())["properties"]["tracking"]["properties"]
    config = load_config(REPO_ROOT / "config" / "config.yaml")["tracking"]
    for field in dataclasses.fields(TrackerSettings):
        assert schema[field.name]["default"] == field.default == config[field.name], field.name
    assert schema["iou_threshold"]["default"] == MOT_THRESHOLD == config["iou_threshold"]
    assert set(schema) == {field.name for field in dataclasses.fields(TrackerSettings)} | {"iou_threshold"}


def test_tuning_ranks_settings_on_val_and_refuses_test(tmp_path):
    from micml.data.unified import UnifiedWriter
    from micml.detections import write_detection_dir
    from micml.tracking.tune import TuningError, tune

    frames = list(range(1, 9))
    gt = np.concatenate([box_rows(1, frames, (4, 4), (10, 0)), box_rows(2, frames, (4, 40), (9, 1))])
    writer = UnifiedWriter(tmp_path / "data")
    writer.add_video("v", "val", [np.zeros((64, 100, 3), np.uint8)] * len(frames),
                     {f: rows[:, 2:6].astype(np.float32) for f, rows in frames_of(gt).items()},
                     {f: rows[:, 1].astype(np.int64) for f, rows in frames_of(gt).items()})
    root = writer.commit()
    write_detection_dir(tmp_path / "mat", {"v": as_detections(gt)})
    ranking = tune(tmp_path / "mat", root, "val", grid={"max_distance": (4.0, 20.0), "min_hits": (1,)})
    # 10 px per frame: only the wider gate follows the objects from their first frame on
    assert list(ranking["max_distance"]) == [20.0, 4.0]
    assert ranking.loc[0, "HOTA"] == pytest.approx(1.0) and ranking.loc[1, "HOTA"] < 0.9
    with pytest.raises(TuningError, match="test split"):
        tune(tmp_path / "mat", root, "test")
