"""DroneCrowd L-mAP against the DroneCrowd VID toolkit: its tie order and its ground-truth points.

`toolkit_lmap` below is the MATLAB toolkit (VisDrone/DroneCrowd, STNNet/DroneCrowd-VID-toolkit:
saveAnnoRes.m, calcAccuracy.m, evalRes.m, VOCap.m) written out step by step in numpy, on the
toolkit's own inputs: the `anno` boxes as read from the .mat files (never clipped) and the
per-frame `x y score` rows of the _loc.txt files. MATLAB's `sort` is stable, also with
'descend', and so is Python's `sorted`, which the port uses for both of the toolkit's sorts.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.io
from hypothesis import given, settings
from hypothesis import strategies as st

from fixtures_real import build_dronecrowd_tree, constant_jpeg, link_frames, load_real_anno
from micml.data.converters import convert_dronecrowd
from micml.data.unified import UnifiedDataset
from micml.detections import frame_mat_path, write_frame_mat
from micml.evaluation.points import dronecrowd_lmap
from micml.evaluation.evaluate import evaluate_predictions, ground_truth_boxes, ground_truth_points
from micml.evaluation.protocols import box_centre_points

THRESHOLDS = range(1, 26)


def toolkit_lmap(annos: list[np.ndarray], locs: list[dict[int, np.ndarray]]) -> np.ndarray:
    """AP@1..25 (fractions) of the toolkit; one `anno` (N x 6, frames 0-based) and one
    {frame (1-based): K x 3 [x, y, score]} per sequence, in test-list order."""
    allgt, alldet = [], []
    for anno, loc in zip(annos, locs):  # saveAnnoRes.m: gt rows [frame, track, x1, y1, x2, y2]
        gt = np.column_stack([anno[:, 0] + 1, anno[:, 1:6]]).astype(np.float64)
        det = [[k, -1, x - 10, y - 10, 20, 20, score] for k in range(1, 301)
               for x, y, score in np.asarray(loc.get(k, np.zeros((0, 3))), np.float64).reshape(-1, 3).tolist()]
        allgt.append(gt)
        alldet.append(np.array(det, np.float64).reshape(-1, 7))
    aps = []
    for thr in THRESHOLDS:  # calcAccuracy.m
        n_gt, scores, matched = 0, [], []
        for gt, det in zip(allgt, alldet):
            if len(det) == 0:
                continue  # a sequence without any detection is skipped, its GT included
            for frame in np.unique(gt[:, 0]):
                gt0 = gt[gt[:, 0] == frame, 2:6]
                dt0 = np.maximum(0, det[det[:, 0] == frame, 2:7])
                dt0 = dt0[sorted(range(len(dt0)), key=lambda i: -dt0[i, 4])]  # evalRes.m: 'descend', stable
                posdet = dt0[:, :2] + dt0[:, 2:4] / 2
                posgt = np.column_stack([(gt0[:, 0] + gt0[:, 2]) / 2, (gt0[:, 1] + gt0[:, 3]) / 2])
                taken = np.zeros(len(gt0), bool)
                for d in range(len(dt0)):
                    dis = np.sqrt(((posdet[d] - posgt) ** 2).sum(axis=1))
                    # the scan keeps a GT unless it is farther than the best so far, starting
                    # from thr: it ends on the last untaken GT at the smallest distance <= thr
                    open_ = ~taken & (dis <= thr)
                    if open_.any():
                        taken[np.flatnonzero(open_ & (dis == dis[open_].min()))[-1]] = True
                    scores.append(dt0[d, 4])
                    matched.append(bool(open_.any()))
                n_gt += len(gt0)
        rank = sorted(range(len(scores)), key=lambda i: -scores[i])  # sort(-detMatch(:,1)), stable
        hits = np.array(matched, bool)[rank]
        tp, fp = np.cumsum(hits), np.cumsum(~hits)
        aps.append(voc_ap_loop(tp / max(1, n_gt), tp / np.maximum(1, tp + fp)))
    return np.array(aps)


def voc_ap_loop(rec: np.ndarray, prec: np.ndarray) -> float:
    """VOCap.m as its loops."""
    mrec, mpre = [0.0, *rec.tolist(), 1.0], [0.0, *prec.tolist(), 0.0]
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = max(mpre[i], mpre[i + 1])
    return sum((mrec[i] - mrec[i - 1]) * mpre[i] for i in range(1, len(mrec)) if mrec[i] != mrec[i - 1])


def box_centres(xyxy: np.ndarray) -> np.ndarray:
    return np.column_stack([(xyxy[:, 0] + xyxy[:, 2]) / 2, (xyxy[:, 1] + xyxy[:, 3]) / 2])


def aps_of(result: dict) -> np.ndarray:
    return np.array([result[f"AP@{thr}"] for thr in THRESHOLDS])


# --------------------------------------------------------------------------- equal scores, by hand

GT = {"s": {1: np.array([[100.0, 100.0]])}}


def test_equal_scores_are_matched_in_the_order_given():
    # both within 4 px of the one head: the one given first takes it, the other is a false positive
    near_first = {"s": {1: np.array([[104.0, 100.0, 0.5], [100.0, 100.0, 0.5]])}}
    exact_first = {"s": {1: np.array([[100.0, 100.0, 0.5], [104.0, 100.0, 0.5]])}}
    # below 4 px the near one misses and ranks first: FP, TP gives AP 1/2 at 1..3 px, then TP, FP gives 1
    assert dronecrowd_lmap(near_first, GT)["L-mAP"] == pytest.approx((3 * 0.5 + 22) / 25, abs=1e-15)
    assert dronecrowd_lmap(exact_first, GT)["L-mAP"] == 1.0
    # reversing equal scores (the unofficial Python port's argsort()[::-1]) would swap the two results
    for detections in (near_first, exact_first):
        assert aps_of(dronecrowd_lmap(detections, GT)) == pytest.approx(toolkit_lmap_points(detections, GT))


@pytest.mark.parametrize("where", ["frame", "sequence"])
def test_equal_scores_rank_in_sequence_and_frame_order(where):
    miss, hit = np.array([[400.0, 400.0, 0.5]]), np.array([[100.0, 100.0, 0.5]])
    if where == "frame":
        truth = {"s": {1: np.array([[100.0, 100.0]]), 2: np.array([[100.0, 100.0]])}}
        miss_first, hit_first = {"s": {1: miss, 2: hit}}, {"s": {1: hit, 2: miss}}
    else:
        truth = {"a": {1: np.array([[100.0, 100.0]])}, "b": {1: np.array([[100.0, 100.0]])}}
        miss_first, hit_first = {"a": {1: miss}, "b": {1: hit}}, {"a": {1: hit}, "b": {1: miss}}
    # two heads, one found: FP then TP reaches recall 1/2 at precision 1/2; TP then FP at precision 1
    assert dronecrowd_lmap(miss_first, truth)["L-mAP"] == 0.25
    assert dronecrowd_lmap(hit_first, truth)["L-mAP"] == 0.5
    for detections in (miss_first, hit_first):
        assert aps_of(dronecrowd_lmap(detections, truth)) == pytest.approx(toolkit_lmap_points(detections, truth))


def toolkit_lmap_points(detections: dict, truth: dict) -> np.ndarray:
    """`toolkit_lmap` on points: each GT point as a 2 x 2 anno box around it."""
    annos, locs = [], []
    for video, frames in truth.items():
        rows = [[frame - 1, track, x - 1, y - 1, x + 1, y + 1] for frame, points in frames.items()
                for track, (x, y) in enumerate(points.tolist())]
        annos.append(np.array(rows, np.float64).reshape(-1, 6))
        locs.append(detections.get(video, {}))
    return toolkit_lmap(annos, locs)


# --------------------------------------------------------------------------- against the toolkit, generated

anno_rows = st.lists(st.tuples(st.integers(0, 1), st.integers(0, 40), st.integers(0, 40), st.integers(1, 23),
                               st.integers(1, 23)), max_size=6)
loc_rows = st.lists(st.tuples(st.integers(1, 2), st.integers(-3, 60), st.integers(-3, 60),
                              st.sampled_from([-0.1, 0.2, 0.5, 0.9])), max_size=8)


@settings(max_examples=60, deadline=None)
@given(sequences=st.lists(st.tuples(anno_rows, loc_rows), min_size=1, max_size=3))
def test_lmap_equals_the_toolkit_with_ties_and_odd_box_sizes(sequences):
    annos, locs, truth, detections = [], [], {}, {}
    for index, (boxes, rows) in enumerate(sequences):
        anno = np.array([[frame, track, x, y, x + w, y + h] for track, (frame, x, y, w, h) in enumerate(boxes)],
                        np.float64).reshape(-1, 6)
        loc = {frame: np.array([[x, y, score] for f, x, y, score in rows if f == frame]).reshape(-1, 3)
               for frame in (1, 2)}
        annos.append(anno)
        locs.append(loc)
        truth[index] = {int(frame) + 1: box_centres(anno[anno[:, 0] == frame, 2:6]) for frame in np.unique(anno[:, 0])}
        detections[index] = loc
    np.testing.assert_allclose(aps_of(dronecrowd_lmap(detections, truth)), toolkit_lmap(annos, locs),
                               rtol=0, atol=1e-12)


# --------------------------------------------------------------------------- a centre moved by clipping

def test_lmap_scores_clipped_boxes_at_their_annotated_centre(tmp_path):
    """A head box past the right edge of a 64 x 48 frame: clipping moves its centre 5.5 px."""
    src = tmp_path / "dc"
    (src / "annotations").mkdir(parents=True)
    anno = np.array([[0, 0, 10, 10, 30, 30], [0, 1, 55, 10, 75, 30]], np.uint16)
    scipy.io.savemat(str(src / "annotations" / "00011.mat"), {"anno": anno})
    link_frames(constant_jpeg(src / "template.jpg", 64, 48), [src / "test_data/images/img011001.jpg"])
    dataset = convert_dronecrowd(src, tmp_path / "unified", test_list=["00011"], train_list=[])
    predictions = tmp_path / "predictions"
    write_frame_mat(frame_mat_path(predictions / "mat", "00011", 1), [[55, 10, 75, 30, 0.9], [10, 10, 30, 30, 0.8]])

    lmap = evaluate_predictions(dataset, predictions, "test", tmp_path / "metrics")["dronecrowd_lmap"]
    assert lmap.set_index("video").loc["all", "L-mAP"] == 1.0  # both detections sit on their heads
    # scored against the clipped box's centre (59.5, 20), the first detection would miss up to 5 px:
    # FP then TP there, AP 1/4, so L-mAP (5 x 1/4 + 20) / 25
    videos = UnifiedDataset(dataset).videos("test")
    points = box_centre_points({"00011": {1: np.array([[55, 10, 75, 30, 0.9], [10, 10, 30, 30, 0.8]])}},
                               with_scores=True)
    clipped = dronecrowd_lmap(points, box_centre_points(ground_truth_boxes(videos), with_scores=False))
    assert clipped["L-mAP"] == pytest.approx((5 * 0.25 + 20) / 25, abs=1e-15)
    assert dronecrowd_lmap(points, ground_truth_points(videos))["L-mAP"] == 1.0


# --------------------------------------------------------------------------- against the toolkit, real annotations

def real_detections(anno: np.ndarray, frames: np.ndarray, rng: np.random.Generator) -> dict[int, np.ndarray]:
    """Detections near the annotated heads of `frames` (every head past the frame's edge among
    them, exactly on its point), false alarms, and scores from three values, so ties abound."""
    past = (anno[:, 4] > 1920) | (anno[:, 5] > 1080)
    found = {}
    for frame in frames.tolist():
        here = anno[:, 0] + 1 == frame
        centres = box_centres(anno[here, 2:6])
        jitter = rng.integers(-3, 4, centres.shape) * ~past[here, None]
        kept = (rng.random(len(centres)) < 0.8) | past[here]
        heads = (centres + jitter)[kept]
        alarms = rng.integers(0, [1920, 1080], (10, 2))
        points = np.concatenate([heads, alarms]).astype(np.float64)
        found[frame] = np.column_stack([points, rng.choice([0.3, 0.6, 0.9], len(points))])
    return found


@pytest.fixture(scope="module")
def real_test_split(tmp_path_factory):
    root = build_dronecrowd_tree(tmp_path_factory.mktemp("dc_native"), {"00001": "test_data", "00011": "test_data"})
    dataset = convert_dronecrowd(root, tmp_path_factory.mktemp("dc") / "unified", test_list=["00001", "00011"],
                                 train_list=[])
    return UnifiedDataset(dataset).videos("test")


def test_lmap_equals_the_toolkit_on_real_annotations(real_test_split):
    rng = np.random.default_rng(0)
    annos = [load_real_anno(sequence) for sequence in ("00001", "00011")]
    past = annos[1][(annos[1][:, 4] > 1920) | (annos[1][:, 5] > 1080)]
    locs = [real_detections(annos[0], np.array([1, 150]), rng),
            real_detections(annos[1], np.unique(past[:, 0]) + 1, rng)]  # the 27 frames with heads at the edge
    expected = toolkit_lmap(annos, locs)

    detections = dict(zip(("00001", "00011"), locs))
    found = aps_of(dronecrowd_lmap(detections, ground_truth_points(real_test_split)))
    np.testing.assert_allclose(found, expected, rtol=0, atol=1e-12)
    # against the clipped boxes' centres the heads at the edge are missed at the smallest distances
    clipped = aps_of(dronecrowd_lmap(detections, box_centre_points(ground_truth_boxes(real_test_split),
                                                                   with_scores=False)))
    assert clipped[0] < expected[0] and clipped.mean() < expected.mean()
