"""Gaussian kernel, its derivatives in the first argument, and Gram builders.

Paper B, Sec. 3.2 (eq. (17)); Methods B.2 (the formulas of Klus, Nueske &
Hamzi 2020, as in their d3s code).  The kernel is **unnormalised**, as in the paper:

* ``k(x, y) = exp(-||x - y||^2 / (2 zeta^2))``
* ``grad_x k(x, y) = -(x - y) / zeta^2 * k``
* ``hess_x k(x, y) = ((x - y)(x - y)^T / zeta^4 - I / zeta^2) * k``
* ``lap_x k(x, y) = (||x - y||^2 / zeta^4 - d / zeta^2) * k``

Points are **rows** (``(n, d)``), unlike d3s, which stores them as columns.  Every function accepts
numpy arrays or torch tensors and returns the same kind (gEDMD uses float64 numpy; the Langevin
sampler uses torch).
"""

from __future__ import annotations

import numpy as np

from kl_repro.core.config import ConfigError

__all__ = ["sqdist", "log_gram", "gram", "kernel", "grad_x", "hess_x", "laplace_x"]


def _is_torch(x) -> bool:
    return type(x).__module__.startswith("torch")


def _check_zeta(zeta: float) -> float:
    if not np.isfinite(zeta) or zeta <= 0:
        raise ConfigError(f"the kernel bandwidth zeta must be a finite number > 0, got {zeta!r}")
    return float(zeta)


def _check_pair(X, Y) -> None:
    if X.ndim != 2 or Y.ndim != 2:
        raise ConfigError(f"points must be 2-D arrays (n, d) with one point per row, got shapes {tuple(X.shape)} and {tuple(Y.shape)}")
    if X.shape[1] != Y.shape[1]:
        raise ConfigError(f"point dimensions differ: {X.shape[1]} vs {Y.shape[1]}")


def sqdist(X, Y):
    """Pairwise squared distances ``D[i, j] = ||X_i - Y_j||^2``, shape ``(n, m)``, clipped at 0.

    Computed as ``||x||^2 - 2 x.y + ||y||^2`` (one GEMM), so the cost is ``O(n m d)``.
    """
    _check_pair(X, Y)
    if _is_torch(X):
        D = (X * X).sum(1)[:, None] - 2.0 * (X @ Y.T) + (Y * Y).sum(1)[None, :]
        return D.clamp_min(0.0)
    X = np.asarray(X)
    Y = np.asarray(Y)
    D = np.einsum("ij,ij->i", X, X)[:, None] - 2.0 * (X @ Y.T) + np.einsum("ij,ij->i", Y, Y)[None, :]
    return np.maximum(D, 0.0)


def log_gram(X, Y, zeta: float):
    """``E[i, j] = log k(X_i, Y_j) = -||X_i - Y_j||^2 / (2 zeta^2)``, shape ``(n, m)``.

    The log-domain Gram matrix needed where ``k`` underflows (Methods B.3: VE prior draws in
    CIFAR dimension give ``log k ~ -8000``).
    """
    zeta = _check_zeta(zeta)
    return -sqdist(X, Y) / (2.0 * zeta * zeta)


def gram(X, Y=None, zeta: float = 1.0):
    """Gram matrix ``G[i, j] = k(X_i, Y_j)``, shape ``(n, m)``; ``Y=None`` gives ``G0 = k(X, X)`` (eq. (7))."""
    Y = X if Y is None else Y
    E = log_gram(X, Y, zeta)
    return E.exp() if _is_torch(E) else np.exp(E)


def kernel(x, y, zeta: float):
    """``k(x, y)`` for points broadcast over leading axes: ``x, y`` of shape ``(..., d)``, result ``(...)``."""
    zeta = _check_zeta(zeta)
    diff = x - y
    r2 = (diff * diff).sum(-1)
    e = -r2 / (2.0 * zeta * zeta)
    return e.exp() if _is_torch(e) else np.exp(e)


def grad_x(x, y, zeta: float):
    """``grad_x k(x, y) = -(x - y) / zeta^2 k(x, y)`` (Methods B.2; paper eq. (17) with roles swapped), shape ``(..., d)``."""
    k = kernel(x, y, zeta)
    return -(x - y) / zeta**2 * k[..., None]


def hess_x(x, y, zeta: float):
    """``hess_x k = ((x - y)(x - y)^T / zeta^4 - I / zeta^2) k``, shape ``(..., d, d)``."""
    k = kernel(x, y, zeta)
    diff = x - y
    d = diff.shape[-1]
    outer = diff[..., :, None] * diff[..., None, :]
    eye = (x.new_tensor(np.eye(d)) if _is_torch(x) else np.eye(d))
    return (outer / zeta**4 - eye / zeta**2) * k[..., None, None]


def laplace_x(x, y, zeta: float):
    """``lap_x k = (||x - y||^2 / zeta^4 - d / zeta^2) k`` (the trace of :func:`hess_x`), shape ``(...)``."""
    k = kernel(x, y, zeta)
    diff = x - y
    d = diff.shape[-1]
    r2 = (diff * diff).sum(-1)
    return (r2 / zeta**4 - d / zeta**2) * k
