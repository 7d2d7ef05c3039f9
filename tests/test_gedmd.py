"""Kernel gEDMD against closed-form answers: checks T1-T6 (Methods B.5)."""

import math

import numpy as np
import pytest
import scipy.linalg as sla
import torch
from numpy.polynomial.hermite_e import hermeval
from scipy.ndimage import gaussian_filter
from scipy.stats import norm

from kl_repro.paper_b import gedmd
from kl_repro.paper_b import gedmd_iterative
from kl_repro.paper_b import kernels
from kl_repro.paper_b import krylov
from kl_repro.core.config import ConfigError
from kl_repro.paper_b.fp_operator import coefficients, drift_at, mode_weights, prior_log_mass
from kl_repro.paper_b.scores import GaussianMixture, IdealScore, MixtureScore
from kl_repro.paper_b.sde import VESDE, VPSDE


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def he(n, x):
    c = np.zeros(n + 1)
    c[n] = 1.0
    return hermeval(x, c)


@pytest.fixture(scope="module")
def ou():
    """dX = -X dt + sqrt(2) dW with x_m ~ N(0, 1), M = 500, zeta = 1 (the set-up of check T1)."""
    X = np.random.default_rng(0).standard_normal((500, 1))
    return X, gedmd.fit(X, -X, 2.0, 1.0)


# ---------------------------------------------------------------- T1: OU spectrum


def test_t1_ou_spectrum(ou):
    lam = ou[1].lam.real
    assert abs(lam[0]) < 0.01
    assert abs(lam[1] + 1) < 0.03
    assert abs(lam[2] + 2) < 0.08
    assert abs(lam[3] + 3) < 0.3
    assert ou[1].info["r"] < 100  # the truncation removed G0's numerical null space


def test_t1_tikhonov_alone_gives_spurious_top_eigenvalues():
    X = np.random.default_rng(0).standard_normal((300, 1))
    G0, K = gedmd.gram_generator(X, -X, 2.0, 1.0)
    lam, *_ = gedmd.solve(G0, K, regularisation="tikhonov", tikhonov=1e-6, n_keep=5)
    assert np.all(np.abs(lam[:5]) < 1e-6)  # spurious near-zero values crowd the top: why truncation exists


def test_t1_d3s_ou_example():
    """d3s kgedmdTest OU setting (alpha = 1, beta = 4, M = 1000 uniform on [-2, 2], zeta = 0.5): r = 22, lam ~ -n."""
    X = np.random.default_rng(1).uniform(-2, 2, (1000, 1))
    res = gedmd.fit(X, -X, 0.5, 0.5)
    assert 15 <= res.info["r"] <= 30
    np.testing.assert_allclose(res.lam[:5].real, [0, -1, -2, -3, -4], atol=0.06)


# ---------------------------------------------------------------- T2: Koopman eigenfunctions


def test_t2_koopman_eigenfunctions_are_hermite(ou):
    X, res = ou
    psi = res.koopman(X, 4).real
    for n in (1, 2):
        assert abs(np.corrcoef(psi[:, n], he(n, X[:, 0]))[0, 1]) > 0.995


# ---------------------------------------------------------------- T3: FP eigen-densities


def test_t3_fp_eigendensities_are_smoothed_hermite_functions(ou):
    _, res = ou
    xs = np.linspace(-7, 7, 1401)[:, None]
    rho = res.density(xs, 3).real
    s = math.sqrt(2.0)  # sigma^2 = 1 + zeta^2
    errs = []
    for n in range(3):
        target = s**-n * he(n, xs[:, 0] / s) * norm.pdf(xs[:, 0], scale=s)
        alpha = (rho[:, n] @ target) / (rho[:, n] @ rho[:, n])
        errs.append(np.abs(alpha * rho[:, n] - target).sum() / np.abs(target).sum())
    assert errs[0] < 0.01 and errs[1] < 0.01 and errs[2] < 0.05, errs


def test_t3_density_zero_has_the_stationary_mass(ou):
    """rho_0 integrates to (a multiple of) one and is positive: the smoothed stationary density N(0, 1 + zeta^2)."""
    _, res = ou
    xs = np.linspace(-8, 8, 1601)[:, None]
    rho0 = res.density(xs, 1)[:, 0].real
    assert rho0.min() > -1e-3 * rho0.max()


# ---------------------------------------------------------------- T4: density propagation


def _propagate(res, Y, tau, L, coeffs, sign, literal_index=False):
    U, V = (res.V, res.U) if literal_index else (res.U, res.V)
    log_s, _ = prior_log_mass(res.X, Y, res.zeta)
    c = coefficients(U[:, :L], V[:, :L], res.pairing[:L], log_s, coeffs)
    w = mode_weights(res.lam[:L], U[:, :L], c, tau, sign)
    xs = np.linspace(-6, 7, 1301)[:, None]
    dens = kernels.gram(xs, res.X, res.zeta) @ w
    return xs[:, 0], dens / (dens.sum() * (xs[1, 0] - xs[0, 0]))


def _l1_to_exact(xs, dens, tau, zeta=1.0):
    var = 0.25 * math.exp(-2 * tau) + 1 - math.exp(-2 * tau) + zeta**2
    exact = norm.pdf(xs, loc=1.5 * math.exp(-tau), scale=math.sqrt(var))
    return float(np.abs(dens - exact).sum() * (xs[1] - xs[0]))


def test_t4_biorthogonal_propagation_matches_exact_density():
    X = np.random.default_rng(2).standard_normal((500, 1))
    res = gedmd.fit(X, -X, 2.0, 1.0, n_keep=8)
    Y = np.random.default_rng(3).normal(1.5, 0.5, (4000, 1))
    for tau in (0.5, 1.0):
        xs, dens = _propagate(res, Y, tau, 5, "biorthogonal", "plus")
        assert _l1_to_exact(xs, dens, tau) < 0.02
    # the paper's rules do not propagate the density (E1 records their errors; here only their ordering)
    xs, paper = _propagate(res, Y, 0.5, 5, "paper", "minus")
    xs, literal = _propagate(res, Y, 0.5, 5, "paper", "minus", literal_index=True)
    assert _l1_to_exact(xs, paper, 0.5) > 0.1
    assert _l1_to_exact(xs, literal, 0.5) > 0.5


# ---------------------------------------------------------------- T5: frozen reverse SDE


GMM = GaussianMixture()  # means (-2,0), (2,0), (0,2); weights (0.5, 0.3, 0.2); std 0.3


def _ve_t_of_sigma(sde, s):
    return math.log(s / sde.sigma_min) / math.log(sde.sigma_max / sde.sigma_min)


def _frozen_fit(sde, t_star, M=1000, zeta=0.5, seed=0):
    g = torch.Generator().manual_seed(seed)
    x0, _ = GMM.sample(M, g)
    mean, std = sde.marginal(x0, t_star)
    X = mean + std * torch.randn(x0.shape, generator=g, dtype=torch.float64)
    B, a = drift_at(MixtureScore(GMM, sde), sde, X, t_star)
    return gedmd.fit(X.numpy(), B, a, zeta, n_keep=6), a


def _grid_l1(res, sde, t_star, zeta=0.5, n=121, lim=5.0):
    xs = np.linspace(-lim, lim, n)
    G = np.stack(np.meshgrid(xs, xs, indexing="ij"), -1).reshape(-1, 2)
    rho = res.density(G, 1)[:, 0].real
    p = np.exp(GMM.log_prob(torch.from_numpy(G), t_star, sde).numpy())
    h = xs[1] - xs[0]

    def smooth(f):
        return gaussian_filter(f.reshape(n, n), zeta / h, mode="constant", truncate=6.0).ravel()

    def l1(f, g):
        return float(np.abs(f / f.sum() - g / g.sum()).sum())

    extra = np.exp((G**2).sum(1) / 2) if sde.kind == "vp" else 1.0
    return l1(rho, smooth(p**2 * extra)), l1(rho, smooth(p))


def test_t5_ve_stationary_density_is_p_squared():
    sde = VESDE()
    res, _ = _frozen_fit(sde, _ve_t_of_sigma(sde, 1.0))
    l1_p2, l1_p = _grid_l1(res, sde, _ve_t_of_sigma(sde, 1.0))
    assert l1_p2 < 0.06 and l1_p > 0.25, (l1_p2, l1_p)
    rep = gedmd.spectrum_report(res.lam, res.info)
    assert rep["max_im_over_re"] < 1e-3  # reversible dynamics: real spectrum
    assert res.lam[0].real <= 1e-6 and res.lam[1].real < 0


def test_t5_vp_stationary_density_is_p_squared_times_gaussian_weight():
    sde = VPSDE()
    res, _ = _frozen_fit(sde, 0.3)
    l1_p2e, l1_p = _grid_l1(res, sde, 0.3)
    assert l1_p2e < 0.08 and l1_p > 0.25, (l1_p2e, l1_p)


def test_t5_metastable_cluster_has_one_eigenvalue_per_mode():
    sde = VESDE()
    res, a = _frozen_fit(sde, _ve_t_of_sigma(sde, 0.1), M=600)
    assert gedmd.cluster_size(res.lam) == 3
    assert abs(res.lam[2].real) < 0.01 * a and res.lam[3].real < -5 * a


# ---------------------------------------------------------------- T6: derivatives and index convention


@pytest.mark.parametrize("d", [1, 3, 10])
def test_t6_kernel_derivatives_match_finite_differences(d):
    rng = np.random.default_rng(d)
    x, y, zeta, h = rng.normal(size=d), rng.normal(size=d), 1.3, 1e-5
    E = np.eye(d)
    fd_grad = np.array([(kernels.kernel(x + h * e, y, zeta) - kernels.kernel(x - h * e, y, zeta)) / (2 * h) for e in E])
    fd_hess = np.array([(kernels.grad_x(x + h * e, y, zeta) - kernels.grad_x(x - h * e, y, zeta)) / (2 * h) for e in E])
    g, H = kernels.grad_x(x, y, zeta), kernels.hess_x(x, y, zeta)
    assert np.abs(fd_grad - g).max() < 1e-6 * np.abs(g).max()
    assert np.abs(fd_hess - H).max() < 1e-6 * np.abs(H).max()
    assert abs(kernels.laplace_x(x, y, zeta) - np.trace(H)) < 1e-12


def test_t6_generator_gram_matches_autograd():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(12, 3))
    Wb = rng.normal(size=(3, 3))
    B = np.tanh(X @ Wb)
    a, zeta = 0.7, 0.9
    _, K = gedmd.gram_generator(X, B, a, zeta)
    Xt = torch.tensor(X)
    K_ref = np.zeros_like(K)
    for j in range(len(X)):
        def k_j(x):
            return torch.exp(-((x - Xt[j]) ** 2).sum() / (2 * zeta**2))
        for i in range(len(X)):
            xi = Xt[i].clone().requires_grad_(True)
            grad = torch.autograd.grad(k_j(xi), xi, create_graph=True)[0]
            lap = sum(torch.autograd.grad(grad[c], xi, retain_graph=True)[0][c] for c in range(3))
            K_ref[i, j] = float(torch.tensor(B[i]) @ grad.detach()) + 0.5 * a * float(lap.detach())
    np.testing.assert_allclose(K, K_ref, rtol=1e-10, atol=1e-12)


def test_t6_general_diffusion_matches_d3s_formula_and_isotropic_case():
    rng = np.random.default_rng(1)
    X, B = rng.normal(size=(8, 3)), rng.normal(size=(8, 3))
    S = rng.normal(size=(8, 3, 3))
    A = S @ S.transpose(0, 2, 1)  # per-point sigma sigma^T, not isotropic
    zeta = 1.1
    _, K = gedmd.gram_generator_general(X, B, A, zeta)
    for i in range(8):
        for j in range(8):
            ref = B[i] @ kernels.grad_x(X[i], X[j], zeta) + 0.5 * np.sum(A[i] * kernels.hess_x(X[i], X[j], zeta))
            assert abs(K[i, j] - ref) < 1e-12
    _, K_iso = gedmd.gram_generator(X, B, 0.4, zeta)
    _, K_gen = gedmd.gram_generator_general(X, B, np.broadcast_to(0.4 * np.eye(3), (8, 3, 3)), zeta)
    np.testing.assert_allclose(K_iso, K_gen, atol=1e-13)


def test_generator_gram_in_row_blocks_matches_the_general_formula_and_makes_no_third_array():
    """Several row blocks (one partial) with a per-point diffusion factor; at most two (M, M) arrays live at once."""
    import tracemalloc

    rng = np.random.default_rng(5)
    M, d = 2 * gedmd.ROW_BLOCK + 37, 4
    X, B, a = rng.normal(size=(M, d)), rng.normal(size=(M, d)), rng.uniform(0.2, 2.0, M)
    G0_ref, K_ref = gedmd.gram_generator_general(X, B, a[:, None, None] * np.eye(d), 1.3)
    tracemalloc.start()
    G0, K = gedmd.gram_generator(X, B, a, 1.3)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    np.testing.assert_allclose(G0, G0_ref, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(K, K_ref, rtol=1e-9, atol=1e-12 * np.abs(K_ref).max())
    assert peak < 2.5 * M * M * 8, f"gram_generator's peak {peak / (M * M * 8):.2f} (M, M) float64 arrays; two are returned"


def test_well_conditioned_factor_makes_only_the_factor():
    """The 1-norm for the condition estimate comes without an (M, M) temporary: the factor is the only array made."""
    import tracemalloc

    rng = np.random.default_rng(6)
    M = 400
    Z = rng.normal(size=(M, M))
    G0 = Z @ Z.T / M + np.eye(M)
    tracemalloc.start()
    R, rcond = gedmd_iterative.well_conditioned_factor(G0, 1e-12)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    np.testing.assert_allclose(R.T @ R, G0, atol=1e-12)
    assert 0.2 / np.linalg.cond(G0, 1) < rcond < 5.0 / np.linalg.cond(G0, 1)  # LAPACK's estimate of 1 / cond_1
    assert peak < 1.2 * M * M * 8


def test_t6_paper_g2_is_the_transpose_of_k():
    rng = np.random.default_rng(2)
    X, B = rng.normal(size=(30, 4)), rng.normal(size=(30, 4))
    _, K = gedmd.gram_generator(X, B, 0.8, 1.2)
    np.testing.assert_allclose(gedmd.paper_g2(X, B, 0.8, 1.2), K.T, atol=1e-13)


def test_t6_koopman_and_fp_pencils_share_the_spectrum():
    X = np.random.default_rng(3).normal(size=(200, 2))
    B = -X + 0.3 * np.sin(X[:, ::-1])  # not a gradient field: non-normal generator
    G0, K = gedmd.gram_generator(X, B, 1.0, 0.8)
    Q, s, _ = gedmd.truncated_basis(G0, 1e-10)
    Kt = Q.T @ K @ Q
    lam_k = sla.eigvals(Kt, np.diag(s))
    lam_p = sla.eigvals(Kt.T, np.diag(s))
    key = lambda z: (np.round(z.real, 6), np.round(z.imag, 6))  # noqa: E731
    lam_k, lam_p = np.array(sorted(lam_k, key=key)), np.array(sorted(lam_p, key=key))
    assert np.abs(lam_k - lam_p).max() < 1e-8 * np.abs(lam_k).max()


def test_biorthogonality_of_koopman_and_fp_vectors():
    X = np.random.default_rng(4).normal(size=(150, 2))
    B = -X + 0.3 * np.sin(X[:, ::-1])
    G0, K = gedmd.gram_generator(X, B, 1.0, 0.8)
    lam, V, U, pairing, _ = gedmd.solve(G0, K, n_keep=6)
    P = U.T @ G0 @ V / len(X)
    off = np.abs(P - np.diag(np.diag(P))).max()
    assert off < 1e-8 * np.abs(np.diag(P)).min()
    np.testing.assert_allclose(np.diag(P), pairing, rtol=1e-8)  # the 1e-12 truncation keeps directions down to 1e-12 of ||G0||: ~1e-9 round-off
    # the vectors solve their own problems in the Galerkin sense on the truncated basis
    Q, _, _ = gedmd.truncated_basis(G0, 1e-10)
    scale = np.linalg.norm(K, 2)
    for k in range(6):
        assert np.linalg.norm(Q.T @ (K @ V[:, k] - lam[k] * G0 @ V[:, k])) < 1e-9 * scale
        assert np.linalg.norm(Q.T @ (K.T @ U[:, k] - lam[k] * G0 @ U[:, k])) < 1e-9 * scale


def test_bad_inputs_are_config_errors():
    X = np.zeros((5, 2))
    with pytest.raises(ConfigError, match="shape"):
        gedmd.gram_generator(X, np.zeros((5, 3)), 1.0, 1.0)
    with pytest.raises(ConfigError, match="zeta"):
        kernels.gram(X, X, zeta=0.0)
    with pytest.raises(ConfigError, match="NaN"):
        gedmd.gram_generator(np.full((3, 2), np.nan), np.zeros((3, 2)), 1.0, 1.0)
    with pytest.raises(ConfigError, match="diffusion"):
        gedmd.gram_generator(X, X, -1.0, 1.0)
    with pytest.raises(ConfigError, match="regularisation"):
        gedmd.solve(np.eye(3), np.eye(3), regularisation="qz")


# ---------------------------------------------------------------- the iterative solver against the dense one (Methods B.2)


def _cosines(A, B):
    """|cos| between matching columns: eigenvectors agree up to a complex phase when this is 1."""
    return np.abs(np.einsum("mk,mk->k", A.conj(), B)) / (np.linalg.norm(A, axis=0) * np.linalg.norm(B, axis=0))


def test_t1_iterative_solver_gives_the_dense_ou_spectrum(ou):
    """On the 1-d OU check the truncation is active (r << M), so the iterative solver hands over to the dense one."""
    X, de = ou
    it = gedmd.fit(X, -X, 2.0, 1.0, n_keep=6, solver="iterative")
    assert it.info["solver"] == "dense" and "truncation" in it.info["fallback"] and it.info["r"] < 100
    np.testing.assert_allclose(it.lam[:6], de.lam[:6], rtol=0, atol=1e-8 * abs(de.lam[5]))
    assert np.all(_cosines(it.U, de.U[:, :6]) > 1 - 1e-8) and np.all(_cosines(it.V, de.V[:, :6]) > 1 - 1e-8)


def _anisotropic_ou(M=300, zeta=0.7):
    """3-D OU ``dX = -diag(1, 1.7, 2.9) X dt + sqrt(2) dW`` (spectrum 0, -1, -1.7, -2, -2.7, -2.9, -3, ...).

    At ``zeta = 0.7`` with 300 points ``G0`` keeps full rank (``s_min / s_max ~ 4e-9``), so the
    truncation removes nothing and the iterative solver runs its Krylov and shift-and-invert stages.
    """
    X = np.random.default_rng(0).standard_normal((M, 3))
    return gedmd.gram_generator(X, -X * np.array([1.0, 1.7, 2.9]), 2.0, zeta)


def _assert_same_leading_pairs(G0, K, n_keep, rtol=1e-8):
    lam_i, V_i, U_i, p_i, info = gedmd.solve(G0, K, n_keep=n_keep, solver="iterative")
    lam_d, V_d, U_d, p_d, info_d = gedmd.solve(G0, K, n_keep=n_keep, solver="dense")
    assert info["solver"] == "iterative" and info_d["r"] == len(G0)  # both solve the untruncated pencil
    n = len(lam_i)
    assert n >= n_keep + 1
    assert np.abs(lam_i - lam_d[:n]).max() <= rtol * np.abs(lam_d[:n]).max()  # the same n leading ones: none missed
    assert np.all(_cosines(V_i, V_d) > 1 - 1e-8) and np.all(_cosines(U_i, U_d) > 1 - 1e-8)
    np.testing.assert_allclose(p_i, p_d, rtol=1e-6)
    P = U_i.T @ G0 @ V_i / len(G0)
    assert np.abs(P - np.diag(np.diag(P))).max() < 1e-8 * np.abs(np.diag(P)).min()  # still biorthogonal
    return info


def test_iterative_and_dense_solvers_agree_on_a_full_rank_ou():
    G0, K = _anisotropic_ou()
    _assert_same_leading_pairs(G0, K, n_keep=6)
    lam, *_ = gedmd.solve(G0, K, n_keep=6, solver="iterative")
    # no spurious eigenvalues crowd the top: lam_0 ~ 0 alone, then a gap (the exact lam_1 is -1)
    assert abs(lam[0]) < 0.1 and lam[1].real < -0.9 and np.all(np.diff(lam.real) <= 1e-12)


def test_iterative_and_dense_solvers_agree_in_image_dimension():
    """The set-up of the benchmark, small: 64-d points, the frozen VE reverse drift of their ideal score at
    sigma = 0.5 on perturbed copies; a nonsymmetric K whose spectrum is an outlier and a complex cluster."""
    rng = np.random.default_rng(1)
    x0 = torch.from_numpy(rng.uniform(0, 1, (300, 64)))
    sde = VESDE()
    t_star = _ve_t_of_sigma(sde, 0.5)
    X = x0 + 0.5 * torch.from_numpy(rng.standard_normal(x0.shape))
    B, a = drift_at(IdealScore(x0, sde), sde, X, t_star)
    G0, K = gedmd.gram_generator(X.numpy(), B, a, 3.2)
    _assert_same_leading_pairs(G0, K, n_keep=6)
    assert np.abs(K - K.T).max() > 0.1 * np.abs(K).max()  # far from symmetric


def _random_pencil(rng, n, d):
    """``G0 = Q diag(1..10) Q^T`` (well conditioned), ``K = G0 S diag(d) S^-1``: the pencil's eigenvalues are ``d``."""
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    G0 = (Q * np.linspace(1.0, 10.0, n)) @ Q.T
    S = np.eye(n) + 0.3 * rng.standard_normal((n, n)) / np.sqrt(n)
    return G0, G0 @ S @ np.diag(d) @ np.linalg.inv(S)


def test_iterative_and_dense_solvers_agree_on_a_random_well_conditioned_pencil():
    """Isolated leading eigenvalues (Krylov on A alone), then an outlier and a tight cluster (shift-and-invert)."""
    rng = np.random.default_rng(7)
    n = 250
    G0, K = _random_pencil(rng, n, np.concatenate([rng.normal(-5.0, 1.0, n - 6), [3.0, 2.5, 2.0, 1.5, 1.2, 1.0]]))
    info = _assert_same_leading_pairs(G0, K, n_keep=5)
    assert info["stage1_converged"] >= 6 and "sigma" not in info  # no LU
    cluster = -1e-3 * np.arange(10)  # spacing 1e-3 against a spread of 50: Krylov on A stalls there
    G0, K = _random_pencil(rng, n, np.concatenate([rng.uniform(-50.0, -1.0, n - 11), cluster, [10.0]]))
    info = _assert_same_leading_pairs(G0, K, n_keep=5)
    assert "sigma" in info and info["stage1_converged"] >= 1  # the outlier in stage 1, the cluster by shift-and-invert
    lam, *_ = gedmd.solve(G0, K, n_keep=5, solver="iterative")
    np.testing.assert_allclose(lam.real, np.concatenate([[10.0], cluster])[: len(lam)], atol=1e-8)  # no spurious one


def _image_pencil(M=300, d=64, seed=1):
    rng = np.random.default_rng(seed)
    x0 = torch.from_numpy(rng.uniform(0, 1, (M, d)))
    sde = VESDE()
    X = x0 + 0.5 * torch.from_numpy(rng.standard_normal(x0.shape))
    B, a = drift_at(IdealScore(x0, sde), sde, X, _ve_t_of_sigma(sde, 0.5))
    return gedmd.gram_generator(X.numpy(), B, a, 3.2)


def test_mixed_precision_stage1_gives_the_dense_eigenvalues():
    """Float32 Krylov products, float64 two-sided Rayleigh quotients: the leading eigenvalues as the dense solver's to
    1e-8 (in fact ~1e-13), vectors to 1 - cos < 1e-8, and the error bound it reports below its tolerance."""
    rng = np.random.default_rng(7)
    n = 250
    for G0, K in (_image_pencil(), _random_pencil(rng, n, np.concatenate([rng.normal(-5.0, 1.0, n - 6), [3.0, 2.5, 2.0, 1.5, 1.2, 1.0]]))):
        R, _ = gedmd_iterative.well_conditioned_factor(G0, gedmd.GRAM_RTOL)
        lam, V, U, info = gedmd_iterative.leading_eigenpairs(G0, K, R, 5, precision="mixed")
        lam_d, V_d, U_d, _, _ = gedmd.solve(G0, K, n_keep=len(lam), solver="dense")
        assert info["precision"] == "mixed" and info["products_float32"] > 0
        assert info["eig_error_bound"] <= gedmd_iterative.MIXED_EIG_TOL
        assert np.abs(lam - lam_d[:len(lam)]).max() <= 1e-8 * np.abs(lam_d).max()
        assert np.all(_cosines(V, V_d) > 1 - 1e-8) and np.all(_cosines(U, U_d) > 1 - 1e-8)


def test_mixed_precision_falls_back_to_double_and_auto_switches_by_size(monkeypatch):
    """Where float32 cannot separate the pairs (the anisotropic OU: its transposed run lands on other eigenvalues)
    the float64 stage 1 runs and says why; ``auto`` takes float32 from ``MIXED_MIN_M`` on."""
    G0, K = _anisotropic_ou()
    R, _ = gedmd_iterative.well_conditioned_factor(G0, gedmd.GRAM_RTOL)
    lam, _, _, info = gedmd_iterative.leading_eigenpairs(G0, K, R, 6, precision="mixed")
    lam_d, *_ = gedmd.solve(G0, K, n_keep=len(lam), solver="dense")
    assert info["precision"].startswith("double (") and np.abs(lam - lam_d[:len(lam)]).max() <= 1e-8 * np.abs(lam_d).max()
    G0, K = _image_pencil()
    R, _ = gedmd_iterative.well_conditioned_factor(G0, gedmd.GRAM_RTOL)
    assert gedmd_iterative.leading_eigenpairs(G0, K, R, 5)[3]["precision"] == "double"  # M = 300 < MIXED_MIN_M
    monkeypatch.setattr(gedmd_iterative, "MIXED_MIN_M", 300)
    assert gedmd_iterative.leading_eigenpairs(G0, K, R, 5)[3]["precision"] == "mixed"
    with pytest.raises(ValueError, match="precision"):
        gedmd_iterative.leading_eigenpairs(G0, K, R, 5, precision="half")


def test_single_factor_is_float32_in_place_and_refused_where_g0_is_ill_conditioned():
    """``single=True``: a float32 factor made in its own float32 copy of ``G0`` (half a float64 array of fresh memory,
    no float64 factor); where ``G0``'s condition is beyond float32's reach the float64 factor (or None) as before."""
    import tracemalloc

    rng = np.random.default_rng(6)
    M = 400
    Z = rng.normal(size=(M, M))
    G0 = Z @ Z.T / M + np.eye(M)
    tracemalloc.start()
    R, rcond = gedmd_iterative.well_conditioned_factor(G0, 1e-12, single=True)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert R.dtype == np.float32 and peak < 0.6 * M * M * 8
    np.testing.assert_allclose(R.T.astype(np.float64) @ R, G0, atol=1e-5)
    assert 0.2 / np.linalg.cond(G0, 1) < rcond < 5.0 / np.linalg.cond(G0, 1)
    Q = np.linalg.qr(rng.normal(size=(M, M)))[0]
    G_ill = (Q * np.logspace(0, -8, M)) @ Q.T  # 1/cond = 1e-8: below SINGLE_RCOND_MIN, above the float64 bar
    R, rcond = gedmd_iterative.well_conditioned_factor(G_ill, 1e-12, single=True)
    assert R.dtype == np.float64 and rcond < gedmd_iterative.SINGLE_RCOND_MIN
    np.testing.assert_allclose(R.T @ R, G_ill, atol=1e-12)


def test_mixed_precision_with_a_float32_factor_matches_the_dense_solver_without_a_float64_factor():
    """A float32 factor (``single=True``) serves stage 1; the float64 quotients come from ``K`` and ``G0`` themselves, so
    the eigenvalues are the dense solver's to 1e-8 and no float64 factor is made.  Where the bound fails (the
    anisotropic OU) the float64 factor is made for the float64 stage 1, and the answer is still the dense one."""
    rng = np.random.default_rng(7)
    n = 250
    for G0, K in (_image_pencil(), _random_pencil(rng, n, np.concatenate([rng.normal(-5.0, 1.0, n - 6), [3.0, 2.5, 2.0, 1.5, 1.2, 1.0]]))):
        R, _ = gedmd_iterative.well_conditioned_factor(G0, gedmd.GRAM_RTOL, single=True)
        assert R.dtype == np.float32
        lam, V, U, info = gedmd_iterative.leading_eigenpairs(G0, K, R, 5, precision="mixed")
        lam_d, V_d, U_d, _, _ = gedmd.solve(G0, K, n_keep=len(lam), solver="dense")
        assert info["precision"] == "mixed" and info["factor"] == "float32"
        assert info["eig_error_bound"] <= gedmd_iterative.MIXED_EIG_TOL
        assert np.abs(lam - lam_d[:len(lam)]).max() <= 1e-8 * np.abs(lam_d).max()
        assert np.all(_cosines(V, V_d) > 1 - 1e-8) and np.all(_cosines(U, U_d) > 1 - 1e-8)
    G0, K = _anisotropic_ou()
    R, _ = gedmd_iterative.well_conditioned_factor(G0, gedmd.GRAM_RTOL)
    lam, _, _, info = gedmd_iterative.leading_eigenpairs(G0, K, R.astype(np.float32), 6, precision="mixed")
    lam_d, *_ = gedmd.solve(G0, K, n_keep=len(lam), solver="dense")
    assert info["precision"].startswith("double (") and info["factor"] == "float64"
    assert np.abs(lam - lam_d[:len(lam)]).max() <= 1e-8 * np.abs(lam_d).max()


def test_solve_takes_the_float32_factor_from_mixed_min_m_on(monkeypatch):
    """``gedmd.solve(solver="iterative")`` asks for the float32 factor where stage 1 runs in float32, and says so."""
    G0, K = _image_pencil()
    assert "dpocon" in gedmd.solve(G0, K, n_keep=4, solver="iterative")[4]["cond_estimate"]
    monkeypatch.setattr(gedmd_iterative, "MIXED_MIN_M", 300)
    lam, _, _, _, info = gedmd.solve(G0, K, n_keep=4, solver="iterative")
    lam_d = gedmd.solve(G0, K, n_keep=4, solver="dense")[0]
    assert "spocon" in info["cond_estimate"] and info["factor"] == "float32" and info["precision"] == "mixed"
    assert np.abs(lam[:4] - lam_d[:4]).max() <= 1e-8 * np.abs(lam_d).max()


def test_iterative_solver_with_symmetric_k_returns_u_equal_to_v():
    """Zero drift (the VE sampler at t* = sampling_eps on unperturbed references): K is symmetric to rounding, U = V."""
    X = np.random.default_rng(2).uniform(0, 1, (250, 64))
    G0, K = gedmd.gram_generator(X, np.zeros_like(X), 0.01, 3.0)
    _assert_same_leading_pairs(G0, K, n_keep=5)
    _, V, U, _, _ = gedmd.solve(G0, K, n_keep=5, solver="iterative")
    assert np.all(_cosines(U, V) > 1 - 1e-12)


def test_iterative_solver_falls_back_to_dense_where_it_must():
    G0, K = _anisotropic_ou(M=400)  # s_min / s_max ~ 2e-10: too close to gram_rtol = 1e-10 to skip the truncation
    info = gedmd.solve(G0, K, rtol=1e-10, n_keep=6, solver="iterative")[4]
    assert info["solver"] == "dense" and "truncation" in info["fallback"]
    G0, K = _anisotropic_ou()
    assert gedmd.solve(G0, K, solver="iterative")[4]["solver"] == "dense"  # every vector wanted
    assert gedmd.solve(G0, K, n_keep=40, solver="iterative")[4]["solver"] == "dense"  # n_eig > M / 10
    assert gedmd.solve(G0, K, n_keep=6)[4]["solver"] == "dense"  # "auto" below AUTO_ITERATIVE_MIN_M
    with pytest.raises(ConfigError, match="solver"):
        gedmd.solve(G0, K, n_keep=6, solver="arpack")


def _planted(rng, n, bulk_mean, outliers_real, pair):
    """A non-normal real ``(n, n)`` matrix: a Gaussian bulk, real outliers and one conjugate pair ``pair``."""
    d = np.concatenate([rng.normal(bulk_mean, 1.0, n - len(outliers_real) - 2), outliers_real, [pair.real, pair.real]])
    D = np.diag(d)
    D[-2, -1], D[-1, -2] = pair.imag, -pair.imag
    S = np.eye(n) + 0.3 * rng.standard_normal((n, n)) / np.sqrt(n)
    return S @ D @ np.linalg.inv(S)


@pytest.mark.parametrize("which", ["LR", "LM"])
def test_krylov_schur_finds_the_wanted_eigenvalues(which):
    rng = np.random.default_rng(5)
    n = 400
    if which == "LR":
        A = _planted(rng, n, -5.0, [3.0, 2.5, 2.0, 1.5], 2.4 + 0.3j)
    else:
        A = _planted(rng, n, 0.0, [6.0, -5.5, 5.0, -4.5], 4.0 + 1.0j)
    ev = np.linalg.eigvals(A)
    key = ev.real if which == "LR" else np.abs(ev)
    want = ev[np.argsort(-key)][:6]
    ps = krylov.krylov_schur(lambda Z: A @ Z, n, 6, which, block=4, max_dim=48, tol=1e-12)
    got, _ = krylov.ritz_pairs(ps.T, which)
    assert ps.converged
    for z in want:
        assert np.abs(got - z).min() < 1e-9 * np.abs(ev).max()
    Q = ps.Q
    assert np.abs(Q.T @ Q - np.eye(Q.shape[1])).max() < 1e-12
    assert np.linalg.norm(A @ Q - Q @ ps.T) < 1e-10 * np.abs(ev).max()


def test_krylov_schur_mid_cycle_checks_stop_sooner_with_the_same_eigenvalues():
    """``check_every`` tests convergence inside a cycle: fewer products, the same converged pairs."""
    rng = np.random.default_rng(7)
    n = 400
    A = _planted(rng, n, -5.0, [3.0, 2.5, 2.0, 1.5], 2.4 + 0.3j)
    ev = np.linalg.eigvals(A)
    want = ev[np.argsort(-ev.real)][:6]
    full = krylov.krylov_schur(lambda Z: A @ Z, n, 6, "LR", block=1, max_dim=64, tol=1e-10)
    early = krylov.krylov_schur(lambda Z: A @ Z, n, 6, "LR", block=1, max_dim=64, tol=1e-10, check_every=4)
    assert full.converged and early.converged
    assert early.products < full.products
    got, _ = krylov.ritz_pairs(early.T, "LR")
    for z in want:
        assert np.abs(got - z).min() < 1e-7 * np.abs(ev).max()
    assert np.linalg.norm(A @ early.Q - early.Q @ early.T) < 1e-8 * np.abs(ev).max()
