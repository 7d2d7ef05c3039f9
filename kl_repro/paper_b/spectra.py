"""Spectra of the frozen-time Fokker-Planck operator: OU, a 2-D mixture with exact scores, images.

Paper B, eqs. (6)-(9) and (15); Methods B.2 (gEDMD, truncated basis) and B.5 (checks T1-T3 on OU,
T5 on the mixture).  The OU process ``dX = -X dt + sqrt(2) dW`` has eigenvalues ``0, -1, -2, ...``
and Hermite eigenfunctions; the frozen reverse SDE of a mixture has the stationary density
``~ p_{t*}^2`` (VE), not ``p_{t*}``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from numpy.polynomial.hermite_e import hermeval
from scipy.ndimage import gaussian_filter

from kl_repro.paper_b import gedmd
from kl_repro.paper_b.fp_config import fp_preset
from kl_repro.paper_b.fp_operator import drift_at, fit_operator
from kl_repro.paper_b.groups import group_references
from kl_repro.paper_b.image_data import load_pool, to_model
from kl_repro.paper_b.scores import GaussianMixture, IdealScore, MixtureScore
from kl_repro.paper_b.sde import VESDE, VPSDE

__all__ = ["ou_spectrum", "square_grid", "smooth_on_grid", "l1_between", "mixture_spectra", "image_spectra"]


def _hermite(n: int, x: np.ndarray) -> np.ndarray:
    c = np.zeros(n + 1)
    c[n] = 1.0
    return hermeval(x, c)


def _ou_densities(res: gedmd.GEDMD, zeta: float) -> tuple[np.ndarray, list, list]:
    """The first three FP eigen-densities on ``[-6, 6]`` against ``sigma^-n He_n(x/sigma) N(x; 0, sigma^2)``."""
    xs = np.linspace(-6, 6, 601)
    rho = res.density(xs[:, None], 3).real
    s = math.sqrt(1 + zeta**2)
    curves, errs = [], []
    for n in range(3):
        target = s**-n * _hermite(n, xs / s) * np.exp(-xs**2 / (2 * s * s)) / math.sqrt(2 * math.pi * s * s)
        alpha = (rho[:, n] @ target) / (rho[:, n] @ rho[:, n])
        curves.append((alpha * rho[:, n], target))
        errs.append(float(np.abs(alpha * rho[:, n] - target).sum() / np.abs(target).sum()))
    return xs, curves, errs


def ou_spectrum(M: int = 500, zeta: float = 1.0, seed: int = 0, n_show: int = 10) -> dict:
    """OU (checks T1-T3): truncated gEDMD against plain Tikhonov, eigen-densities.

    Returns eigenvalues of both solvers, the number of spurious ``|lam| < 1e-6`` among the top
    ``n_show``, the rank ``r``, and the first three FP eigen-densities against the smoothed Hermite
    functions ``sigma^-n He_n(x / sigma) N(x; 0, sigma^2)``, ``sigma^2 = 1 + zeta^2``.
    """
    X = np.random.default_rng(seed).standard_normal((M, 1))
    res = gedmd.fit(X, -X, 2.0, zeta, n_keep=4)
    G0, K = gedmd.gram_generator(X, -X, 2.0, zeta)
    lam_tik, *_ = gedmd.solve(G0, K, regularisation="tikhonov", tikhonov=1e-6, n_keep=1)
    xs, curves, errs = _ou_densities(res, zeta)
    return {
        "lam_truncated": res.lam[:n_show].real, "lam_tikhonov": lam_tik[:n_show].real, "lam_exact": -np.arange(n_show, dtype=float),
        "spurious_truncated": int(np.sum(np.abs(res.lam[:n_show]) < 1e-6)) - int(abs(res.lam[0]) < 1e-6),
        "spurious_tikhonov": int(np.sum(np.abs(lam_tik[:n_show]) < 1e-6)),
        "r": res.info["r"], "M": M, "x": xs, "densities": curves, "density_rel_l1": errs,
    }


def square_grid(n: int, lim: float = 5.0) -> tuple[np.ndarray, np.ndarray]:
    """``(xs (n,), points (n^2, 2))``: the axis and the points of an ``n x n`` grid on ``[-lim, lim]^2`` (``ij`` order)."""
    xs = np.linspace(-lim, lim, n)
    return xs, np.stack(np.meshgrid(xs, xs, indexing="ij"), -1).reshape(-1, 2)


def smooth_on_grid(f: np.ndarray, n: int, h: float, width: float) -> np.ndarray:
    """``f`` on an ``n x n`` grid of spacing ``h`` convolved with ``N(0, width^2 I)`` (a kernel-smoothed density), flat."""
    return gaussian_filter(f.reshape(n, n), width / h, mode="constant", truncate=6.0).ravel()


def l1_between(f: np.ndarray, g: np.ndarray) -> float:
    """L1 distance of two non-negative grid functions, each normalised to total mass 1."""
    return float(np.abs(f / f.sum() - g / g.sum()).sum())


def _mixture_fit(sde, t_star: float, M: int, zeta: float, seed: int, mixture: GaussianMixture, n_keep: int = 8):
    g = torch.Generator().manual_seed(seed)
    x0, _ = mixture.sample(M, g)
    mean, std = sde.marginal(x0, t_star)
    X = mean + std * torch.randn(x0.shape, generator=g, dtype=torch.float64)
    B, a = drift_at(MixtureScore(mixture, sde), sde, X, t_star)
    return gedmd.fit(X.numpy(), B, a, zeta, n_keep=n_keep), a


def _mixture_row(kind, sde, t_star, sigma_star, M, zeta, seed, mixture, G, grid_n, h, n_show) -> tuple[dict, np.ndarray, np.ndarray]:
    res, a = _mixture_fit(sde, t_star, M, zeta, seed, mixture)
    rho = res.density(G, 4).real
    p = np.exp(mixture.log_prob(torch.from_numpy(G), t_star, sde).numpy())
    extra = np.exp((G**2).sum(1) / 2) if kind == "vp" else 1.0
    row = {
        "sde": kind, "sigma_star": sigma_star, "t_star": t_star, "a": a, "r": res.info["r"],
        "lam_over_a": (res.lam[:n_show] / a), "cluster_size": gedmd.cluster_size(res.lam),
        "max_im_over_re": gedmd.spectrum_report(res.lam)["max_im_over_re"],
        "l1_to_p2": l1_between(rho[:, 0], smooth_on_grid(p**2 * extra, grid_n, h, zeta)),
        "l1_to_p": l1_between(rho[:, 0], smooth_on_grid(p, grid_n, h, zeta)),
    }
    return row, rho, p


def mixture_spectra(sigma_stars=(0.1, 0.3, 1.0, 1.5), M: int = 1000, zeta: float = 0.5, grid_n: int = 121, seed: int = 0,
                    n_show: int = 20, vp_t_star: float = 0.3) -> dict:
    """2-D mixture with exact VE scores (check T5, experiment E2): spectrum against ``t*`` and the top eigen-density.

    For each ``sigma* = sigma(t*)``: eigenvalues in units of ``a = g(t*)^2``, the metastable cluster size,
    and the L1 distance of the top eigen-density to ``p_{t*}^2 * k`` and to ``p_{t*} * k`` on a grid.  One VP
    row (``t* = vp_t_star``) compares with ``p^2 e^{|x|^2/2} * k``.  ``show`` holds the top four
    eigen-densities of ``sigma* = 1`` (or the first) for plotting.
    """
    mixture = GaussianMixture()
    xs, G = square_grid(grid_n)
    h = xs[1] - xs[0]
    rows, show = [], None
    ve = VESDE()
    cases = [("ve", ve, ve.t_of_sigma(s), s) for s in sigma_stars] + [("vp", VPSDE(), vp_t_star, None)]
    for kind, sde, t_star, s in cases:
        row, rho, p = _mixture_row(kind, sde, t_star, s, M, zeta, seed, mixture, G, grid_n, h, n_show)
        rows.append(row)
        if kind == "ve" and (show is None or s == 1.0):
            show = {"sigma_star": s, "rho": rho.reshape(grid_n, grid_n, 4), "p2": smooth_on_grid(p**2, grid_n, h, zeta).reshape(grid_n, grid_n)}
    return {"rows": rows, "grid": xs, "show": show, "M": M, "zeta": zeta}


def _image_row(score, sde, x, t_star: float, M: int, seed: int, n_show: int) -> dict:
    cfg = fp_preset("paper", M=M, t_star=t_star, bandwidth="median", seed=seed)
    X, _, g = group_references(x, sde, cfg)
    eig, _, rep = fit_operator(score, sde, X, cfg, 2, g, solver="dense")  # the whole spectrum: counts and clusters
    lam = eig.lam[:n_show]
    return {"t_star": t_star, "sigma_t": float(sde.sigma(t_star)), "a": rep["a"], "zeta": rep["zeta"], "r": rep["r"],
            "cond": rep["cond_kept"], "lam": lam, "laplacian_shift": rep["laplacian_shift"],
            "top5_spread_over_shift": float((lam[0].real - lam[4].real) / abs(rep["laplacian_shift"])),
            "positive_eigenvalues": int(np.sum(eig.lam.real > 1e-9 * np.abs(eig.lam).max())),
            "cluster_size": rep["cluster_size"], "max_im_over_re": rep["max_im_over_re"], "t_gedmd": rep["t_gedmd"]}


def image_spectra(dataset: str = "digits", pool: int = 1500, M: int = 1000, t_stars=(1e-5, 0.1, 0.3, 0.5), seed: int = 0, n_show: int = 20) -> dict:
    """FP spectrum of the frozen VE reverse SDE on images with the ideal score, against ``t*`` (Methods B.2).

    Paper-equivalent bandwidths (``bandwidth="median"``).  Reports the top eigenvalues, the Laplacian's
    uniform shift ``-a d / (2 zeta^2)``, the spread of the top five relative to it, the cluster size, the
    rank and conditioning.  No rows (``available=False``) when the data set is absent.
    """
    data = load_pool(dataset, pool)
    if data is None:
        return {"dataset": dataset, "available": False, "rows": []}
    sde = VESDE()
    x = to_model(data[0], "ve")
    score = IdealScore(x, sde)
    rows = [_image_row(score, sde, x, t_star, M, seed, n_show) for t_star in t_stars]
    return {"dataset": dataset, "available": True, "d": int(x[0].numel()), "M": M, "rows": rows}
