"""CenterNet targets (spec 4.6): radius formula, peak shape, slots, overflow."""

import math

import numpy as np
import pytest

from micml.data.targets import build_targets, draw_peak_max, gaussian_radius, peak_kernel


@pytest.mark.parametrize("height, width, radius", [
    (4, 4, 1), (6, 3, 1), (8, 8, 2), (12, 6, 2), (20, 10, 3), (16, 16, 4), (30, 30, 8),
])
def test_radius_matches_the_reference_examples(height, width, radius):
    assert gaussian_radius(height, width) == radius


def test_radius_rounds_box_sizes_up_before_the_formula():
    assert gaussian_radius(7.2, 7.2) == gaussian_radius(8, 8)


@pytest.mark.parametrize("radius", [0, 1, 2, 5])
def test_peak_kernel_is_one_at_the_centre_and_symmetric(radius):
    kernel = peak_kernel(radius)
    assert kernel.shape == (2 * radius + 1,) * 2
    assert kernel[radius, radius] == 1.0
    assert kernel.max() == 1.0
    np.testing.assert_array_equal(kernel, kernel.T)
    np.testing.assert_array_equal(kernel, kernel[::-1, ::-1])


def test_peak_kernel_follows_sigma_of_a_sixth_of_the_diameter():
    sigma = 5 / 6
    assert peak_kernel(2)[2, 3] == pytest.approx(math.exp(-1 / (2 * sigma ** 2)), rel=1e-6)


def test_peaks_merge_by_maximum_and_are_cut_at_the_border():
    heatmap = np.zeros((6, 6), np.float32)
    draw_peak_max(heatmap, (0, 0), 2)
    draw_peak_max(heatmap, (1, 0), 2)
    assert heatmap[0, 0] == 1.0 and heatmap[0, 1] == 1.0
    assert heatmap[0, 2] == pytest.approx(peak_kernel(2)[2, 3])  # nearer peak wins, not the sum
    assert heatmap[:, 4:].max() == 0.0


def test_hand_case_slots_hold_size_offset_and_flat_index():
    # box 10.0..15.0 x 20.0..24.0 -> centre (12.5, 22.0), size 5 x 4
    targets = build_targets(np.array([[10, 20, 15, 24]], np.float32), height=32, width=40, max_objects=4)
    assert targets.hm.shape == (1, 32, 40)
    assert targets.hm[0, 22, 12] == 1.0
    assert targets.hm.sum() > 1.0  # radius gaussian_radius(4, 5) = 1 spreads the peak
    np.testing.assert_allclose(targets.wh[0], [5, 4])
    np.testing.assert_allclose(targets.reg[0], [0.5, 0.0])
    assert targets.ind[0] == 22 * 40 + 12
    np.testing.assert_array_equal(targets.reg_mask, [1, 0, 0, 0])
    assert (targets.n_objects, targets.n_dropped) == (1, 0)


def single_box_targets(box, size=128):
    return build_targets(np.array([box], np.float32), height=size, width=size, max_objects=2)


# Expected values worked out by hand from the reference's rule (coco_rsdata.py:231-242): size and
# centre from the box as given, size clipped to [0, 127], centre clipped into [0, 127].
@pytest.mark.parametrize("box, wh, peak, reg", [
    ([10, 20, 15, 24], (5, 4), (12, 22), (0.5, 0.0)),          # inside
    ([100, 50, 128, 60], (28, 10), (114, 55), (0.0, 0.0)),     # ending exactly at the far edge
    ([117, 0, 127, 9], (10, 9), (122, 4), (0.0, 0.5)),          # ending on the last pixel, starting at 0
    ([-5, 20, 5, 30], (10, 10), (0, 25), (0.0, 0.0)),          # crossing the near edge: full size at x 0
    ([120, 60, 140, 71], (20, 11), (127, 65), (0.0, 0.5)),     # crossing the far edge: peak on the last pixel
    ([-10, 40, 200, 44], (127, 4), (95, 42), (0.0, 0.0)),      # wider than the image: width clipped to 127
])
def test_sizes_and_centres_follow_the_reference_at_the_image_edge(box, wh, peak, reg):
    targets = single_box_targets(box)
    np.testing.assert_allclose(targets.wh[0], wh)
    np.testing.assert_allclose(targets.reg[0], reg)
    assert targets.ind[0] == peak[1] * 128 + peak[0]
    assert targets.hm[0, peak[1], peak[0]] == 1.0 and (targets.hm == 1.0).sum() == 1
    assert (targets.n_objects, targets.reg_mask.sum()) == (1, 1)


@pytest.mark.parametrize("box", [
    [5, 5, 5, 9],           # no width
    [30, 8, 40, 8],         # no height
    [128, 10, 140, 20],     # starts at the far edge: nothing inside (the reference would draw it at x 127)
    [-20, -20, 0, -1],      # wholly before the near edges
])
def test_boxes_without_area_in_the_image_are_skipped(box):
    targets = single_box_targets(box)
    assert targets.n_objects == 0 and targets.reg_mask.sum() == 0 and targets.hm.max() == 0


def test_more_boxes_than_slots_are_counted_and_still_drawn():
    boxes = np.array([[x, 2, x + 3, 5] for x in range(0, 30, 5)], np.float32)  # 6 boxes
    targets = build_targets(boxes, height=16, width=32, max_objects=4)
    assert (targets.n_objects, targets.n_dropped) == (6, 2)
    assert targets.reg_mask.sum() == 4
    assert (targets.hm[0] == 1.0).sum() == 6  # every object is a positive on the heat map
