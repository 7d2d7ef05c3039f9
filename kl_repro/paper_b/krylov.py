"""A few eigenpairs of a large dense nonsymmetric operator: block Krylov-Schur with thick restarts.

Used by kernel gEDMD (Methods B.2) when only the ``L`` leading eigenpairs are needed: a dense ``eig``
of an ``M x M`` nonsymmetric matrix costs about ``25 M^3`` flops, while a Krylov method needs a few
hundred products with the operator, applied to blocks of vectors.

The method keeps an orthonormal basis ``V`` (``n x m``) and ``A V`` explicitly, so the projected
matrix is ``H = V^T A V`` and the residual of every Ritz vector is computed exactly, not estimated.
Each cycle appends blocks ``orth((I - V V^T) A V_last)`` until ``m`` reaches ``max_dim``, takes the
real Schur form of ``H`` with the wanted eigenvalues leading, and restarts from the ``keep`` leading
Schur vectors (Stewart's Krylov-Schur, in block form).  ``which`` is ``"LR"`` (largest real part) or
``"LM"`` (largest modulus: the nearest to the shift under shift-and-invert).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

import numpy as np
import scipy.linalg as sla

__all__ = ["PartialSchur", "krylov_schur", "ritz_pairs", "order_by"]

Which = Literal["LR", "LM"]


@dataclass
class PartialSchur:
    """``A Q ~ Q T``: ``Q`` ``(n, k)`` orthonormal, ``T`` ``(k, k)`` real quasi-triangular.

    ``residuals[i]``: ``||A x_i - theta_i x_i||`` of the unit Ritz pair ``i`` in the order of
    :func:`ritz_pairs`; ``scale``: the largest ``|theta|`` seen (the unit of ``tol``); ``ritz_all``:
    every eigenvalue of the last projected matrix; ``products``: vectors the operator was applied to.
    """

    T: np.ndarray
    Q: np.ndarray
    residuals: np.ndarray
    ritz_all: np.ndarray
    scale: float
    converged: bool
    products: int
    restarts: int


def _key(w: np.ndarray, which: Which) -> np.ndarray:
    return w.real if which == "LR" else np.abs(w)


def order_by(w: np.ndarray, which: Which) -> np.ndarray:
    """Indices of ``w`` in wanted order; of a conjugate pair the member with positive imaginary part first."""
    return np.lexsort((-np.round(w.imag, 12), -np.round(_key(w, which), 12)))


def _orth_against(V: np.ndarray, W: np.ndarray, width: int) -> np.ndarray:
    """At most ``width`` orthonormal columns spanning ``(I - V V^T) W``: two Gram-Schmidt passes, an SVD trim."""
    for _ in range(2):
        W = W - V @ (V.T @ W)
    Q, s, _ = np.linalg.svd(W, full_matrices=False)
    rank = int((s > 1e-12 * max(s[0] if s.size else 0.0, 1e-300)).sum())
    Q = Q[:, : min(rank, width)]
    return Q - V @ (V.T @ Q)


def _sorted_schur(H: np.ndarray, count: int, which: Which) -> tuple[np.ndarray, np.ndarray, int, np.ndarray]:
    """Real Schur form ``H = Z T Z^T`` with (at least) the ``count`` wanted eigenvalues leading: ``(T, Z, sdim, eig(H))``."""
    ev = np.linalg.eigvals(H)
    thr = np.sort(_key(ev, which))[::-1][min(count, len(ev)) - 1]
    slack = 1e-10 * max(abs(thr), 1e-300)
    if which == "LR":
        T, Z, sdim = sla.schur(H, output="real", sort=lambda x, y: x >= thr - slack)
    else:
        T, Z, sdim = sla.schur(H, output="real", sort=lambda x, y: np.hypot(x, y) >= thr - slack)
    return T, Z, int(sdim), ev


def ritz_pairs(T: np.ndarray, which: Which) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues of ``T`` in wanted order and their eigenvectors (columns)."""
    w, Y = sla.eig(T)
    order = order_by(w, which)
    return w[order], Y[:, order]


def _grow(apply, V, AV, m, Vb, width, stop) -> tuple[int, np.ndarray, int]:
    """Append blocks until ``V`` holds ``stop`` columns (or the space is exhausted); returns ``(m, next block, products)``."""
    products = 0
    while Vb.shape[1] and m < stop:
        Vb = Vb[:, : stop - m]
        b = Vb.shape[1]
        V[:, m : m + b] = Vb
        AV[:, m : m + b] = apply(Vb)
        products += b
        m += b
        Vb = _orth_against(V[:, :m], AV[:, m - b : m], min(width, V.shape[1] - m))
    return m, Vb, products


def _restart(V, AV, m, T, Z, keep, width) -> tuple[int, np.ndarray]:
    """Keep the ``keep`` leading Schur vectors; the next block spans their residual."""
    Vk, AVk = V[:, :m] @ Z[:, :keep], AV[:, :m] @ Z[:, :keep]
    V[:, :keep], AV[:, :keep] = Vk, AVk
    return keep, _orth_against(V[:, :keep], AVk - Vk @ T[:keep, :keep], width)


def krylov_schur(
    apply: Callable[[np.ndarray], np.ndarray],
    n: int,
    nev: int,
    which: Which = "LR",
    block: int = 4,
    max_dim: int | None = None,
    tol: float = 1e-12,
    max_restarts: int = 100,
    start: np.ndarray | None = None,
    seed: int = 0,
    stop_on_stall: bool = False,
    check_every: int | None = None,
) -> PartialSchur:
    """Partial Schur form for the ``nev`` wanted eigenvalues of the ``n x n`` operator ``apply``.

    ``apply(X)`` maps an ``(n, b)`` block to ``A X``.  Converged when every wanted Ritz pair has
    ``||A x - theta x|| <= tol * max|theta|``.  ``start`` (``(n, b)``, real or complex) replaces the
    random first block.  After ``max_restarts`` cycles without convergence (or, with ``stop_on_stall``,
    after the first cycle that converges no new leading pair and cuts the residual of the next one
    less than a hundredfold) the result has
    ``converged=False`` and holds the best wanted Schur vectors.  ``check_every``: also test convergence
    each time that many more vectors have joined the basis (once it holds ``keep + block``), not only when it
    is full, so that a run stops within a few products of converging (a test costs a small Schur form and an
    ``(n, m)`` product, a few percent of one product with a dense ``M = 5000`` operator).
    """
    nev = min(nev, n)
    max_dim = min(n, max_dim or max(4 * block, 2 * nev + 3 * block))
    keep_target = min(max(nev + block, 2 * nev), max_dim - block)
    V, AV = np.empty((n, max_dim)), np.empty((n, max_dim))
    init = np.random.default_rng(seed).standard_normal((n, block)) if start is None else np.column_stack([np.real(start), np.imag(start)])
    Vb = _orth_against(np.zeros((n, 0)), init, max(block, init.shape[1]))
    m, products, scale, lead, r_lead, cycle = 0, 0, 0.0, -1, np.inf, 0
    while True:
        stop = max_dim if not check_every else min(max_dim, max(m + check_every, keep_target + block))
        m, Vb, used = _grow(apply, V, AV, m, Vb, block, stop)
        products += used
        H = V[:, :m].T @ AV[:, :m]
        if not np.isfinite(H).all():  # e.g. a shift on an eigenvalue: give up, the caller falls back
            return PartialSchur(np.zeros((0, 0)), V[:, :0], np.full(1, np.inf), np.zeros(0), 1.0, False, products, cycle)
        T, Z, sw, ev = _sorted_schur(H, nev, which)
        w, Y = ritz_pairs(T[:sw, :sw], which)
        E = AV[:, :m] @ Z[:, :sw] - V[:, :m] @ (Z[:, :sw] @ T[:sw, :sw])  # A Q - Q T, real (n, sw)
        res = np.linalg.norm(E @ Y, axis=0) / np.linalg.norm(Y, axis=0)
        scale = max(scale, float(np.abs(ev).max()))
        ok = res[:nev] <= tol * scale
        done = bool(ok.all())
        if done or m == n:
            return PartialSchur(T[:sw, :sw], V[:, :m] @ Z[:, :sw], res, ev, scale, done, products, cycle)
        if m < max_dim and Vb.shape[1]:
            continue  # a check inside the cycle (check_every): grow on
        before, r_before = lead, r_lead
        lead = int(np.argmin(ok))
        r_lead = float(res[lead])
        stalled = lead <= before and r_lead > 1e-2 * r_before  # no new pair, and the next one's residual fell < 100x
        if cycle == max_restarts or (stop_on_stall and stalled):
            return PartialSchur(T[:sw, :sw], V[:, :m] @ Z[:, :sw], res, ev, scale, done, products, cycle)
        T, Z, keep, _ = _sorted_schur(H, keep_target, which)
        m, Vb = _restart(V, AV, m, T, Z, keep, block)
        cycle += 1
