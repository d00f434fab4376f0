"""Statistics of a multi-seed study: per-config summaries over seeds and the paired (same-seed)
difference of a compared config to the baseline, with a Student-t and a bootstrap 95 % interval and
a plain verdict. Pure functions on plain numbers, testable alone.

Pairing by seed removes what the seed does to both runs alike (the data order, the initialisation of
the heads, the augmentations): the interval is that of the mean of the per-seed differences, the
question "over seeds, does the method move the metric?". With n seeds the t interval has n - 1
degrees of freedom, so 3-4 seeds give wide intervals: that width is the honest answer.
"""
import math
import random
from typing import Dict, List, Sequence, Tuple

VERDICTS = ("better", "worse", "within noise")


def summary(values: Sequence[float]) -> Dict[str, float]:
    """``{"n", "mean", "std" (sample standard deviation, n - 1; NaN for one value), "min", "max"}``
    of the finite values (a NaN metric, e.g. no detections, is left out and not counted)."""
    finite = [float(v) for v in values if v is not None and math.isfinite(v)]
    n = len(finite)
    if n == 0:
        return {"n": 0, "mean": math.nan, "std": math.nan, "min": math.nan, "max": math.nan}
    mean = math.fsum(finite) / n
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in finite) / (n - 1)) if n > 1 else math.nan
    return {"n": n, "mean": mean, "std": std, "min": min(finite), "max": max(finite)}


def paired_differences(baseline: Dict[int, float], other: Dict[int, float]) -> Dict[int, float]:
    """``{seed: other[seed] - baseline[seed]}`` over the seeds both have, with finite values."""
    return {
        s: other[s] - baseline[s]
        for s in sorted(set(baseline) & set(other))
        if baseline[s] is not None and other[s] is not None and math.isfinite(baseline[s]) and math.isfinite(other[s])
    }


# --- Student t quantile (no SciPy here): regularised incomplete beta by Lentz's continued fraction


def _betacf(a: float, b: float, x: float, eps: float = 1e-15, max_iter: int = 500) -> float:
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, max_iter + 1):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < eps:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """CDF of Student's t distribution with ``df`` degrees of freedom."""
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (bisection on :func:`t_cdf`,
    to ~1e-12)."""
    if not 0.0 < p < 1.0 or df <= 0:
        raise ValueError(f"t_quantile: need 0 < p < 1 and df > 0, got p={p}, df={df}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


def t_interval(diffs: Sequence[float], confidence: float = 0.95) -> Tuple[float, float]:
    """Student-t confidence interval of the mean of ``diffs`` (n - 1 degrees of freedom);
    (NaN, NaN) with fewer than two values."""
    n = len(diffs)
    if n < 2:
        return (math.nan, math.nan)
    s = summary(diffs)
    half = t_quantile(0.5 + confidence / 2.0, n - 1) * s["std"] / math.sqrt(n)
    return (s["mean"] - half, s["mean"] + half)


def bootstrap_interval(diffs: Sequence[float], confidence: float = 0.95, resamples: int = 10000,
                       seed: int = 0) -> Tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``diffs``: ``resamples`` resamples with
    replacement drawn by ``random.Random(seed)`` (the same numbers give the same interval); (NaN, NaN)
    with fewer than two values. With few seeds it is narrower than the t interval (it cannot see
    beyond the observed differences): report both."""
    n = len(diffs)
    if n < 2:
        return (math.nan, math.nan)
    rng = random.Random(seed)
    values = [float(d) for d in diffs]
    means = sorted(math.fsum(rng.choices(values, k=n)) / n for _ in range(resamples))
    alpha = (1.0 - confidence) / 2.0
    # the order statistics at alpha and 1 - alpha (linear interpolation, numpy's default)
    return (_percentile(means, alpha), _percentile(means, 1.0 - alpha))


def _percentile(sorted_values: List[float], q: float) -> float:
    pos = q * (len(sorted_values) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def verdict(interval: Tuple[float, float], higher_is_better: bool = True) -> str:
    """"better" when the whole interval lies on the good side of 0, "worse" on the bad side,
    "within noise" when it contains 0 (or cannot be computed: fewer than two seeds)."""
    lo, hi = interval
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo <= 0.0 <= hi:
        return "within noise"
    up = lo > 0.0
    return "better" if up == higher_is_better else "worse"


def compare(baseline: Dict[int, float], other: Dict[int, float], confidence: float = 0.95,
            resamples: int = 10000, bootstrap_seed: int = 0, higher_is_better: bool = True) -> Dict:
    """The paired comparison of one metric: ``{"seeds", "diffs", "mean", "std", "t_interval",
    "bootstrap_interval", "verdict"}``; the verdict follows the t interval (the bootstrap one is
    shown beside it: with few seeds it is too narrow to decide on)."""
    paired = paired_differences(baseline, other)
    diffs = list(paired.values())
    s = summary(diffs)
    t_int = t_interval(diffs, confidence)
    return {
        "seeds": list(paired),
        "diffs": diffs,
        "mean": s["mean"],
        "std": s["std"],
        "t_interval": list(t_int),
        "bootstrap_interval": list(bootstrap_interval(diffs, confidence, resamples, bootstrap_seed)),
        "verdict": verdict(t_int, higher_is_better),
    }


def format_interval(interval: Sequence[float], digits: int = 2) -> str:
    lo, hi = interval
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "-"
    return f"[{lo:+.{digits}f}, {hi:+.{digits}f}]".replace("-", "\u2212")

