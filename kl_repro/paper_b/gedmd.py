"""Kernel generator EDMD (gEDMD): Koopman and Fokker-Planck eigenpairs from data.

Paper B, Sec. 2.2-3.1, eqs. (6)-(9), Methods B.2 (Klus, Nueske & Hamzi
2020, whose d3s code fixes the index convention).  For ``dX = b(X) dt + sqrt(a) dW`` (isotropic
diffusion ``sigma sigma^T = a I``) the Koopman generator is ``L f = b . grad f + a/2 lap f``.  The
paper's eqs. (6)/(8) sum *all* Hessian entries; isotropic noise gives the Laplacian, used here.

With reference points ``X = (x_1..x_M)`` (rows) and the Gaussian kernel ``k``:

* ``G0[i, j] = k(x_i, x_j)``                                             (eq. (7))
* ``K[i, j]  = (L k(., x_j))(x_i)``  (d3s convention: row = evaluation point)
* the paper's ``G2[m, r] = (L k(x_m, .))(x_r) = K[r, m]``, i.e. ``G2 = K^T`` (the index trap)
* Koopman:       ``K v = lam G0 v``,   ``psi(x) = sum_j v_j k(x, x_j)``
* Fokker-Planck: ``K^T u = lam G0 u``, ``rho(x) = sum_m u_m k(x_m, x) / (M (2 pi zeta^2)^(d/2))``,
  a kernel-smoothed FP eigen-*density* (Methods B.2).

Both are solved on the truncated eigenbasis of ``G0`` (Methods B.2): keep the eigenvectors ``Q_r`` of
``G0`` with eigenvalue above ``rtol * max``, form ``A = S^-1/2 Q^T K Q S^-1/2`` and diagonalise it
once (a standard, not a generalised, eigenproblem).  Right eigenvectors give Koopman vectors, left
ones FP vectors, and they come biorthogonal: ``u_k^T G0 v_l = 0`` for ``k != l``.

That dense solve costs about ``25 M^3`` flops (a minute or more at ``M = 5000``).  The sampler needs
only the ``L`` leading pairs, and in image dimension ``G0`` is well conditioned (``cond(G0)`` is a
few hundred in 784-d, so the truncation keeps all ``M`` directions): there :func:`solve` with
``solver="iterative"`` (the default ``"auto"`` from ``M >= 1500`` on) computes just those, from the
Cholesky factor of ``G0`` with Krylov and shift-and-invert iterations (:mod:`.gedmd_iterative`,
``M^3 / 3`` to ``M^3`` flops), and falls back to the dense solve wherever the truncation would
remove something.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import scipy.linalg as sla
import torch

from kl_repro.core.config import ConfigError
from kl_repro.paper_b import gedmd_iterative
from kl_repro.paper_b.kernels import grad_x, gram, laplace_x

__all__ = [
    "gram_generator",
    "gram_generator_general",
    "paper_g2",
    "truncated_basis",
    "GEDMD",
    "solve",
    "fit",
    "cluster_size",
    "spectrum_report",
    "SOLVERS",
    "AUTO_ITERATIVE_MIN_M",
]

SOLVERS = ("auto", "iterative", "dense")
GRAM_RTOL = 1e-12  # default truncation of G0 (Deviations: on the OU check it beats 1e-10 on every seed, no spurious eigenvalue)
AUTO_ITERATIVE_MIN_M = 1500  # solver="auto": the dense solve below this size (a few seconds at most; every eigenvalue)
ROW_BLOCK = 256  # gram_generator finishes G0 and K this many rows at a time, in the GEMMs' output arrays


def _as_points(X, name: str = "X") -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] < 1:
        raise ConfigError(f"{name} must be a 2-D array (M, d) of points (rows), got shape {X.shape}")
    if not np.all(np.isfinite(X)):
        raise ConfigError(f"{name} contains NaN or Inf")
    return X


def _check_drift(X: np.ndarray, B) -> np.ndarray:
    B = np.asarray(B, dtype=np.float64)
    if B.shape != X.shape:
        raise ConfigError(f"the drift B = b(X) must have the shape of X {X.shape}, got {B.shape}")
    if not np.all(np.isfinite(B)):
        raise ConfigError("the drift b(X) contains NaN or Inf (check the score model)")
    return B


def gram_generator(X, B, a, zeta: float) -> tuple[np.ndarray, np.ndarray]:
    """``G0`` and the generator Gram matrix ``K`` in closed form (Methods B.2, d3s ``gaussianG00G10``).

    ``K[i, j] = [-b(x_i).(x_i - x_j) / zeta^2 + a_i/2 (||x_i - x_j||^2 / zeta^4 - d / zeta^2)] G0[i, j]``

    Args:
        X: reference points ``(M, d)``.
        B: drift at the points, ``B[i] = b(x_i)``, ``(M, d)``.
        a: isotropic diffusion factor ``sigma sigma^T = a I``: a scalar, or ``(M,)`` per point.
        zeta: kernel bandwidth.

    Returns ``(G0, K)``, both ``(M, M)`` float64.  Cost ``O(M^2 d)`` (two GEMMs), no loop over pairs; the
    elementwise passes run in place on row blocks of the GEMMs' outputs, so no third ``(M, M)`` array is
    made (fresh memory is slow to touch on a virtual machine: 1 s or more per 200 MB on these ones).
    """
    X = _as_points(X)
    B = _check_drift(X, B)
    a = np.asarray(a, dtype=np.float64)
    if a.ndim > 1 or (a.ndim == 1 and a.shape[0] != X.shape[0]) or np.any(a < 0) or not np.all(np.isfinite(a)):
        raise ConfigError(f"the diffusion factor a must be a finite scalar >= 0 or an (M,) array of them, got shape {a.shape}")
    M, d = X.shape
    half_a = 0.5 * (a if a.ndim == 1 else np.full(M, float(a)))
    sq = np.einsum("ij,ij->i", X, X)
    G0 = X @ X.T  # one SYRK; becomes the squared distances, then G0, block by block
    K = B @ X.T  # K[i, j] = b(x_i) . x_j before the drift factor
    b_dot_x = np.diag(K).copy()
    tmp = np.empty((min(ROW_BLOCK, M), M))
    for lo in range(0, M, ROW_BLOCK):
        rows = slice(lo, min(lo + ROW_BLOCK, M))
        _generator_rows(G0[rows], K[rows], tmp[: rows.stop - lo], sq[rows], sq, b_dot_x[rows], half_a[rows], zeta, d)
    return G0, K


def _generator_rows(g, k, tmp, sq_rows, sq, b_dot_x, half_a, zeta: float, d: int) -> None:
    """Rows of ``(G0, K)`` in place, from ``g = X_rows X^T`` and ``k = B_rows X^T`` (:func:`gram_generator`'s formula).

    ``D = ||x_i||^2 - 2 x_i.x_j + ||x_j||^2`` (clipped at 0), ``G0 = exp(-D / (2 zeta^2))``,
    ``K = [-(b_i.x_i - b_i.x_j) / zeta^2 + a_i/2 (D / zeta^4 - d / zeta^2)] G0``; ``tmp`` is scratch of
    the block's shape.  Only two ``(M, M)`` arrays exist in all (``M = 10,000``: 800 MB each), so a
    set-up touches no more fresh memory than it returns.
    """
    g *= 2.0
    np.subtract(sq_rows[:, None], g, out=g)
    g += sq[None, :]
    np.maximum(g, 0.0, out=g)  # D
    np.subtract(b_dot_x[:, None], k, out=k)
    np.negative(k, out=k)
    k /= zeta**2  # the drift factor -b_i.(x_i - x_j) / zeta^2
    np.divide(g, zeta**4, out=tmp)
    tmp -= d / zeta**2
    tmp *= half_a[:, None]
    k += tmp
    np.negative(g, out=g)
    g /= 2.0 * zeta * zeta
    np.exp(g, out=g)  # G0
    k *= g


def gram_generator_general(X, B, A, zeta: float) -> tuple[np.ndarray, np.ndarray]:
    """``(G0, K)`` for a general per-point diffusion matrix ``A[i] = sigma sigma^T (x_i)`` (d3s ``G_10`` loop).

    ``K[i, j] = b(x_i) . grad_1 k(x_i, x_j) + 1/2 tr(A[i] hess_1 k(x_i, x_j))``.  ``A``: ``(M, d, d)``.
    Memory ``O(M^2 d)``: a reference for checks and small problems (check T6, Methods B.5).
    """
    X = _as_points(X)
    B = _check_drift(X, B)
    A = np.asarray(A, dtype=np.float64)
    M, d = X.shape
    if A.shape != (M, d, d):
        raise ConfigError(f"A must have shape (M, d, d) = {(M, d, d)}, got {A.shape}")
    zeta2 = zeta * zeta
    delta = X[:, None, :] - X[None, :, :]  # (M, M, d)
    G0 = np.exp(-np.einsum("ijd,ijd->ij", delta, delta) / (2 * zeta2))
    quad = np.einsum("ijd,ide,ije->ij", delta, A, delta)
    trace = np.einsum("idd->i", A)[:, None]
    K = (-np.einsum("id,ijd->ij", B, delta) / zeta2 + 0.5 * (quad / zeta2**2 - trace / zeta2)) * G0
    return G0, K


def paper_g2(X, B, a: float, zeta: float) -> np.ndarray:
    """The paper's eq. (7) read literally: ``G2[m, r] = (L k(x_m, .))(x_r)``, shape ``(M, M)``.

    Built independently of :func:`gram_generator` from the kernel derivatives
    (``grad_y k(x_m, y) = grad_1 k(y, x_m)`` by symmetry), evaluated at ``y = x_r`` with drift
    ``b(x_r)``.  It equals ``K^T`` (Methods B.2), which is why solving the paper's transposed problem (9)
    literally yields Koopman, not Fokker-Planck, eigenvectors.  Memory ``O(M^2 d)``: for checks.
    """
    X = _as_points(X)
    B = _check_drift(X, B)
    Xm, Xr = X[:, None, :], X[None, :, :]  # evaluation point y = x_r varies along axis 1
    grad = grad_x(Xr, Xm, zeta)  # (M, M, d): grad_y k(x_m, y) at y = x_r
    lap = laplace_x(Xr, Xm, zeta)
    return np.einsum("rd,mrd->mr", B, grad) + 0.5 * a * lap


def truncated_basis(G0: np.ndarray, rtol: float = GRAM_RTOL) -> tuple[np.ndarray, np.ndarray, dict]:
    """Eigenvectors of ``G0`` with eigenvalue ``> rtol * max`` (Methods B.2: the first two steps of the truncated solve).

    Returns ``(Q_r, s_r, info)``: ``Q_r`` ``(M, r)`` orthonormal, ``s_r`` ``(r,)`` descending, and
    ``info`` with the rank ``r``, ``M`` and the condition number of the kept part.
    """
    if not 0 <= rtol < 1:
        raise ConfigError(f"gram_rtol must be in [0, 1), got {rtol}")
    s, Q = np.linalg.eigh(G0)
    s, Q = s[::-1], Q[:, ::-1]
    keep = s > rtol * s[0]
    r = int(keep.sum())
    info = {"M": int(G0.shape[0]), "r": r, "cond_kept": float(s[0] / s[r - 1]), "s_min": float(s[-1])}
    return Q[:, :r], s[:r], info


@dataclass
class GEDMD:
    """Eigenpairs of kernel gEDMD, sorted by decreasing ``Re lam`` (slowest first).

    Attributes:
        X: reference points ``(M, d)``; zeta: kernel bandwidth.
        lam: eigenvalues ``(n,)`` (complex): all ``r`` of them from the dense solver, the ``n_eig``
            leading ones from the iterative solver (``info["solver"]`` says which ran).
        V: Koopman coefficient vectors ``(M, n_keep)``, ``psi_l(x) = sum_j V[j, l] k(x, x_j)``.
        U: Fokker-Planck vectors ``(M, n_keep)``, ``rho_l(x) ~ sum_m U[m, l] k(x_m, x)``.
        pairing: ``u_l^T G0 v_l / M ~ int rho_l psi_l`` ``(n_keep,)`` (Methods B.2).
        info: rank ``r`` of the truncated basis, condition number, regularisation.

    Vectors have unit 2-norm and the phase making ``sum(u)`` (resp. ``sum(G0 v)``) real positive.
    """

    X: np.ndarray
    zeta: float
    lam: np.ndarray
    V: np.ndarray
    U: np.ndarray
    pairing: np.ndarray
    info: dict

    def koopman(self, Y, L: int | None = None) -> np.ndarray:
        """Koopman eigenfunctions ``psi_l(y) = sum_j V[j, l] k(y, x_j)`` at ``Y`` ``(n, d)``: ``(n, L)``."""
        L = self.V.shape[1] if L is None else L
        return gram(_as_points(Y, "Y"), self.X, self.zeta) @ self.V[:, :L]

    def density(self, Y, L: int | None = None) -> np.ndarray:
        """FP eigen-densities ``rho_l(y) = sum_m U[m, l] k(x_m, y) / (M (2 pi zeta^2)^(d/2))``: ``(n, L)``.

        Approximates ``rho_l * N(0, zeta^2 I)`` up to the scale of ``u`` (Methods B.2, check T3).
        """
        L = self.U.shape[1] if L is None else L
        M, d = self.X.shape
        norm = M * (2 * np.pi * self.zeta**2) ** (d / 2)
        return gram(_as_points(Y, "Y"), self.X, self.zeta) @ self.U[:, :L] / norm


def _phase_fix(W: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Scale columns of ``W`` to unit 2-norm, with the phase making ``ref`` column sums real positive."""
    W = W / np.linalg.norm(W, axis=0, keepdims=True)
    s = ref.sum(0) if ref is not None else W.sum(0)
    big = np.abs(W).argmax(0)
    fallback = W[big, np.arange(W.shape[1])]
    s = np.where(np.abs(s) > 1e-12, s, fallback)
    return W * (np.abs(s) / s)[None, :]


def _sort(lam: np.ndarray) -> np.ndarray:
    """Order by decreasing real part, the positive-imaginary member of a conjugate pair first."""
    return np.lexsort((-np.round(lam.imag, 12), -lam.real))


def _solve_truncated_dense(G0: np.ndarray, K: np.ndarray, rtol: float, n_keep: int | None) -> tuple:
    """The dense truncated solve: ``eigh`` of ``G0``, then one full ``eig`` of the projected ``A`` (Methods B.2)."""
    Q, s, info = truncated_basis(G0, rtol)
    isq = 1.0 / np.sqrt(s)
    A = (Q.T @ K @ Q) * isq[:, None] * isq[None, :]
    # Right eigenvectors R (A R = R diag(lam)); the left ones are the rows of R^-1 (A^T C' = C' diag(lam)),
    # obtained for the kept modes from one LU of R: cheaper than LAPACK's left vectors, and exactly
    # biorthonormal to the right ones.
    lam_t, R_t = torch.linalg.eig(torch.from_numpy(A))
    lam, R = lam_t.numpy(), R_t.numpy()
    order = _sort(lam)
    lam = lam[order]
    keep = order[: (len(order) if n_keep is None else n_keep)]
    Cp = sla.lu_solve(sla.lu_factor(R, check_finite=False), np.eye(len(order))[:, keep], trans=1, check_finite=False)
    return lam, Q @ (isq[:, None] * R[:, keep]), Q @ (isq[:, None] * Cp), dict(info, solver="dense")


def _solve_tikhonov(G0: np.ndarray, K: np.ndarray, tikhonov: float, n_keep: int | None) -> tuple:
    if not tikhonov > 0:
        raise ConfigError(f"tikhonov must be > 0, got {tikhonov}")
    M = G0.shape[0]
    reg = G0 + tikhonov * M * np.eye(M)
    lam, V_raw = sla.eig(np.linalg.solve(reg, K), check_finite=False)
    lam_u, U_raw = sla.eig(np.linalg.solve(reg, K.T), check_finite=False)
    order, order_u = _sort(lam), _sort(lam_u)
    lam = lam[order]
    n = len(order) if n_keep is None else n_keep
    return lam, V_raw[:, order[:n]], U_raw[:, order_u[:n]], {"M": M, "r": M, "cond_kept": float(np.linalg.cond(reg)), "solver": "dense"}


def _solve_iterative(G0: np.ndarray, K: np.ndarray, rtol: float, n_keep: int, n_eig: int) -> tuple[tuple | None, str]:
    """The ``n_eig`` leading eigenpairs by :mod:`.gedmd_iterative`, or ``(None, why)`` where the dense solve is needed.

    That is where ``G0`` is not well conditioned (the truncation at ``rtol`` would remove directions, so
    only the dense truncated solve gives its answer), where ``n_eig`` exceeds ``max(8, M / 10)`` (the
    dense solve is then about as cheap), or where an iteration does not converge.
    """
    M = G0.shape[0]
    if n_eig > max(8, M // 10):
        return None, f"n_eig = {n_eig} > max(8, M / 10)"
    R, rcond = gedmd_iterative.well_conditioned_factor(G0, rtol, single=M >= gedmd_iterative.MIXED_MIN_M)
    if R is None:
        return None, f"G0 not well conditioned (1/cond ~ {rcond:.1e}, gram_rtol = {rtol:g}): the truncation is active"
    try:
        lam, V, U, it = gedmd_iterative.leading_eigenpairs(G0, K, R, n_eig)
    except gedmd_iterative.NotConverged as err:
        return None, f"not converged ({err})"
    info = {"M": M, "r": M, "cond_kept": 1.0 / rcond, "cond_estimate": f"1-norm (LAPACK {'s' if R.dtype == np.float32 else 'd'}pocon)", **it}
    return (lam, V[:, :n_keep], U[:, :n_keep], info), ""


def _truncated(G0, K, rtol, n_keep, solver, n_eig) -> tuple:
    """Dispatch of the truncated solve between :mod:`.gedmd_iterative` and the dense one (see :func:`solve`)."""
    if solver not in SOLVERS:
        raise ConfigError(f"solver must be one of {SOLVERS}, got {solver!r}")
    M = G0.shape[0]
    iterate = solver == "iterative" or (solver == "auto" and M >= AUTO_ITERATIVE_MIN_M)
    if not iterate or n_keep is None:
        why = "every vector wanted (n_keep=None)" if iterate else ""
        return _solve_truncated_dense(G0, K, rtol, n_keep) + (why,)
    out, why = _solve_iterative(G0, K, rtol, n_keep, max(n_keep + 1, 6) if n_eig is None else max(n_eig, n_keep))
    return (out if out is not None else _solve_truncated_dense(G0, K, rtol, n_keep)) + (why,)


def solve(
    G0: np.ndarray,
    K: np.ndarray,
    rtol: float = GRAM_RTOL,
    regularisation: Literal["truncated", "tikhonov"] = "truncated",
    tikhonov: float = 1e-6,
    n_keep: int | None = None,
    solver: Literal["auto", "iterative", "dense"] = "auto",
    n_eig: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
    """Koopman (``K v = lam G0 v``) and FP (``K^T u = lam G0 u``) eigenpairs (Methods B.2).

    ``regularisation="truncated"`` (recommended) projects onto the eigenbasis of ``G0`` above
    ``rtol * max`` and diagonalises ``A = S^-1/2 Q^T K Q S^-1/2``: right eigenvectors ``c`` give
    ``v = Q S^-1/2 c``, left eigenvectors ``c'`` (rows of the inverse eigenvector matrix) give
    ``u = Q S^-1/2 c'``.  ``"tikhonov"`` solves
    ``(G0 + tikhonov M I)^-1 K`` (and ``K^T``) directly: it fills the top of the spectrum with
    spurious near-zero eigenvalues (check T1, Methods B.5) and exists for that demonstration.

    ``solver`` (truncated only): ``"dense"`` diagonalises ``A`` completely (about ``25 M^3`` flops, all
    ``r`` eigenvalues).  ``"iterative"`` computes only the ``n_eig`` (default ``max(n_keep + 1, 6)``)
    eigenvalues of largest real part by :mod:`.gedmd_iterative` when ``G0`` is well conditioned, so
    that the truncation removes nothing and both solve the same problem; otherwise (or with
    ``n_keep=None``, or ``n_eig > max(8, M / 10)``) it falls back to the dense solve.  ``"auto"``:
    ``"iterative"`` from ``M >= AUTO_ITERATIVE_MIN_M`` on, ``"dense"`` below.  ``info["solver"]`` says
    which ran, ``info["fallback"]`` why the dense one did where the iterative one was asked for.

    Returns ``(lam, V, U, pairing, info)`` with vectors for the ``n_keep`` slowest modes (all by default).
    """
    G0 = np.asarray(G0, dtype=np.float64)
    K = np.asarray(K, dtype=np.float64)
    M = G0.shape[0]
    if G0.shape != (M, M) or K.shape != (M, M):
        raise ConfigError(f"G0 and K must be square and of equal size, got {G0.shape} and {K.shape}")
    if regularisation == "truncated":
        lam, V_raw, U_raw, info, why = _truncated(G0, K, rtol, n_keep, solver, n_eig)
        info = dict(info, fallback=why) if why else info
    elif regularisation == "tikhonov":
        lam, V_raw, U_raw, info = _solve_tikhonov(G0, K, tikhonov, n_keep)
    else:
        raise ConfigError(f"regularisation must be 'truncated' or 'tikhonov', got {regularisation!r}")
    U = _phase_fix(U_raw, None)
    V = _phase_fix(V_raw, G0 @ V_raw)
    pairing = np.einsum("mk,mk->k", U, G0 @ V) / M
    info = dict(info, regularisation=regularisation)
    return lam, V, U, pairing, info


def fit(X, B, a, zeta: float, rtol: float = GRAM_RTOL, regularisation: str = "truncated", n_keep: int | None = None,
        solver: str = "auto", n_eig: int | None = None) -> GEDMD:
    """Build ``(G0, K)`` for drift ``B = b(X)`` and diffusion ``a``, then :func:`solve` (``solver``, ``n_eig``: there); returns :class:`GEDMD`."""
    X = _as_points(X)
    G0, K = gram_generator(X, B, a, zeta)
    lam, V, U, pairing, info = solve(G0, K, rtol=rtol, regularisation=regularisation, n_keep=n_keep, solver=solver, n_eig=n_eig)
    return GEDMD(X=X, zeta=float(zeta), lam=lam, V=V, U=U, pairing=pairing, info=info)


def cluster_size(lam: np.ndarray, rtol: float = 1e-2, kmax: int = 50) -> int:
    """Size of the near-degenerate cluster at the top of the spectrum (metastability, Methods B.2).

    The largest ``n <= kmax`` whose spread ``Re lam_0 - Re lam_{n-1}`` is at most ``rtol`` times the
    gap ``Re lam_{n-1} - Re lam_n`` to the next eigenvalue.  For OU (0, -1, -2, ...) this is 1; with
    ``k`` well-separated modes at small ``t*`` it is ``k``.
    """
    re = np.sort(np.real(lam))[::-1][: kmax + 1]
    best = 1
    for n in range(1, len(re)):
        if re[0] - re[n - 1] <= rtol * (re[n - 1] - re[n]):
            best = n
    return best


def spectrum_report(lam: np.ndarray, info: dict | None = None, top: int = 6) -> dict:
    """Rank, condition number, top eigenvalues, metastable cluster size and ``max |Im|/|Re|`` (the diagnostics every FP result records, Methods B.2)."""
    lam = np.asarray(lam)
    head = lam[:top]
    re = np.abs(head.real)
    scale = max(float(np.abs(lam[: top + 1].real).max()), 1e-300)
    ratio = np.where(re > 1e-9 * scale, np.abs(head.imag) / np.maximum(re, 1e-300), np.where(np.abs(head.imag) > 1e-9 * scale, np.inf, 0.0))
    out = {
        "top": [complex(z) for z in head],
        "cluster_size": cluster_size(lam),
        "max_im_over_re": float(ratio.max()) if ratio.size else 0.0,
        "n_eigenvalues": int(lam.size),
    }
    if info:
        out.update({k: info[k] for k in ("M", "r", "cond_kept", "regularisation", "solver") if k in info})
    return out
