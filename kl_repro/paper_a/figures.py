"""Paper A's figures (Figs. 1-10 and the Baseline-T20 control) from the stored runs, each stored as an artefact.

Every function takes a :class:`~kl_repro.paper_a.results.Results`, returns a matplotlib figure (``None``
where the profile cannot make it: :func:`~kl_repro.paper_a.results.absent` has then stored the reason)
and saves the artefact with our numbers, the paper's claim with its source and a verdict.  Scores are
plotted on a log axis, lower is better; with several seeds the line is the mean and the band the range.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.image as mpimg
import matplotlib.pyplot as plt
import numpy as np
import torch

from kl_repro.core import plotting, store
from kl_repro.core.registry import paper_values
from kl_repro.core.verdict import not_tested
from kl_repro.data import Toy2D
from kl_repro.paper_a import kl, verdicts
from kl_repro.paper_a.results import PANELS, Results, absent, by_step, final_value, panel_runs
from kl_repro.paper_a.tables import speedup
from kl_repro.paper_a.training.run import Run

__all__ = ["plot_curves", "fig1", "fig2", "fig3", "fig4", "fig5", "fig6", "sample_figure", "baseline_t20", "fig10"]


def _plot_seeds_over_time(ax, rows: list[dict], label: str) -> None:
    """One curve per seed in the model's colour (:func:`kl_repro.core.plotting.color_for`), each in the legend."""
    seeds = sorted({r["seed"] for r in rows})
    for i, seed in enumerate(seeds):
        rs = sorted((r for r in rows if r["seed"] == seed), key=lambda r: r["step"])
        ax.plot([r["opt_time_s"] / 60 for r in rs], [r["value"] for r in rs], "o-" if i == 0 else "s--", ms=3,
                color=plotting.color_for(label), label=label if len(seeds) == 1 else f"{label}, seed {seed}")


X_LABELS = {"step": "optimisation steps", "evals": "network evaluations (rows through the network)",
            "time": "optimisation wall-clock (min)"}


def plot_curves(ax, res: Results, run_ids: list[str], x: str = "step") -> None:
    """Score curves of ``run_ids`` on ``ax`` against optimisation steps (``x="step"``), network evaluations
    (``"evals"``: steps times the rows one step passes through the network, ``B d`` for KL; equal compute)
    or wall-clock minutes (``"time"``)."""
    for rid in run_ids:
        rows = [r for r in res.curve(rid) if r["step"] > 0]
        if not rows:
            continue
        if x in ("step", "evals"):
            steps, mean, spread = by_step(rows)
            xs = steps * (res.evals_per_step(rid) if x == "evals" else 1)
            line, = ax.plot(xs, mean, "o-", ms=3, label=res.label(rid), color=plotting.color_for(res.label(rid)))
            if len({r["seed"] for r in rows}) > 1:
                ax.fill_between(xs, spread[:, 0], spread[:, 1], color=line.get_color(), alpha=0.2, lw=0)
        else:
            _plot_seeds_over_time(ax, rows, res.label(rid))
    ax.set(xlabel=X_LABELS[x], ylabel=f"{res.metric(run_ids[0])} (lower is better)")
    ax.set_yscale("log")
    if x == "evals":
        ax.set_xscale("log")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small")


def _steps_and_compute(res: Results, run_ids: list[str], title: str):
    """A figure of two panels: the curves against optimisation steps and against network evaluations."""
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(12, 4.2))
    plot_curves(ax0, res, run_ids)
    plot_curves(ax1, res, run_ids, x="evals")
    ax0.set_title(title, fontsize="medium")
    ax1.set_title("the same curves at equal compute", fontsize="medium")
    fig.tight_layout()
    return fig


def _curves_figure(res: Results, key: str, title: str):
    """``(fig, run ids, final score per label)`` with the metric curves of artefact ``key``'s runs under
    ``title`` (``{data}`` is replaced by the runs' data set), against steps and network evaluations, or
    ``None`` where the artefact is absent."""
    if absent(res, key):
        return None
    ids = [r.id for r in res.runs(key)]
    fig = _steps_and_compute(res, ids, title.format(data=res.matrix.spec(ids[0]).data))
    return fig, ids, _finals(res, ids)


def _finals(res: Results, ids: list[str]) -> dict[str, float | None]:
    return {res.label(i): final_value(res, i) for i in ids}


def _finals_text(finals: dict[str, float | None]) -> str:
    return ", ".join(f"{k}: {v:.3g}" for k, v in finals.items() if v is not None)


# --- Figs. 1 and 2: the headline ---------------------------------------------------------------------

def fig1(res: Results):
    """Companion Fig. 1 (caption lost): truncated KL paths (left), headline score against steps (right)."""
    if absent(res, "A.fig1"):
        return None
    fig, (ax0, ax1, ax2) = plt.subplots(1, 3, figsize=(16, 4))
    t = np.linspace(0, 1, 501)
    Z = np.random.default_rng(0).standard_normal((1, 500))
    for d in (1, 2, 8, 500):
        ax0.plot(t, kl.truncated_bm(t, Z[:, :d])[0], lw=1.2 if d < 500 else 0.8, label=f"d = {d if d < 500 else '∞'}")
    ax0.set(xlabel="t", ylabel="$W^{(d)}_t$", title="One Brownian path and its KL truncations")
    ax0.legend()
    plot_curves(ax1, res, [r.id for r in res.runs("A.fig1")])
    plot_curves(ax2, res, [r.id for r in res.runs("A.fig1")], x="evals")
    ax1.set_title("Headline comparison")
    ax2.set_title("at equal compute")
    fig.tight_layout()
    data = res.runs("A.fig1")[0].data
    sp = speedup(res, data)
    store.save_artefact(res.name, "A.fig1", {
        "title": "Headline: KL diffusion against the baseline", "ours": {"speedup": sp, "profile": res.name},
        "paper": {"source": "Paper A, Fig. 1 (caption partly lost)"},
        "paper_summary": "same network trained faster with the KL forward process",
        "ours_summary": verdicts.speedup_text(sp), "verdict": verdicts.speedup_verdict(sp, data),
        "compute_verdict": verdicts.compute_verdict(sp, data)}, fig)
    return fig


def fig2(res: Results, panel: str):
    """FID-like score against optimisation steps for one panel ``a``, ``b`` or ``c`` (paper A, Fig. 2)."""
    paper_data, art = PANELS[panel]
    if absent(res, art):
        return None
    run_ids = panel_runs(res, panel)
    data = res.matrix.spec(run_ids[0]).data
    fig = _steps_and_compute(res, run_ids, f"Fig. 2({panel}) – paper: {paper_data}; here: {data}")
    fig.text(0.01, -0.04, plotting.caption(res.name, evaluation=res.eval_note(run_ids[0])), fontsize="x-small")
    sp = speedup(res, data)
    own = [p for p in sp["pairs"] if p["kl_id"] in run_ids]  # the panel's own pairs (c: KL-b64 against Baseline-b128)
    sp = {**sp, "pairs": own} if own else sp
    pv = paper_values("A")["claims"]["speedup"]
    store.save_artefact(res.name, art, {
        "title": f"Score against optimisation steps ({paper_data} in the paper)",
        "ours": {"runs": {rid: res.curve(rid) for rid in run_ids}, "data": data, "profile": res.name,
                 "speedup": sp},
        "paper": {"claim": pv["text"], "source": pv["source"]},
        "paper_summary": "KL about 2x faster to the baseline's best FID (more than 3x on CIFAR10)",
        "ours_summary": verdicts.speedup_text(sp),
        "verdict": verdicts.speedup_verdict(sp, data),
        "compute_verdict": verdicts.compute_verdict(sp, data),
    }, fig)
    return fig


# --- Fig. 3 and Figs. 7-9: samples -----------------------------------------------------------------

def _grid_image(run_dir: Path, step: int):
    path = run_dir / "samples" / f"step-{step:08d}.png"
    return mpimg.imread(path) if path.exists() else None


def _common_sample_steps(planned: list) -> list[int]:
    """The last three (> 0) steps at which every run saved a sample grid."""
    saved = [{int(p.stem.split("-")[1]) for p in (pl.run_dir / "samples").glob("step-*.png")} for pl in planned]
    steps = sorted(set.intersection(*saved) or {0})
    return [s for s in steps if s > 0][-3:]


def fig3(res: Results):
    """Sample grids at matched steps: KL-8d-b32 against Baseline-b16 (paper A, Fig. 3)."""
    if absent(res, "A.fig3"):
        return None
    specs = res.runs("A.fig3")
    runs = [(s, res.planned(s.id)[0]) for s in specs]
    steps = _common_sample_steps([pl for _, pl in runs])
    if not steps:
        return None
    fig, axes = plt.subplots(len(runs), len(steps), figsize=(2.6 * len(steps), 2.8 * len(runs)), squeeze=False)
    for i, (run_spec, pl) in enumerate(runs):
        for j, step in enumerate(steps):
            img = _grid_image(pl.run_dir, step)
            ax = axes[i][j]
            if img is not None:
                ax.imshow(img, cmap="gray" if img.ndim == 2 else None, interpolation="nearest")
            ax.set_axis_off()
            ax.set_title(f"{run_spec.label}, step {step}", fontsize="small")
    fig.suptitle(f"Samples at matched steps ({plotting.caption(res.name, data=specs[0].data, sampler='DDIM eta=1', seed=0)})",
                 fontsize="small")
    fig.tight_layout()
    store.save_artefact(res.name, "A.fig3", {
        "title": "Sample grids at matched steps", "ours": {"steps": steps, "runs": [s.label for s in specs]},
        "paper": {"source": "Paper A, Fig. 3 (CelebA-64, KL-8d-b32 against Baseline-b16)"},
        "paper_summary": "KL-8d-b32 samples look better at matched steps",
        "ours_summary": f"grids at steps {steps} on {specs[0].data}",
        "verdict": not_tested("the paper claims no number here: a visual comparison, see the grids")}, fig)
    return fig


def _toy_background(ax) -> None:
    xs, ys = np.meshgrid(np.linspace(-3.5, 3.5, 200), np.linspace(-2, 3.5, 160))
    lp = Toy2D().log_prob(torch.tensor(np.stack([xs.ravel(), ys.ravel()], 1))).numpy().reshape(xs.shape)
    ax.contour(xs, ys, np.exp(lp), levels=6, colors="0.6", linewidths=0.6)


def _draw_samples(ax, res: Results, run_spec, n: int) -> bool:
    """Samples of the run's first seed on ``ax``; False (and an empty panel) when that run has not finished."""
    p = res.planned(run_spec.id)[0]
    if not (p.run_dir / "finished.json").exists():
        ax.set_axis_off()
        return False
    toy = run_spec.data == "toy2d"
    x = Run.open(p.run_dir).sample(500 if toy else n, seed=1, batch_size=500 if toy else n)
    if x.ndim == 4:
        plotting.show_grid(ax, x, title=run_spec.label)
    else:
        _toy_background(ax)
        ax.scatter(x[:, 0], x[:, 1], s=2, alpha=0.5, color=plotting.color_for(run_spec.label))
        ax.set(title=run_spec.label, xlim=(-3.5, 3.5), ylim=(-2, 3.5), aspect="equal")
    return True


def sample_figure(res: Results, artefact: str, n: int = 64):
    """Uncurated samples of the KL models of one panel (paper A, Figs. 7-9): image grids or 2-D scatter."""
    if absent(res, artefact):
        return None
    specs = res.runs(artefact)
    fig, axes = plt.subplots(1, len(specs), figsize=(4.2 * len(specs), 4.2), squeeze=False)
    drawn = [_draw_samples(ax, res, run_spec, n) for ax, run_spec in zip(axes[0], specs)]
    fig.suptitle(plotting.caption(res.name, data=specs[0].data, sampler="DDIM eta=1", seed=1), fontsize="small")
    fig.tight_layout()
    store.save_artefact(res.name, artefact, {
        "title": "Uncurated samples of the KL models", "ours": {"runs": [s.label for s in specs], "data": specs[0].data},
        "paper": {"source": f"Paper A, {artefact.split('.')[1].replace('fig', 'Fig. ')} (Appendix C)"},
        "paper_summary": "uncurated KL samples", "ours_summary": f"{specs[0].data}: {', '.join(s.label for s in specs)}",
        "verdict": not_tested("the figure illustrates samples; no number is claimed") if any(drawn) else verdicts.MISSING},
        fig)
    return fig


# --- Figs. 4-6 and the Baseline-T20 control ---------------------------------------------------------

def fig4(res: Results):
    """Partial loss: KL-10d1..d4 against the full KL-10d (paper A, Fig. 4)."""
    made = _curves_figure(res, "A.fig4", "Fig. 4 – partial KL loss ({data})")
    if made is None:
        return None
    fig, ids, finals = made
    partial = [(res.matrix.spec(i).params.get("d_prime"), finals[res.label(i)]) for i in ids
               if res.matrix.spec(i).params.get("model") == "kl_partial"]
    full = next((v for k, v in finals.items() if not any(f"d{m}" in k for m in (1, 2, 3, 4))), None)
    store.save_artefact(res.name, "A.fig4", {
        "title": "Partial KL loss against the full loss", "ours": {"final": finals},
        "paper": {"claim": paper_values("A")["claims"]["partial"]["text"], "source": "Paper A, Sec. 6.4, Fig. 4"},
        "paper_summary": "FID falls as d' grows, approaching KL-10d",
        "ours_summary": _finals_text(finals), "verdict": verdicts.partial_verdict(partial, full)}, fig)
    return fig


def _median_step_s(res: Results, ids: list[str]) -> dict[str, float]:
    """Median seconds per optimisation step of each run (first five log rows skipped), by label."""
    cost = {}
    for rid in ids:
        rows = [r for rs in res.train_rows(rid) for r in rs[5:]]
        if rows:
            cost[res.label(rid)] = float(np.median([r["step_time_s"] for r in rows]))
    return cost


def fig5(res: Results):
    """KL* against KL and the baseline, against steps and optimisation wall-clock (paper A, Fig. 5)."""
    if absent(res, "A.fig5"):
        return None
    ids = [r.id for r in res.runs("A.fig5")]
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(12, 4))
    plot_curves(ax0, res, ids)
    plot_curves(ax1, res, ids, x="time")
    ax0.set_title("against steps")
    ax1.set_title("against optimisation wall-clock")
    fig.tight_layout()
    cost = _median_step_s(res, ids)
    finals = _finals(res, ids)
    store.save_artefact(res.name, "A.fig5", {
        "title": "KL* against KL and the baseline", "ours": {"median_step_s": cost, "final": finals},
        "paper": {"claim": paper_values("A")["claims"]["kl_star_cost"]["text"], "source": "Paper A, Sec. 6.5, Fig. 5"},
        "paper_summary": "KL* slightly worse FID than KL at about the baseline's time cost",
        "ours_summary": ", ".join(f"{k}: {v * 1000:.0f} ms/step" for k, v in cost.items()),
        "verdict": verdicts.kl_star_verdict(cost, finals)}, fig)
    return fig


def _fig6_points(res: Results, art: str) -> list[tuple[int, int, float]]:
    """Sorted ``(d, T, final score)`` of the runs of panel (a) (T = 20) or (b) (d x T = 200)."""
    pts = []
    for run_spec in res.runs(art):
        d, T = run_spec.params.get("d", 8), run_spec.params.get("T") or 20
        if (art == "A.fig6a" and run_spec.params.get("T") not in (None, 20)) or (art == "A.fig6b" and d * T != 200):
            continue
        v = final_value(res, run_spec.id)
        if v is not None:
            pts.append((d, T, v))
    return sorted(pts)


def _fig6_panel(ax, art: str, pts: list[tuple[int, int, float]]) -> None:
    if pts:
        labels = [f"{d}" if art == "A.fig6a" else f"({d}, {T})" for d, T, _ in pts]
        ax.plot(range(len(pts)), [v for *_, v in pts], "o-")
        ax.set_xticks(range(len(pts)), labels)
    ax.set(xlabel="d" if art == "A.fig6a" else "(d, T)", ylabel="final score (lower is better)", yscale="log",
           title="(a) d varied at T = 20" if art == "A.fig6a" else "(b) d x T = 200")


def fig6(res: Results):
    """(a) number of terms d at T = 20; (b) d x T = 200 (paper A, Appendix A, Fig. 6)."""
    if absent(res, "A.fig6a") or absent(res, "A.fig6b"):
        return None
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    out = {art: _fig6_points(res, art) for art in ("A.fig6a", "A.fig6b")}
    for ax, (art, pts) in zip(axes, out.items()):
        _fig6_panel(ax, art, pts)
        if res.runs(art):  # the metric on the axis (FD_clf, energy distance or FID)
            ax.set_ylabel(f"final {res.metric(res.runs(art)[0].id)} (lower is better)")
    fig.tight_layout()
    best = {art: min(pts, key=lambda p: p[2]) if pts else None for art, pts in out.items()}
    verdict = verdicts.optimal_d_verdict(best["A.fig6a"], best["A.fig6b"])
    for art in ("A.fig6a", "A.fig6b"):
        store.save_artefact(res.name, art, {
            "title": "Number of KL terms" if art == "A.fig6a" else "d x T = 200",
            "ours": {"points": [{"d": d, "T": T, "final": v} for d, T, v in out[art]]},
            "paper": {"claim": paper_values("A")["claims"]["optimal_d"]["text"], "source": "Paper A, App. A, Fig. 6"},
            "paper_summary": "optimum near d = 8-10", "ours_summary": verdict.split(". The")[0], "verdict": verdict},
            fig if art == "A.fig6a" else None)
    return fig


def baseline_t20(res: Results):
    """The Baseline-T20 control: is KL's advantage the 20 training noise levels? (our control; the Deviations page)."""
    made = _curves_figure(res, "A.baseline_t20", "Baseline on T = 1000 and on the KL models' T = 20 levels, against KL-8d")
    if made is None:
        return None
    fig, ids, finals = made
    verdict = verdicts.baseline_t20_verdict(finals.get("Baseline-b16"), finals.get("Baseline-T20-b16"),
                                            finals.get("KL-8d-b16"))
    store.save_artefact(res.name, "A.baseline_t20", {
        "title": "Baseline-T20 control", "ours": {"final": finals},
        "paper": {"claim": "T = 20 would dramatically decrease the performance of the baseline (not run in the paper)",
                  "source": "Paper A, Sec. 6.2 (as reconstructed)"},
        "paper_summary": "not run in the paper",
        "ours_summary": _finals_text(finals), "verdict": verdict}, fig)
    return fig


def fig10(res: Results):
    """Higher resolution: KL-8d-b16 against Baseline-b16 on CelebAHQ-128, score against steps (paper A, App. D, Fig. 10)."""
    made = _curves_figure(res, "A.fig10", "Fig. 10 – higher resolution ({data})")
    if made is None:
        return None
    fig, ids, finals = made
    data = res.matrix.spec(ids[0]).data
    sp = speedup(res, data, "A.fig10")
    pv = paper_values("A")["claims"]["hires"]
    store.save_artefact(res.name, "A.fig10", {
        "title": "Higher resolution: CelebAHQ-128, score against steps",
        "ours": {"runs": {rid: res.curve(rid) for rid in ids}, "final": finals, "speedup": sp, "profile": res.name},
        "paper": {"claim": pv["text"], "source": pv["source"]},
        "paper_summary": "KL-8d-b16 beats Baseline-b16 (120k steps) more than 3x faster",
        "ours_summary": verdicts.speedup_text(sp), "verdict": verdicts.speedup_verdict(sp, data)}, fig)
    return fig
