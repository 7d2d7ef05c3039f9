"""The Fokker-Planck eigenfunction sampler of paper B: density from gEDMD, then Langevin.

Paper B, Sec. 3.2-3.3, eqs. (10), (12)-(18) and Algorithm 1, implemented as ``fp_paper_spec.md``
sections 3.6-4.6 read them.  One *group* is:

1. ``M`` reference points drawn without replacement (perturbed to ``p_{t*}`` when ``t* > eps``);
2. the frozen-time generator of the reverse SDE in reverse time, drift ``b = -f + g^2 s(x, t*)``,
   diffusion ``a = g(t*)^2`` (``convention="reverse_time"``), and its gEDMD eigenpairs (:mod:`.gedmd`);
3. coefficients of the prior KDE (13)-(14) in log space: the paper's RKHS projection (``"paper"``)
   or the biorthogonal one (``"biorthogonal"``); weights
   ``w = Re sum_{l<=L} c_l e^{+lam_l tau} u_l`` so that ``p0(x) ~ sum_m w_m k_{zeta_s}(x_m, x)``;
4. corrector-only Langevin (18) with noise scale ``eta`` on the score of ``p0`` in signed
   log-sum-exp form; where ``p0 <= 0`` the score is undefined and a counted fallback is used.

Presets (:func:`fp_preset`): ``"paper"`` is literal wherever the paper is well-defined (paper
coefficients, raw last iterate); ``"recommended"`` adds the spec's corrections (biorthogonal
coefficients, Tweedie output).  Every result records its preset and the full config.

What this samples (spec 0.4): with exact scores the top eigen-density is ``~ p_{t*}^2`` (VE), and
Langevin with noise ``eta`` targets ``p0^(1/eta^2)``; for small ``L`` the chain is Langevin on a
signed, weighted KDE of the ``M`` references.  :func:`memorisation_report` measures the consequence.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable, Literal

import numpy as np
import torch

from kl_repro.paper_b import gedmd
from kl_repro.core.config import Config, ConfigError, require, to_dict
from kl_repro.paper_b.kernels import log_gram, sqdist
from kl_repro.paper_b.sde import VESDE, VPSDE, check_score_input, make_sde

__all__ = [
    "FPConfig",
    "fp_preset",
    "PRESETS",
    "reference_set",
    "drift_at",
    "effective_bandwidths",
    "prior_log_mass",
    "select_modes",
    "coefficients",
    "mode_weights",
    "FPDensity",
    "fit_operator",
    "density_from_operator",
    "fit_density",
    "kde_score",
    "langevin",
    "solid_init",
    "gaussian_init",
    "structured_init",
    "box_init",
    "group_references",
    "run_chains",
    "initial_points",
    "sample_group",
    "GroupResult",
    "sample_groups",
    "nearest_neighbours",
    "memorisation_report",
]


@dataclass(frozen=True)
class FPConfig(Config):
    """Settings of the FP sampler; defaults are paper B's Sec. 4.1 (VE, CIFAR-10) with preset ``paper``."""

    preset: Literal["paper", "recommended", "custom"] = "paper"  # recorded with every result
    sde: Literal["ve", "vp"] = "ve"
    M: int = 2000  # reference points per group
    L: int = 5  # eigenfunctions kept (eq. (15))
    zeta: float = 22.0  # gEDMD / prior-KDE bandwidth (eq. (22) of Sec. 4.1)
    zeta_s: float = 5.0  # sampling bandwidth in the Langevin score
    eps: float = 0.5  # Langevin step size
    J: int = 1000  # Langevin iterations
    eta: float = 0.2  # noise scale (Sec. 4.1; Algorithm 1 has eta = 1)
    n_per_group: int = 200  # images per group (250 x 200 = 50,000)
    n_groups: int = 250
    tau: float = 1.0  # reverse duration T in e^{lam T}
    # --- choices the paper leaves open (spec section 5) ---
    t_star: float | None = None  # drift freeze time; None = the SDE's sampling epsilon
    perturb_refs: bool | None = None  # refs to p_{t*}; None = (t_star > epsilon)
    n_prior: int | None = None  # N prior draws in (13); None = M
    convention: Literal["reverse_time", "paper_literal"] = "reverse_time"  # generator of Sec. 3.6
    exp_sign: Literal["plus", "minus"] = "plus"  # e^{+lam tau}: eq. (15) read in reverse time
    coeffs: Literal["paper", "biorthogonal"] = "paper"  # eq. (14) or biorthogonal projection
    literal_index: bool = False  # True: solve the Koopman problem, as eqs. (7)+(9) literally do
    regularisation: Literal["truncated", "tikhonov"] = "truncated"
    gram_rtol: float = 1e-10  # truncation of the G0 eigenbasis
    weights: Literal["operator", "uniform", "stationary"] = "operator"  # uniform: plain-KDE control
    neg_policy: Literal["positive_part", "abs", "clip"] = "positive_part"  # score where p0 <= 0
    output: Literal["last", "mean", "tweedie"] = "last"  # paper: last iterate
    step: Literal["fixed", "snr"] = "fixed"  # "snr": score_sde's adaptive step (Remark 2)
    snr: float = 0.16
    init: Literal["solid", "gaussian", "structured"] = "solid"
    bandwidth: Literal["absolute", "median"] = "absolute"  # median: scale zeta, zeta_s by the data
    median_ref: float = 18.6  # CIFAR-10 [0, 1] median pairwise distance (spec E3)
    centered: bool | None = None  # model data scale: None = score_sde's (VE [0, 1], VP [-1, 1])
    seed: int = 0

    def check(self) -> None:
        require(self.M >= 1 and self.L >= 1, f"M and L must be >= 1, got M={self.M}, L={self.L}")
        require(self.M >= self.L, f"M = {self.M} reference points cannot give L = {self.L} eigenfunctions; need M >= L")
        require(self.zeta > 0, f"zeta must be > 0, got {self.zeta}")
        require(self.zeta_s > 0, f"zeta_s must be > 0, got {self.zeta_s}")
        require(self.eps > 0, f"the Langevin step eps must be > 0, got {self.eps}")
        require(self.eta >= 0, f"the noise scale eta must be >= 0, got {self.eta}")
        require(self.J >= 1, f"J must be >= 1, got {self.J}")
        require(self.n_per_group >= 1 and self.n_groups >= 1, "n_per_group and n_groups must be >= 1")
        require(self.tau > 0, f"tau must be > 0, got {self.tau}")
        require(self.t_star is None or 0 < self.t_star <= 1, f"t_star must be in (0, 1], got {self.t_star}")
        require(self.n_prior is None or self.n_prior >= 1, f"n_prior must be >= 1, got {self.n_prior}")
        require(0 <= self.gram_rtol < 1, f"gram_rtol must be in [0, 1), got {self.gram_rtol}")
        require(self.snr > 0 and self.median_ref > 0, "snr and median_ref must be > 0")
        require(not (self.literal_index and self.coeffs == "biorthogonal"),
                "literal_index=True reproduces the paper's literal reading and needs coeffs='paper'")
        _check_preset(self)

    @property
    def is_centered(self) -> bool:
        return (self.sde == "vp") if self.centered is None else self.centered

    def make_sde(self) -> VPSDE | VESDE:
        return make_sde(self.sde)


PRESETS: dict[str, dict] = {
    # literal wherever the paper is well-defined; eq. (15) read in reverse time (spec 3.6)
    "paper": {"convention": "reverse_time", "exp_sign": "plus", "coeffs": "paper", "literal_index": False,
              "regularisation": "truncated", "output": "last"},
    # spec section 10: reverse-time, truncated, biorthogonal, signed-LSE, Tweedie output
    "recommended": {"convention": "reverse_time", "exp_sign": "plus", "coeffs": "biorthogonal", "literal_index": False,
                    "regularisation": "truncated", "output": "tweedie"},
}


def _check_preset(cfg: FPConfig) -> None:
    if cfg.preset == "custom":
        return
    wrong = [f"{k}={getattr(cfg, k)!r}" for k, v in PRESETS[cfg.preset].items() if getattr(cfg, k) != v]
    require(not wrong, f"preset {cfg.preset!r} fixes {', '.join(f'{k}={v!r}' for k, v in PRESETS[cfg.preset].items())}; "
                       f"got {', '.join(wrong)} (use preset='custom' for other combinations)")


def fp_preset(name: Literal["paper", "recommended"], **overrides) -> FPConfig:
    """The ``paper`` or ``recommended`` preset with ``overrides``; it is named ``custom`` if they change a preset field."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose 'paper' or 'recommended'")
    changed = any(k in PRESETS[name] and v != PRESETS[name][k] for k, v in overrides.items())
    return FPConfig(**{**PRESETS[name], **overrides, "preset": "custom" if changed else name})


# --------------------------------------------------------------------------------------- set-up


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
    """Frozen-time drift ``b`` at ``X`` ``(M, *shape)`` and diffusion ``a = g(t*)^2`` (spec 3.6).

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
    """``(zeta, zeta_s, eps, ratio)`` after the bandwidth rule.

    ``absolute``: the config's values.  ``median``: ``zeta`` and ``zeta_s`` scaled by
    ``ratio = median pairwise distance / median_ref`` and ``eps`` by ``ratio^2``, which keeps the
    paper's ``eps / zeta_s^2 = 0.02`` and ``eta zeta_s / median`` (the "scaled equivalent" of spec E3).
    """
    if cfg.bandwidth == "absolute":
        return cfg.zeta, cfg.zeta_s, cfg.eps, 1.0
    sub = X[: min(len(X), 1000)]
    D = np.sqrt(sqdist(sub, sub)[np.triu_indices(len(sub), 1)])
    if D.size == 0 or np.median(D) <= 0:
        raise ConfigError("bandwidth='median' needs at least two distinct reference points")
    ratio = float(np.median(D)) / cfg.median_ref
    return cfg.zeta * ratio, cfg.zeta_s * ratio, cfg.eps * ratio**2, ratio


def prior_log_mass(X: np.ndarray, Y: np.ndarray, zeta: float) -> tuple[np.ndarray, dict]:
    """``log s_m = log sum_n k_zeta(x_m, y_n)`` up to one common constant, by log-sum-exp (spec 3.7).

    Both coefficient rules need only ``s``: eq. (14) gives ``c_l = u_l . s / N`` and the biorthogonal
    rule ``c_l = v_l . s / (N n_l)``.  In VE/CIFAR dimension ``log k ~ -8000`` underflows in float64;
    here only differences matter.  Also returns the effective numbers of prior draws and of
    references that contribute (``1 / sum p^2``).
    """
    E = log_gram(Y, X, zeta)  # (N, M)
    col = _lse(E, axis=0)  # (M,) log sum_n
    row = _lse(E, axis=1)  # (N,) log sum_m
    p_m = np.exp(col - _lse(col))
    p_n = np.exp(row - _lse(row))
    return col - col.max(), {"n_eff_prior": float(1 / np.sum(p_n**2)), "n_eff_refs": float(1 / np.sum(p_m**2)), "log_k_max": float(E.max()), "log_k_min": float(E.min())}


def _lse(a: np.ndarray, axis=None) -> np.ndarray:
    m = np.max(a, axis=axis, keepdims=True)
    out = m + np.log(np.sum(np.exp(a - m), axis=axis, keepdims=True))
    return out.squeeze() if axis is None else np.squeeze(out, axis=axis)


def select_modes(lam: np.ndarray, L: int) -> int:
    """``L``, or ``L + 1`` when the ``L``-th eigenvalue's complex conjugate comes next (so ``p0`` is real)."""
    L = min(L, len(lam))
    if L < len(lam) and abs(lam[L - 1].imag) > 1e-12 * max(1.0, abs(lam[L - 1])):
        if abs(lam[L] - np.conj(lam[L - 1])) <= 1e-8 * max(1.0, abs(lam[L - 1])):
            return L + 1
    return L


def coefficients(U: np.ndarray, V: np.ndarray, pairing: np.ndarray, log_s: np.ndarray, mode: str) -> np.ndarray:
    """Prior coefficients ``c_l`` (columns of ``U``/``V``), scale-free (spec 3.7).

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


@dataclass
class FPDensity:
    """``p0(x) ~ sum_m w_m k_{zeta_s}(x_m, x)``: the fitted density of one group, and its score.

    ``refs`` ``(M, d)`` float64 in the model's scale; ``w`` ``(M,)`` real signed weights.
    """

    refs: np.ndarray
    w: np.ndarray
    zeta_s: float
    neg_policy: str = "positive_part"
    report: dict = field(default_factory=dict)
    eig: gedmd.GEDMD | None = None

    def __post_init__(self) -> None:
        self._cache: dict = {}
        self.has_neg = bool((self.w < 0).any())

    def parts(self, dtype=torch.float32) -> tuple:
        """``(C+, logw+, C-, logw-)``: references with positive / negative weight (``None`` if no negative)."""
        if dtype not in self._cache:
            pos, neg = self.w > 0, self.w < 0
            C = torch.as_tensor(self.refs, dtype=dtype)
            lw = torch.as_tensor(np.log(np.abs(np.where(self.w != 0, self.w, 1.0))), dtype=dtype)
            self._cache[dtype] = (C[pos], lw[pos], C[neg], lw[neg]) if self.has_neg else (C[pos], lw[pos], None, None)
        return self._cache[dtype]

    def score(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(grad log p0(x), tweedie mean x + zeta_s^2 grad log p0, fallback mask)`` for ``x`` ``(B, d)``."""
        return kde_score(x, *self.parts(x.dtype), zeta_s=self.zeta_s, neg_policy=self.neg_policy)

    def log_abs(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(log |p0(x)|, sign p0(x))`` up to the common constant, float64, for checks (``x`` ``(B, d)``)."""
        E = log_gram(np.asarray(x, dtype=np.float64), self.refs, self.zeta_s)
        with np.errstate(divide="ignore"):
            lw = np.log(np.abs(self.w))
        lp = _lse(np.where(self.w > 0, E + lw, -np.inf), axis=1)
        if not self.has_neg:
            return lp, np.ones_like(lp)
        ln = _lse(np.where(self.w < 0, E + lw, -np.inf), axis=1)
        diff = -np.expm1(ln - lp)  # 1 - r
        return lp + np.log(np.abs(diff)), np.sign(diff)


def _softmax_mean(x: torch.Tensor, C: torch.Tensor, logw: torch.Tensor, zeta_s: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(l, xbar)``: ``l = LSE_m(x.x_m / zeta_s^2 - ||x_m||^2 / 2 zeta_s^2 + log w_m)`` and the softmax mean of ``C``.

    The ``-||x||^2 / 2 zeta_s^2`` term of ``log k`` is common to all ``m`` and dropped (it cancels in the
    softmax and in ``l- - l+``): one fused GEMM per call.
    """
    bias = logw - (C * C).sum(1) / (2.0 * zeta_s**2)
    E = torch.addmm(bias[None, :], x, C.T, alpha=1.0 / zeta_s**2)
    m = E.amax(dim=1, keepdim=True)
    P = E.sub_(m).exp_()  # in place: E is not needed again
    total = P.sum(dim=1)
    return m[:, 0] + torch.log(total), (P @ C) / total[:, None]


def kde_score(x: torch.Tensor, C_pos: torch.Tensor, logw_pos: torch.Tensor, C_neg: torch.Tensor | None = None,
              logw_neg: torch.Tensor | None = None, zeta_s: float = 1.0, neg_policy: str = "positive_part", delta: float = 1e-6):
    """Score of ``p0(x) = sum_m w_m exp(-||x - x_m||^2 / 2 zeta_s^2)`` in signed log-sum-exp form (spec 4.2-4.3).

    With ``l+- = LSE(E + log|w|)`` over the positive / negative weights (``C+-``, ``logw+-``), softmax means
    ``xbar+-`` and ``g+- = (xbar+- - x) / zeta_s^2``: ``grad log p0 = (g+ - r g-) / (1 - r)``, ``r = e^{l- - l+}``,
    where ``r < 1 - delta``.  Elsewhere ``p0 <= 0`` and the score is undefined: the *fallback* is
    ``positive_part`` (``g+``), ``abs`` (the score of ``|p0|``; ``g+`` on the zero set) or ``clip``
    (that of ``abs`` with its norm capped at ``||g+||``).  Finite for any finite ``x``, however far.

    Returns ``(score (B, d), tweedie (B, d), fallback (B,) bool)``; ``tweedie = x + zeta_s^2 score``.
    """
    if neg_policy not in ("positive_part", "abs", "clip"):
        raise ConfigError(f"neg_policy must be 'positive_part', 'abs' or 'clip', got {neg_policy!r}")
    l_pos, m_pos = _softmax_mean(x, C_pos, logw_pos, zeta_s)
    if C_neg is None or C_neg.shape[0] == 0:
        return (m_pos - x) / zeta_s**2, m_pos, torch.zeros(x.shape[0], dtype=torch.bool)
    l_neg, m_neg = _softmax_mean(x, C_neg, logw_neg, zeta_s)
    r = torch.exp(torch.clamp(l_neg - l_pos, max=60.0))[:, None]
    one_minus_r = 1.0 - r
    ok = (one_minus_r > delta)[:, 0]
    away = one_minus_r.abs() > delta
    safe = torch.where(away, one_minus_r, torch.full_like(r, delta))
    signed_mean = (m_pos - r * m_neg) / safe  # = x + zeta_s^2 grad log|p0| wherever |1 - r| > delta
    if neg_policy == "positive_part":
        fb_mean = m_pos
    else:
        fb_mean = torch.where(away, signed_mean, m_pos)
        if neg_policy == "clip":
            g_abs, g_pos = fb_mean - x, m_pos - x
            cap = g_pos.norm(dim=1, keepdim=True) / g_abs.norm(dim=1, keepdim=True).clamp_min(1e-30)
            fb_mean = x + g_abs * cap.clamp(max=1.0)
    mean = torch.where(ok[:, None], signed_mean, fb_mean)
    return (mean - x) / zeta_s**2, mean, ~ok


def fit_operator(score: Callable, sde, X: torch.Tensor, cfg: FPConfig, n_keep: int, generator: torch.Generator) -> tuple[gedmd.GEDMD, np.ndarray, dict]:
    """Step 2 and the prior projection: frozen drift at ``X`` ``(M, *shape)``, gEDMD, ``log s`` of the prior KDE.

    Returns ``(eig, log_s, report)``; ``eig`` keeps vectors of the ``n_keep`` slowest modes, so one
    operator serves every ``L < n_keep`` (Table 3 reuses it).  ``report``: bandwidths, spectrum, timings.
    """
    M = X.shape[0]
    Xf = X.reshape(M, -1).double().numpy()
    zeta, zeta_s, eps, ratio = effective_bandwidths(Xf, cfg)
    t_star = cfg.t_star if cfg.t_star is not None else sde.eps
    t0 = time.perf_counter()
    B, a = drift_at(score, sde, X, t_star, cfg.convention)
    t1 = time.perf_counter()
    eig = gedmd.fit(Xf, B, a, zeta, rtol=cfg.gram_rtol, regularisation=cfg.regularisation, n_keep=min(n_keep, M))
    t2 = time.perf_counter()
    Y = sde.prior_sample((cfg.n_prior or M, Xf.shape[1]), generator=generator, dtype=torch.float64).numpy()
    log_s, proj = prior_log_mass(Xf, Y, zeta)
    report = {"zeta": zeta, "zeta_s": zeta_s, "eps": eps, "bandwidth_ratio": ratio, "a": a, "t_star": t_star,
              # the Laplacian part of K is ~ -(a d / 2 zeta^2) G0 in high dimension: a uniform shift (spec 3.6)
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
    ``weights="uniform"`` skips the operator: a plain KDE of the references (the control of spec 3.7).
    """
    M = X.shape[0]
    if cfg.weights == "uniform":
        Xf = X.reshape(M, -1).double().numpy()
        zeta, zeta_s, eps, ratio = effective_bandwidths(Xf, cfg)
        report = {"zeta": zeta, "zeta_s": zeta_s, "eps": eps, "bandwidth_ratio": ratio, "L_used": 0, "n_eff_weights": float(M)}
        return FPDensity(Xf, np.full(M, 1.0 / M), zeta_s, cfg.neg_policy, report)
    L = 1 if cfg.weights == "stationary" else cfg.L
    eig, log_s, report = fit_operator(score, sde, X, cfg, L + 1, generator)
    return density_from_operator(eig, log_s, cfg, report, L)


# ------------------------------------------------------------------------------------- sampling


def langevin(density: FPDensity, x0: torch.Tensor, eps: float, J: int, eta: float, output: str = "last",
             step: str = "fixed", snr: float = 0.16, generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict]:
    """Corrector-only Langevin on ``p0`` (eq. (18) with noise scale ``eta``, Sec. 4.1).

    ``x_{j+1} = x_j + eps grad log p0(x_j) + eta sqrt(2 eps) z_j`` for ``j < J``; ``step="snr"`` uses
    score_sde's ``eps_j = 2 (snr mean||z|| / mean||grad||)^2``.  ``output``: ``last`` = ``x_J`` (Algorithm 1's
    loop result), ``mean`` = the last noise-free update, ``tweedie`` = ``x_J + zeta_s^2 grad log p0(x_J)``.
    ``x0``: ``(B, d)``.  Returns ``(x, stats)``; ``stats`` counts fallback steps per chain and any
    non-finite score (replaced by the positive-part score and counted, never silently).
    """
    if eps <= 0 or eta < 0 or J < 1:
        raise ConfigError(f"need eps > 0, eta >= 0, J >= 1; got eps={eps}, eta={eta}, J={J}")
    if x0.ndim != 2 or x0.shape[1] != density.refs.shape[1]:
        raise ConfigError(f"initial points must be (B, d) with d = {density.refs.shape[1]}, got {tuple(x0.shape)}")
    x = x0.clone()
    x_mean = x
    n_fb = torch.zeros(x.shape[0], dtype=torch.long)
    n_nonfinite = torch.zeros(x.shape[0], dtype=torch.long)
    C_pos, lw_pos, _, _ = density.parts(x.dtype)
    for _ in range(J):
        s, _, fb = density.score(x)
        bad = ~torch.isfinite(s).all(1)
        if bad.any():
            s[bad] = kde_score(x[bad], C_pos, lw_pos, zeta_s=density.zeta_s)[0]
            n_nonfinite += bad.long()
        n_fb += fb.long()
        z = torch.randn(x.shape, generator=generator, dtype=x.dtype)
        if step == "snr":
            e = 2.0 * (snr * z.norm(dim=1).mean() / s.norm(dim=1).mean().clamp_min(1e-30)) ** 2
        else:
            e = eps
        x_mean = x + e * s
        x = x_mean + eta * math.sqrt(2.0 * float(e)) * z
    if output == "mean":
        x = x_mean
    elif output == "tweedie":
        x = density.score(x)[1]
    elif output != "last":
        raise ConfigError(f"output must be 'last', 'mean' or 'tweedie', got {output!r}")
    bad_rows = ~torch.isfinite(x).all(1)
    stats = {"n_fallback": n_fb.numpy(), "n_nonfinite_score": n_nonfinite.numpy(), "n_nonfinite_samples": int(bad_rows.sum())}
    if bad_rows.any():
        warnings.warn(f"{int(bad_rows.sum())} of {x.shape[0]} Langevin chains ended non-finite; they are reported in stats")
    return x, stats


def solid_init(n: int, shape: tuple[int, ...], lo: float, hi: float, generator: torch.Generator) -> torch.Tensor:
    """Solid-colour images (Sec. 4.1): one colour ``c ~ U[0, 1]^C`` per image, mapped to ``[lo, hi]``; ``(n, C, H, W)``."""
    c = torch.rand(n, shape[0], 1, 1, generator=generator, dtype=torch.float64)
    return (lo + (hi - lo) * c).expand(n, *shape).clone()


def gaussian_init(n: int, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """``N(0, I)`` initialisations (the paper's mode-collapse case), ``(n, *shape)``."""
    return torch.randn(n, *shape, generator=generator, dtype=torch.float64)


def box_init(n: int, lo: np.ndarray, hi: np.ndarray, generator: torch.Generator) -> torch.Tensor:
    """Uniform draws in the box ``[lo, hi]`` (the solid-colour analogue for points), ``(n, d)``."""
    lo, hi = torch.as_tensor(lo, dtype=torch.float64), torch.as_tensor(hi, dtype=torch.float64)
    return lo + (hi - lo) * torch.rand(n, lo.numel(), generator=generator, dtype=torch.float64)


def structured_init(n: int, shape: tuple[int, ...], lo: float, hi: float, generator: torch.Generator) -> tuple[torch.Tensor, list[str]]:
    """Structured initialisations for Fig. 2 (the paper gives no generator; spec 4.5's proposal).

    Cycles through ``blocks`` (axis-aligned blocks of 1-4 colours), ``edge`` (a straight edge between
    two colours) and ``blob`` (a filled ellipse on a background).  Returns ``(images (n, C, H, W), kinds)``.
    """
    C, H, W = shape
    yy, xx = torch.meshgrid(torch.linspace(0, 1, H, dtype=torch.float64), torch.linspace(0, 1, W, dtype=torch.float64), indexing="ij")
    out = torch.empty(n, C, H, W, dtype=torch.float64)
    kinds = []
    for i in range(n):
        kind = ("blocks", "edge", "blob")[i % 3]
        u = lambda *s: torch.rand(*s, generator=generator, dtype=torch.float64)  # noqa: E731
        cols = u(4, C)
        if kind == "blocks":
            k = int(torch.randint(1, 5, (1,), generator=generator))
            cy, cx = float(u(1)), float(u(1))
            quad = (yy > cy).long() * 2 + (xx > cx).long()
            img = cols[quad % k].permute(2, 0, 1)
        elif kind == "edge":
            ang, off = float(u(1)) * 2 * math.pi, float(u(1)) - 0.5
            side = ((xx - 0.5) * math.cos(ang) + (yy - 0.5) * math.sin(ang) > off * 0.5).long()
            img = cols[side].permute(2, 0, 1)
        else:
            cy, cx, ry, rx = 0.3 + 0.4 * float(u(1)), 0.3 + 0.4 * float(u(1)), 0.15 + 0.25 * float(u(1)), 0.15 + 0.25 * float(u(1))
            inside = (((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1).long()
            img = cols[inside].permute(2, 0, 1)
        out[i] = lo + (hi - lo) * img
        kinds.append(kind)
    return out, kinds


@dataclass
class GroupResult:
    """One group: samples ``(B, d)`` (model scale, flat), initialisations, the density and timings."""

    samples: torch.Tensor
    x0: torch.Tensor
    density: FPDensity
    ref_idx: torch.Tensor
    stats: dict
    t_setup: float
    t_sampling: float


def group_references(pool: torch.Tensor, sde, cfg: FPConfig, group: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Generator]:
    """Step 1 of group ``group``: its generator (seeded by ``cfg.seed`` and ``group``) and its ``M`` references."""
    g = torch.Generator().manual_seed(cfg.seed * 100_003 + group)
    t_star = cfg.t_star if cfg.t_star is not None else sde.eps
    perturb = cfg.perturb_refs if cfg.perturb_refs is not None else t_star > sde.eps
    X, idx = reference_set(pool, cfg.M, sde, t_star, perturb, g)
    return X, idx, g


def run_chains(density: FPDensity, x0: torch.Tensor, cfg: FPConfig, generator: torch.Generator) -> tuple[torch.Tensor, dict, float]:
    """Step 4: Langevin from ``x0`` ``(n, *shape)`` on ``density`` with ``cfg``'s ``J, eta, output, step``.

    Uses the effective step of the bandwidth rule (``density.report["eps"]``).  Returns ``(x (n, d), stats, seconds)``.
    """
    eps = density.report.get("eps", cfg.eps)
    t0 = time.perf_counter()
    x, stats = langevin(density, x0.reshape(x0.shape[0], -1).float(), eps, cfg.J, cfg.eta, cfg.output, cfg.step, cfg.snr, generator)
    stats.update(eps=eps, zeta_s=density.zeta_s)
    return x, stats, time.perf_counter() - t0


def sample_group(score: Callable, sde, pool: torch.Tensor, cfg: FPConfig, group: int = 0, x0: torch.Tensor | None = None,
                 n: int | None = None, box: tuple[np.ndarray, np.ndarray] | None = None) -> GroupResult:
    """One group of Algorithm 1: references, density, then ``n`` Langevin chains (default ``n_per_group``).

    ``pool``: candidate references ``(n_pool, *shape)`` in the model's scale, the same per-sample shape as
    the score model (else :class:`ConfigError`).  ``x0``: initialisations ``(n, *shape)``; by default
    from ``cfg.init`` (:func:`initial_points`).  Seeds: ``cfg.seed`` and ``group``.
    """
    check_score_input(score, pool)
    n = n or cfg.n_per_group
    t0 = time.perf_counter()
    X, idx, g = group_references(pool, sde, cfg, group)
    density = fit_density(score, sde, X, cfg, g)
    t_setup = time.perf_counter() - t0
    shape = tuple(pool.shape[1:])
    if x0 is None:
        x0 = initial_points(cfg, n, shape, pool, g, box)
    elif tuple(x0.shape[1:]) != shape:
        raise ConfigError(f"initialisations of shape {tuple(x0.shape[1:])} do not match the data shape {shape}")
    x, stats, t_sampling = run_chains(density, x0, cfg, g)
    return GroupResult(x, x0, density, idx, stats, t_setup, t_sampling)


def initial_points(cfg: FPConfig, n: int, shape, pool: torch.Tensor, g: torch.Generator, box=None) -> torch.Tensor:
    """``n`` initialisations ``(n, *shape)`` of kind ``cfg.init`` in the model's scale (Sec. 4.1, 4.3).

    Images ``(C, H, W)``: solid colours / structured patterns in the data range (VE ``[0, 1]``, VP
    ``[-1, 1]``) or ``N(0, I)``.  Points: ``solid`` is uniform in ``box`` (default: the pool's bounding box).
    """
    if len(shape) == 3:
        lo, hi = (-1.0, 1.0) if cfg.is_centered else (0.0, 1.0)
        if cfg.init == "solid":
            return solid_init(n, shape, lo, hi, g)
        if cfg.init == "structured":
            return structured_init(n, shape, lo, hi, g)[0]
        return gaussian_init(n, shape, g)
    if cfg.init == "gaussian":
        return gaussian_init(n, shape, g)
    if cfg.init == "structured":
        raise ConfigError("init='structured' needs image data (C, H, W)")
    flat = pool.reshape(pool.shape[0], -1).double()
    lo, hi = box if box is not None else (flat.min(0).values.numpy(), flat.max(0).values.numpy())
    return box_init(n, lo, hi, g).reshape(n, *shape)


def sample_groups(score: Callable, sde, pool: torch.Tensor, cfg: FPConfig, n_groups: int | None = None, n_per_group: int | None = None) -> dict:
    """``n_groups`` independent groups (fresh references each); returns samples ``(G B, d)`` and a report.

    The report names the preset and config, sums fallback counts, and separates set-up (``M`` score
    calls, Gram matrices, eigenpairs, coefficients) from Langevin time.
    """
    n_groups = n_groups or cfg.n_groups
    groups = [sample_group(score, sde, pool, cfg, group=k, n=n_per_group) for k in range(n_groups)]
    samples = torch.cat([r.samples for r in groups])
    fb = np.concatenate([r.stats["n_fallback"] for r in groups])
    report = {
        "preset": cfg.preset,
        "config": to_dict(cfg),
        "n_groups": n_groups,
        "n_samples": int(samples.shape[0]),
        "t_setup": float(sum(r.t_setup for r in groups)),
        "t_sampling": float(sum(r.t_sampling for r in groups)),
        "fallback_steps": int(fb.sum()),
        "chains_with_fallback": int((fb > 0).sum()),
        "nonfinite_samples": int(sum(r.stats["n_nonfinite_samples"] for r in groups)),
        "nonfinite_score_steps": int(sum(r.stats["n_nonfinite_score"].sum() for r in groups)),
    }
    return {"samples": samples, "groups": groups, "report": report}


# --------------------------------------------------------------------------------- diagnostics


def nearest_neighbours(Q: torch.Tensor, bank: torch.Tensor, k: int = 2, exclude_self: bool = False, chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """Euclidean ``k`` nearest neighbours of rows of ``Q`` ``(n, d)`` in ``bank`` ``(m, d)``: ``(dist (n, k), idx (n, k))``.

    ``exclude_self``: ``Q`` is ``bank`` and each point's own entry is skipped (training NN distances).
    """
    Q, bank = torch.as_tensor(Q), torch.as_tensor(bank)
    Q, bank = Q.reshape(Q.shape[0], -1).double(), bank.reshape(bank.shape[0], -1).double()
    dists, idxs = [], []
    for s in range(0, Q.shape[0], chunk):
        D = sqdist(Q[s : s + chunk], bank)
        if exclude_self:
            r = torch.arange(s, min(s + chunk, Q.shape[0]))
            D[r - s, r] = float("inf")
        d, i = torch.topk(D, k, dim=1, largest=False)
        dists.append(d.sqrt())
        idxs.append(i)
    return torch.cat(dists), torch.cat(idxs)


def memorisation_report(samples: torch.Tensor, train: torch.Tensor, group_refs: list[torch.Tensor] | None = None, copy_ratio: float = 1 / 3) -> dict:
    """Memorisation and diversity of samples (spec 4.4; mandatory for this sampler).

    * ``d_train``: distance of each sample to its nearest training image, against the training set's own
      nearest-neighbour distances (``train_nn_median``); ``ratio_to_train_nn`` = median ratio.
    * ``frac_copies``: share with ``d1 / d2 < copy_ratio`` (nearest vs second-nearest training image, the
      ratio test of Yoon et al. 2023 / Carlini et al. 2023).
    * ``distinct_nn``: number of distinct nearest training images among the samples, and per group the
      number of distinct nearest references (``group_refs``: each group's references, in sample order).
    All inputs in one scale, ``(n, ...)`` flattened inside.
    """
    d, i = nearest_neighbours(samples, train, k=2)
    dtr, _ = nearest_neighbours(train, train, k=1, exclude_self=True)
    ratio = d[:, 0] / d[:, 1].clamp_min(1e-30)
    out = {
        "d_train_median": float(d[:, 0].median()),
        "train_nn_median": float(dtr[:, 0].median()),
        "ratio_to_train_nn": float(d[:, 0].median() / dtr[:, 0].median().clamp_min(1e-30)),
        "frac_copies": float((ratio < copy_ratio).double().mean()),
        "distinct_nn": int(torch.unique(i[:, 0]).numel()),
        "n_samples": int(samples.shape[0]),
    }
    if group_refs:
        per = samples.shape[0] // len(group_refs)
        distinct, dref = [], []
        for k, R in enumerate(group_refs):
            dd, ii = nearest_neighbours(samples[k * per : (k + 1) * per], R, k=1)
            distinct.append(int(torch.unique(ii[:, 0]).numel()))
            dref.append(dd[:, 0])
        out["distinct_refs_per_group"] = distinct
        out["d_ref_median"] = float(torch.cat(dref).median())
    return out
