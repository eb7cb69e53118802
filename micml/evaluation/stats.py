"""How sure a table's numbers are: intervals over seeds, or over test videos when one seed was run.

* Several seeds (n >= 2): mean and sample std (ddof 1) over the seeds, and the t interval
  ``mean +- t(1 - alpha/2, n - 1) * std / sqrt(n)``: the training run is the unit that varies.
* One seed: the run's own value is the headline, and the interval is a percentile bootstrap over
  the test videos of that run (the videos resampled with replacement, a fixed generator seed so a
  table is reproduced exactly). It says how much the score depends on which videos were tested,
  not how much it depends on the seed, and the method column says so.
* One seed and fewer than two videos (or a metric pooled over all videos, which has no per-video
  value to resample): no interval. Never an interval made up from nothing.

Paired differences use the same rules on differences of the same seeds (or the same videos).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0  # fixed: the same results give the same interval, run after run
T_OVER_SEEDS = "t over seeds"
BOOTSTRAP_OVER_VIDEOS = "bootstrap over videos"
NO_INTERVAL_ONE_VIDEO = "none (one seed, fewer than two videos)"
NO_INTERVAL_NO_VIDEOS = "none (one seed, no per-video values)"
NO_VALUE = "none (no run)"


@dataclass(frozen=True)
class Interval:
    """A headline value and how far it may move: `low`/`high` NaN when there is no interval."""

    mean: float
    std: float  # over seeds (ddof 1); NaN with one seed
    low: float
    high: float
    n: int  # seeds behind the mean
    method: str


@dataclass(frozen=True)
class Difference:
    """A paired difference a - b and its interval, with how many seeds agree with its sign."""

    interval: Interval
    same_sign: int  # seeds whose own difference has the sign of the mean difference
    seeds: tuple  # the seeds both runs share


def finite(values: Sequence[float] | Mapping) -> np.ndarray:
    values = values.values() if isinstance(values, Mapping) else values
    array = np.asarray([float(value) for value in values], dtype=float)
    return array[np.isfinite(array)]


def t_interval(values: np.ndarray, confidence: float) -> Interval:
    """Mean +- t * std / sqrt(n) over at least two values."""
    n = len(values)
    mean, std = float(values.mean()), float(values.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * std / math.sqrt(n)
    return Interval(mean, std, mean - half, mean + half, n, T_OVER_SEEDS)


def bootstrap_over_videos(headline: float, per_video: Sequence[float] | Mapping | None,
                          confidence: float) -> Interval:
    """One run: its headline value, and a percentile bootstrap of the video mean around it."""
    if per_video is None:
        return Interval(headline, math.nan, math.nan, math.nan, 1, NO_INTERVAL_NO_VIDEOS)
    videos = finite(per_video)
    if len(videos) < 2:
        return Interval(headline, math.nan, math.nan, math.nan, 1, NO_INTERVAL_ONE_VIDEO)
    result = stats.bootstrap((videos,), np.mean, n_resamples=BOOTSTRAP_RESAMPLES, confidence_level=confidence,
                             method="percentile", random_state=np.random.default_rng(BOOTSTRAP_SEED))
    ci = result.confidence_interval
    return Interval(headline, math.nan, float(ci.low), float(ci.high), 1, BOOTSTRAP_OVER_VIDEOS)


def seed_interval(values: Sequence[float] | Mapping, confidence: float = CONFIDENCE, *,
                  per_video: Sequence[float] | Mapping | None = None) -> Interval:
    """Mean, std and interval of one metric over the seeds that were run (NaN values: not run).

    With one seed, `per_video` holds that run's per-video values (the headline is their mean, as
    dsfnet_f1's `mean` row); None (a metric pooled over all videos: AP50, L-mAP) means no interval.
    """
    seeds = finite(values)
    if len(seeds) >= 2:
        return t_interval(seeds, confidence)
    if len(seeds) == 1:
        return bootstrap_over_videos(float(seeds[0]), per_video, confidence)
    return Interval(math.nan, math.nan, math.nan, math.nan, 0, NO_VALUE)


def paired_difference(a_by_seed: Mapping, b_by_seed: Mapping, confidence: float = CONFIDENCE, *,
                      a_by_video: Mapping | None = None, b_by_video: Mapping | None = None) -> Difference:
    """a - b on the seeds both were run with: a t interval over the seeds' differences.

    With one shared seed, `a_by_video` and `b_by_video` ({video: value} of that seed's runs) give a
    paired bootstrap over the videos both were scored on; the headline stays the difference of
    the two runs' values.
    """
    shared = tuple(seed for seed in a_by_seed if seed in b_by_seed
                   and np.isfinite(float(a_by_seed[seed])) and np.isfinite(float(b_by_seed[seed])))
    differences = {seed: float(a_by_seed[seed]) - float(b_by_seed[seed]) for seed in shared}
    per_video = None
    if len(shared) == 1 and a_by_video is not None and b_by_video is not None:
        per_video = [float(a_by_video[video]) - float(b_by_video[video]) for video in a_by_video if video in b_by_video]
    interval = seed_interval(differences, confidence, per_video=per_video)
    same_sign = sum(1 for value in differences.values() if np.sign(value) == np.sign(interval.mean))
    return Difference(interval, same_sign, shared)
