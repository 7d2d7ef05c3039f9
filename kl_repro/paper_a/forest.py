"""The forest figure that opens paper A's results chapter: every claim's effect with its 95 % interval.

One row per (claim, profile, data set), read from the ``A.speedup`` artefact each profile stored
(:func:`kl_repro.paper_a.tables.speedup_table`; this profile's is made first), beside the paper's value:

* speed-up to the baseline's plateau level (paper: 2x; abstract, Sec. 6.3, Fig. 2);
* the same per network evaluation, i.e. at equal compute (the paper's 2x divided by its own KL-8d cost per
  step, 3.03x the baseline's in Table 2: about 0.66x; our derivation, not a number the paper states);
* the final score ratio ``KL / baseline`` (the final gap plus 1; paper: MNIST FID 3.60 against 5.35, 0.67, Table 1).

The marker is the estimate, the bar the 95 % interval (none with one seed), coloured by the verdict word.
Our metrics are FD_clf (digits) and the energy distance (toy2d), not FID: the gap is compared in sign and
rough size only.  The figure is stored as the artefact ``A.effects``.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt

from kl_repro.core import store
from kl_repro.core.profiles import PROFILES
from kl_repro.core.registry import paper_values
from kl_repro.core.verdict import DOES_NOT_HOLD, HOLDS, INCONCLUSIVE, NOT_TESTED, PARTLY
from kl_repro.paper_a.results import Results

__all__ = ["PANELS", "effect_rows", "draw_panel", "forest"]

WORD_COLOURS = {HOLDS: "tab:green", PARTLY: "tab:olive", INCONCLUSIVE: "tab:grey", DOES_NOT_HOLD: "tab:red",
                NOT_TESTED: "0.7"}
# (effect key in a pair, interval key, word key, title, null, log axis)
PANELS = (("effect", "interval", "word", "speed-up to the baseline's plateau (x)", 1.0, True),
          ("effect", "compute_interval", "compute_word", "speed-up per network evaluation (x)", 1.0, True),
          ("final_gap", "interval", "word", "final score ratio, KL / baseline", 1.0, True))


def _paper_values() -> tuple[float, float, float]:
    pv = paper_values("A")
    speed = pv["claims"]["speedup"]["value"]
    hours = pv["table2"]["hours_per_10k_steps"]
    mnist = pv["table1"]["MNIST-32"]
    return speed, speed / (hours["KL-8d"] / hours["Baseline-b16"]), mnist["KL-8d-b16"] / mnist["Baseline-b16"]


def effect_rows(profiles: tuple[str, ...] = PROFILES) -> list[dict]:
    """One row per (profile, data set, KL run, panel) with estimate, interval and verdict word, from stored artefacts."""
    rows = []
    for prof in profiles:
        art = store.load_artefact(prof, "A.speedup") or {}
        per_data = (art.get("ours") or {}).get("per_data", {})
        for data, sp in per_data.items():
            for p in sp["pairs"]:
                for key, ikey, wkey, title, _, _ in PANELS:
                    eff = p.get(key)
                    if not eff or not eff.get(ikey) or math.isnan(eff[ikey]["estimate"]):
                        continue
                    iv, shift = eff[ikey], 1.0 if key == "final_gap" else 0.0  # a gap KL/base - 1 is drawn as a ratio
                    rows.append({"panel": title, "profile": prof, "data": data, "pair": f"{p['kl']} vs {p['baseline']}",
                                 "estimate": iv["estimate"] + shift, "lo": iv["lo"] + shift, "hi": iv["hi"] + shift,
                                 "seeds": iv["n"], "verdict": eff[wkey]})
    return rows


def draw_panel(ax, rows: list[dict], title: str, null: float, log: bool, paper: float | None) -> None:
    """One panel: per row a marker at ``estimate``, a bar over ``[lo, hi]`` coloured by ``verdict``; the
    no-effect line at ``null`` and the paper's value (dashed; None: no line).  Row labels: ``label`` or
    profile, data set and pair."""
    labels = []
    for y, r in enumerate(rows):
        c = WORD_COLOURS.get(r["verdict"], "k")
        if not math.isnan(r["lo"]):
            ax.plot([r["lo"], r["hi"]], [y, y], color=c, lw=2.5, solid_capstyle="butt")
        ax.plot([r["estimate"]], [y], "o", color=c, ms=6)
        labels.append(r.get("label") or f"{r['profile']} · {r['data']} · {r['pair']} ({r['seeds']} seeds)")
    ax.axvline(null, color="k", lw=0.8, ls=":")
    if paper is not None:
        ax.axvline(paper, color="tab:blue", lw=1.2, ls="--", label=f"paper: {paper:.2g}")
    if ax.get_subplotspec().is_first_col():
        ax.set_yticks(range(len(rows)), labels, fontsize="x-small")
        ax.set_ylim(len(rows) - 0.5, -0.5)
    if log:
        ax.set_xscale("log")
    ax.set_title(title, fontsize="small")
    if paper is not None:
        ax.legend(fontsize="x-small", loc="lower right")


def forest(res: Results):
    """The forest figure of every paper-A effect with an interval, per profile, beside the paper's values.

    Reads the ``A.speedup`` artefacts (make this profile's first: ``tables.speedup_table(res)``); returns
    None when no profile has stored one.
    """
    rows = effect_rows()
    if not rows:
        return None
    paper = _paper_values()
    per_panel = [[r for r in rows if r["panel"] == title] for *_, title, _, _ in PANELS]
    n = max(len(p) for p in per_panel)
    fig, axes = plt.subplots(1, 3, figsize=(15, 1.2 + 0.38 * n), sharey=True)
    for ax, spec, prs, pv in zip(axes, PANELS, per_panel, paper):
        draw_panel(ax, prs, spec[3], spec[4], spec[5], pv)
    fig.suptitle("Paper A's effects with 95 % intervals over seeds (colour: verdict; green holds, olive partly, "
                 "grey inconclusive, red does not hold)", fontsize="small")
    fig.tight_layout()
    store.save_artefact(res.name, "A.effects", {
        "title": "Every paper-A effect with its interval, per profile", "ours": {"rows": rows},
        "paper": {"speedup": paper[0], "speedup_per_evaluation": paper[1], "final_ratio": paper[2],
                  "source": "Paper A, abstract and Fig. 2 (2x); Table 2 (KL-8d 3.03x time per step); Table 1 (MNIST)"},
        "paper_summary": f"2x faster; {paper[1]:.2g}x per network evaluation (derived); final ratio {paper[2]:.2f}",
        "ours_summary": f"{len(rows)} effects", "verdict": not_judged(rows)}, fig)
    return fig


def not_judged(rows: list[dict]) -> str:
    """The forest's own line: it collects the verdicts of ``A.speedup`` rather than making one."""
    words = sorted({r["verdict"] for r in rows})
    return f"{NOT_TESTED}, because this figure collects the verdicts of A.speedup ({', '.join(words)})."
