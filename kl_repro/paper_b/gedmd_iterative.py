"""The leading eigenpairs of the gEDMD pencil without a dense ``eig`` (Methods B.2).

Kernel gEDMD solves ``K v = lam G0 v`` (Koopman) and ``K^T u = lam G0 u`` (Fokker-Planck) with
``G0`` symmetric positive definite.  With the Cholesky factor ``G0 = R^T R`` both become standard
problems for ``A = R^-T K R^-1``: ``c = R v`` is a right and ``c' = R u`` a left eigenvector of ``A``.
When ``G0`` is well conditioned (its smallest eigenvalue above ``rtol`` times its largest, so that
the truncation of the dense solver removes nothing; in image dimension ``cond(G0)`` is a few hundred)
the pencil *is* the truncated problem, and only the ``n_eig`` eigenvalues of largest real part are
computed:

1. Krylov-Schur on ``A`` (largest real part, :mod:`.krylov`) until the leading pairs converge or
   stop converging.  Isolated eigenvalues at the right end (MNIST: all of the leading ones) need a
   hundred or so products;
2. where a dense cluster follows (e.g. uniform-noise images: ``lam_0`` and then a blob of complex
   eigenvalues), the rest by shift-and-invert at a real ``sigma`` at the first unconverged Ritz value:
   ``(K - sigma G0)^-1 G0`` after one LU of ``K - sigma G0``; the number found grows until their disc
   covers the box around the ones kept (:func:`_covered`);
3. left vectors from the transposed operators (skipped where the right ones already solve the
   transposed problem, as for a symmetric ``K``).

**Mixed precision** (from ``M >= MIXED_MIN_M`` on): the products of stage 1 are memory-bound (each
streams ``K`` and ``R``), so they run on float32 copies, at half the traffic, to a residual of
``MIXED_TOL``.  ``R`` itself may be a float32 factor (``well_conditioned_factor(single=True)``, where
``G0`` is well conditioned enough for one): on a virtual machine, where fresh memory is slow to touch,
skipping the float64 factor's ``8 M^2`` bytes (and its Cholesky) saves about 1 s at ``M = 5000``.
The eigenvalues are then recomputed in float64 as two-sided Rayleigh quotients
``lam = c'^T A c / c'^T c = u^T K v / u^T G0 v`` of the float32 right and left vectors, formed from ``K``
and ``G0`` (``2 n`` float64 products with each), whose
error is at most the product of the two residuals over ``sep |c'^T c|`` (:func:`_refined`): about 1e-12
of ``max|lam|`` on MNIST points, where float32 Ritz values alone are off by 1e-8.  That bound is
checked (``MIXED_EIG_TOL``); where it fails the float64 stage 1 runs instead.  The vectors keep
float32's accuracy (relative residual about 1e-5), far below what the sampler can resolve.

Cost: Cholesky ``M^3 / 3`` flops (plus ``2 M^3 / 3`` for the LU where stage 2 runs) and a few hundred
products of ``4 M^2`` flops, against about ``25 M^3`` for the dense solver.  Where ``G0`` is not well
conditioned the caller uses the dense truncated solver (:func:`kl_repro.paper_b.gedmd.solve`).
"""

from __future__ import annotations

import numpy as np
import scipy.linalg as sla
from scipy.linalg.lapack import dlange, dpocon, spocon, spotrf

from kl_repro.paper_b.krylov import PartialSchur, krylov_schur, order_by, ritz_pairs

__all__ = ["NotConverged", "well_conditioned_factor", "PencilOperators", "leading_eigenpairs", "PRECISIONS", "MIXED_MIN_M"]

RCOND_SAFETY = 10.0  # LAPACK's 1-norm estimate of 1/cond(G0) must clear rtol by this factor
SINGLE_RCOND_MIN = 1e-6  # a float32 factor is kept where its 1/cond estimate clears this (16x float32's round-off, 6e-8)
STAGE1_BLOCK = 1  # stage 1 wants Krylov degree, not BLAS-3 width: one vector at a time (the GEMV path reads K fastest per pass)
STAGE1_DIM = 64  # basis size of stage 1 (at least 3 n_eig + 16)
STAGE1_RESTARTS = 6  # cycles at most; stage 1 stops earlier when a cycle converges no new pair
STAGE1_CHECK = 4  # stage 1 tests convergence every 4 products, not only when the basis is full (MNIST, M = 5000: 80 products, not 112)
SI_BLOCK = 4
SI_DIM = 96
MIXED_MIN_M = 2000  # precision="auto": float32 stage-1 products from this size on (below, K fits in cache: no gain)
MIXED_TOL = 1e-5  # stage-1 residual in float32 (its round-off floor is about 1e-6 of max|lam|)
MIXED_EIG_TOL = 1e-7  # the refined eigenvalues' error bound, relative to max|lam|, above which the float64 stage 1 runs
# (the bound is first order and loose: it said 8e-9 at M = 3000 on MNIST points, where the error was 6e-13)
PRECISIONS = ("auto", "double", "mixed")


class NotConverged(RuntimeError):
    """An iteration ended without reaching its tolerance (the caller falls back to the dense solve)."""


def well_conditioned_factor(G0: np.ndarray, rtol: float, single: bool = False) -> tuple[np.ndarray | None, float]:
    """Upper Cholesky factor ``R`` of ``G0`` when its reciprocal condition number clears ``rtol``; else ``None``.

    The condition number is LAPACK's 1-norm estimate (``dpocon``, ``O(M^2)``) made from the factor.
    For a symmetric matrix ``1/cond_2 >= 1/cond_1``, and the margin ``RCOND_SAFETY`` covers the
    estimate, so a factor is returned only where the dense truncation at ``rtol`` would keep every
    direction.  ``single``: first try a float32 factor (``spotrf`` on a float32 copy, half the fresh
    memory and none of the float64 factor's 200 MB at ``M = 5000``), kept where its own estimate clears
    ``SINGLE_RCOND_MIN`` (then ``G0`` is far better conditioned than ``rtol`` needs, and the float32
    factor is an exact factor of a matrix within about 1e-6 of ``G0``, all that the float32 products of
    the mixed-precision stage 1 use); otherwise the float64 factor as without it.
    Returns ``(R or None, rcond estimate)``, ``R`` float32 or float64.
    """
    anorm = float(dlange("I", G0.T))  # ||G0||_1 = ||G0^T||_inf, on the Fortran-ordered view: no (M, M) temporary
    if single:
        R32, info = spotrf(G0.T.astype(np.float32, order="F"), lower=0, overwrite_a=1, clean=1)  # G0 symmetric: factored in place
        if info == 0:
            rcond, info = spocon(R32, anorm, uplo="U")
            if info == 0 and float(rcond) > max(SINGLE_RCOND_MIN, RCOND_SAFETY * rtol):
                return R32, float(rcond)
        del R32
    try:
        R = sla.cholesky(G0, lower=False, check_finite=False)
    except np.linalg.LinAlgError:
        return None, 0.0
    rcond, info = dpocon(R, anorm, uplo="U")
    rcond = float(rcond) if info == 0 else 0.0
    return (R if rcond > RCOND_SAFETY * rtol else None), rcond


def _tri(R: np.ndarray, X: np.ndarray, trans: bool = False) -> np.ndarray:
    """``R^-1 X`` (``trans``: ``R^-T X``) in ``R``'s precision, returned as float64 (complex ``X``: real and imaginary parts apart)."""
    return _apply(lambda Z: sla.solve_triangular(R, Z.astype(R.dtype, copy=False), trans="T" if trans else "N",
                                                 check_finite=False).astype(np.float64), X)


class PencilOperators:
    """Block products for the pencil ``(K, G0)``, each on an ``(M, b)`` block.

    ``A(X)``: ``R^-T K R^-1 X`` (``transpose``: with ``K^T``), the standard form in the frame ``c = R v``.
    ``inverse(X)``: ``(K - sigma G0)^-1 G0 X`` (``transpose``: ``(K^T - sigma G0)^-1 G0 X``), the
    shift-and-invert operator in the frame of ``v`` (resp. ``u``) itself, after :meth:`factor_shift`.
    """

    def __init__(self, G0: np.ndarray, K: np.ndarray, R: np.ndarray):
        self.G0, self.K = G0, K
        self._R = R if R.dtype == np.float64 else None  # a float32 R (well_conditioned_factor(single=True)): float64 one made if needed
        self._R32 = R if R.dtype == np.float32 else None
        self.lu = None
        self.sigma = None
        self.products = 0
        self.products32 = 0
        self._K32 = None

    @property
    def R(self) -> np.ndarray:
        """The float64 factor (the float64 stage 1 only; made here, once, where a float32 one was given)."""
        if self._R is None:
            self._R = sla.cholesky(self.G0, lower=False, check_finite=False)
        return self._R

    @property
    def best_factor(self) -> np.ndarray:
        """The float64 factor where one exists, else the float32 one (without making a float64 one)."""
        return self._R if self._R is not None else self._R32

    def A(self, X: np.ndarray, transpose: bool = False) -> np.ndarray:
        self.products += X.shape[1]
        Y = sla.solve_triangular(self.R, X, check_finite=False)
        Y = (self.K.T if transpose else self.K) @ Y
        return sla.solve_triangular(self.R, Y, trans="T", check_finite=False)

    def A32(self, X: np.ndarray, transpose: bool = False) -> np.ndarray:
        """:meth:`A` on float32 copies of ``K`` and ``R`` (made on first use), returned as float64."""
        if self._K32 is None:
            self._K32 = self.K.astype(np.float32)
            self._R32 = self._R.astype(np.float32) if self._R32 is None else self._R32
        K32, R32 = self._K32, self._R32
        self.products32 += X.shape[1]
        Y = sla.solve_triangular(R32, X.astype(np.float32), check_finite=False)
        Y = (K32.T if transpose else K32) @ Y
        return sla.solve_triangular(R32, Y, trans="T", check_finite=False).astype(np.float64)

    def factor_shift(self, sigma: float) -> None:
        """One LU of ``K - sigma G0`` (``2 M^3 / 3`` flops), written over a single new array."""
        S = np.multiply(self.G0, -sigma)
        S += self.K
        self.lu = sla.lu_factor(S, overwrite_a=True, check_finite=False)
        self.sigma = float(sigma)

    def inverse(self, X: np.ndarray, transpose: bool = False) -> np.ndarray:
        self.products += X.shape[1]
        return sla.lu_solve(self.lu, self.G0 @ X, trans=1 if transpose else 0, check_finite=False)


def _eigs_of(ps: PartialSchur, which: str, sigma: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues of ``A`` (undoing the shift-and-invert when ``sigma`` is given) and unit eigenvectors ``(M, k)``."""
    mu, Y = ritz_pairs(ps.T, which)
    X = ps.Q @ Y
    lam = mu if sigma is None else sigma + 1.0 / mu
    return lam, X / np.linalg.norm(X, axis=0)


def _leading_converged(ps: PartialSchur, tol: float) -> int:
    ok = ps.residuals <= tol * ps.scale
    return int(np.argmin(ok)) if not ok.all() else len(ok)


def _right_end(op, n: int, n_eig: int, tol: float) -> tuple[PartialSchur, int]:
    """Stage 1: Krylov-Schur cycles on ``op`` (``A``) while each converges more leading pairs (at most ``STAGE1_RESTARTS``).

    Returns the result and the number of leading Ritz pairs that converged.
    """
    ps = krylov_schur(op, n, n_eig, "LR", block=STAGE1_BLOCK, max_dim=max(STAGE1_DIM, 3 * n_eig + 16),
                      tol=tol, max_restarts=STAGE1_RESTARTS, stop_on_stall=True, check_every=STAGE1_CHECK)
    return ps, _leading_converged(ps, tol)


def _apply(op, X: np.ndarray) -> np.ndarray:
    """A real operator on a real or complex block."""
    return op(X.real) + 1j * op(X.imag) if np.iscomplexobj(X) else op(X)


def _shift(lam: np.ndarray, lead: int, ritz_all: np.ndarray) -> float:
    """A real shift at the first unconverged Ritz value (plus 0.1 % of the spread), left of the converged ones before it."""
    theta = lam[lead].real
    sigma = theta + 1e-3 * max(ritz_all.real.max() - ritz_all.real.min(), 1e-300)
    if lead > 0:
        sigma = min(sigma, 0.5 * (theta + lam[lead - 1].real))
    return sigma


def _covered(lam: np.ndarray, sigma: float, n_need: int) -> bool:
    """Whether the disc ``|z - sigma| <= radius`` of the eigenvalues found holds the box around the ``n_need`` of largest real part.

    The box spans their real parts and (5 % beyond) their imaginary parts.  An eigenvalue outranking
    the ``n_need``-th outside the disc would need a larger imaginary part than any of them: the spectra
    here (near-real, or a blob at the right end) have none.
    """
    radius = np.abs(lam - sigma).max()
    best = lam[order_by(lam, "LR")[:n_need]]
    h = 1.05 * np.abs(best.imag).max()
    corners = np.array([best.real.min(), best.real.max()])[:, None] + 1j * np.array([-h, h])[None, :]
    return bool(np.abs(corners - sigma).max() < radius)


def _checked(ps: PartialSchur) -> PartialSchur:
    if not ps.converged:
        raise NotConverged(f"Krylov-Schur stopped after {ps.restarts} restarts, residual {ps.residuals.max() / ps.scale:.1e}")
    return ps


def _nearest(ops: PencilOperators, n_need: int, tol: float) -> tuple[np.ndarray, np.ndarray]:
    """Stage 2: eigenpairs ``(lam, V)`` nearest ``sigma`` by shift-and-invert, enough to cover ``n_need`` by real part."""
    k, start, n = 2 * n_need + 2, None, ops.K.shape[0]
    while True:
        ps = _checked(krylov_schur(ops.inverse, n, k, "LM", block=SI_BLOCK, max_dim=max(SI_DIM, 3 * k + 8 * SI_BLOCK), tol=tol, start=start))
        lam, X = _eigs_of(ps, "LM", ops.sigma)
        lam, X = lam[:k], X[:, :k]
        if k >= n or _covered(lam, ops.sigma, n_need):
            return lam, X
        k, start = min(k + max(4, k // 2), n), X


def _kept(lam: np.ndarray, X: np.ndarray, sigma: float, n_need: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``n_need`` of largest real part, and every one nearer ``sigma`` than the farthest of those (the transposed run finds the same set)."""
    best = order_by(lam, "LR")[:n_need]
    near = np.abs(lam - sigma) <= np.abs(lam[best] - sigma).max() * (1 + 1e-9)
    return lam[near], X[:, near]


def _left_vectors(op_t, X: np.ndarray, lam: np.ndarray, sigma: float | None, block: int, max_dim: int, tol: float,
                  check_every: int | None = None) -> np.ndarray:
    """Left eigenvectors for the eigenvalues ``lam`` of one stage, from the transposed operator ``op_t``.

    Where the right vectors ``X`` already solve the transposed problem (``K`` symmetric up to rounding)
    they are returned after one product; otherwise a run from a random start, its pairs matched to
    ``lam`` by eigenvalue.
    """
    which = "LR" if sigma is None else "LM"
    mu = lam if sigma is None else 1.0 / (lam - sigma)
    Y = _apply(op_t, X)
    if np.linalg.norm(Y - X * mu, axis=0).max() <= tol * np.abs(mu).max():
        return X
    ps = _checked(krylov_schur(op_t, X.shape[0], len(lam), which, block=block, max_dim=max_dim, tol=tol, max_restarts=200,
                               check_every=check_every))
    mu_l, Xl = _eigs_of(ps, which)
    match = [int(np.argmin(np.abs(mu_l - z))) for z in mu]
    if np.abs(mu_l[match] - mu).max() > max(1e-8, 10 * tol) * np.abs(mu).max():  # 1e-8 in float64
        raise NotConverged("the transposed run converged to other eigenvalues than the right one")
    return Xl[:, match]


def _refined(ops: PencilOperators, C: np.ndarray, Cl: np.ndarray, ritz_all: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Two-sided Rayleigh quotients in float64 of float32 right and left vectors ``C``, ``Cl`` (frame ``c = R v``), the
    pencil's vectors ``V``, ``U`` and a bound on the eigenvalues' error relative to ``max|lam|``: ``(lam, V, U, bound)``.

    With ``v = R^-1 c``, ``u = R^-1 c'`` the quotient ``c'^T A c / c'^T c`` of ``A = R^-T K R^-1`` equals
    ``u^T K v / u^T G0 v`` for the exact factor, so it is formed from ``K`` and ``G0`` in float64 whichever factor
    made ``v`` and ``u`` (a float32 one only perturbs the vectors, and the quotient's error is of second order in them).
    With ``v = x + e``, ``u = y + f`` (``x``, ``y`` exact) that error is ``f^T (K - lam G0) e / u^T G0 v``,
    at most ``||r|| ||r'|| / (sep |c'^T c|)`` for unit ``c``, ``c'``: the residuals ``r = R^-T (K v - lam G0 v)``
    of both vectors (their norms need the factor only to a few digits), and ``sep``, the distance to the nearest
    other Ritz value of the last projected matrix (``ritz_all``).
    """
    R = ops.best_factor
    V, U = _tri(R, C), _tri(R, Cl)
    KV, GV = _apply(lambda Z: ops.K @ Z, V), _apply(lambda Z: ops.G0 @ Z, V)  # float64 (a complex block in two real halves:
    KTU, GU = _apply(lambda Z: ops.K.T @ Z, U), _apply(lambda Z: ops.G0 @ Z, U)  # no complex copy of K or G0)
    ops.products += 2 * C.shape[1]
    norm_c = np.sqrt(np.abs(np.einsum("mk,mk->k", V.conj(), GV)))  # ||R v|| = (v^* G0 v)^1/2, exactly
    norm_cl = np.sqrt(np.abs(np.einsum("mk,mk->k", U.conj(), GU)))
    cross = np.einsum("mk,mk->k", U, GV)  # u^T K = lam u^T G0 for the left vector of a real pencil: no conjugate
    rq = np.einsum("mk,mk->k", U, KV) / cross
    r = np.linalg.norm(_tri(R, KV - GV * rq, trans=True), axis=0) / norm_c
    r_left = np.linalg.norm(_tri(R, KTU - GU * rq, trans=True), axis=0) / norm_cl
    cross = cross / (norm_c * norm_cl)
    dist = np.sort(np.abs(rq[:, None] - np.asarray(ritz_all)[None, :]), axis=1)
    sep = np.maximum(dist[:, 1] if dist.shape[1] > 1 else np.abs(rq), 1e-300)  # [:, 0] is the pair's own Ritz value
    scale = max(float(np.abs(rq).max()), 1e-300)
    return rq, V, U, float((r * r_left / (sep * np.abs(cross))).max() / scale)


def _stage1_pairs(ops: PencilOperators, op, want: int, tol: float) -> tuple:
    """Stage 1 on ``op`` (``ops.A`` or ``ops.A32``) with the left vectors from ``op(., transpose=True)``:
    ``(lam, C, Cl, ps, lead)``, unit vectors in the frame ``c = R v``."""
    op_t = lambda Z: op(Z, True)  # noqa: E731
    ps, lead = _right_end(op, ops.K.shape[0], want, tol)
    lam, C = _eigs_of(ps, "LR")
    lam, C = lam[:lead], C[:, :lead]
    Cl = C
    if lead:
        Cl = _left_vectors(op_t, C, lam, None, STAGE1_BLOCK, max(STAGE1_DIM, 3 * lead + 16), tol, STAGE1_CHECK)
    return lam, C, Cl, ps, lead


def _stage1(ops: PencilOperators, n_eig: int, tol: float, mixed: bool) -> tuple:
    """Stage 1 with the left vectors of its converged pairs: ``(lam, V, U, ps, lead, info)`` (``V``, ``U`` in the ``v`` frame).

    ``mixed``: float32 products, float64 Rayleigh quotients (module docstring); the float64 run where the bound fails.
    """
    info = {"precision": "double"}
    if mixed:
        mixed, why = False, "no leading pair converged in float32"
        try:
            lam, C, Cl, ps, lead = _stage1_pairs(ops, ops.A32, n_eig, MIXED_TOL)
        except NotConverged as err:
            lead, why = 0, f"float32 stage 1: {err}"
        if lead:
            lam, V, U, info["eig_error_bound"] = _refined(ops, C, Cl, ps.ritz_all)
            mixed = info["eig_error_bound"] <= MIXED_EIG_TOL
            why = f"mixed-precision bound {info['eig_error_bound']:.1e} > {MIXED_EIG_TOL:g}"
        info.update(precision="mixed" if mixed else f"double ({why})", products_float32=ops.products32)
        if mixed:
            return lam, V, U, ps, lead, info
    lam, C, Cl, ps, lead = _stage1_pairs(ops, ops.A, n_eig, tol)
    return lam, _tri(ops.R, C), _tri(ops.R, Cl), ps, lead, info  # v = R^-1 c


def leading_eigenpairs(G0: np.ndarray, K: np.ndarray, R: np.ndarray, n_eig: int, tol: float = 1e-12,
                       precision: str = "auto") -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """The ``n_eig`` eigenvalues of largest real part of ``K v = lam G0 v``, Koopman ``V`` and FP ``U`` vectors.

    ``R``: the upper Cholesky factor of ``G0`` (:func:`well_conditioned_factor`); ``tol``: relative
    residual ``||A x - lam x|| / max|lam|`` of every pair (the float64 stages); ``precision``: ``"mixed"`` (float32
    products in stage 1, eigenvalues refined in float64: module docstring), ``"double"``, or ``"auto"`` (mixed from
    ``M >= MIXED_MIN_M``).  Returns ``(lam, V (M, n), U (M, n), info)``,
    ``lam`` by decreasing real part, ``n = n_eig`` or ``n_eig + 1`` where the ``n_eig``-th eigenvalue's
    conjugate would otherwise be cut off; ``info`` records the shift and the products of each stage.
    Raises :class:`NotConverged` if an iteration stops short of ``tol``.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    ops = PencilOperators(G0, K, R)
    want = min(n_eig + 1, K.shape[0])  # one more: a conjugate pair is never cut in half
    mixed = precision == "mixed" or (precision == "auto" and K.shape[0] >= MIXED_MIN_M)
    lam, V, U, ps, lead, info1 = _stage1(ops, want, tol, mixed)
    info = {"stage1_converged": lead, "stage1_products": ops.products + ops.products32, **info1}
    if lead < want:
        ops.factor_shift(_shift(_eigs_of(ps, "LR")[0], lead, ps.ritz_all))
        lam2, V2 = _nearest(ops, want - lead, tol)
        fresh = np.array([np.abs(lam - z).min(initial=np.inf) > 1e-8 * max(1.0, abs(z)) for z in lam2], dtype=bool)
        lam2, V2 = _kept(lam2[fresh], V2[:, fresh], ops.sigma, want - lead)  # stage-1 pairs can fall in the disc
        U2 = _left_vectors(lambda Z: ops.inverse(Z, True), V2, lam2, ops.sigma, SI_BLOCK, max(SI_DIM, 3 * len(lam2) + 8 * SI_BLOCK), tol)
        lam, V, U = np.concatenate([lam, lam2]), np.hstack([V, V2]), np.hstack([U, U2])
        info["sigma"] = ops.sigma
    order = order_by(lam, "LR")
    n = min(n_eig, len(order))
    if n < len(order) and lam[order[n - 1]].imag > 1e-12 * max(1.0, abs(lam[order[n - 1]])):
        n += 1  # the conjugate of the last one kept
    order = order[:n]
    factor = ops.best_factor.dtype.name  # float64 where it was given or the float64 stage 1 made it
    return lam[order], V[:, order], U[:, order], dict(info, products=ops.products + ops.products32, solver="iterative", n_eig=n, factor=factor)
