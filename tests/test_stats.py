"""Intervals of the paper tables, checked against hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from micml.evaluation.stats import (
    BOOTSTRAP_OVER_VIDEOS,
    NO_INTERVAL_NO_VIDEOS,
    NO_INTERVAL_ONE_VIDEO,
    NO_VALUE,
    T_OVER_SEEDS,
    paired_difference,
    seed_interval,
)


def test_three_seeds_give_the_t_interval():
    # mean 0.8; deviations -0.1, 0, +0.1 -> variance 0.02 / 2 = 0.01, std 0.1
    interval = seed_interval([0.7, 0.8, 0.9])
    half = scipy_stats.t.ppf(0.975, 2) * 0.1 / math.sqrt(3)  # t(0.975, 2) = 4.3027
    assert half == pytest.approx(0.248414, abs=1e-6)
    assert (interval.mean, interval.std, interval.n) == (pytest.approx(0.8), pytest.approx(0.1), 3)
    assert (interval.low, interval.high) == (pytest.approx(0.8 - half), pytest.approx(0.8 + half))
    assert interval.method == T_OVER_SEEDS


def test_two_seeds_and_a_mapping_with_a_missing_seed():
    # the seed not run (NaN) is left out: n = 2, mean 0.5, std = |0.6 - 0.4| / sqrt(2)
    interval = seed_interval({0: 0.4, 1: math.nan, 2: 0.6}, confidence=0.9)
    std = 0.2 / math.sqrt(2)
    half = scipy_stats.t.ppf(0.95, 1) * std / math.sqrt(2)  # t(0.95, 1) = 6.3138
    assert (interval.n, interval.mean, interval.std) == (2, pytest.approx(0.5), pytest.approx(std))
    assert (interval.low, interval.high) == (pytest.approx(0.5 - half), pytest.approx(0.5 + half))


def test_one_seed_is_a_bootstrap_over_videos_around_the_run_value():
    per_video = [0.2, 0.4, 0.6, 0.8, 1.0]
    interval = seed_interval([0.6], per_video=per_video)
    assert interval.method == BOOTSTRAP_OVER_VIDEOS and interval.n == 1
    assert interval.mean == 0.6 and math.isnan(interval.std)
    # resampled means of five values lie between the smallest and the largest value, and a 95 %
    # interval of this spread is well inside; the same call gives the same interval
    assert 0.2 < interval.low < 0.6 < interval.high < 1.0
    assert seed_interval([0.6], per_video=per_video) == interval


def test_one_seed_bootstrap_is_the_percentile_of_resampled_video_means():
    per_video = np.array([0.0, 1.0])
    interval = seed_interval([0.5], per_video=per_video)
    # two videos: a resample holds 0, 1 or 2 ones (probabilities 1/4, 1/2, 1/4), so its mean is
    # 0, 0.5 or 1 and the 2.5 % and 97.5 % percentiles are 0 and 1
    assert (interval.low, interval.high) == (0.0, 1.0)


@pytest.mark.parametrize("per_video, method", [([0.7], NO_INTERVAL_ONE_VIDEO), (None, NO_INTERVAL_NO_VIDEOS)])
def test_one_seed_without_two_videos_has_no_interval(per_video, method):
    interval = seed_interval([0.7], per_video=per_video)
    assert interval.mean == 0.7 and interval.n == 1 and interval.method == method
    assert math.isnan(interval.low) and math.isnan(interval.high)


def test_no_seed_has_no_value():
    interval = seed_interval([math.nan])
    assert interval.n == 0 and interval.method == NO_VALUE and math.isnan(interval.mean)


def test_paired_difference_over_shared_seeds():
    a = {0: 0.80, 1: 0.75, 2: 0.90, 3: 0.60}
    b = {0: 0.70, 1: 0.78, 2: 0.80}  # seed 3 of b not run: left out
    difference = paired_difference(a, b)
    d = np.array([0.10, -0.03, 0.10])
    half = scipy_stats.t.ppf(0.975, 2) * d.std(ddof=1) / math.sqrt(3)
    assert difference.seeds == (0, 1, 2) and difference.interval.n == 3
    assert difference.interval.mean == pytest.approx(d.mean())
    assert (difference.interval.low, difference.interval.high) == (pytest.approx(d.mean() - half),
                                                                   pytest.approx(d.mean() + half))
    assert difference.same_sign == 2  # the mean is positive; seed 1 disagrees


def test_paired_difference_with_one_seed_pairs_the_videos():
    a_videos = {"v1": 0.9, "v2": 0.5, "v3": 0.7}
    b_videos = {"v1": 0.8, "v2": 0.4, "v3": 0.6, "v4": 0.1}  # v4 has no partner: left out
    difference = paired_difference({0: 0.7}, {0: 0.5}, a_by_video=a_videos, b_by_video=b_videos)
    # every paired video differs by 0.1: the paired bootstrap has no spread
    assert difference.interval.method == BOOTSTRAP_OVER_VIDEOS and difference.interval.n == 1
    assert difference.interval.mean == pytest.approx(0.2)  # the headline: the runs' own values
    assert (difference.interval.low, difference.interval.high) == (pytest.approx(0.1), pytest.approx(0.1))
    assert difference.same_sign == 1


def test_paired_difference_without_shared_seeds():
    difference = paired_difference({0: 0.7}, {1: 0.5})
    assert difference.interval.n == 0 and difference.seeds == () and difference.same_sign == 0
