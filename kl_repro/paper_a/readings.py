"""Paper A's verdict against every reading of its lost equations (the artefact ``A.readings``).

Our copy of paper A lost its equations; the book's Methods page rebuilds them, and four choices the
speed-up may hinge on are our reading (the Deviations page lists each):

* ``k_cond``: how the network sees the term index ``k`` of the loss (19): a time offset ``t + k/d``
  (ours), a zero-initialised learned embedding added to the time embedding, or an added sinusoidal
  embedding of ``k`` (:mod:`kl_repro.nets`);
* ``kl_loss_form``: the squared error of the summed noise, ``||sum_k eps_k - sum_k e_k Z_k||^2`` (ours,
  Eq. 19 as rebuilt), or the sum of the ``d`` per-term errors (:mod:`kl_repro.paper_a.losses`);
* ``kl_noise_norm``: the truncated expansion's noise as it is (variance ``v_d(t) < 1``, ours) or
  renormalised to unit variance;
* ``lr``: the learning rate of the reduced profiles (ours 10x the paper's 1e-4, for nets trained minutes).

The runs of ``A.readings`` in a profile's matrix differ from the default reading in one of these each.
Every KL run is paired with the baseline of the same data set, batch size ``B`` and learning rate (a
baseline has no ``k``, loss form or KL noise), and judged exactly as the headline pair is
(:mod:`kl_repro.paper_a.statistics`): the speed-up to the baseline's plateau level and the final gap,
each with its 95 % interval over seeds.  The verdict names the most favourable reading and says whether
any reading makes the paper's claim hold.
"""

from __future__ import annotations


import matplotlib.pyplot as plt

from kl_repro.core import store
from kl_repro.core.verdict import HOLDS, NOT_TESTED, not_tested
from kl_repro.paper_a import statistics
from kl_repro.paper_a.forest import draw_panel
from kl_repro.paper_a.results import Results, absent, final_scores, speedup_target

__all__ = ["READINGS", "reading_of", "reading_name", "reading_pairs", "readings_table", "readings_verdict",
           "readings_sentence"]

#: (field, what it is): the choices of our reading that a run of ``A.readings`` may change.
READINGS = (("k_cond", "k conditioning"), ("kl_loss_form", "loss form"), ("kl_noise_norm", "KL noise"),
            ("lr", "learning rate"))


def reading_of(planned) -> dict:
    """The reading a planned run trains under: ``{field: value}`` for every field of :data:`READINGS`."""
    c = planned.config
    return {"k_cond": c.net.k_cond, "kl_loss_form": c.diffusion.kl_loss_form,
            "kl_noise_norm": c.diffusion.kl_noise_norm, "lr": c.train.lr}


def reading_name(reading: dict, default: dict) -> str:
    """``"ours (...)"`` for the default reading, else what differs from it, e.g. ``"k conditioning: learned_zero_init"``."""
    diff = [f"{what}: {reading[k]:g}" if k == "lr" else f"{what}: {reading[k]}"
            for k, what in READINGS if reading[k] != default[k]]
    if diff:
        return "; ".join(diff)
    return "ours (" + ", ".join(f"{reading[k]:g}" if k == "lr" else str(reading[k]) for k, _ in READINGS) + ")"


def _first_plan(res: Results, run_id: str):
    plan = res.planned(run_id)
    return plan[0] if plan else None


def reading_pairs(res: Results) -> list[dict]:
    """One dict per KL run of ``A.readings``: its reading, its baseline (same data, ``B`` and lr) and both effects.

    The default reading is that of the KL run whose parameters set none of :data:`READINGS`.
    """
    specs = [s for s in res.runs("A.readings") if _first_plan(res, s.id) is not None]
    kls = [s for s in specs if s.params.get("model") != "baseline"]
    bases = [s for s in specs if s.params.get("model") == "baseline"]
    ref = next((s for s in kls if not any(k in s.params for k, _ in READINGS)), kls[0] if kls else None)
    if ref is None:
        return []
    default = reading_of(_first_plan(res, ref.id))
    out = []
    for s in kls:
        rd = reading_of(_first_plan(res, s.id))
        base = next((b for b in bases if b.data == s.data and b.params.get("B") == s.params.get("B")
                     and reading_of(_first_plan(res, b.id))["lr"] == rd["lr"]), None)
        if base is None:
            continue
        per_seed = statistics.seed_speedups(res.curve(base.id), res.curve(s.id), s.seeds)
        out.append({"reading": reading_name(rd, default), "default": s is ref, "data": s.data, "kl": s.label,
                    "baseline": base.label, "kl_id": s.id, "base_id": base.id,
                    "effect": statistics.speedup_effect(per_seed, target=speedup_target(s.data)),
                    "final_gap": statistics.final_gap_effect(final_scores(res, s.id), final_scores(res, base.id))})
    return out


def _row(p: dict) -> dict:
    return ({"data": p["data"], "reading": p["reading"], "KL run": p["kl"], "baseline": p["baseline"]}
            | statistics.effect_columns(p["effect"], p["final_gap"]))


def readings_verdict(pairs: list[dict]) -> str:
    """The sentence of ``A.readings``: the default reading's speed-up, the most favourable reading's, and
    whether any reading makes the speed-up claim hold (its interval entirely beyond the paper's factor)."""
    judged = [p for p in pairs if p["effect"]["n"]]
    if not judged:
        return not_tested("no reading run has scores yet")
    best = max(judged, key=lambda p: p["effect"]["interval"]["estimate"])
    iv = statistics.interval_of(best["effect"])
    if best["effect"]["word"] == NOT_TESTED:
        return not_tested(f"one seed per reading gives no interval (most favourable: {best['reading']}, "
                          f"speed-up {iv.estimate:.2g}x, {best['data']})")
    holding = [p["reading"] for p in judged if p["effect"]["word"] == HOLDS]
    ref = next((p for p in judged if p["default"]), None)
    ours = f"under our reading {statistics.interval_of(ref['effect']).text(unit='x')}; " if ref else ""
    anyone = (f"{len(holding)} of {len(judged)} readings make the claim hold ({'; '.join(holding)})" if holding
              else f"no reading of the {len(judged)} tested makes the claim hold")
    return (f"{best['effect']['word']} under the most favourable reading ({best['data']}, {best['reading']}): "
            f"{best['kl']} reached the baseline's plateau level {iv.text(unit='x')} times as fast "
            f"(paper: {best['effect']['target']:g}x); {ours}{anyone}.")


def readings_sentence(res: Results) -> str:
    """A sentence for the headline speed-up verdict: :func:`readings_verdict` (empty without reading runs)."""
    pairs = reading_pairs(res) if res.runs("A.readings") else []
    return f" Against the readings of the lost equations (A.readings): {readings_verdict(pairs)}" if pairs else ""


def _figure(pairs: list[dict]):
    """Speed-up and final score ratio per reading, with 95 % intervals (the forest figure's panels)."""
    panels = [("effect", "speed-up to the baseline's plateau (x)", "word"),
              ("final_gap", "final score ratio, KL / baseline", "word")]
    fig, axes = plt.subplots(1, 2, figsize=(12, 1.2 + 0.4 * len(pairs)), sharey=True)
    for ax, (key, title, wkey) in zip(axes, panels):
        shift = 1.0 if key == "final_gap" else 0.0
        rows = [{"estimate": p[key]["interval"]["estimate"] + shift, "lo": p[key]["interval"]["lo"] + shift,
                 "hi": p[key]["interval"]["hi"] + shift, "verdict": p[key][wkey],
                 "label": f"{p['data']} · {p['reading']} ({p[key]['interval']['n']} seeds)"} for p in pairs]
        paper = pairs[0]["effect"]["target"] if key == "effect" else None
        draw_panel(ax, rows, title, 1.0, True, paper)
    fig.suptitle("The speed-up and the final gap under each reading of paper A's lost equations "
                 "(colour: verdict)", fontsize="small")
    fig.tight_layout()
    return fig


def readings_table(res: Results) -> tuple[list[dict], object]:
    """One row per reading (module docstring), stored as the artefact ``A.readings`` with its figure and verdict.

    Returns the rows and the figure (None without pairs).
    """
    if absent(res, "A.readings"):
        return [], None
    pairs = reading_pairs(res)
    rows = [_row(p) for p in pairs]
    fig = _figure(pairs) if pairs else None
    store.save_artefact(res.name, "A.readings", {
        "title": "The speed-up and the final gap under each reading of the lost equations",
        "ours": {"rows": rows, "pairs": pairs, "profile": res.name},
        "paper": {"value": "not stated", "source": "our question: paper A's equations were lost from our copy; "
                  "the readings are ours (Methods, Deviations)"},
        "paper_summary": "one set of equations (lost from our copy)",
        "ours_summary": "; ".join(f"{r['reading']}: {r['speed-up']:.2g}x" for r in rows if r["speed-up"] == r["speed-up"]),
        "verdict": readings_verdict(pairs)}, fig)
    return rows, fig
