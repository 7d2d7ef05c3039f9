"""Confidence intervals over seeds and curve smoothing, for claims judged from a few training runs (Methods E).

Nothing here knows either paper.  A claim about training ("reaches the target faster", "ends lower") is
judged from one number per training seed; with the 2-5 seeds a CPU profile affords, a percentile bootstrap
alone is too narrow (with 3 values it can only resample 10 distinct means), so :func:`mean_interval` and
:func:`difference_interval` report the *wider* of the percentile bootstrap and the Student-t interval
(Welch's for a difference); fewer than 2 values per group give ``nan`` bounds, which
:func:`kl_repro.core.verdict.judge_interval` turns into "Not tested".

* :func:`smooth` : centred running mean of a curve, on the log scale for positive scores;
* :func:`first_crossing` : the first (linearly interpolated) step where a curve falls to a level;
* :func:`mean_interval`, :func:`difference_interval` : :class:`Interval` of a mean / of a difference of means.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats as sps

__all__ = ["Interval", "smooth", "first_crossing", "bootstrap_mean", "t_interval", "mean_interval",
           "difference_interval"]

LEVEL = 0.95
N_BOOT = 4000


@dataclass(frozen=True)
class Interval:
    """An estimate with its ``level`` confidence interval ``[lo, hi]`` from ``n`` values (``method`` says how)."""

    estimate: float
    lo: float
    hi: float
    n: int
    method: str
    level: float = LEVEL

    def as_dict(self) -> dict:
        return asdict(self)

    def mapped(self, fn) -> "Interval":
        """The interval of ``fn(effect)`` for an increasing ``fn`` (e.g. ``exp`` of a log-ratio)."""
        return Interval(fn(self.estimate), fn(self.lo), fn(self.hi), self.n, self.method, self.level)

    def text(self, fmt: str = ".2g", unit: str = "") -> str:
        """``"1.3x [0.9, 1.8] (95 % CI, 3 seeds)"``; ``"no interval (1 seed)"`` when the bounds are nan."""
        seeds = f"{self.n} seed{'s' if self.n != 1 else ''}"
        if math.isnan(self.lo):
            return f"{self.estimate:{fmt}}{unit}, no interval ({seeds})"
        return (f"{self.estimate:{fmt}}{unit} [{self.lo:{fmt}}, {self.hi:{fmt}}] "
                f"({100 * self.level:.0f} % CI, {seeds})")


def smooth(values, window: int = 3, log: bool = True) -> np.ndarray:
    """Centred running mean of ``values`` ``(S,)`` over ``window`` evaluation points (shorter at the ends).

    With ``log`` (positive scores) the mean is geometric, so one noisy evaluation moves the curve by a
    factor, not by an amount that depends on the curve's level.
    """
    v = np.asarray(values, dtype=np.float64)
    if log:
        v = np.log(np.maximum(v, 1e-300))
    half = max(int(window), 1) // 2
    out = np.array([v[max(0, i - half): i + half + 1].mean() for i in range(len(v))])
    return np.exp(out) if log else out


def first_crossing(steps, values, level: float) -> float | None:
    """The first step at which the curve ``values(steps)`` falls to ``<= level``, interpolated linearly
    between the two evaluation points around the crossing; ``None`` when it never does."""
    s, v = np.asarray(steps, dtype=np.float64), np.asarray(values, dtype=np.float64)
    below = np.nonzero(v <= level)[0]
    if len(below) == 0:
        return None
    j = int(below[0])
    if j == 0 or v[j - 1] == v[j]:
        return float(s[j])
    frac = (v[j - 1] - level) / (v[j - 1] - v[j])
    return float(s[j - 1] + frac * (s[j] - s[j - 1]))


def _percentiles(boot: np.ndarray, level: float) -> tuple[float, float]:
    a = (1 - level) / 2
    return float(np.quantile(boot, a)), float(np.quantile(boot, 1 - a))


def bootstrap_mean(values, level: float = LEVEL, n_boot: int = N_BOOT, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (resampling the values with replacement)."""
    v = np.asarray(values, dtype=np.float64)
    idx = np.random.default_rng(seed).integers(0, len(v), size=(n_boot, len(v)))
    return _percentiles(v[idx].mean(axis=1), level)


def t_interval(values, level: float = LEVEL) -> tuple[float, float]:
    """Student-t interval of the mean of ``values`` (n >= 2)."""
    v = np.asarray(values, dtype=np.float64)
    half = sps.t.ppf((1 + level) / 2, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v))
    return float(v.mean() - half), float(v.mean() + half)


def _wider(a: tuple[float, float], b: tuple[float, float]) -> tuple[float, float]:
    return min(a[0], b[0]), max(a[1], b[1])


def mean_interval(values, level: float = LEVEL, seed: int = 0) -> Interval:
    """The mean of ``values`` (one per seed) with the wider of the percentile-bootstrap and Student-t intervals."""
    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    if len(v) < 2:
        est = float(v.mean()) if len(v) else math.nan
        return Interval(est, math.nan, math.nan, len(v), "fewer than 2 seeds: no interval", level)
    lo, hi = _wider(bootstrap_mean(v, level, seed=seed), t_interval(v, level))
    return Interval(float(v.mean()), lo, hi, len(v), "wider of percentile bootstrap and Student t", level)


def _welch(a: np.ndarray, b: np.ndarray, level: float) -> tuple[float, float]:
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        diff = float(a.mean() - b.mean())
        return diff, diff
    dof = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    half = sps.t.ppf((1 + level) / 2, dof) * se
    diff = float(a.mean() - b.mean())
    return diff - half, diff + half


def difference_interval(a, b, level: float = LEVEL, n_boot: int = N_BOOT, seed: int = 0) -> Interval:
    """``mean(a) - mean(b)`` of two independent groups of seeds, with the wider of a two-sample percentile
    bootstrap (each group resampled on its own) and Welch's t interval; ``n`` is the smaller group's size."""
    a = np.asarray([x for x in a if x is not None], dtype=np.float64)
    b = np.asarray([x for x in b if x is not None], dtype=np.float64)
    n = min(len(a), len(b))
    est = float(a.mean() - b.mean()) if n else math.nan
    if n < 2:
        return Interval(est, math.nan, math.nan, n, "fewer than 2 seeds in a group: no interval", level)
    rng = np.random.default_rng(seed)
    boot = (a[rng.integers(0, len(a), (n_boot, len(a)))].mean(1) - b[rng.integers(0, len(b), (n_boot, len(b)))].mean(1))
    lo, hi = _wider(_percentiles(boot, level), _welch(a, b, level))
    return Interval(est, lo, hi, n, "wider of two-sample percentile bootstrap and Welch t", level)
