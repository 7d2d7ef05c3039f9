"""Paper A's capacity ladder (the artefact ``A.ladder``): the speed-up and the final gap against network size.

Our reduced profiles train networks 100-3000x smaller than the paper's 35.7 M-parameter U-Net, so a
verdict "does not hold at this scale" leaves open whether the gap closes as the network grows.  The
ladder answers with the same experiment at several widths: per rung, KL-8d-b16 against Baseline-b16
with the same network (``dim``, ``dim_mults``), data, batch and learning rate, several seeds, judged
exactly as the headline pair (:mod:`kl_repro.paper_a.statistics`): the speed-up to the baseline's
plateau level and the final gap, each with its 95 % interval over seeds.

The trend is a least-squares line through every seed's value against ``log10`` of the parameter count
(log speed-up; log of KL's final score over the same seed's baseline score), with the t-interval of
its slope (``n - 2`` degrees of freedom): a slope whose interval lies above zero means the speed-up grows
with the network.  The line's value at the paper's 35.7 M parameters is printed as what it is, an
extrapolation over the decades between the largest rung and the paper's network.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import matplotlib.ticker as mticker
import numpy as np
from scipy import stats as sps

from kl_repro.core import store
from kl_repro.core.registry import paper_values
from kl_repro.core.verdict import NOT_TESTED, not_tested
from kl_repro.nets import count_parameters
from kl_repro.paper_a import statistics
from kl_repro.paper_a.forest import WORD_COLOURS
from kl_repro.paper_a.results import Results, absent, final_by_seed, final_scores, speedup_target
from kl_repro.paper_a.training.run import build_model

__all__ = ["paper_point", "n_params", "rung_pairs", "slope_interval", "trends", "ladder_verdict", "ladder_table"]

LEVEL = 0.95


def paper_point() -> dict:
    """The paper's point at the ladder's right end: its network's parameters, speed-up and final score ratio (Table 1, MNIST-32)."""
    pv = paper_values("A")
    mnist = pv["table1"]["MNIST-32"]
    return {"params": float(pv["network"]["params"]), "speedup": float(pv["claims"]["speedup"]["value"]),
            "ratio": mnist["KL-8d-b16"] / mnist["Baseline-b16"]}


def n_params(planned) -> int:
    """Parameters of the network a planned run trains (built on the CPU, untrained)."""
    return count_parameters(build_model(planned.config))


def _net_key(planned) -> tuple:
    n = planned.config.net
    return (planned.spec.data, planned.config.train.B, planned.config.train.lr, n.dim, tuple(n.dim_mults))


def rung_pairs(res: Results) -> list[dict]:
    """One dict per KL run of ``A.ladder``, paired with the baseline of the same network, data, ``B`` and lr;
    by parameter count.  Each holds both effects and the per-seed values the trend is fitted to."""
    plans = {s.id: res.planned(s.id) for s in res.runs("A.ladder")}
    specs = [s for s in res.runs("A.ladder") if plans[s.id]]
    bases = {_net_key(plans[s.id][0]): s for s in specs if s.params.get("model") == "baseline"}
    out = []
    for s in specs:
        if s.params.get("model") == "baseline" or _net_key(plans[s.id][0]) not in bases:
            continue
        base = bases[_net_key(plans[s.id][0])]
        per_seed = statistics.seed_speedups(res.curve(base.id), res.curve(s.id), s.seeds)
        kl_f, base_f = final_by_seed(res, s.id), final_by_seed(res, base.id)
        log_ratio = {seed: math.log(kl_f[seed] / base_f[seed]) for seed in kl_f
                     if seed in base_f and kl_f[seed] > 0 and base_f[seed] > 0}
        out.append({"params": n_params(plans[base.id][0]), "dim": plans[s.id][0].config.net.dim, "data": s.data,
                    "kl": s.label, "baseline": base.label, "kl_id": s.id, "base_id": base.id,
                    "effect": statistics.speedup_effect(per_seed, target=speedup_target(s.data)),
                    "final_gap": statistics.final_gap_effect(final_scores(res, s.id), final_scores(res, base.id)),
                    "log_speedups": [math.log(p["speedup"]) for p in per_seed if p["speedup"] > 0],
                    "log_ratios": list(log_ratio.values())})
    return sorted(out, key=lambda p: p["params"])


def slope_interval(x, y, level: float = LEVEL) -> dict:
    """Least-squares line ``y = a + b x``: slope ``b`` with its t-interval, and a function for the mean at any ``x``
    with its interval (``predict``).  NaN bounds with fewer than 3 points or one distinct ``x``."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    n = len(x)
    if n < 3 or np.ptp(x) == 0:
        b = float("nan")
        return {"slope": b, "lo": b, "hi": b, "n": n, "predict": lambda x0: (b, b, b)}
    b, a = np.polyfit(x, y, 1)
    resid = y - (a + b * x)
    s2 = float(resid @ resid) / (n - 2)
    sxx = float(((x - x.mean()) ** 2).sum())
    t = float(sps.t.ppf(0.5 + level / 2, n - 2))
    half = t * math.sqrt(s2 / sxx)

    def predict(x0: float) -> tuple[float, float, float]:
        m = a + b * x0
        h = t * math.sqrt(s2 * (1 / n + (x0 - x.mean()) ** 2 / sxx))
        return m, m - h, m + h

    return {"slope": float(b), "lo": float(b - half), "hi": float(b + half), "n": n, "predict": predict}


def _fit(pairs: list[dict], key: str) -> dict:
    xs = [math.log10(p["params"]) for p in pairs for _ in p[key]]
    ys = [v for p in pairs for v in p[key]]
    return slope_interval(xs, ys)


def trends(pairs: list[dict]) -> dict:
    """Per effect (``speedup``, ``ratio``): the fitted slope per decade of parameters with its interval, the direction
    it supports, and the line's value (and interval) at the paper's parameter count, as ratios."""
    x_paper = math.log10(paper_point()["params"])
    out = {}
    for name, key in (("speedup", "log_speedups"), ("ratio", "log_ratios")):
        fit = _fit(pairs, key)
        if math.isnan(fit["lo"]):
            direction = NOT_TESTED
        elif fit["lo"] > 0:
            direction = "grows"
        elif fit["hi"] < 0:
            direction = "shrinks"
        else:
            direction = "no trend detectable"
        m, lo, hi = fit["predict"](x_paper)
        out[name] = {"slope": fit["slope"], "lo": fit["lo"], "hi": fit["hi"], "n": fit["n"], "direction": direction,
                     "at_paper": math.exp(m), "at_paper_lo": math.exp(lo), "at_paper_hi": math.exp(hi)}
    return out


def _trend_text(tr: dict, what: str) -> str:
    if tr["direction"] == NOT_TESTED:
        return f"{what}: too few seeds and sizes for a trend"
    said = f"{what} {tr['direction']} with the network" if tr["direction"] != "no trend detectable" else \
        f"{what}: no trend detectable with the network size"
    return (f"{said} (slope {tr['slope']:+.2f} [{tr['lo']:+.2f}, {tr['hi']:+.2f}] "
            f"in log per decade of parameters, {tr['n']} seeds)")


def ladder_verdict(pairs: list[dict]) -> str:
    """The sentence of ``A.ladder``: each rung's speed-up, the trends, and the straight line's value at 35.7 M."""
    judged = [p for p in pairs if p["effect"]["n"]]
    if len(judged) < 2:
        return not_tested("the ladder needs at least two network sizes with scores")
    paper = paper_point()
    span = judged[-1]["params"] / judged[0]["params"]
    rungs = "; ".join(f"{_size(p['params'])}: {statistics.interval_of(p['effect']).text(unit='x')}, "
                      f"{p['effect']['word'].lower()}" for p in judged)
    tr = trends(judged)
    decades = math.log10(paper["params"] / judged[-1]["params"])
    sp = tr["speedup"]
    extrap = ("" if sp["direction"] == NOT_TESTED else
              f" A straight line through the seeds reaches {sp['at_paper']:.2g}x [{sp['at_paper_lo']:.2g}, "
              f"{sp['at_paper_hi']:.2g}] at the paper's {paper['params'] / 1e6:.1f} M parameters (paper: "
              f"{paper['speedup']:g}x): an extrapolation over {decades:.1f} decades, not a measurement.")
    return (f"Speed-up of {judged[0]['kl']} over {judged[0]['baseline']} across a {span:.0f}x range of network sizes "
            f"({judged[0]['data']}): {rungs}. {_trend_text(sp, 'The speed-up')}; "
            f"{_trend_text(tr['ratio'], 'the final score ratio KL / baseline')}.{extrap}")


def _size(n: float) -> str:
    """``"12.9 k"`` or ``"35.7 M"`` parameters."""
    return f"{n / 1e3:.3g} k" if n < 1e6 else f"{n / 1e6:.3g} M"


def _row(p: dict) -> dict:
    return ({"parameters": p["params"], "dim": p["dim"], "KL run": p["kl_id"], "baseline": p["base_id"]}
            | statistics.effect_columns(p["effect"], p["final_gap"], plateau=True))


def _panel(ax, pairs: list[dict], key: str, shift: float, title: str, paper_value: float, tr: dict) -> None:
    x = np.array([p["params"] for p in pairs], float)
    for p, xi in zip(pairs, x):
        iv = p[key]["interval"]
        c = WORD_COLOURS.get(p[key]["word"], "k")
        if not math.isnan(iv["lo"]):
            ax.plot([xi, xi], [iv["lo"] + shift, iv["hi"] + shift], color=c, lw=2.5, solid_capstyle="butt")
        ax.plot([xi], [iv["estimate"] + shift], "o", color=c, ms=7)
    paper = paper_point()
    if tr["direction"] != NOT_TESTED:
        xs = np.geomspace(x.min(), paper["params"], 50)
        ax.plot(xs, np.exp(np.log(tr["at_paper"]) + tr["slope"] * (np.log10(xs) - math.log10(paper["params"]))),
                color="0.5", lw=1, ls="--", label="straight line through the seeds (extrapolated)")
    ax.plot([paper["params"]], [paper_value], "*", color="tab:blue", ms=14, label=f"paper ({paper_value:.2g})")
    ax.axhline(1.0, color="k", lw=0.8, ls=":")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(mticker.FormatStrFormatter("%.2g"))
    ax.yaxis.set_minor_formatter(mticker.FormatStrFormatter("%.2g"))
    ax.set_xlabel("network parameters")
    ax.set_title(title, fontsize="small")
    ax.legend(fontsize="x-small")


def _figure(pairs: list[dict]):
    """Speed-up and final score ratio against parameter count, with 95 % intervals, the fitted line and the paper's point."""
    tr, paper = trends(pairs), paper_point()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    _panel(axes[0], pairs, "effect", 0.0, "speed-up to the baseline's plateau (x)", paper["speedup"], tr["speedup"])
    _panel(axes[1], pairs, "final_gap", 1.0, "final score ratio, KL / baseline (lower: KL better)", paper["ratio"],
           tr["ratio"])
    fig.suptitle(f"Capacity ladder: {pairs[0]['kl']} against {pairs[0]['baseline']} ({pairs[0]['data']}), "
                 "95 % intervals over seeds (colour: verdict)", fontsize="small")
    fig.tight_layout()
    return fig


def ladder_table(res: Results) -> tuple[list[dict], object]:
    """One row per rung (module docstring), stored as the artefact ``A.ladder`` with its figure and verdict.

    Returns the rows and the figure (None without pairs).
    """
    if absent(res, "A.ladder"):
        return [], None
    pairs = rung_pairs(res)
    judged = [p for p in pairs if p["effect"]["n"]]
    rows = [_row(p) for p in pairs]
    fig = _figure(judged) if len(judged) >= 1 else None
    tr = trends(judged) if judged else {}
    paper = paper_point()
    store.save_artefact(res.name, "A.ladder", {
        "title": "The speed-up and the final gap against network size (capacity ladder)",
        "ours": {"rows": rows, "trends": tr, "profile": res.name,
                 "pairs": [{k: v for k, v in p.items() if k not in ("log_speedups", "log_ratios")} for p in pairs]},
        "paper": {"value": paper, "source": "Paper A, Sec. 6.3 (about 2x) and Table 1 (MNIST-32, KL-8d-b16 3.60 against "
                  "Baseline-b16 5.35) at its 35.7 M-parameter network"},
        "paper_summary": f"{paper['speedup']:g}x and a score ratio of {paper['ratio']:.2f} at {paper['params'] / 1e6:.1f} M",
        "ours_summary": "; ".join(f"{_size(r['parameters'])}: {r['speed-up']:.2g}x" for r in rows
                                  if r["speed-up"] == r["speed-up"]),
        "verdict": ladder_verdict(pairs)}, fig)
    return rows, fig
