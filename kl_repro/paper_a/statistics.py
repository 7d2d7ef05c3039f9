"""Paper A's effects with confidence intervals over seeds: the speed-up to the baseline's plateau, the final gap.

Paper A claims KL "reaches the baseline's best FID about 2x faster" (abstract, Sec. 6.3, Fig. 2) and
"ultimately yields much lower FID" (Table 1).  The paper does not define "reaching the best"; ours
(Methods E, the Deviations page):

* **Target: the baseline's plateau level, on smoothed curves.**  Each seed's curve is smoothed by a
  centred geometric running mean over :data:`SMOOTH_WINDOW` evaluations
  (:func:`kl_repro.evaluation.intervals.smooth`); the target is ``(1 + TARGET_TOL)`` times the smoothed
  baseline's best.  Why: the minimum of single noisy evaluations is a draw from the metric's noise (on a
  flat plateau its step is random along the whole plateau), and a target a few per cent above the best
  is reached at a well-defined step, where the curve arrives on its plateau.
* **Steps to target**: the first step, interpolated linearly between evaluations, where the smoothed
  curve falls to the target (:func:`kl_repro.evaluation.intervals.first_crossing`).  Speed-up of a
  seed = baseline steps / KL steps, KL seed ``i`` against baseline seed ``i``.
* **Censored seeds are kept**: a KL seed that never reaches the target within its ``S`` steps enters
  with speed-up ``s_B / S``, the largest value its data allow (the true value is smaller), and is
  counted as censored; the interval is then optimistic for KL, never silently pessimistic.
* **Plateau check**: a baseline seed has *plateaued* when its smoothed curve falls by less than
  :data:`PLATEAU_TOL` over the last third of the run; otherwise its "best" is its last step and the
  speed-up is cut off by the run length, which the verdict says.
* **Intervals**: the speed-up's interval is that of the mean log speed-up (a geometric mean), the final
  gap's that of the difference of mean log final scores (``KL / baseline - 1``), both the wider of a
  percentile bootstrap and a t interval (:mod:`kl_repro.evaluation.intervals`).  The verdict word is
  :func:`kl_repro.core.verdict.judge_interval` of that interval.
* **Equal compute**: a KL step passes ``B d`` rows through the network, the baseline's ``B``
  (:mod:`kl_repro.paper_a.losses`, ``n_eval``); the speed-up at equal network evaluations is the
  speed-up times ``evals_base / evals_kl`` per step.
"""

from __future__ import annotations

import math

import numpy as np

from kl_repro.core.verdict import judge_interval
from kl_repro.evaluation.intervals import Interval, difference_interval, first_crossing, mean_interval, smooth

__all__ = ["SMOOTH_WINDOW", "TARGET_TOL", "PLATEAU_TOL", "seed_curve", "plateaued", "seed_speedup", "seed_speedups", "effect_columns",
           "speedup_effect", "final_gap_effect", "interval_of", "ci_text"]

SMOOTH_WINDOW = 3  # evaluations in the centred running mean
TARGET_TOL = 0.05  # target = (1 + TARGET_TOL) x the smoothed baseline's best
PLATEAU_TOL = 0.05  # plateaued: the smoothed curve falls by less than this over the last third of the run


def seed_curve(rows: list[dict], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Steps ``(S,)`` and scores ``(S,)`` of one seed's eval rows (step 0 left out), sorted by step."""
    rs = sorted((r for r in rows if r["seed"] == seed and r["step"] > 0), key=lambda r: r["step"])
    return np.array([r["step"] for r in rs], dtype=np.float64), np.array([r["value"] for r in rs], dtype=np.float64)


def plateaued(steps: np.ndarray, smoothed: np.ndarray, tol: float = PLATEAU_TOL) -> bool:
    """True when the smoothed curve falls by less than ``tol`` (relative) over the last third of the run."""
    if len(steps) < 3:
        return False
    j = int(np.searchsorted(steps, steps[-1] * 2 / 3))
    return bool(smoothed[-1] >= (1 - tol) * smoothed[min(j, len(steps) - 1)])


def seed_speedup(base_rows: list[dict], kl_rows: list[dict], seed: int) -> dict | None:
    """One seed's target, steps to target and speed-up (module docstring); None when a curve is missing."""
    bs, bv = seed_curve(base_rows, seed)
    ks, kv = seed_curve(kl_rows, seed)
    if len(bs) == 0 or len(ks) == 0:
        return None
    sb = smooth(bv, SMOOTH_WINDOW)
    level = (1 + TARGET_TOL) * float(sb.min())
    s_base = first_crossing(bs, sb, level)
    s_kl = first_crossing(ks, smooth(kv, SMOOTH_WINDOW), level)
    censored = s_kl is None
    used = float(ks[-1]) if censored else s_kl
    return {"seed": seed, "target": level, "baseline_step": s_base, "kl_step": s_kl, "kl_steps_run": float(ks[-1]),
            "speedup": s_base / used, "censored": censored, "baseline_plateaued": plateaued(bs, sb)}


def seed_speedups(base_rows: list[dict], kl_rows: list[dict], seeds) -> list[dict]:
    """:func:`seed_speedup` of every seed in ``seeds`` that both curves have (eval rows of all seeds, step 0 left out)."""
    out = []
    for seed in seeds:
        b = [r for r in base_rows if r["seed"] == seed and r["step"] > 0]
        k = [r for r in kl_rows if r["seed"] == seed and r["step"] > 0]
        if b and k:
            out.append(seed_speedup(b, k, seed))
    return out


def speedup_effect(per_seed: list[dict], target: float | None = 2.0, cost_ratio: float = 1.0) -> dict:
    """The geometric-mean speed-up of ``per_seed`` (:func:`seed_speedup` dicts) with its interval and word.

    ``target`` is the paper's factor (2: "twice faster"); ``cost_ratio`` = network evaluations per step of
    the baseline / of the KL run, for the speed-up at equal compute (judged against "faster at all", 1).
    """
    logs = [math.log(p["speedup"]) for p in per_seed if p["speedup"] > 0]
    iv = mean_interval(logs).mapped(math.exp)
    compute = iv.mapped(lambda x: x * cost_ratio)
    return {"interval": iv.as_dict(), "word": judge_interval(iv.lo, iv.hi, null=1.0, target=target),
            "n": len(per_seed), "censored": sum(p["censored"] for p in per_seed),
            "baseline_plateaued": sum(p["baseline_plateaued"] for p in per_seed), "target": target,
            "cost_ratio": cost_ratio, "compute_interval": compute.as_dict(),
            "compute_word": judge_interval(compute.lo, compute.hi, null=1.0)}


def final_gap_effect(kl_scores: list[float], base_scores: list[float], paper_ratio: float | None = None) -> dict:
    """KL's final score relative to the baseline's, ``mean log KL - mean log baseline`` shown as ``KL/base - 1``.

    Lower scores are better, so the claim is a gap below 0; ``paper_ratio`` (e.g. 3.60 / 5.35 on MNIST,
    Table 1) is the paper's size of it: an interval entirely below it is "Holds", below 0 only "Partly holds".
    """
    kl = [math.log(v) for v in kl_scores if v is not None and v > 0]
    base = [math.log(v) for v in base_scores if v is not None and v > 0]
    log_iv = difference_interval(kl, base)
    target = None if paper_ratio is None else math.log(paper_ratio)
    word = judge_interval(log_iv.lo, log_iv.hi, null=0.0, target=target, larger_is_better=False)
    rel = log_iv.mapped(math.expm1)
    return {"interval": rel.as_dict(), "word": word, "n_kl": len(kl), "n_base": len(base),
            "kl_mean": float(np.mean(kl_scores)) if kl else None, "base_mean": float(np.mean(base_scores)) if base else None,
            "paper_gap": None if paper_ratio is None else paper_ratio - 1}


def interval_of(effect: dict, key: str = "interval") -> Interval:
    """The :class:`Interval` stored (as a dict) in an effect of :func:`speedup_effect` / :func:`final_gap_effect`."""
    return Interval(**effect[key])


def ci_text(iv: Interval, fmt: str = ".2g") -> str:
    """``"[lo, hi]"`` of an interval for a table cell, ``"–"`` without one."""
    return "–" if math.isnan(iv.lo) else f"[{iv.lo:{fmt}}, {iv.hi:{fmt}}]"


def effect_columns(speedup: dict, final_gap: dict, plateau: bool = False) -> dict:
    """The table columns of one KL-against-baseline pair (readings, ladder): the speed-up with its interval,
    verdict and censored seeds (and, with ``plateau``, the baselines that plateaued), then the final gap."""
    sp, gap = interval_of(speedup), interval_of(final_gap)
    cols = {"seeds": speedup["n"], "speed-up": sp.estimate, "95 % CI": ci_text(sp), "speed-up verdict": speedup["word"],
            "censored": f"{speedup['censored']}/{speedup['n']}"}
    if plateau:
        cols["baseline plateaued"] = f"{speedup['baseline_plateaued']}/{speedup['n']}"
    return cols | {"final gap": gap.estimate, "95 % CI (gap)": ci_text(gap, "+.0%"), "gap verdict": final_gap["word"]}
