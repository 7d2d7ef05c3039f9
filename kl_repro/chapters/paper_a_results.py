"""Chapter 4 (``notebooks/04_paper_a_results.ipynb``): every table and figure of paper A from the stored runs.

The tables, figures and verdicts themselves are made by :mod:`kl_repro.paper_a.tables`,
:mod:`kl_repro.paper_a.figures` and :mod:`kl_repro.paper_a.verdicts`, which store each artefact; this
module loads the runs once (:func:`load`), shows each table as a formatted ``Styler`` and prints each
artefact's verdict, or the reason it is absent at the profile, under it.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from kl_repro.chapters.base import ChapterConfig, set_threads
from kl_repro.core import plotting, store
from kl_repro.core.tables import display_table
from kl_repro.core.verdict import not_tested
from kl_repro.paper_a import figures, forest, ladder as ld, metric_noise as noise, readings as rd, tables, verdicts
from kl_repro.paper_a.results import PANELS, Results, load_results

__all__ = ["PaperAResultsConfig", "prepare", "load", "plan", "effects", "metric_noise", "table1", "fig1", "fig2", "speedup", "readings", "ladder", "baseline_t20",
           "table2", "table3", "fig3", "fig4", "fig5", "fig6", "samples", "fig10", "claims"]


@dataclass(frozen=True)
class PaperAResultsConfig(ChapterConfig):
    """Parameters of the paper-A results chapter: the profile whose runs are read (seed and threads of the base)."""


def prepare(cfg: PaperAResultsConfig) -> None:
    """The book's plot theme and the chapter's thread count."""
    plotting.set_theme()
    set_threads(cfg.threads)


def _say(res: Results, artefact: str) -> None:
    """Print the stored verdict of ``artefact`` (or that it was not produced)."""
    art = store.load_artefact(res.name, artefact)
    print(f"{artefact}: {art.get('verdict', '') if art else 'not produced at this profile (runs missing).'}")


def _shown(res: Results, artefact: str, value):
    """``value`` (a table or figure of ``artefact``), after printing the artefact's verdict."""
    _say(res, artefact)
    return value


def _styled(rows: list[dict], precision: int = 3, na_rep: str = "–"):
    """The book's table display (:func:`kl_repro.core.tables.display_table`), ``precision`` significant digits."""
    return display_table(rows, digits=precision, na=na_rep)


def load(cfg: PaperAResultsConfig) -> Results:
    """The profile's matrix and planned runs; prints how many runs it has and how many have finished."""
    res = load_results(cfg.profile_obj)
    done = sum((p.run_dir / "finished.json").exists() for p in res.plan)
    print(f"profile {res.name}: {len(res.matrix.runs)} runs in the matrix ({len(res.plan)} with seeds), "
          f"{done} finished")
    return res


def plan(res: Results):
    """One row per planned (run, seed): label, data set, seed, steps, batch size ``B`` and the artefacts it feeds."""
    rows = [{"run": p.spec.label, "data": p.spec.data, "seed": p.seed, "steps": p.steps, "B": p.params.get("B"),
             "finished": (p.run_dir / "finished.json").exists(), "artefacts": ", ".join(p.spec.artefacts)}
            for p in res.plan]
    return display_table(rows)


def effects(res: Results):
    """The forest figure that opens the chapter: every effect with its 95 % interval, per profile, beside the paper.

    Makes this profile's ``A.speedup`` first (:func:`kl_repro.paper_a.tables.speedup_table`) and prints its
    verdicts: the speed-up and the speed-up at equal compute.
    """
    tables.speedup_table(res)
    fig = forest.forest(res)
    art = store.load_artefact(res.name, "A.speedup") or {}
    print(f"A.speedup: {art.get('verdict', verdicts.MISSING)}")
    print(f"faster at equal compute? {art.get('compute_verdict', verdicts.MISSING)}")
    return fig


def _headline_baselines(res: Results) -> list:
    """Per data set, the first finished seed of a Baseline-b16 run (the cheapest model to sample), those of
    ``A.speedup`` (the headline pair) first."""
    rows = sorted((r for r in res.matrix.runs if r.label.startswith("Baseline-b16") and r.evaluate),
                  key=lambda r: "A.speedup" not in r.artefacts)
    out: dict[str, object] = {}
    for row in rows:
        done = [p for p in res.planned(row.id) if (p.run_dir / "finished.json").exists()]
        if done and row.data not in out:
            out[row.data] = done[0]
    return list(out.values())


def metric_noise(res: Results, repeats: int = 4):
    """The metric's own spread (one checkpoint, ``repeats`` sample seeds) beside the spread over training seeds.

    At the proxy and the final sample count of each data set's headline baseline; KID (unbiased) beside FD_clf.
    Stored as the artefact ``A.metric_noise``.
    """
    rows = []
    for p in _headline_baselines(res):
        ev = res.matrix.evals[p.spec.data]
        finals = tables.final_scores(res, p.spec.id)
        for n in dict.fromkeys((ev.proxy_samples, ev.final_samples)):
            rows.append({"data": p.spec.data, **noise.noise_summary(noise.repeat_scores(p, ev, n, repeats), finals)})
    store.save_artefact(res.name, "A.metric_noise", {
        "title": "The metric's own noise against the seed-to-seed spread", "ours": {"rows": rows, "profile": res.name},
        "paper": {"source": "not in the paper"}, "paper_summary": "not in the paper",
        "ours_summary": "; ".join(f"{r['data']} n={r['samples']}: sd {r['metric sd (same checkpoint)']:.3g}" for r in rows),
        "verdict": not_tested("this is a measurement of our metric, not a claim of the paper")})
    if not rows:
        print("A.metric_noise: no finished Baseline-b16 run at this profile.")
    return _styled(rows)


def table1(res: Results):
    """Table 1: best proxy and final score per run and data set."""
    return _shown(res, "A.table1", _styled(tables.table1(res)))


def fig1(res: Results):
    """Fig. 1 (companion): truncated paths and the headline comparison."""
    return _shown(res, "A.fig1", figures.fig1(res))


def fig2(res: Results, panel: str):
    """Fig. 2, panel ``a``, ``b`` or ``c``: score against optimisation steps."""
    return _shown(res, PANELS[panel][1], figures.fig2(res, panel))


def speedup(res: Results):
    """The speed-up to the baseline's best score, per KL run and data set."""
    return _shown(res, "A.speedup", _styled(tables.speedup_table(res), precision=2, na_rep="never"))


def readings(res: Results):
    """``A.readings``: its verdict, then the table of each reading's speed-up and final gap (the figure of the
    same intervals is left open for the notebook to show under it)."""
    rows, _ = rd.readings_table(res)
    return _shown(res, "A.readings", _styled(rows, precision=2, na_rep="never") if rows else None)


def ladder(res: Results):
    """``A.ladder``: its verdict, then one row per network size (the figure against parameter count is left open
    for the notebook to show under it)."""
    rows, _ = ld.ladder_table(res)
    return _shown(res, "A.ladder", _styled(rows, precision=2, na_rep="never") if rows else None)


def baseline_t20(res: Results):
    """The Baseline-T20 control (not in the paper)."""
    return _shown(res, "A.baseline_t20", figures.baseline_t20(res))


def table2(res: Results):
    """Table 2: measured cost of one optimisation step."""
    return _shown(res, "A.table2", _styled(tables.table2(res)))


def table3(res: Results):
    """Table 3: fine-tuning KL and KL* from a trained baseline."""
    return _shown(res, "A.table3", _styled(tables.table3(res)))


def fig3(res: Results):
    """Fig. 3: sample grids at matched steps."""
    return _shown(res, "A.fig3", figures.fig3(res))


def fig4(res: Results):
    """Fig. 4: the partial KL loss."""
    return _shown(res, "A.fig4", figures.fig4(res))


def fig5(res: Results):
    """Fig. 5: KL* against KL and the baseline, in steps and wall-clock."""
    return _shown(res, "A.fig5", figures.fig5(res))


def fig6(res: Results):
    """Fig. 6: how many terms, (a) at T = 20 and (b) with d x T = 200."""
    return _shown(res, "A.fig6a", figures.fig6(res))


def samples(res: Results, artefact: str):
    """Figs. 7-9 (``A.fig7``, ``A.fig8``, ``A.fig9``): uncurated samples of the KL models."""
    return _shown(res, artefact, figures.sample_figure(res, artefact))


def fig10(res: Results):
    """Fig. 10 (higher resolution): the paper profile's CelebAHQ-128 runs; absent (with the reason) at the reduced profiles."""
    return _shown(res, "A.fig10", figures.fig10(res))


def claims(res: Results):
    """Paper A's claims, one row each, with our verdict and the artefact that shows it."""
    return display_table(verdicts.claims_summary(res.name))
