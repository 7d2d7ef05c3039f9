"""Chapter 2 (``notebooks/02_path_smoothness.ipynb``): why truncated-KL forward paths are smoother.

Paper A, Sec. 3.3 argues it qualitatively; here it is measured (Methods A.8) with
:mod:`kl_repro.paper_a.forward_paths`: one forward path, quadratic variation and path length as the grid
refines, the rank of a discretised path, the correlation of the noise across time, the T = 20 grid's
schedule and truncated variance, and the gradient-conflict diagnostic
(:mod:`kl_repro.paper_a.gradient_conflict`).  Each function makes one section: figure, stored artefact
(ids ``A.smoothness``, ``A.noise_correlation``, ``A.tableA1``, ``A.gradient_conflict``), a printed
verdict, and the table to display (a pandas ``Styler``) or the figure.
"""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from kl_repro.chapters.base import ChapterConfig, set_threads
from kl_repro.core import plotting, store
from kl_repro.core.config import require
from kl_repro.core.tables import display_table
from kl_repro.paper_a import forward_paths as paths
from kl_repro.paper_a import kl
from kl_repro.paper_a.gradient_conflict import gradient_conflict_study, gradient_conflict_verdict
from kl_repro.paper_a.losses import DiffusionConfig
from kl_repro.schedule import VPSchedule, schedule_agreement, training_grid

__all__ = ["SmoothnessConfig", "prepare", "forward_path", "smoothness", "rank", "noise_correlation",
           "grid_table", "gradient_conflict"]

SCHEDULE = VPSchedule()  # the VP schedule of paper A, eq. (4)
KL_GRID = DiffusionConfig(model="kl").T  # the KL models' training grid size T = 20 (t_i = i / T)
CORRELATION_PAIRS = ((0.5, 0.55), (0.5, 1.0))  # (s, t) pairs whose noise correlation is tabulated


@dataclass(frozen=True)
class SmoothnessConfig(ChapterConfig):
    """Parameters of the path-smoothness chapter."""

    n_paths: int = 8  # independent paths per process
    n_pixels: int = 64  # coordinates per path (independent "pixels")
    grids: tuple[int, ...] = (100, 1000, 10000)  # grid refinements N for the diagnostics
    d_values: tuple[int, ...] = (1, 2, 8, 10)  # KL truncations compared
    d_plot: int = 8  # truncation drawn in the path figure
    gradient_conflict: bool = True  # run the gradient-conflict measurement (needs a small trained net)
    gc_steps: int = 300  # training steps of the small network used for the gradient-conflict measurement

    def check(self) -> None:
        super().check()
        require(self.n_paths >= 1, f"n_paths must be >= 1, got {self.n_paths}")
        require(self.n_pixels >= 1, f"n_pixels must be >= 1, got {self.n_pixels}")
        require(len(self.grids) >= 1 and all(n >= 2 for n in self.grids), f"every grid size must be >= 2, got {self.grids}")
        require(all(d >= 1 for d in self.d_values) and len(self.d_values) >= 1, f"every d must be >= 1, got {self.d_values}")
        require(self.d_plot >= 1, f"d_plot must be >= 1, got {self.d_plot}")
        require(self.gc_steps >= 0, f"gc_steps must be >= 0, got {self.gc_steps}")


def prepare(cfg: SmoothnessConfig) -> None:
    """The book's plot theme and the chapter's thread count."""
    plotting.set_theme()
    set_threads(cfg.threads)


def forward_path(cfg: SmoothnessConfig):
    """One coordinate of a VP (Euler-Maruyama), KL exact (12) and KL approximate (16) path from ``x0 = 0.8``."""
    rng = np.random.default_rng(cfg.seed)
    N = max(cfg.grids)
    x0 = np.full((1, 1), 0.8)
    Z = rng.standard_normal((1, cfg.d_plot, 1))
    t = paths.uniform_grid(N)
    curves = {"VP, Brownian (Euler-Maruyama)": paths.vp_em_paths(x0, N, rng, SCHEDULE)[0, :, 0],
              f"KL exact (12), d={cfg.d_plot}": paths.kl_exact_paths(x0, Z, N, SCHEDULE)[0, :, 0],
              f"KL approximation (16), d={cfg.d_plot}": paths.kl_approx_paths(x0, Z, N, SCHEDULE)[0, :, 0]}
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
    zoom = (t >= 0.40) & (t <= 0.45)
    for name, x in curves.items():
        axes[0].plot(t, x, lw=1, label=name)
        axes[1].plot(t[zoom], x[zoom], lw=1)
    axes[0].set(xlabel="t", ylabel="$x_t$", title=f"A forward path from $x_0$ = 0.8 (N = {N} steps)")
    axes[1].set(xlabel="t", title="Zoom on [0.40, 0.45]: Brownian roughness against smooth KL paths")
    axes[0].legend(fontsize="small")
    fig.tight_layout()
    return fig


def _smoothness_figure(df: pd.DataFrame, cfg: SmoothnessConfig):
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for name, g in df.groupby("process", sort=False):
        axes[0].loglog(g["N"], g["quadratic_variation"], "o-", label=name)
        axes[1].loglog(g["N"], g["path_length"], "o-", label=name)
    axes[0].axhline(SCHEDULE.integral_beta(), color="grey", ls="--", lw=1,
                    label=rf"$\int_0^1\beta = {SCHEDULE.integral_beta():.2f}$")
    axes[0].set(xlabel="grid steps N", ylabel="quadratic variation", title="Quadratic variation")
    axes[1].set(xlabel="grid steps N", ylabel="path length", title="Path length")
    axes[0].legend(fontsize="small")
    fig.suptitle(plotting.caption(cfg.profile, paths=cfg.n_paths, coordinates=cfg.n_pixels, seed=cfg.seed), fontsize="small")
    fig.tight_layout()
    return fig


def _grid_header(n) -> str:
    return f"N = {n}" if isinstance(n, (int, np.integer)) else str(n)


def _per_n(df: pd.DataFrame, values: str) -> pd.DataFrame:
    """``values`` of every process (rows) at every grid size ``N`` (columns)."""
    return df.pivot(index="process", columns="N", values=values)


def smoothness(cfg: SmoothnessConfig):
    """Quadratic variation and path length per coordinate of the three processes as N refines; ``A.smoothness``."""
    rows = paths.smoothness_table(cfg.n_paths, cfg.n_pixels, cfg.grids, cfg.d_plot, cfg.seed, SCHEDULE)
    df = pd.DataFrame(rows)
    fig = _smoothness_figure(df, cfg)
    n_fine, n_coarse = max(cfg.grids), min(cfg.grids)
    vp_fine = df[(df["N"] == n_fine) & df["process"].str.startswith("VP")]["quadratic_variation"].item()
    kl_qv = df[df["process"].str.startswith("KL exact")].set_index("N")["quadratic_variation"]
    verdict = (f"Holds: VP quadratic variation {vp_fine:.2f} at N={n_fine} (theory {SCHEDULE.integral_beta():.2f}) "
               f"while the KL path's falls from {kl_qv.iloc[0]:.3g} to {kl_qv.iloc[-1]:.3g} as N grows "
               f"{n_fine // n_coarse}-fold.")
    store.save_artefact(cfg.profile, "A.smoothness", {
        "title": "Path smoothness of forward processes (paper A, Sec. 3.3)",
        "ours": {"rows": rows, "profile": cfg.profile, "paths": cfg.n_paths, "seed": cfg.seed},
        "paper": {"claim": "KL paths are smooth; Brownian-driven paths are not", "source": "Paper A, Sec. 3.3 (qualitative)"},
        "verdict": verdict,
    }, fig)
    print(verdict)
    table = pd.concat({"quadratic variation per coordinate": _per_n(df, "quadratic_variation"),
                       "path length per sqrt(D)": _per_n(df, "path_length")}, axis=1)
    return display_table(table.loc[list(dict.fromkeys(df["process"]))], digits=4, header=_grid_header,
                         caption=f"Ours: {cfg.n_paths} paths of {cfg.n_pixels} coordinates, seed {cfg.seed} (the paper gives no numbers).")


def rank(cfg: SmoothnessConfig):
    """Numerical rank of one discretised path: full for VP, at most ``d + 1`` for KL with each ``d``."""
    rows = paths.rank_table(cfg.d_values, seed=cfg.seed, schedule=SCHEDULE)
    kl_rows = [r for r in rows if r["d"] is not None]
    print(f"VP path rank {rows[0]['rank']} (bound {rows[0]['bound']}); KL path ranks "
          + ", ".join(f"{r['rank']} for d = {r['d']}" for r in kl_rows) + ".")
    return display_table(rows, caption=f"Ours: rank of the discretised path matrix, seed {cfg.seed}.")


def noise_correlation(cfg: SmoothnessConfig):
    """``Corr`` of the noise at times ``s, t``: Brownian ``sqrt(s/t)`` against KL (16); figure, ``A.noise_correlation``."""
    tt = np.linspace(0.02, 1, 80)
    s_mesh, t_mesh = np.meshgrid(tt, tt, indexing="ij")
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    panels = [("Brownian $W_t/\\sqrt{t}$", paths.noise_correlation_bm(s_mesh, t_mesh)),
              (f"KL noise (16), d={cfg.d_plot}", paths.noise_correlation_kl(s_mesh, t_mesh, cfg.d_plot))]
    for ax, (name, C) in zip(axes, panels):
        im = ax.imshow(C, origin="lower", extent=[tt[0], 1, tt[0], 1], vmin=-0.2, vmax=1, cmap="viridis")
        ax.set(xlabel="t", ylabel="s", title=name)
        ax.grid(False)
    fig.colorbar(im, ax=axes, shrink=0.8, label="correlation")
    pairs = [{"s": s, "t": t, "brownian": float(paths.noise_correlation_bm(s, t)),
              "kl": float(paths.noise_correlation_kl(s, t, cfg.d_plot))} for s, t in CORRELATION_PAIRS]
    store.save_artefact(cfg.profile, "A.noise_correlation", {
        "title": "Correlation of the noise target across time",
        "ours": {"pairs": pairs, "d": cfg.d_plot},
        "paper": {"source": "Our diagnostic, derived from eq. (16) (not in the paper; Methods A.8)"},
        "verdict": "Closed form: the KL noise of one image varies smoothly in t.",
    }, fig)
    print("Noise correlation, Brownian against KL (d = %d): " % cfg.d_plot
          + "; ".join(f"({p['s']}, {p['t']}): {p['brownian']:.3f} against {p['kl']:.3f}" for p in pairs) + ".")
    table = pd.DataFrame([{"(s, t)": f"({p['s']:g}, {p['t']:g})", "Brownian": p["brownian"], f"KL d={cfg.d_plot}": p["kl"]}
                          for p in pairs])
    return display_table(table, caption="Ours: correlation of the noise target between times s and t.")


def _grid_figure(cfg: SmoothnessConfig):
    tf = np.linspace(0.005, 1, 400)
    tq = np.array([0.05, 0.1, 0.25, 0.5, 0.75, 1.0])
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.6))
    for k, col in enumerate(kl.basis_e(tf, 4).T, start=1):
        axes[0].plot(tf, col, label=f"$e_{k}$")
    axes[0].set(xlabel="t", title="Normalised basis $e_k(t)$")
    axes[0].legend(ncol=2)
    for d in cfg.d_values:
        axes[1].plot(tf, kl.v_d(tf, d), label=f"d={d}")
        axes[2].plot(tq, paths.exact_variance_kept(tq, d, SCHEDULE), "o-", label=f"exact (12), d={d}")
    axes[1].set(xlabel="t", ylim=(0, 1.02), title="Variance $v_d(t)$ of the truncated noise")
    axes[1].legend()
    axes[2].set(xlabel="t", ylim=(0, 1.02), title="Variance kept by the exact solution (12)")
    axes[2].legend(fontsize="small")
    fig.tight_layout()
    return fig


def grid_table(cfg: SmoothnessConfig):
    """Schedule and truncated variance on the T = 20 grid: VP against DDPM ``alpha_bar``, ``v_8``, ``v_10``, ``e_1``,
    ``e_2``; figure of ``e_k``, ``v_d`` and the variance the exact solution (12) keeps; artefact ``A.tableA1``."""
    tg = training_grid(KL_GRID)
    agree = schedule_agreement(KL_GRID)
    e12 = kl.basis_e(tg, 2)
    table = pd.DataFrame({"i": np.arange(1, KL_GRID + 1), "t_i": tg, "alpha_bar VP": agree["alpha_bar_vp"],
                          "alpha_bar DDPM[50i-1]": agree["alpha_bar_ddpm"], "v_8": kl.v_d(tg, 8), "v_10": kl.v_d(tg, 10),
                          "e_1": e12[:, 0], "e_2": e12[:, 1]})
    fig = _grid_figure(cfg)
    verdict = f"Holds: the VP and DDPM schedules agree to {agree['max_abs']:.1e}; v_8(1) = {kl.v_d(1.0, 8):.5f}."
    store.save_artefact(cfg.profile, "A.tableA1", {
        "title": "Schedule and truncated variance on the T=20 grid (Methods A.1 and A.4)",
        "ours": {"max_abs_alpha_bar_diff": agree["max_abs"], "v_8(1)": float(kl.v_d(1.0, 8)), "v_10(1)": float(kl.v_d(1.0, 10))},
        "paper": {"source": "Derived from eqs. (4) and (16), not in the paper (Methods A.1 and A.4)"},
        "verdict": verdict,
    }, fig)
    print(f"max |alpha_bar VP - alpha_bar DDPM| = {agree['max_abs']:.2e}. {verdict}")
    return display_table(table, digits=5, caption="Ours: the continuous VP schedule against the discrete DDPM schedule on the T = 20 grid.")


def _conflict_figure(gc: dict, cfg: SmoothnessConfig):
    panels = [("baseline", "baseline (7), fresh noise"), ("baseline_shared", "baseline (7), shared noise"),
              ("kl", "KL (19), d = 8, shared Z")]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
    for ax, (key, title) in zip(axes, panels):
        r = gc[key]
        im = ax.imshow(r["cosine"], vmin=-1, vmax=1, cmap="RdBu_r", extent=[0, 1, 1, 0])
        ax.set_title(f"{title}\nmean cosine {r['mean_offdiag']:.2f} (neighbours {r['mean_neighbour']:.2f})", fontsize="small")
        ax.set(xlabel="$t_j$", ylabel="$t_i$")
        ax.grid(False)
    fig.colorbar(im, ax=axes, shrink=0.8, label="cosine of loss gradients")
    fig.suptitle(plotting.caption(cfg.profile, training_steps=cfg.gc_steps, images=gc["n_images"], seed=cfg.seed),
                 fontsize="small")
    return fig


def gradient_conflict(cfg: SmoothnessConfig):
    """Cosines of per-level loss gradients of a small trained baseline and KL-8d (our diagnostic); ``A.gradient_conflict``.

    Trains (or reuses) the two small runs of the profile; skipped (returns None) when
    ``cfg.gradient_conflict`` is False or ``cfg.gc_steps`` is 0.
    """
    if not cfg.gradient_conflict or cfg.gc_steps == 0:
        print("Gradient-conflict measurement switched off for this profile.")
        return None
    gc = gradient_conflict_study(cfg.profile_obj, cfg.gc_steps, cfg.seed)
    fig = _conflict_figure(gc, cfg)
    base, shared, kl_cos = (gc[x]["mean_offdiag"] for x in ("baseline", "baseline_shared", "kl"))
    verdict = gradient_conflict_verdict(base, shared, kl_cos)
    store.save_artefact(cfg.profile, "A.gradient_conflict", {
        "title": "Gradient conflict across noise levels",
        "ours": {"mean_offdiag": {"baseline": base, "baseline_shared": shared, "kl": kl_cos}, "steps": cfg.gc_steps,
                 "seed": cfg.seed,
                 "runs": {x: gc[x]["run"] for x in ("baseline", "kl")}},
        "paper": {"claim": "Brownian roughness causes conflicting optimisation directions across time steps",
                  "source": "Paper A, Sec. 3.3 (qualitative; not measured)"},
        "paper_summary": "not measured in the paper",
        "ours_summary": f"mean cosine: baseline {base:.2f}, baseline shared noise {shared:.2f}, KL {kl_cos:.2f}",
        "verdict": verdict}, fig)
    print(verdict)
    return fig
