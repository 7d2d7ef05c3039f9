"""Karhunen-Loeve (KL) expansion of Brownian motion and of general covariance kernels.

Paper A (Ren et al. 2025, *Efficient Diffusion Training through Parallelization with
Truncated Karhunen-Loeve Expansion*), eqs. (8)-(10) and (16), and Appendix B,
eqs. (26)-(27); Methods A.3 (reconstructed: the paper's copy lost its equations).  Conventions:

* ``lambda_k = ((k - 1/2) pi)^-2``                          eigenvalues of min(s, t) on [0, 1]
* ``phi_k(t) = sqrt(2) sin((k - 1/2) pi t) / ((k - 1/2) pi)`` scaled basis, eq. (8)
* ``W^(d)_t = sum_{k<=d} Z_k phi_k(t)``                       truncation, eq. (9)
* ``e_k(t) = phi_k(t) / sqrt(t)``                             normalised basis, eq. (16)
* ``v_d(t) = sum_{k<=d} e_k(t)^2 in (0, 1)``                  variance of the truncated noise

Indices ``k`` are 1-based as in the paper.  Everything here is float64 numpy; torch
code converts the small tables it needs (see :func:`basis_table`).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from scipy import optimize

from kl_repro.core.config import ConfigError
from kl_repro.schedule import training_grid

__all__ = [
    "eigenvalue",
    "phi",
    "dphi",
    "basis_e",
    "v_d",
    "variance_share",
    "truncated_bm",
    "basis_table",
    "KERNELS",
    "covariance_kernel",
    "numerical_eigenpairs",
    "analytic_eigenpairs",
    "compare_eigenpairs",
    "truncation_mse",
    "integrated_truncation_error",
    "variance_table",
]


def _k_array(k) -> np.ndarray:
    k = np.asarray(k)
    if np.any(k < 1) or not np.issubdtype(k.dtype, np.integer):
        raise ConfigError(f"KL indices k are integers >= 1 (1-based, as in paper A), got {k!r}")
    return k.astype(np.float64)


def eigenvalue(k) -> np.ndarray:
    """``lambda_k = ((k - 1/2) pi)^-2``: eigenvalues of the Brownian covariance min(s, t), eq. (8)."""
    k = _k_array(k)
    return 1.0 / ((k - 0.5) * np.pi) ** 2


def phi(t, k) -> np.ndarray:
    """Scaled KL basis ``phi_k(t) = sqrt(2) sin((k-1/2) pi t) / ((k-1/2) pi)``, eq. (8).

    ``t``: times in [0, 1], any shape ``S``; ``k``: 1-based indices, shape ``(d,)``.
    Returns shape ``S + (d,)``.
    """
    t = np.asarray(t, dtype=np.float64)[..., None]
    w = (_k_array(k) - 0.5) * np.pi
    return np.sqrt(2.0) * np.sin(w * t) / w


def dphi(t, k) -> np.ndarray:
    """Time derivative ``phi_k'(t) = sqrt(2) cos((k-1/2) pi t)``, eq. (10); shape ``S + (d,)``."""
    t = np.asarray(t, dtype=np.float64)[..., None]
    w = (_k_array(k) - 0.5) * np.pi
    return np.sqrt(2.0) * np.cos(w * t) * np.ones_like(w)


def _check_d(d: int) -> None:
    if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 1:
        raise ConfigError(f"the number of KL terms d must be an integer >= 1, got {d!r}")


def basis_e(t, d: int) -> np.ndarray:
    """Normalised basis ``e_k(t) = phi_k(t) / sqrt(t)`` for k = 1..d, eq. (16); shape ``S + (d,)``.

    ``t`` must be in (0, 1]: ``e_k`` is the noise of ``x_t = alpha_t x_0 + sigma_t sum_k e_k(t) Z_k``.
    """
    _check_d(d)
    t = np.asarray(t, dtype=np.float64)
    if np.any(t <= 0) or np.any(t > 1):
        raise ConfigError("e_k(t) is defined for t in (0, 1]")
    return phi(t, np.arange(1, d + 1)) / np.sqrt(t)[..., None]


def v_d(t, d: int) -> np.ndarray:
    """``v_d(t) = sum_{k<=d} e_k(t)^2``: variance of the truncated KL noise, eq. (16); shape ``S``."""
    return np.sum(basis_e(t, d) ** 2, axis=-1)


def variance_share(d: int) -> np.ndarray:
    """Share of the total variance ``lambda_k / sum_j lambda_j = 8 / ((2k-1)^2 pi^2)`` for k = 1..d."""
    _check_d(d)
    k = np.arange(1, d + 1)
    return 8.0 / ((2 * k - 1) ** 2 * np.pi**2)


def truncated_bm(t, Z) -> np.ndarray:
    """Truncated Brownian path ``W^(d)_t = sum_{k<=d} Z_k phi_k(t)``, eq. (9).

    ``t``: shape ``(N,)``; ``Z``: shape ``(..., d)`` standard normal coefficients.
    Returns shape ``(..., N)``.
    """
    Z = np.asarray(Z, dtype=np.float64)
    P = phi(t, np.arange(1, Z.shape[-1] + 1))  # (N, d)
    return Z @ P.T


def basis_table(T: int, d: int) -> np.ndarray:
    """``E[i-1, k-1] = e_k(t_i)`` on the training grid ``t_i = i / T`` (Algorithm 1), shape ``(T, d)``.

    ``T`` is the number of training grid points (20 for the KL models), ``d`` the number of KL terms.
    """
    return basis_e(training_grid(T), d)


# --- Appendix B: the KL expansion of any covariance kernel --------------------------------

def _brownian(s, t, **_):
    return np.minimum(s, t)


def _bridge(s, t, **_):
    return np.minimum(s, t) - s * t


def _ou(s, t, theta: float = 1.0, **_):
    """Stationary Ornstein-Uhlenbeck covariance with unit variance: ``exp(-theta |s - t|)``."""
    return np.exp(-theta * np.abs(s - t))


KERNELS: dict[str, Callable] = {
    "brownian": _brownian,
    "brownian_bridge": _bridge,
    "ornstein_uhlenbeck": _ou,
}


def covariance_kernel(name: str) -> Callable:
    """Covariance function ``R(s, t)`` by name (``brownian``, ``brownian_bridge``, ``ornstein_uhlenbeck``)."""
    try:
        return KERNELS[name]
    except KeyError:
        raise ConfigError(f"unknown covariance kernel {name!r}; known: {', '.join(KERNELS)}") from None


def numerical_eigenpairs(kernel: str | Callable, n_grid: int, n_eig: int, **params):
    """Eigenpairs of the covariance operator ``(R f)(t) = int_0^1 R(s, t) f(s) ds`` (Appendix B).

    Nystrom method with the midpoint rule on ``n_grid`` cells: the symmetric matrix
    ``h R(s_i, s_j)`` is diagonalised and eigenvectors are scaled by ``1/sqrt(h)`` so
    that ``int f_k^2 = 1``.  Signs are fixed so that each eigenfunction starts positive.

    Returns ``(lam, s, f)``: eigenvalues ``(n_eig,)`` in decreasing order, grid ``(n_grid,)``
    and eigenfunctions ``(n_eig, n_grid)``.
    """
    if n_grid < 2 or n_eig < 1 or n_eig > n_grid:
        raise ConfigError(f"need n_grid >= 2 and 1 <= n_eig <= n_grid, got n_grid={n_grid}, n_eig={n_eig}")
    R = covariance_kernel(kernel) if isinstance(kernel, str) else kernel
    h = 1.0 / n_grid
    s = (np.arange(n_grid) + 0.5) * h
    A = h * R(s[:, None], s[None, :], **params)
    lam, vec = np.linalg.eigh(A)
    order = np.argsort(lam)[::-1][:n_eig]
    lam, vec = lam[order], vec[:, order].T / np.sqrt(h)
    first = vec[:, : max(2, n_grid // 50)].sum(axis=1)
    vec *= np.where(first < 0, -1.0, 1.0)[:, None]
    return lam, s, vec


def _ou_frequencies(theta: float, n: int) -> np.ndarray:
    """Roots ``w`` of ``(w^2 - theta^2) sin w = 2 theta w cos w`` on (0, inf), the OU eigen-frequencies.

    For ``R = exp(-theta |s - t|)`` on [0, 1], ``lambda = 2 theta / (theta^2 + w^2)`` and
    ``f(t) ~ w cos(w t) + theta sin(w t)``.  Exactly one root lies in each ``(j pi, (j+1) pi)``.
    """

    def g(w):
        return (w * w - theta * theta) * np.sin(w) - 2 * theta * w * np.cos(w)

    roots = []
    j = 0
    while len(roots) < n:
        lo, hi = j * np.pi + 1e-12, (j + 1) * np.pi - 1e-12
        if g(lo) * g(hi) < 0:
            roots.append(optimize.brentq(g, lo, hi, xtol=1e-14))
        j += 1
    return np.array(roots)


def analytic_eigenpairs(kernel: str, s, n_eig: int, **params):
    """Closed-form eigenpairs of the covariance operators in :data:`KERNELS` on the points ``s``.

    * Brownian motion: eq. (8), ``lambda_k = ((k-1/2) pi)^-2``, ``sqrt(2) sin((k-1/2) pi t)``.
    * Brownian bridge: ``lambda_k = (k pi)^-2``, ``sqrt(2) sin(k pi t)``.
    * Stationary OU ``exp(-theta |s-t|)``: ``lambda = 2 theta/(theta^2+w^2)`` with ``w`` from
      :func:`_ou_frequencies`; eigenfunction ``w cos(w t) + theta sin(w t)``, normalised.

    Returns ``(lam, f)`` with eigenfunctions ``(n_eig, len(s))`` of unit L2 norm, first value positive.
    """
    s = np.asarray(s, dtype=np.float64)
    k = np.arange(1, n_eig + 1)
    if kernel == "brownian":
        w = (k - 0.5) * np.pi
        return 1.0 / w**2, np.sqrt(2.0) * np.sin(w[:, None] * s[None, :])
    if kernel == "brownian_bridge":
        w = k * np.pi
        return 1.0 / w**2, np.sqrt(2.0) * np.sin(w[:, None] * s[None, :])
    if kernel == "ornstein_uhlenbeck":
        theta = float(params.get("theta", 1.0))
        w = _ou_frequencies(theta, n_eig)
        lam = 2 * theta / (theta**2 + w**2)
        f = w[:, None] * np.cos(w[:, None] * s) + theta * np.sin(w[:, None] * s)
        # int_0^1 (w cos wt + theta sin wt)^2 dt in closed form
        norm2 = (
            (w**2 + theta**2) / 2
            + (w**2 - theta**2) * np.sin(2 * w) / (4 * w)
            + theta * (1 - np.cos(2 * w)) / 2
        )
        return lam, f / np.sqrt(norm2)[:, None]
    raise ConfigError(f"no closed form for kernel {kernel!r}; known: {', '.join(KERNELS)}")


def compare_eigenpairs(kernel: str, n_grid: int, n_eig: int, **params) -> dict:
    """Numerical (Nystrom) against closed-form eigenpairs of ``kernel`` on [0, 1] (Appendix B).

    Returns a dict with ``k`` (1-based), both eigenvalue columns, their relative error, the
    maximum absolute eigenfunction error per k, the grid ``s`` and both eigenfunction arrays.
    """
    lam_num, s, f_num = numerical_eigenpairs(kernel, n_grid, n_eig, **params)
    lam_ana, f_ana = analytic_eigenpairs(kernel, s, n_eig, **params)
    return {
        "kernel": kernel,
        "k": np.arange(1, n_eig + 1),
        "lam_numerical": lam_num,
        "lam_analytic": lam_ana,
        "rel_err": np.abs(lam_num - lam_ana) / lam_ana,
        "eigfun_err": np.max(np.abs(f_num - f_ana), axis=1),
        "s": s,
        "f_numerical": f_num,
        "f_analytic": f_ana,
    }


def truncation_mse(t, d: int) -> np.ndarray:
    """``E[(W_t - W^(d)_t)^2] = t - sum_{k<=d} phi_k(t)^2`` (Mercer), shape of ``t``."""
    _check_d(d)
    return np.asarray(t, dtype=np.float64) - np.sum(phi(t, np.arange(1, d + 1)) ** 2, axis=-1)


def integrated_truncation_error(d: int) -> float:
    """``int_0^1 E[(W_t - W^(d)_t)^2] dt = sum_{k>d} lambda_k = 1/2 - sum_{k<=d} lambda_k``."""
    _check_d(d)
    return float(0.5 - np.sum(eigenvalue(np.arange(1, d + 1))))


def variance_table(d_max: int) -> list[dict]:
    """Rows k = 1..d_max: ``lambda_k``, share of variance, cumulative share, ``v_k(1)`` (eqs. (8), (16); Methods A.3)."""
    share = variance_share(d_max)
    lam = eigenvalue(np.arange(1, d_max + 1))
    return [
        {"k": k, "lambda_k": float(lam[k - 1]), "share": float(share[k - 1]),
         "cumulative_share": float(share[:k].sum()), "v_k(1)": float(v_d(1.0, k))}
        for k in range(1, d_max + 1)
    ]
