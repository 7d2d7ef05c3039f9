"""From a score model to the density of one group: frozen drift, gEDMD, prior projection, weights.

Paper B, Sec. 3.2-3.3, eqs. (10), (12)-(15); Methods B.2 (the frozen-time generator) and B.3 (from
eigenpairs to ``p0``).  One group:

1. ``M`` reference points drawn without replacement (perturbed to ``p_{t*}`` when ``t* > sampling_eps``);
2. the frozen-time generator of the reverse SDE in reverse time, drift ``b = -f + g^2 s(x, t*)``,
   diffusion ``a = g(t*)^2`` (``convention="reverse_time"``), and its gEDMD eigenpairs (:mod:`.gedmd`);
3. coefficients of the prior KDE (13)-(14) in log space: the paper's RKHS projection (``"paper"``)
   or the biorthogonal one (``"biorthogonal"``); weights ``w = Re sum_{l<=L} c_l e^{+lam_l tau} u_l``
   so that ``p0(x) ~ sum_m w_m k_{zeta_s}(x_m, x)`` (:class:`~kl_repro.paper_b.fp_density.FPDensity`).

With exact scores the top eigen-density is ``~ p_{t*}^2`` (VE), so for small ``L`` the density is a
signed, weighted KDE of the ``M`` references (Methods B.4).
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np
import torch

from kl_repro.core.config import ConfigError
from kl_repro.paper_b import gedmd
from kl_repro.paper_b.fp_config import FPConfig
from kl_repro.paper_b.fp_density import FPDensity, log_sum_exp
from kl_repro.paper_b.kernels import log_gram, sqdist
from kl_repro.paper_b.scores import check_score_input

__all__ = [
    "freeze_time",
    "reference_set",
    "drift_at",
    "effective_bandwidths",
    "prior_log_mass",
    "select_modes",
    "coefficients",
    "mode_weights",
    "fit_operator",
    "density_from_operator",
    "fit_density",
]


def freeze_time(cfg: FPConfig, sde) -> float:
    """The drift's freeze time ``t*``: ``cfg.t_star``, or the SDE's ``sampling_eps`` when unset."""
    return cfg.t_star if cfg.t_star is not None else sde.sampling_eps


def reference_set(pool: torch.Tensor, M: int, sde, t_star: float, perturb: bool, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``M`` points of ``pool`` ``(n, *shape)`` without replacement, perturbed to ``p_{t*}`` if ``perturb``.

    Returns ``(X, idx)``: ``X`` ``(M, *shape)`` float64 and the indices into ``pool``.
    """
    if M > pool.shape[0]:
        raise ConfigError(f"M = {M} reference points requested from a pool of only {pool.shape[0]}")
    idx = torch.randperm(pool.shape[0], generator=generator)[:M]
    X = pool[idx].double()
    if perturb:
        mean, std = sde.marginal(X, t_star)
        X = mean + std * torch.randn(X.shape, generator=generator, dtype=torch.float64)
    return X, idx


def drift_at(score: Callable, sde, X: torch.Tensor, t_star: float, convention: str = "reverse_time", batch: int = 500) -> tuple[np.ndarray, float]:
    """Frozen-time drift ``b`` at ``X`` ``(M, *shape)`` and diffusion ``a = g(t*)^2`` (Methods B.2).

    ``reverse_time``: the reverse SDE (10) in reverse time, ``b = -f + g^2 s(x, t*)``;
    ``paper_literal``: ``b = h = f - g^2 s`` with ``+a/2 lap`` (not a proper generator; ablation).
    Costs ``M`` score evaluations.  Returns ``(B (M, d) float64, a)``.
    """
    check_score_input(score, X)
    dtype = getattr(score, "dtype", torch.float64)
    out = []
    with torch.no_grad():
        for s in range(0, X.shape[0], batch):
            xs = X[s : s + batch].to(dtype)
            out.append(score(xs, torch.full((xs.shape[0],), float(t_star), dtype=dtype)).double())
    S = torch.cat(out).reshape(X.shape[0], -1)
    Xf = X.reshape(X.shape[0], -1)
    g2 = float(sde.g2(float(t_star)))
    f = sde.f(Xf, float(t_star))
    B = -f + g2 * S if convention == "reverse_time" else f - g2 * S
    if not torch.isfinite(B).all():
        raise FloatingPointError(f"the score model returned non-finite values at {int((~torch.isfinite(B)).any(1).sum())} reference points")
    return B.numpy(), g2


def effective_bandwidths(X: np.ndarray, cfg: FPConfig) -> tuple[float, float, float, float]:
    """``(zeta, zeta_s, step_size, ratio)`` after the bandwidth rule.

    ``absolute``: the config's values.  ``median``: ``zeta`` and ``zeta_s`` scaled by
    ``ratio = median pairwise distance / median_ref`` and ``step_size`` by ``ratio^2``, which keeps the
    paper's ``step_size / zeta_s^2 = 0.02`` and ``eta zeta_s / median`` (the paper's values carried to
    another data scale; the Deviations page).
    """
    if cfg.bandwidth == "absolute":
        return cfg.zeta, cfg.zeta_s, cfg.step_size, 1.0
    sub = X[: min(len(X), 1000)]
    D = np.sqrt(sqdist(sub, sub)[np.triu_indices(len(sub), 1)])
    if D.size == 0 or np.median(D) <= 0:
        raise ConfigError("bandwidth='median' needs at least two distinct reference points")
    ratio = float(np.median(D)) / cfg.median_ref
    return cfg.zeta * ratio, cfg.zeta_s * ratio, cfg.step_size * ratio**2, ratio


def prior_log_mass(X: np.ndarray, Y: np.ndarray, zeta: float) -> tuple[np.ndarray, dict]:
    """``log s_m = log sum_n k_zeta(x_m, y_n)`` up to one common constant, by log-sum-exp (Methods B.3).

    Both coefficient rules need only ``s``: eq. (14) gives ``c_l = u_l . s / N`` and the biorthogonal
    rule ``c_l = v_l . s / (N n_l)``.  In VE/CIFAR dimension ``log k ~ -8000`` underflows in float64;
    here only differences matter.  Also returns the effective numbers of prior draws and of
    references that contribute (``1 / sum p^2``).
    """
    E = log_gram(Y, X, zeta)  # (N, M)
    col = log_sum_exp(E, axis=0)  # (M,) log sum_n
    row = log_sum_exp(E, axis=1)  # (N,) log sum_m
    p_m = np.exp(col - log_sum_exp(col))
    p_n = np.exp(row - log_sum_exp(row))
    return col - col.max(), {"n_eff_prior": float(1 / np.sum(p_n**2)), "n_eff_refs": float(1 / np.sum(p_m**2)), "log_k_max": float(E.max()), "log_k_min": float(E.min())}


def select_modes(lam: np.ndarray, L: int) -> int:
    """``L``, or ``L + 1`` when the ``L``-th eigenvalue's complex conjugate comes next (so ``p0`` is real)."""
    L = min(L, len(lam))
    if L < len(lam) and abs(lam[L - 1].imag) > 1e-12 * max(1.0, abs(lam[L - 1])):
        if abs(lam[L] - np.conj(lam[L - 1])) <= 1e-8 * max(1.0, abs(lam[L - 1])):
            return L + 1
    return L


def coefficients(U: np.ndarray, V: np.ndarray, pairing: np.ndarray, log_s: np.ndarray, mode: str) -> np.ndarray:
    """Prior coefficients ``c_l`` (columns of ``U``/``V``), scale-free (Methods B.3).

    ``paper`` (eq. (14)): ``c_l = <p_T, phi_l>_H = u_l . s``; ``biorthogonal``: ``c_l = (v_l . s) / n_l``
    with ``n_l = u_l^T G0 v_l / M``.  ``s = exp(log_s)``; the dropped common factor cancels in the score.
    """
    s = np.exp(log_s - log_s.max())
    if mode == "paper":
        return U.T @ s
    if mode == "biorthogonal":
        return (V.T @ s) / pairing
    raise ConfigError(f"coeffs must be 'paper' or 'biorthogonal', got {mode!r}")


def mode_weights(lam: np.ndarray, U: np.ndarray, c: np.ndarray, tau: float, sign: str = "plus") -> np.ndarray:
    """``w = Re sum_l c_l e^{+-lam_l tau} u_l`` (eq. (15)), real ``(M,)``, with total mass made positive.

    The exponentials are shifted by their largest real part (a positive common factor), so
    ``e^{-lam tau}`` with ``lam << 0`` cannot overflow; the score (16) is invariant to that factor and to
    ``w -> -w``, so the sign is fixed by ``sum(w) > 0``.
    """
    expo = (1.0 if sign == "plus" else -1.0) * lam * tau
    factor = np.exp(expo - expo.real.max())
    w = np.real(U @ (c * factor))
    total = w.sum()
    return w * (1.0 if total >= 0 else -1.0)


def fit_operator(score: Callable, sde, X: torch.Tensor, cfg: FPConfig, n_keep: int, generator: torch.Generator,
                 solver: str = "auto") -> tuple[gedmd.GEDMD, np.ndarray, dict]:
    """Step 2 and the prior projection: frozen drift at ``X`` ``(M, *shape)``, gEDMD, ``log s`` of the prior KDE.

    Returns ``(eig, log_s, report)``; ``eig`` keeps vectors of the ``n_keep`` slowest modes, so one
    operator serves every ``L < n_keep`` (Table 3 reuses it).  ``report``: bandwidths, spectrum, timings.
    ``solver`` (:func:`kl_repro.paper_b.gedmd.solve`): ``"auto"`` computes only the leading eigenpairs
    from ``M = 1500`` on where the truncation removes nothing; ``"dense"`` every eigenvalue (for spectra).
    """
    M = X.shape[0]
    Xf = X.reshape(M, -1).double().numpy()
    zeta, zeta_s, step_size, ratio = effective_bandwidths(Xf, cfg)
    t_star = freeze_time(cfg, sde)
    t0 = time.perf_counter()
    B, a = drift_at(score, sde, X, t_star, cfg.convention)
    t1 = time.perf_counter()
    eig = gedmd.fit(Xf, B, a, zeta, rtol=cfg.gram_rtol, regularisation=cfg.regularisation, n_keep=min(n_keep, M), solver=solver)
    t2 = time.perf_counter()
    Y = sde.prior_sample((cfg.n_prior or M, Xf.shape[1]), generator=generator, dtype=torch.float64).numpy()
    log_s, proj = prior_log_mass(Xf, Y, zeta)
    report = {"zeta": zeta, "zeta_s": zeta_s, "step_size": step_size, "bandwidth_ratio": ratio, "a": a, "t_star": t_star,
              # the Laplacian part of K is ~ -(a d / 2 zeta^2) G0 in high dimension: a uniform shift (Methods B.2)
              "laplacian_shift": -a * Xf.shape[1] / (2 * zeta**2),
              "t_drift": t1 - t0, "t_gedmd": t2 - t1, "t_prior": time.perf_counter() - t2, **proj}
    report.update(gedmd.spectrum_report(eig.lam, eig.info, top=min(max(6, n_keep), len(eig.lam))))
    return eig, log_s, report


def density_from_operator(eig: gedmd.GEDMD, log_s: np.ndarray, cfg: FPConfig, report: dict, L: int | None = None) -> FPDensity:
    """Step 3: coefficients and weights for ``L`` modes (default ``cfg.L``; 1 for ``weights="stationary"``)."""
    L = (1 if cfg.weights == "stationary" else cfg.L) if L is None else L
    if eig.info["r"] < L or eig.U.shape[1] < L:
        raise ConfigError(f"only {min(eig.info['r'], eig.U.shape[1])} eigenpairs are available (rank r = {eig.info['r']} "
                          f"after the G0 truncation, gram_rtol={cfg.gram_rtol}); L = {L} is too large")
    L_used = min(select_modes(eig.lam, L), eig.U.shape[1])
    U, V = (eig.V, eig.U) if cfg.literal_index else (eig.U, eig.V)
    c = coefficients(U[:, :L_used], V[:, :L_used], eig.pairing[:L_used], log_s, cfg.coeffs)
    w = mode_weights(eig.lam[:L_used], U[:, :L_used], c, cfg.tau, cfg.exp_sign)
    p = np.abs(w) / np.abs(w).sum()
    rep = dict(report, L_used=L_used, frac_negative_w=float(np.mean(w < 0)),
               neg_over_pos_w=float(-w[w < 0].sum() / max(w[w > 0].sum(), 1e-300)), n_eff_weights=float(1 / np.sum(p**2)))
    return FPDensity(eig.X, w, report["zeta_s"], cfg.neg_policy, rep, eig)


def fit_density(score: Callable, sde, X: torch.Tensor, cfg: FPConfig, generator: torch.Generator) -> FPDensity:
    """Steps 2-3 of a group: frozen drift, gEDMD, prior coefficients, weights; returns :class:`FPDensity`.

    ``X``: the references ``(M, *shape)`` (model scale).  ``report`` holds the spectrum, the truncation
    rank, the effective numbers of prior draws / references / weights, and the set-up time split.
    ``weights="uniform"`` skips the operator: a plain KDE of the references (the control of Methods B.3).
    """
    M = X.shape[0]
    if cfg.weights == "uniform":
        Xf = X.reshape(M, -1).double().numpy()
        zeta, zeta_s, step_size, ratio = effective_bandwidths(Xf, cfg)
        report = {"zeta": zeta, "zeta_s": zeta_s, "step_size": step_size, "bandwidth_ratio": ratio, "L_used": 0, "n_eff_weights": float(M)}
        return FPDensity(Xf, np.full(M, 1.0 / M), zeta_s, cfg.neg_policy, report)
    L = 1 if cfg.weights == "stationary" else cfg.L
    eig, log_s, report = fit_operator(score, sde, X, cfg, L + 1, generator)
    return density_from_operator(eig, log_s, cfg, report, L)
