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
from kl_repro.paper_a import figures, tables, verdicts
from kl_repro.paper_a.results import PANELS, Results, absent, load_results

__all__ = ["PaperAResultsConfig", "prepare", "load", "plan", "table1", "fig1", "fig2", "speedup", "baseline_t20",
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
    return pd.DataFrame(rows).style.format(precision=precision, na_rep=na_rep).hide(axis="index")


def load(cfg: PaperAResultsConfig) -> Results:
    """The profile's matrix and planned runs; prints how many runs it has and how many have finished."""
    res = load_results(cfg.profile_obj)
    done = sum((p.run_dir / "finished.json").exists() for p in res.plan)
    print(f"profile {res.name}: {len(res.matrix.runs)} runs in the matrix ({len(res.plan)} with seeds), "
          f"{done} finished under {store.results_root()}")
    return res


def plan(res: Results):
    """One row per planned (run, seed): label, data set, seed, steps, batch size ``B`` and the artefacts it feeds."""
    rows = [{"run": p.spec.label, "data": p.spec.data, "seed": p.seed, "steps": p.steps, "B": p.params.get("B"),
             "finished": (p.run_dir / "finished.json").exists(), "artefacts": ", ".join(p.spec.artefacts)}
            for p in res.plan]
    return pd.DataFrame(rows).style.hide(axis="index")


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


def fig10(res: Results) -> None:
    """Fig. 10 (higher resolution): absent at the reduced profiles; made by the paper profile's CelebAHQ-128 runs."""
    reason = absent(res, "A.fig10")
    print(f"A.fig10: {reason}" if reason else
          "A.fig10: made by the paper profile's CelebAHQ-128 runs: see Fig. 2(b)'s data set at 128 x 128")


def claims(res: Results):
    """Paper A's claims, one row each, with our verdict and the artefact that shows it."""
    return pd.DataFrame(verdicts.claims_summary(res.name)).style.hide(axis="index")
