"""Evaluation protocols: hand-computed cases, reference quirks, properties and file I/O."""

from __future__ import annotations

import itertools
import json
import warnings

import numpy as np
import pytest
import scipy.io
from hypothesis import given, settings
from hypothesis import strategies as st

from micml.evaluation import (
    EvaluationInputError,
    box_iou,
    centre_distance,
    coco_ap50,
    coco_image_ids,
    dronecrowd_lmap,
    dsfnet_f1,
    greedy_point_matches,
    iou_evaluator,
    centre_distance_evaluator,
    pr_curve_distance,
    pr_curve_dsfnet,
    pr_curve_points,
    voc_ap,
)
from micml.detections import (
    DetectionFileError,
    coco_image_index,
    read_coco_results,
    read_detection_dir,
    read_frame_mat,
    write_coco_results,
    write_frame_mat,
)

EPS = 1e-7


def ratios_with_reference_eps(tp, fp, fn):
    precision = tp / (tp + fp + EPS)
    recall = tp / (tp + fn + EPS)
    return precision, recall, 2 * recall * precision / (recall + precision + EPS)


# --- dsfnet_f1: hand-computed frames -------------------------------------------------------

GT_THREE = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [50, 50, 60, 60]], float)
# exact hit on GT 0; a 0.2 px wide sliver on GT 1 (IoU = 2 / 198 ~ 0.0101); a false alarm
DET_THREE = np.array([[0, 0, 10, 10, 0.9], [29.8, 20, 39.8, 30, 0.8], [100, 100, 110, 110, 0.7]])


def test_sliver_overlap_is_a_match_at_iou_zero():
    table = dsfnet_f1({"v": {1: DET_THREE}}, {"v": {1: GT_THREE}}, iou_threshold=0.0)
    row = table.loc["v"]
    assert (row.tp, row.fp, row.fn) == (2, 1, 1)
    precision, recall, f1 = ratios_with_reference_eps(2, 1, 1)
    assert row.precision == pytest.approx(precision, rel=1e-12)
    assert row.recall == pytest.approx(recall, rel=1e-12)
    # the epsilon sits in the denominators: 2/3 itself is 3e-8 away, outside this tolerance
    assert row.f1 == pytest.approx(f1, rel=1e-12)
    assert row.f1 != pytest.approx(2 / 3, rel=1e-12)


def test_sliver_overlap_is_not_a_match_above_its_iou():
    assert box_iou(DET_THREE[1:2], GT_THREE[1:2])[0, 0] == pytest.approx(2 / 198, rel=1e-6)
    row = dsfnet_f1({"v": {1: DET_THREE}}, {"v": {1: GT_THREE}}, iou_threshold=0.05).loc["v"]
    assert (row.tp, row.fp, row.fn) == (1, 2, 2)
    assert row.precision == pytest.approx(1 / 3, rel=1e-6)


def test_iou_uses_continuous_coordinates_without_plus_one():
    touching = box_iou(np.array([[0.0, 0, 10, 10]]), np.array([[10.0, 0, 20, 10]]))
    assert touching[0, 0] == 0.0  # with the "+1" convention these would overlap by a column
    half = box_iou(np.array([[0.0, 0, 10, 10]]), np.array([[5.0, 0, 15, 10]]))
    assert half[0, 0] == pytest.approx(50 / 150, rel=1e-6)
    detections = {"v": {1: np.array([[10.0, 0, 20, 10, 0.9]])}}
    row = dsfnet_f1(detections, {"v": {1: np.array([[0.0, 0, 10, 10]])}}).loc["v"]
    assert (row.tp, row.fp, row.fn) == (0, 1, 1)


def test_assignment_maximises_total_iou_not_the_number_of_matches():
    # A-G1 = 1 beats A-G2 + B-G1 = 0.14 + 0.25, so B is left on G2 (IoU 0): one TP although
    # two disjoint overlapping pairs exist; that is the reference's rule
    gt = np.array([[0.0, 0, 10, 10], [7.5, 0, 17.5, 10]])
    det = np.array([[0.0, 0, 10, 10, 0.9], [-6.0, 0, 4, 10, 0.9]])
    iou = box_iou(det, gt)
    assert iou[0, 1] > 0 and iou[1, 0] > 0 and iou[1, 1] == 0
    row = dsfnet_f1({"v": {1: det}}, {"v": {1: gt}}).loc["v"]
    assert (row.tp, row.fp, row.fn) == (1, 1, 1)


def test_dataset_formats_fixture_through_a_mat_file(tmp_path):
    mat_root = tmp_path / "DSFNet_checkpoints_DSFNet_mat"
    a = np.array([[377.2, 970.1, 386.0, 977.3, 0.91], [10, 10, 14, 15, 0.2]], np.float32)
    write_frame_mat(mat_root / "002" / "000001.mat", a)
    stored = scipy.io.loadmat(mat_root / "002" / "000001.mat")["A"]
    assert stored.dtype == np.float32 and stored.shape == (2, 5)
    detections = read_detection_dir(mat_root)
    assert list(detections) == ["002"] and list(detections["002"]) == [1]
    ground_truth = {"002": {1: np.array([[377, 970, 386, 977]])}}
    row = dsfnet_f1(detections, ground_truth).loc["002"]
    assert (row.tp, row.fp, row.fn) == (1, 0, 0)  # the 0.2 row falls under conf 0.3


def test_score_threshold_is_strict_in_the_stored_dtype():
    gt = {"v": {1: np.array([[0.0, 0, 10, 10]])}}
    for dtype in (np.float64, np.float32):
        at_threshold = {"v": {1: np.array([[0, 0, 10, 10, 0.3]], dtype)}}
        assert dsfnet_f1(at_threshold, gt).loc["v", "tp"] == 0
    above = {"v": {1: np.array([[0, 0, 10, 10, 0.31]], np.float32)}}
    assert dsfnet_f1(above, gt).loc["v", "tp"] == 1


def test_empty_frames_count_false_positives_and_misses():
    ground_truth = {"v": {1: np.zeros((0, 4)), 2: GT_THREE[:2], 3: GT_THREE[:1]}}
    detections = {"v": {1: DET_THREE[:2], 2: np.zeros((0, 5))}}  # frame 3 has no file at all
    row = dsfnet_f1(detections, ground_truth).loc["v"]
    assert (row.tp, row.fp, row.fn) == (0, 2, 3)
    assert row.precision == 0 and row.recall == 0 and row.f1 == 0


def test_video_without_detection_file_is_all_missed(tmp_path):
    write_frame_mat(tmp_path / "001" / "000001.mat", DET_THREE[:1])
    detections = read_detection_dir(tmp_path)  # no folder for video 002
    ground_truth = {"001": {1: GT_THREE[:1]}, "002": {1: GT_THREE, 2: GT_THREE[:1]}}
    table = dsfnet_f1(detections, ground_truth)
    assert tuple(table.loc["002", ["tp", "fp", "fn"]]) == (0, 0, 4)
    assert table.loc["002", "f1"] == 0
    assert table.loc["mean", "f1"] == pytest.approx(table.loc["001", "f1"] / 2)
    assert tuple(table.loc["mean", ["tp", "fp", "fn"]]) == (1, 0, 4)


def test_video_without_gt_frames_scores_zero_and_enters_the_mean():
    table = dsfnet_f1({"a": {1: DET_THREE[:1]}}, {"a": {1: GT_THREE[:1]}, "b": {}})
    assert tuple(table.loc["b", ["tp", "fp", "fn", "precision", "recall", "f1"]]) == (0, 0, 0, 0, 0, 0)
    assert table.loc["mean", "recall"] == pytest.approx(0.5, rel=1e-6)


def test_mean_row_is_unweighted_over_videos_not_pooled():
    ground_truth = {"a": {1: GT_THREE[:1]}, "b": {1: GT_THREE[:1]}}
    false_alarms = np.array([[100, 100, 110, 110, 0.9], [200, 200, 210, 210, 0.9]])
    detections = {"a": {1: DET_THREE[:1]}, "b": {1: np.vstack([DET_THREE[:1], false_alarms])}}
    table = dsfnet_f1(detections, ground_truth)
    assert table.loc["b", "precision"] == pytest.approx(1 / 3, rel=1e-6)
    assert table.loc["mean", "precision"] == pytest.approx((1 + 1 / 3) / 2, rel=1e-6)
    pooled = table.loc["mean", "tp"] / (table.loc["mean", "tp"] + table.loc["mean", "fp"])
    assert pooled == pytest.approx(0.5) and table.loc["mean", "precision"] != pytest.approx(pooled)
    assert list(table.columns) == ["tp", "fp", "fn", "precision", "recall", "f1"]
    assert list(table.index) == ["a", "b", "mean"]


def test_detections_without_ground_truth_are_ignored_with_a_warning():
    detections = {"a": {1: DET_THREE[:1], 7: DET_THREE}, "typo": {1: DET_THREE}}
    with pytest.warns(UserWarning, match="typo"):
        table = dsfnet_f1(detections, {"a": {1: GT_THREE[:1]}})
    assert tuple(table.loc["a", ["tp", "fp", "fn"]]) == (1, 0, 0)  # frame 7 has no GT entry


def test_distance_mode_is_strict_and_one_to_one():
    gt = np.array([[0.0, 0, 10, 10]])  # centre (5, 5)

    def shifted(dx, score=0.9):
        return [dx, 0, 10 + dx, 10, score]

    def tp_for(rows):
        return centre_distance({"v": {1: np.array(rows, float)}}, {"v": {1: gt}}).loc["v", "tp"]

    assert tp_for([shifted(4.9)]) == 1
    assert tp_for([shifted(5.0)]) == 0  # distance == 5 is not < 5
    assert tp_for([shifted(5.5)]) == 0
    row = centre_distance({"v": {1: np.array([shifted(1), shifted(-1)])}}, {"v": {1: gt}}).loc["v"]
    assert (row.tp, row.fp, row.fn) == (1, 1, 0)


def test_evaluator_refuses_a_frame_twice_and_resets():
    evaluator = iou_evaluator()
    evaluator.process("v", 1, DET_THREE, GT_THREE)
    with pytest.raises(EvaluationInputError, match="processed twice"):
        evaluator.process("v", 1, DET_THREE, GT_THREE)
    evaluator.reset()
    evaluator.process("v", 1, DET_THREE, GT_THREE)
    assert evaluator.counts() == {"v": (2, 1, 1)}
    with pytest.raises(EvaluationInputError, match="N x 5"):
        evaluator.process("v", 2, np.ones((3, 4)), GT_THREE)


# --- matching properties --------------------------------------------------------------------

box_rows = st.lists(
    st.tuples(
        st.integers(0, 30), st.integers(0, 30), st.integers(1, 12), st.integers(1, 12), st.floats(0, 1)
    ),
    max_size=6,
)


def boxes_from(rows, with_score):
    array = np.array([[x, y, x + w, y + h, s] for x, y, w, h, s in rows], float).reshape(-1, 5)
    return array if with_score else array[:, :4]


def best_total_iou(iou):
    """Brute-force maximum of the summed IoU over one-to-one assignments (small only)."""
    n_det, n_gt = iou.shape
    if min(n_det, n_gt) == 0:
        return 0.0
    if n_det <= n_gt:
        choices = itertools.permutations(range(n_gt), n_det)
        return max(sum(iou[d, g] for d, g in enumerate(cols)) for cols in choices)
    choices = itertools.permutations(range(n_det), n_gt)
    return max(sum(iou[d, g] for g, d in enumerate(rows)) for rows in choices)


@settings(max_examples=150, deadline=None)
@given(
    det_rows=box_rows,
    gt_rows=box_rows,
    threshold=st.sampled_from([0.0, 0.05, 0.2]),
    distance=st.booleans(),
)
def test_matching_is_one_to_one_and_counts_add_up(det_rows, gt_rows, threshold, distance):
    det, gt = boxes_from(det_rows, True), boxes_from(gt_rows, False)
    evaluator = centre_distance_evaluator(5.0, 0.3) if distance else iou_evaluator(threshold, 0.3)
    matching = evaluator.process("v", 1, det, gt)
    kept = det[det[:, 4] > 0.3]
    assert len(set(matching.det_index.tolist())) == matching.count
    assert len(set(matching.gt_index.tolist())) == matching.count
    tp, fp, fn = evaluator.counts()["v"]
    assert tp + fn == len(gt) and tp + fp == len(kept)
    if not distance and len(kept) and len(gt):
        iou = box_iou(kept, gt)
        assert np.all(iou[matching.det_index, matching.gt_index] > threshold)
        from scipy.optimize import linear_sum_assignment

        rows, cols = linear_sum_assignment(-iou)
        assert iou[rows, cols].sum() == pytest.approx(best_total_iou(iou), abs=1e-9)


def test_pr_curves_equal_the_table_at_every_threshold():
    rng = np.random.default_rng(3)
    detections, ground_truth = {}, {}
    for video in ("a", "b", "c"):
        detections[video], ground_truth[video] = {}, {}
        for frame in range(1, 6):
            gt = rng.integers(0, 60, (rng.integers(0, 8), 2))
            ground_truth[video][frame] = np.hstack([gt, gt + rng.integers(3, 12, gt.shape)])
            det = rng.integers(0, 60, (rng.integers(0, 12), 2)).astype(float)
            boxes = np.hstack([det, det + rng.integers(3, 12, det.shape), rng.random((len(det), 1))])
            detections[video][frame] = boxes.astype(np.float32)
    thresholds = [0.0, 0.1, 0.3, 0.5, 0.8]
    iou_curve = pr_curve_dsfnet(detections, ground_truth, iou_threshold=0.05, score_thresholds=thresholds)
    distance_curve = pr_curve_distance(detections, ground_truth, score_thresholds=thresholds)
    for index, threshold in enumerate(thresholds):
        iou_mean = dsfnet_f1(detections, ground_truth, 0.05, threshold).loc["mean"]
        distance_mean = centre_distance(detections, ground_truth, 5.0, threshold).loc["mean"]
        for curve, mean in ((iou_curve, iou_mean), (distance_curve, distance_mean)):
            row = curve.iloc[index]
            assert (row.tp, row.fp, row.fn) == (mean.tp, mean.fp, mean.fn)
            expected = (mean.precision, mean.recall, mean.f1)
            assert (row.precision, row.recall, row.f1) == pytest.approx(expected, abs=1e-12)


# --- DroneCrowd L-mAP -----------------------------------------------------------------------


def plain_toolkit_matches(distances, threshold):
    """The toolkit's scan written as loops: last equally-near unmatched GT within thr."""
    n_det, n_gt = distances.shape
    taken, matched = [False] * n_gt, [False] * n_det
    for d in range(n_det):
        best, best_g = threshold, -1
        for g in range(n_gt):
            if taken[g] or distances[d, g] > best:
                continue
            best, best_g = distances[d, g], g
        if best_g >= 0:
            taken[best_g], matched[d] = True, True
    return np.array(matched)


@settings(max_examples=150, deadline=None)
@given(
    det=st.lists(st.tuples(st.integers(0, 8), st.integers(0, 8)), max_size=8),
    gt=st.lists(st.tuples(st.integers(0, 8), st.integers(0, 8)), max_size=8),
)
def test_greedy_matching_follows_the_toolkit_scan_including_ties(det, gt):
    det_points = np.array(det, float).reshape(-1, 2)
    gt_points = np.array(gt, float).reshape(-1, 2)
    distances = np.sqrt(((det_points[:, None] - gt_points[None]) ** 2).sum(-1)).reshape(len(det), len(gt))
    thresholds = np.array([1.0, 2.0, 3.0, 5.0])
    flags = greedy_point_matches(distances, thresholds)
    for index, threshold in enumerate(thresholds):
        np.testing.assert_array_equal(flags[index], plain_toolkit_matches(distances, threshold))


def test_voc_ap_is_all_point_interpolation():
    assert voc_ap(np.array([0.5, 0.5, 1.0]), np.array([1.0, 0.5, 2 / 3])) == pytest.approx(0.5 + 0.5 * 2 / 3)
    # an 11-point VOC2007 AP would give (6 * 1 + 5 * 2/3) / 11 = 0.848...
    assert voc_ap(np.array([]), np.array([])) == 0.0


GT_POINTS = {"00011": {1: np.array([[100.0, 100.0], [200.0, 200.0]])}}


def test_lmap_perfect_detections_score_one():
    detections = {"00011": {1: np.array([[100.0, 100.0, 0.9], [200.0, 200.0, 0.8]])}}
    result = dronecrowd_lmap(detections, GT_POINTS)
    assert result["L-mAP"] == pytest.approx(1.0)
    assert {"AP@10", "AP@15", "AP@20"} <= set(result)


def test_lmap_detections_beyond_25_px_score_zero():
    detections = {"00011": {1: np.array([[126.0, 100.0, 0.9], [200.0, 226.0, 0.8]])}}
    assert dronecrowd_lmap(detections, GT_POINTS)["L-mAP"] == 0.0


def test_lmap_known_value_and_inclusive_distance():
    # ranked: hit (100,100), false alarm, then a point exactly 5 px from (200,200)
    detections = {"00011": {1: np.array([[100.0, 100.0, 0.9], [500.0, 500.0, 0.8], [200.0, 205.0, 0.7]])}}
    result = dronecrowd_lmap(detections, GT_POINTS)
    far_enough = 0.5 * 1 + 0.5 * 2 / 3  # thr >= 5: recall 1 reached at precision 2/3
    assert result["AP@4"] == pytest.approx(0.5)
    assert result["AP@5"] == pytest.approx(far_enough)
    assert result["AP@10"] == pytest.approx(far_enough)
    assert result["L-mAP"] == pytest.approx((4 * 0.5 + 21 * far_enough) / 25)  # = 0.78


def test_lmap_toolkit_quirks_and_their_switches():
    gt = {"s1": {1: np.array([[10.0, 50.0]])}, "s2": {1: np.array([[300.0, 300.0]])}}
    near_border = {"s1": {1: np.array([[3.0, 50.0, 0.9]])}}  # s2 has no detection at all
    kept_quirks = dronecrowd_lmap(near_border, gt)
    assert kept_quirks["AP@1"] == pytest.approx(1.0)  # moved to x = 10, and s2 is not counted
    plain = dronecrowd_lmap(near_border, gt, toolkit_clamp=False, count_gt_without_detections=True)
    assert plain["AP@1"] == 0.0 and plain["AP@7"] == pytest.approx(0.5)


def test_points_pr_curve_equals_matching_only_the_kept_detections():
    rng = np.random.default_rng(5)
    gt = {"s": {f: rng.uniform(0, 100, (10, 2)) for f in range(1, 4)}}
    det = {"s": {f: np.column_stack([rng.uniform(0, 100, (15, 2)), rng.random(15)]) for f in range(1, 4)}}
    curve = pr_curve_points(det, gt, max_distance=10.0, score_thresholds=[0.0, 0.5, 0.8])
    for threshold, tp in zip([0.0, 0.5, 0.8], curve.tp):
        kept = {"s": {f: rows[rows[:, 2] > threshold] for f, rows in det["s"].items()}}
        fresh = pr_curve_points(kept, gt, max_distance=10.0, score_thresholds=[-1.0])
        assert fresh.tp.iloc[0] == tp


# --- COCO AP ----------------------------------------------------------------------------------


def test_coco_perfect_detections_and_no_chatter(capsys):
    ground_truth = {"v": {1: GT_THREE, 2: GT_THREE[:1]}}
    detections = {
        "v": {f: np.hstack([boxes, np.full((len(boxes), 1), 0.9)]) for f, boxes in ground_truth["v"].items()}
    }
    result = coco_ap50(detections, ground_truth)
    assert result["AP"] == pytest.approx(1.0) and result["AP50"] == pytest.approx(1.0)
    assert result["AP_small"] == pytest.approx(1.0) and np.isnan(result["AP_large"])
    assert capsys.readouterr().out == ""
    assert coco_ap50({}, ground_truth)["AP50"] == 0.0
    assert "AP_small" not in coco_ap50(detections, ground_truth, size_breakdown=False)


def test_coco_ap50_counts_a_false_alarm_ranked_first():
    ground_truth = {"v": {1: GT_THREE[:1]}}
    detections = {"v": {1: np.array([[100, 100, 110, 110, 0.9], [0, 0, 10, 10, 0.8]])}}
    assert coco_ap50(detections, ground_truth)["AP50"] == pytest.approx(0.5, abs=0.01)  # 101-point


# --- files ----------------------------------------------------------------------------------


def test_mat_round_trip_keeps_float32_and_empty_shape(tmp_path):
    write_frame_mat(tmp_path / "v" / "000003.mat", np.zeros((0, 5)))
    write_frame_mat(tmp_path / "v" / "000004.mat", DET_THREE)
    (tmp_path / "summary_iou_0.30.txt").write_text("a text summary beside the .mat folders\n")
    detections = read_detection_dir(tmp_path)
    assert detections["v"][3].shape == (0, 5)
    np.testing.assert_array_equal(detections["v"][4], DET_THREE.astype(np.float32))
    assert not [p for p in (tmp_path / "v").iterdir() if p.suffix == ".tmp"]
    with pytest.raises(DetectionFileError, match="N x 5"):
        write_frame_mat(tmp_path / "v" / "000005.mat", np.ones((2, 4)))


def test_corrupt_mat_error_names_the_file(tmp_path):
    bad = tmp_path / "002" / "000007.mat"
    bad.parent.mkdir()
    bad.write_bytes(b"this is not a MATLAB file")
    with pytest.raises(DetectionFileError, match=r"002/000007\.mat.*not a readable MATLAB"):
        read_detection_dir(tmp_path)
    scipy.io.savemat(bad, {"boxes": np.ones((1, 5))})
    with pytest.raises(DetectionFileError, match=r"expected a variable 'A'.*\['boxes'\]"):
        read_frame_mat(bad)


def test_hieum_unscored_detect_result_rows(tmp_path):
    path = tmp_path / "000001.mat"
    scipy.io.savemat(path, {"Detect_Result": np.array([[10.0, 20.0, 4.0, 6.0]])})
    np.testing.assert_array_equal(read_frame_mat(path), [[10, 20, 14, 26, 1.0]])


def test_coco_results_json_round_trip(tmp_path):
    annotations = {
        "videos": [{"id": 1, "name": "002"}],
        "images": [{"id": 5, "video_id": 1, "frame_index": 1}, {"id": 6, "video_id": 1, "frame_index": 2}],
    }
    index = coco_image_index(annotations)
    assert index == {("002", 1): 5, ("002", 2): 6}
    detections = {"002": {1: np.array([[1.234, 2.0, 5.0, 7.5, 0.876]]), 2: np.zeros((0, 5))}}
    path = tmp_path / "results.json"
    assert write_coco_results(path, detections, index) == 1
    written = json.loads(path.read_text())
    assert written == [{"image_id": 5, "category_id": 1, "bbox": [1.23, 2.0, 3.77, 5.5], "score": 0.88}]
    back = read_coco_results(path, index)
    np.testing.assert_allclose(back["002"][1], [[1.23, 2.0, 5.0, 7.5, 0.88]])
    with pytest.raises(DetectionFileError, match="no image id"):
        write_coco_results(path, {"003": {1: np.zeros((0, 5))}}, index)
    with pytest.raises(DetectionFileError, match="videos"):
        coco_image_index({"images": []})


def test_coco_image_ids_follow_ground_truth_order():
    ids = coco_image_ids({"b": {2: None, 1: None}, "a": {1: None}})
    assert ids == {("b", 1): 1, ("b", 2): 2, ("a", 1): 3}


def test_no_warning_when_names_agree():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dsfnet_f1({"a": {1: DET_THREE}}, {"a": {1: GT_THREE}})
