"""Chapter 1 (``notebooks/01_kl_expansion.ipynb``): the Karhunen-Loeve expansion of Brownian motion.

Paper A, eqs. (8)-(10), (16) and Appendix B, eqs. (26)-(27); Methods A.3.  Each function below makes
one section of the chapter: it computes with :mod:`kl_repro.paper_a.kl`, draws the figure, stores the
artefact (``store.save_artefact``; ids ``A.eq8_spectrum``, ``A.variance_shares``, ``A.kl_paths``),
prints its verdict and returns the table to display (a pandas ``Styler``) or the figure.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from kl_repro.chapters.base import ChapterConfig, set_threads
from kl_repro.core import plotting, store
from kl_repro.core.config import require
from kl_repro.core.tables import display_table
from kl_repro.paper_a import kl

__all__ = ["KLExpansionConfig", "prepare", "eigenpairs", "brownian_spectrum", "other_kernels", "variance_shares",
           "truncation_error", "sample_paths"]


@dataclass(frozen=True)
class KLExpansionConfig(ChapterConfig):
    """Parameters of the KL-expansion chapter; defaults reproduce the checks of eq. (8) at full resolution."""

    n_grid: int = 2000  # Nystrom grid for the numerical eigenpairs (Appendix B)
    n_eig: int = 10  # eigenpairs compared with the closed form
    d_values: tuple[int, ...] = (1, 2, 8)  # truncations drawn (plus the full path)
    d_max_table: int = 10  # rows of the variance-share table
    n_paths: int = 5  # sample paths per truncation
    path_grid: int = 1000  # time points per sample path
    ou_theta: float = 2.0  # OU kernel exp(-theta|s-t|) of the Appendix B comparison

    def check(self) -> None:
        super().check()
        require(self.n_grid >= 10, f"n_grid must be >= 10, got {self.n_grid}")
        require(1 <= self.n_eig <= self.n_grid, f"n_eig must be in [1, n_grid], got {self.n_eig}")
        require(len(self.d_values) >= 1 and all(d >= 1 for d in self.d_values), f"every d must be >= 1, got {self.d_values}")
        require(self.d_max_table >= 1, f"d_max_table must be >= 1, got {self.d_max_table}")
        require(self.n_paths >= 1, f"n_paths must be >= 1, got {self.n_paths}")
        require(self.path_grid >= 10, f"path_grid must be >= 10, got {self.path_grid}")
        require(self.ou_theta > 0, f"ou_theta must be > 0, got {self.ou_theta}")


def prepare(cfg: KLExpansionConfig) -> None:
    """The book's plot theme and the chapter's thread count."""
    plotting.set_theme()
    set_threads(cfg.threads)


@lru_cache(maxsize=8)
def _compare(kernel: str, n_grid: int, n_eig: int, theta: float | None) -> dict:
    params = {} if theta is None else {"theta": theta}
    return kl.compare_eigenpairs(kernel, n_grid, n_eig, **params)


def eigenpairs(cfg: KLExpansionConfig) -> list[dict]:
    """Nystrom against closed-form eigenpairs (:func:`kl_repro.paper_a.kl.compare_eigenpairs`) of the
    Brownian, Brownian-bridge and OU (``theta = cfg.ou_theta``) covariances; computed once per config."""
    return [_compare("brownian", cfg.n_grid, cfg.n_eig, None),
            _compare("brownian_bridge", cfg.n_grid, cfg.n_eig, None),
            _compare("ornstein_uhlenbeck", cfg.n_grid, cfg.n_eig, cfg.ou_theta)]


def _spectrum_figure(bm: dict, n_grid: int):
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    axes[0].loglog(bm["k"], bm["lam_analytic"], "-", label=r"closed form $((k-\frac{1}{2})\pi)^{-2}$")
    axes[0].loglog(bm["k"], bm["lam_numerical"], "o", label=f"Nyström, {n_grid} points")
    axes[0].set(xlabel="k", ylabel=r"$\lambda_k$", title="Eigenvalues of min(s, t)")
    axes[0].legend()
    every = max(1, n_grid // 40)
    for j in range(min(4, len(bm["k"]))):
        line, = axes[1].plot(bm["s"], bm["f_analytic"][j], lw=2, alpha=0.5)
        axes[1].plot(bm["s"][::every], bm["f_numerical"][j][::every], ".", color=line.get_color(), label=f"k={j + 1}")
    axes[1].set(xlabel="t", ylabel=r"$\sqrt{2}\sin((k-\frac{1}{2})\pi t)$",
                title="Eigenfunctions: lines closed form, dots Nyström")
    axes[1].legend(ncol=4, fontsize="small", loc="lower left")
    fig.tight_layout()
    return fig


def brownian_spectrum(cfg: KLExpansionConfig):
    """Eq. (8) checked: Nystrom eigenpairs of ``min(s, t)`` against the closed form; table, figure, ``A.eq8_spectrum``."""
    bm = eigenpairs(cfg)[0]
    table = pd.DataFrame({"k": bm["k"], "lambda_k (closed form)": bm["lam_analytic"],
                          "lambda_k (Nystrom)": bm["lam_numerical"], "relative error": bm["rel_err"],
                          "max |eigenfunction error|": bm["eigfun_err"]})
    fig = _spectrum_figure(bm, cfg.n_grid)
    max_err = float(bm["rel_err"].max())
    verdict = f"Holds: the numerical eigenvalues match the closed form to {max_err:.1e} relative for k <= {cfg.n_eig}."
    store.save_artefact(cfg.profile, "A.eq8_spectrum", {
        "title": "Eigenpairs of the Brownian covariance operator, eq. (8)",
        "ours": {"n_grid": cfg.n_grid, f"max_rel_err_lambda_k<={cfg.n_eig}": max_err, "profile": cfg.profile},
        "paper": {"lambda_k": "((k-1/2) pi)^-2", "source": "Paper A, eq. (8)"},
        "verdict": verdict,
    }, fig)
    print(f"Nyström on {cfg.n_grid} cells. {verdict}")
    return display_table(table, caption=f"Ours: Nyström on {cfg.n_grid} cells against the closed form of eq. (8) (the paper's formula).",
                         digits=6)


def other_kernels(cfg: KLExpansionConfig):
    """Appendix B: the same Nystrom recipe on the Brownian bridge and the OU kernel; table and spectra figure."""
    pairs = eigenpairs(cfg)
    table = pd.DataFrame([{"kernel": r["kernel"], "max relative eigenvalue error": r["rel_err"].max(),
                           "max eigenfunction error": r["eigfun_err"].max(), "lambda_1": r["lam_analytic"][0],
                           "lambda_1 / lambda_2": r["lam_analytic"][0] / r["lam_analytic"][1] if cfg.n_eig > 1 else np.nan}
                          for r in pairs])
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for r in pairs:
        line, = ax.semilogy(r["k"], r["lam_analytic"], "-", label=r["kernel"].replace("_", " "))
        ax.semilogy(r["k"], r["lam_numerical"], "o", color=line.get_color())
    ax.set(xlabel="k", ylabel=r"$\lambda_k$", title="Spectra of three covariance operators (lines: closed form; dots: Nyström)")
    ax.legend()
    worst = table["max relative eigenvalue error"].max()
    print(f"Largest relative eigenvalue error over the three kernels (k <= {cfg.n_eig}, {cfg.n_grid} cells): {worst:.1e}.")
    return display_table(table, caption=f"Ours: Nyström ({cfg.n_grid} cells) against each kernel's closed form (Appendix B).",
                         digits=4)


def variance_shares(cfg: KLExpansionConfig):
    """Share of the variance per KL term, ``8 / ((2k-1)^2 pi^2)``, and ``v_k(1)`` (eqs. (8), (16)); ``A.variance_shares``."""
    rows = kl.variance_table(cfg.d_max_table)
    verdict = (f"Closed form, reproduced exactly: 8 terms keep {100 * kl.v_d(1.0, 8):.2f} % of the variance, "
               f"10 keep {100 * kl.v_d(1.0, 10):.2f} %.")
    store.save_artefact(cfg.profile, "A.variance_shares", {
        "title": "Share of variance per KL term (paper A, eq. (8))",
        "ours": {"rows": rows, "profile": cfg.profile},
        "paper": {"source": "Paper A, Sec. 3.2 and eq. (8) (closed form)"},
        "verdict": verdict,
    })
    print(verdict)
    return display_table(rows, caption="Closed form of eq. (8), as the paper states it (no sampling).", digits=5,
                         rename={"cumulative_share": "cumulative share"})


def truncation_error(cfg: KLExpansionConfig):
    """``E[(W_t - W^(d)_t)^2]`` over time (left) and its integral ``sum_{k>d} lambda_k ~ 1/(pi^2 d)`` (right)."""
    t = np.linspace(0, 1, 501)
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    for d in sorted(set(cfg.d_values) | {4, 16}):
        axes[0].plot(t, kl.truncation_mse(t, d), label=f"d={d}")
    axes[0].set(xlabel="t", ylabel=r"$E[(W_t-W^{(d)}_t)^2]$", title="Truncation error over time")
    axes[0].legend(ncol=2)
    ds = np.arange(1, 65)
    axes[1].loglog(ds, [kl.integrated_truncation_error(int(d)) for d in ds], label="exact")
    axes[1].loglog(ds, 1 / (np.pi**2 * ds), "--", label=r"$1/(\pi^2 d)$")
    axes[1].set(xlabel="d", ylabel="integrated error", title=r"$\sum_{k>d}\lambda_k$")
    axes[1].legend()
    fig.tight_layout()
    print(f"Integrated truncation error: d = 8 leaves {kl.integrated_truncation_error(8):.4f}, "
          f"d = 64 leaves {kl.integrated_truncation_error(64):.5f} (1/(pi^2 d) = {1 / (np.pi**2 * 64):.5f}).")
    return fig


def sample_paths(cfg: KLExpansionConfig):
    """Truncated paths ``W^(d)`` (eq. (9)) with shared coefficients ``Z`` for each ``d`` and ``d = path_grid``; ``A.kl_paths``."""
    rng = np.random.default_rng(cfg.seed)
    t = np.linspace(0, 1, cfg.path_grid + 1)
    Z = rng.standard_normal((cfg.n_paths, cfg.path_grid))
    labels = [str(d) for d in cfg.d_values] + ["∞"]
    fig, axes = plt.subplots(1, len(labels), figsize=(3.2 * len(labels), 3.2), sharey=True)
    for ax, d, lab in zip(axes, list(cfg.d_values) + [cfg.path_grid], labels):
        ax.plot(t, kl.truncated_bm(t, Z[:, :d]).T, lw=1)
        ax.set(title=f"d = {lab}", xlabel="t")
    axes[0].set_ylabel(r"$W^{(d)}_t$")
    fig.suptitle(f"Truncated KL paths with shared coefficients ({plotting.caption(cfg.profile, paths=cfg.n_paths, seed=cfg.seed)})",
                 fontsize="small")
    fig.tight_layout()
    verdict = "Illustration: truncated paths are smooth and converge to the Brownian path as d grows."
    store.save_artefact(cfg.profile, "A.kl_paths", {
        "title": "Sample paths of W and W^(d) (companion to paper A, Fig. 1 left)",
        "ours": {"d": list(cfg.d_values), "paths": cfg.n_paths, "seed": cfg.seed, "profile": cfg.profile},
        "paper": {"source": "Paper A, Fig. 1 (caption partly lost; this companion panel is ours)"},
        "verdict": verdict,
    }, fig)
    print(f"{cfg.n_paths} paths on {cfg.path_grid + 1} time points; '∞' keeps {cfg.path_grid} terms. {verdict}")
    return fig
