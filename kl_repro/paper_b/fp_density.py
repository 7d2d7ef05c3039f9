"""The fitted density ``p0(x) ~ sum_m w_m k_{zeta_s}(x_m, x)`` of one group and its score.

Paper B, eqs. (15)-(17); Methods B.4.  The weights ``w`` are real and signed, so the score is taken
in signed log-sum-exp form; where ``p0 <= 0`` it is undefined and a counted fallback is used.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from kl_repro.core.config import ConfigError
from kl_repro.paper_b import gedmd
from kl_repro.paper_b.kernels import log_gram

__all__ = ["log_sum_exp", "FPDensity", "kde_score"]


def log_sum_exp(a: np.ndarray, axis=None) -> np.ndarray:
    """``log sum exp(a)`` over ``axis`` (all entries for ``None``), shifted by the maximum, float64."""
    m = np.max(a, axis=axis, keepdims=True)
    out = m + np.log(np.sum(np.exp(a - m), axis=axis, keepdims=True))
    return out.squeeze() if axis is None else np.squeeze(out, axis=axis)


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
        lp = log_sum_exp(np.where(self.w > 0, E + lw, -np.inf), axis=1)
        if not self.has_neg:
            return lp, np.ones_like(lp)
        ln = log_sum_exp(np.where(self.w < 0, E + lw, -np.inf), axis=1)
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


def _fallback_mean(x, m_pos, signed_mean, away, neg_policy: str) -> torch.Tensor:
    """The Tweedie mean used where ``p0 <= 0``: ``positive_part``, ``abs`` or ``clip`` (see :func:`kde_score`)."""
    if neg_policy == "positive_part":
        return m_pos
    fb_mean = torch.where(away, signed_mean, m_pos)
    if neg_policy == "clip":
        g_abs, g_pos = fb_mean - x, m_pos - x
        cap = g_pos.norm(dim=1, keepdim=True) / g_abs.norm(dim=1, keepdim=True).clamp_min(1e-30)
        fb_mean = x + g_abs * cap.clamp(max=1.0)
    return fb_mean


def kde_score(x: torch.Tensor, C_pos: torch.Tensor, logw_pos: torch.Tensor, C_neg: torch.Tensor | None = None,
              logw_neg: torch.Tensor | None = None, zeta_s: float = 1.0, neg_policy: str = "positive_part", delta: float = 1e-6):
    """Score of ``p0(x) = sum_m w_m exp(-||x - x_m||^2 / 2 zeta_s^2)`` in signed log-sum-exp form (Methods B.4).

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
    fb_mean = _fallback_mean(x, m_pos, signed_mean, away, neg_policy)
    mean = torch.where(ok[:, None], signed_mean, fb_mean)
    return (mean - x) / zeta_s**2, mean, ~ok
