"""Forward paths of the Brownian-driven VP process and of KL diffusion, and their smoothness.

Paper A, Sec. 3.3 (the paper argues qualitatively; the measurements are ours, Methods A.8).  Three forward
processes on [0, 1]:

* VP SDE driven by Brownian motion, eq. (4), simulated by Euler-Maruyama: nowhere differentiable,
  quadratic variation ``int_0^1 beta = 10.05`` per coordinate whatever the grid;
* KL diffusion, the ODE (11) with exact solution (12), ``x_t = alpha_t x_0 + sum_k b_k(t) Z_k``,
  ``b_k(t) = int_0^t (alpha_t / alpha_s) g(s) phi_k'(s) ds`` by quadrature;
* its approximation (16) used in training, ``x_t = alpha_t x_0 + sigma_t sum_k e_k(t) Z_k``.

Paths are arrays of shape ``(P, N + 1, D)``: P paths, the grid ``t_n = n / N`` and D coordinates
("pixels", independent).  Everything is vectorised numpy float64.
"""

from __future__ import annotations

import numpy as np

from kl_repro.core.config import ConfigError
from kl_repro.paper_a import kl
from kl_repro.schedule import VPSchedule

__all__ = [
    "uniform_grid",
    "vp_em_paths",
    "kl_exact_coefficients",
    "kl_exact_paths",
    "kl_approx_paths",
    "quadratic_variation",
    "path_length",
    "path_rank",
    "noise_correlation_kl",
    "noise_correlation_bm",
    "empirical_noise_correlation",
    "exact_variance_kept",
    "smoothness_table",
    "rank_table",
]


def uniform_grid(n_steps: int) -> np.ndarray:
    """``t_n = n / N`` for n = 0..N, shape ``(N + 1,)``."""
    if n_steps < 1:
        raise ConfigError(f"the number of grid steps must be >= 1, got {n_steps}")
    return np.linspace(0.0, 1.0, n_steps + 1)


def vp_em_paths(x0: np.ndarray, n_steps: int, rng: np.random.Generator, schedule: VPSchedule | None = None) -> np.ndarray:
    """Euler-Maruyama paths of ``dx = -1/2 beta(t) x dt + sqrt(beta(t)) dW``, eq. (2)/(4).

    ``x0``: shape ``(P, D)``.  Returns ``(P, N + 1, D)`` on :func:`uniform_grid`.
    """
    schedule = schedule or VPSchedule()
    x0 = np.asarray(x0, dtype=np.float64)
    t = uniform_grid(n_steps)
    dt = 1.0 / n_steps
    beta = schedule.beta(t[:-1])  # (N,)
    dW = rng.standard_normal((x0.shape[0], n_steps, x0.shape[1])) * np.sqrt(dt)
    out = np.empty((x0.shape[0], n_steps + 1, x0.shape[1]))
    out[:, 0] = x0
    x = x0.copy()
    # The recursion is linear: x_{n+1} = (1 - beta_n dt / 2) x_n + sqrt(beta_n) dW_n.  A loop over time
    # is inherent to Euler-Maruyama; each step is vectorised over paths and coordinates.
    decay = 1.0 - 0.5 * beta * dt
    noise = np.sqrt(beta)[None, :, None] * dW
    for n in range(n_steps):
        x = decay[n] * x + noise[:, n]
        out[:, n + 1] = x
    return out


def kl_exact_coefficients(t: np.ndarray, d: int, schedule: VPSchedule | None = None, n_quad: int = 20000) -> np.ndarray:
    """``b_k(t) = alpha_t int_0^t g(s) phi_k'(s) / alpha_s ds`` of eq. (12) by trapezoidal quadrature.

    ``t``: times in [0, 1], shape ``(N,)``.  Returns ``(N, d)``.  By Parseval (13),
    ``sum_k b_k(t)^2 -> sigma_t^2`` as ``d -> infinity``.
    """
    schedule = schedule or VPSchedule()
    s = np.linspace(0.0, 1.0, n_quad + 1)
    integrand = np.sqrt(schedule.beta(s))[:, None] * kl.dphi(s, np.arange(1, d + 1)) / schedule.alpha(s)[:, None]
    ds = np.diff(s)[:, None]
    cum = np.concatenate([np.zeros((1, d)), np.cumsum(0.5 * (integrand[1:] + integrand[:-1]) * ds, axis=0)])
    t = np.asarray(t, dtype=np.float64)
    cum_t = np.stack([np.interp(t, s, cum[:, k]) for k in range(d)], axis=-1)
    return schedule.alpha(t)[:, None] * cum_t


def kl_exact_paths(x0: np.ndarray, Z: np.ndarray, n_steps: int, schedule: VPSchedule | None = None) -> np.ndarray:
    """Exact solution (12) of the KL ODE (11) on :func:`uniform_grid`.

    ``x0``: ``(P, D)``; ``Z``: ``(P, d, D)`` standard normal, drawn once per path and shared along it.
    Returns ``(P, N + 1, D)``.
    """
    schedule = schedule or VPSchedule()
    t = uniform_grid(n_steps)
    b = kl_exact_coefficients(t, Z.shape[1], schedule)  # (N+1, d)
    return schedule.alpha(t)[None, :, None] * x0[:, None, :] + np.einsum("nk,pkd->pnd", b, Z)


def kl_approx_paths(x0: np.ndarray, Z: np.ndarray, n_steps: int, schedule: VPSchedule | None = None) -> np.ndarray:
    """Training-time approximation (16): ``x_t = alpha_t x0 + sigma_t sum_k e_k(t) Z_k``, ``e_k(0) := 0``."""
    schedule = schedule or VPSchedule()
    t = uniform_grid(n_steps)
    e = np.zeros((t.size, Z.shape[1]))
    e[1:] = kl.basis_e(t[1:], Z.shape[1])
    coef = schedule.sigma(t)[:, None] * e
    return schedule.alpha(t)[None, :, None] * x0[:, None, :] + np.einsum("nk,pkd->pnd", coef, Z)


def quadratic_variation(paths: np.ndarray) -> float:
    """Mean over paths of ``sum_n ||x_{n+1} - x_n||^2 / D``; tends to ``int beta`` for VP, to 0 for KL."""
    inc = np.diff(paths, axis=1)
    return float(np.mean(np.sum(inc**2, axis=1)))


def path_length(paths: np.ndarray) -> float:
    """Mean over paths of ``sum_n ||x_{n+1} - x_n|| / sqrt(D)``: grows like sqrt(N) for VP, converges for KL."""
    inc = np.diff(paths, axis=1)
    D = paths.shape[-1]
    return float(np.mean(np.sum(np.linalg.norm(inc, axis=-1), axis=1)) / np.sqrt(D))


def path_rank(path: np.ndarray, rtol: float = 1e-8) -> int:
    """Numerical rank of one discretised path, an ``(N + 1, D)`` matrix: full for VP, ``<= d + 1`` for KL."""
    s = np.linalg.svd(np.asarray(path, dtype=np.float64), compute_uv=False)
    return int(np.sum(s > rtol * s[0]))


def noise_correlation_kl(s, t, d: int) -> np.ndarray:
    """``Corr(n_s, n_t) = sum_k e_k(s) e_k(t) / sqrt(v_d(s) v_d(t))`` of the KL noise ``n_t = sum_k e_k(t) Z_k`` (16)."""
    es, et = kl.basis_e(s, d), kl.basis_e(t, d)
    return np.sum(es * et, axis=-1) / np.sqrt(np.sum(es**2, -1) * np.sum(et**2, -1))


def noise_correlation_bm(s, t) -> np.ndarray:
    """``Corr(W_s / sqrt(s), W_t / sqrt(t)) = sqrt(min(s,t) / max(s,t))`` for Brownian noise."""
    s, t = np.asarray(s, dtype=np.float64), np.asarray(t, dtype=np.float64)
    return np.sqrt(np.minimum(s, t) / np.maximum(s, t))


def empirical_noise_correlation(noise: np.ndarray) -> np.ndarray:
    """Correlation matrix across time of noise samples ``(P, N, D)`` (pooled over paths and coordinates)."""
    x = np.moveaxis(noise, 1, 0).reshape(noise.shape[1], -1)
    return np.corrcoef(x)


def exact_variance_kept(t, d: int, schedule: VPSchedule | None = None) -> np.ndarray:
    """Share of the VP variance kept by the exact truncated solution, ``sum_{k<=d} b_k(t)^2 / sigma_t^2`` (eqs. (12)-(13))."""
    schedule = schedule or VPSchedule()
    t = np.asarray(t, dtype=np.float64)
    b = kl_exact_coefficients(t, d, schedule)
    return np.sum(b**2, axis=-1) / schedule.sigma(t) ** 2


def smoothness_table(n_paths: int, n_pixels: int, grids, d: int, seed: int = 0,
                     schedule: VPSchedule | None = None) -> list[dict]:
    """Quadratic variation and path length of the three forward processes as the grid refines.

    For each N in ``grids``: Brownian-driven VP (Euler-Maruyama), KL exact (12) and KL approximate
    (16) with ``d`` terms, all started from the same ``x0 ~ N(0, 0.25 I)``.  Returns one row per
    (process, N) with ``quadratic_variation`` and ``path_length`` (Methods A.8).
    """
    rng = np.random.default_rng(seed)
    x0 = 0.5 * rng.standard_normal((n_paths, n_pixels))
    Z = rng.standard_normal((n_paths, d, n_pixels))
    rows = []
    for N in grids:
        for name, paths in (
            ("VP (Brownian, Euler-Maruyama)", vp_em_paths(x0, N, rng, schedule)),
            (f"KL exact (12), d={d}", kl_exact_paths(x0, Z, N, schedule)),
            (f"KL approx. (16), d={d}", kl_approx_paths(x0, Z, N, schedule)),
        ):
            rows.append({"process": name, "N": int(N), "quadratic_variation": quadratic_variation(paths),
                         "path_length": path_length(paths)})
    return rows


def rank_table(d_values, n_steps: int = 200, n_pixels: int = 256, seed: int = 0,
               schedule: VPSchedule | None = None) -> list[dict]:
    """Numerical rank of one discretised path (an (N+1) x D matrix) for VP and for KL with each d."""
    rng = np.random.default_rng(seed)
    x0 = 0.5 * rng.standard_normal((1, n_pixels))
    rows = [{"process": "VP (Brownian)", "d": None,
             "rank": path_rank(vp_em_paths(x0, n_steps, rng, schedule)[0]), "bound": min(n_steps + 1, n_pixels)}]
    for d in d_values:
        Z = rng.standard_normal((1, d, n_pixels))
        rows.append({"process": "KL exact (12)", "d": int(d),
                     "rank": path_rank(kl_exact_paths(x0, Z, n_steps, schedule)[0]), "bound": d + 1})
    return rows
