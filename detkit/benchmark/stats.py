"""The benchmark's statistics: medians of timings and a ratio of paired medians with a
percentile-bootstrap interval. (:func:`detkit.study.stats.bootstrap_interval` is another
bootstrap: that of the mean of seed differences, drawn otherwise.)"""
import math
from typing import Sequence

import numpy as np


def median(values: Sequence[float]) -> float:
    """The median of ``values`` as a float; NaN when there are none."""
    return float(np.median(values)) if len(values) else math.nan


def ratio_with_interval(times: Sequence[float], reference: Sequence[float], resamples: int = 2000, seed: int = 0):
    """Ratio of medians ``median(times) / median(reference)`` of paired measurements (round ``i`` of
    both), and its 95 % percentile-bootstrap interval over rounds resampled as pairs.

    Returns:
        (ratio, low, high); all NaN for empty input.
    """
    t, r = np.asarray(times, dtype=float), np.asarray(reference, dtype=float)
    if t.shape != r.shape or t.ndim != 1:
        raise ValueError(f"ratio_with_interval: need two 1-d sequences of the same length, got {t.shape} and {r.shape}")
    if t.size == 0:
        return math.nan, math.nan, math.nan
    ratio = float(np.median(t) / np.median(r))
    idx = np.random.default_rng(seed).integers(0, t.size, size=(resamples, t.size))
    boot = np.median(t[idx], axis=1) / np.median(r[idx], axis=1)
    low, high = np.percentile(boot, [2.5, 97.5])
    return ratio, float(low), float(high)
