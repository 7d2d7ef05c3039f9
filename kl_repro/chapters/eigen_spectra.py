"""Chapter 5 (``notebooks/05_eigen_spectra.ipynb``): paper A's covariance operator beside paper B's Fokker-Planck operator.

Paper A, eq. (8) (Methods A.3) and paper B, eqs. (6)-(9), (15) (Methods B.2, B.5).  Each function makes
one section: it computes (:mod:`kl_repro.paper_a.kl`, :mod:`kl_repro.paper_b.spectra`), draws the figure,
stores the artefact (ids ``B.spectra_ou``, ``B.spectra_side_by_side``, ``B.spectra_mixture``,
``B.spectra_images``) and returns an :class:`~kl_repro.paper_b.report.Artefact`, which a notebook
displays as its tables, figure and a summary with the values and the verdict.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure

from kl_repro.chapters.base import ChapterConfig, set_threads
from kl_repro.core import plotting
from kl_repro.core.config import require
from kl_repro.core.tables import display_table
from kl_repro.paper_a import kl
from kl_repro.paper_b import figures, report, spectra, tables

__all__ = ["EigenSpectraConfig", "prepare", "brownian", "ou", "side_by_side", "mixture", "images"]


@dataclass(frozen=True)
class EigenSpectraConfig(ChapterConfig):
    """Parameters of ``notebooks/05_eigen_spectra.ipynb`` (paper A's covariance operator beside paper B's FP operator)."""

    n_grid: int = 1000  # Nystrom grid for the Brownian covariance operator (paper A, eq. (8))
    n_eig: int = 10
    ou_M: int = 500  # OU points (checks T1-T3)
    ou_zeta: float = 1.0
    mix_M: int = 1000  # mixture points (check T5)
    mix_zeta: float = 0.5
    sigma_stars: tuple[float, ...] = (0.1, 0.3, 1.0, 1.5)  # VE sigma(t*) of the 2-D spectra
    grid_n: int = 121  # 2-D evaluation grid per axis
    image_dataset: str = "digits"
    image_pool: int = 1500
    image_M: int = 1000
    image_t_stars: tuple[float, ...] = (1e-5, 0.1, 0.3, 0.5)  # VE freeze times for the image spectra
    n_show: int = 20

    def check(self) -> None:
        super().check()
        require(self.n_grid >= 10 and self.n_eig >= 2, "need n_grid >= 10 and n_eig >= 2")
        require(self.ou_M >= 20 and self.mix_M >= 20 and self.image_M >= 20, "M values must be >= 20")
        require(self.image_M <= self.image_pool, f"image_M = {self.image_M} > image_pool = {self.image_pool}")
        require(self.ou_zeta > 0 and self.mix_zeta > 0, "bandwidths must be > 0")
        require(len(self.sigma_stars) >= 1 and all(s > 0 for s in self.sigma_stars), "sigma_stars must be > 0")
        require(all(0 < t <= 1 for t in self.image_t_stars), "image_t_stars must be in (0, 1]")
        require(self.grid_n >= 21 and self.n_show >= 4, "grid_n >= 21 and n_show >= 4")


def prepare(cfg: EigenSpectraConfig) -> None:
    """The book's plot theme and the chapter's thread count."""
    plotting.set_theme()
    set_threads(cfg.threads)


def _meta(cfg: EigenSpectraConfig) -> dict:
    return {"profile": cfg.profile, "seed": cfg.seed}


def brownian(cfg: EigenSpectraConfig) -> report.Artefact:
    """Paper A's covariance operator ``min(s, t)``: closed form ``((k - 1/2) pi)^-2`` against Nystrom (no artefact of its own)."""
    bm = kl.compare_eigenpairs("brownian", cfg.n_grid, cfg.n_eig)
    bm["gap_ratio"] = float(bm["lam_analytic"][0] / bm["lam_analytic"][1])  # = 9
    table = display_table({"k": bm["k"], "lambda_k closed form": bm["lam_analytic"], "lambda_k Nystrom": bm["lam_numerical"],
                           "relative error": bm["rel_err"]}, digits=6,
                          caption=f"Ours: Nyström ({cfg.n_grid} points) against the closed form of paper A, eq. (8).")
    text = (f"Nyström with {cfg.n_grid} points: largest relative eigenvalue error {float(np.max(bm['rel_err'])):.1e} for "
            f"k <= {cfg.n_eig}; gap ratio lambda_1 / lambda_2 = {bm['gap_ratio']:.0f}.")
    return report.Artefact(None, bm, tables={"": table}, text=text)


def _side_figure(bm: dict, ou_res: dict, cfg: EigenSpectraConfig) -> Figure:
    """The decaying covariance spectrum of paper A against the growing generator spectrum of paper B (OU)."""
    fig = Figure(figsize=(6.5, 3.8))
    ax = fig.subplots()
    k = np.arange(1, cfg.n_eig + 1)
    ax.loglog(k, bm["lam_analytic"], "-", label=r"paper A: $\lambda_k$ of $\min(s,t)$ (closed form)")
    ax.loglog(k, bm["lam_numerical"], "o", ms=4, label="paper A: Nyström")
    ax.loglog(k, k, "--", label=r"paper B (OU): $|\lambda_n|=n$, exact")
    lam = ou_res["lam_truncated"]
    ax.loglog(k[: len(lam) - 1], np.abs(lam[1:]), "s", ms=4, label="paper B (OU): gEDMD, truncated")
    ax.set(xlabel="index", ylabel=r"$|\lambda|$", title="Covariance spectrum decays, generator spectrum grows")
    ax.legend(fontsize="small")
    fig.suptitle(plotting.caption(cfg.profile, n_grid=cfg.n_grid, M=cfg.ou_M, zeta=cfg.ou_zeta, seed=cfg.seed), fontsize="small")
    fig.tight_layout()
    return fig


def ou(cfg: EigenSpectraConfig) -> report.Artefact:
    """OU ``dX = -X dt + sqrt(2) dW`` (checks T1-T3): spectrum with and without the truncated basis; ``B.spectra_ou``."""
    res = spectra.ou_spectrum(cfg.ou_M, cfg.ou_zeta, cfg.seed, n_show=cfg.n_eig)
    payload = report.artefact_spectra_ou(_meta(cfg), res)
    fig = figures.ou_figure(res, plotting.caption(cfg.profile, M=cfg.ou_M, zeta=cfg.ou_zeta, seed=cfg.seed))
    text = (f"{cfg.ou_M} points from N(0, 1), bandwidth zeta = {cfg.ou_zeta:g}, seed {cfg.seed}: rank r = {res['r']}; spurious "
            f"near-zero eigenvalues in the top {cfg.n_eig}: truncated {res['spurious_truncated']}, Tikhonov {res['spurious_tikhonov']}. "
            f"{payload['verdict']}")
    return report.Artefact("B.spectra_ou", res, payload, fig, {"": tables.ou_table(res)}, text).save(cfg.profile)


def side_by_side(cfg: EigenSpectraConfig, bm: report.Artefact, ou_art: report.Artefact) -> report.Artefact:
    """The two spectra in one figure and one verdict; ``B.spectra_side_by_side``."""
    b, o = bm.data, ou_art.data
    ou_err = np.abs(o["lam_truncated"][:4] - o["lam_exact"][:4])
    ok = float(np.max(b["rel_err"])) < 1e-2 and float(np.max(ou_err)) < 0.1
    verdict = (f"{report.check_word(ok)} (exact spectra of both operators, a check of ours): "
               "Paper A's covariance operator min(s, t) is self-adjoint, positive and compact: eigenvalues ((k - 1/2) pi)^-2 fall like "
               "k^-2 (Nystrom with %d points: max relative error %.1e over k <= %d) with gap ratio lambda_1 / lambda_2 = %.0f. Paper B's "
               "Fokker-Planck operator is a generator: eigenvalues <= 0 and unbounded below, linear in n for OU (lambda_n = -n, "
               "recovered to %.3f, %.3f, %.3f, %.3f; spectral gap 1), found only after truncating G0's numerical null space "
               "(plain Tikhonov: %d spurious near-zero eigenvalues among the top %d)."
               % (cfg.n_grid, float(np.max(b["rel_err"])), cfg.n_eig, b["gap_ratio"], *ou_err, o["spurious_tikhonov"], len(o["lam_tikhonov"])))
    payload = {"ours": {**_meta(cfg), "brownian_lam": b["lam_numerical"].tolist(), "brownian_rel_err": b["rel_err"].tolist(),
                        "ou_lam": o["lam_truncated"].tolist(), "ou_M": o["M"]},
               "paper": {"A": "Paper A, eq. (8): lambda_k = ((k - 1/2) pi)^-2", "B": "Paper B, eqs. (6)-(9): kernel gEDMD of the FP operator"},
               "verdict": verdict, "paper_summary": "covariance vs generator spectra", "ours_summary": "BM k^-2 decay, gap 9; OU -n, gap 1"}
    art = report.Artefact("B.spectra_side_by_side", {"brownian": b, "ou": o}, payload, _side_figure(b, o, cfg), text=verdict)
    return art.save(cfg.profile)


def mixture(cfg: EigenSpectraConfig) -> report.Artefact:
    """The frozen reverse SDE of the 2-D mixture with exact scores (check T5): spectra and top eigen-densities; ``B.spectra_mixture``."""
    mix = spectra.mixture_spectra(cfg.sigma_stars, cfg.mix_M, cfg.mix_zeta, cfg.grid_n, cfg.seed, cfg.n_show)
    fig = figures.mixture_spectra_figure(mix, plotting.caption(cfg.profile, M=cfg.mix_M, zeta=cfg.mix_zeta, seed=cfg.seed))
    payload = report.artefact_spectra_mixture(_meta(cfg), mix)
    text = (f"{cfg.mix_M} points perturbed to p_t* at sigma* = {', '.join('%g' % s for s in cfg.sigma_stars)} (VE) and t* = 0.3 (VP), "
            f"bandwidth zeta = {cfg.mix_zeta:g}, {cfg.grid_n} x {cfg.grid_n} grid, seed {cfg.seed}. {payload['verdict']}")
    return report.Artefact("B.spectra_mixture", mix, payload, fig, {"": tables.mixture_table(mix)}, text).save(cfg.profile)


def images(cfg: EigenSpectraConfig) -> report.Artefact:
    """The FP spectrum of the frozen VE reverse SDE on images with the ideal score, against ``t*``; ``B.spectra_images``."""
    img = spectra.image_spectra(cfg.image_dataset, cfg.image_pool, cfg.image_M, cfg.image_t_stars, cfg.seed, cfg.n_show)
    payload = report.artefact_spectra_images(_meta(cfg), img)
    setup = (f"{cfg.image_M} references from the first {cfg.image_pool} training images of {cfg.image_dataset}, "
             f"t* = {', '.join('%g' % t for t in cfg.image_t_stars)}, seed {cfg.seed}. ") if img["available"] else ""
    shown = {"": tables.image_spectra_table(img)} if img["available"] else {}
    art = report.Artefact("B.spectra_images", img, payload, figures.image_spectra_figure(img), shown, setup + payload["verdict"])
    return art.save(cfg.profile)
