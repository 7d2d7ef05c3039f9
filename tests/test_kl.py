"""KL expansion of Brownian motion and of general kernels (paper A, eqs. (8)-(10), (16), App. B)."""

import numpy as np
import pytest

from kl_repro.paper_a import kl
from kl_repro.core.config import ConfigError


def test_numerical_eigenvalues_match_closed_form_on_2000_points():
    r = kl.compare_eigenpairs("brownian", 2000, 10)
    assert np.all(r["rel_err"] < 1e-3)
    assert np.all(r["eigfun_err"] < 1e-2)
    assert r["lam_analytic"][0] == pytest.approx(4 / np.pi**2)


@pytest.mark.parametrize("kernel,params", [("brownian_bridge", {}), ("ornstein_uhlenbeck", {"theta": 2.0}),
                                           ("ornstein_uhlenbeck", {"theta": 0.3})])
def test_other_kernels_match_their_closed_forms(kernel, params):
    r = kl.compare_eigenpairs(kernel, 1500, 8, **params)
    assert np.all(r["rel_err"] < 1e-3)
    assert np.all(r["eigfun_err"] < 2e-2)
    # the closed-form eigenfunctions are orthonormal on [0, 1]
    s, f = r["s"], r["f_analytic"]
    gram = f @ f.T / s.size
    assert np.allclose(gram, np.eye(8), atol=2e-3)


def test_truncated_variance_at_one():
    assert kl.v_d(1.0, 8) == pytest.approx(0.97470, abs=1e-5)
    assert kl.v_d(1.0, 10) == pytest.approx(0.97975, abs=1e-5)
    e = kl.basis_e(1.0, 2)
    assert e[0] == pytest.approx(0.90032, abs=1e-5)
    assert e[1] == pytest.approx(-0.30011, abs=1e-5)


def test_mercer_sum_of_squares_tends_to_t():
    t = np.linspace(0.0, 1.0, 11)
    s = np.sum(kl.phi(t, np.arange(1, 10_001)) ** 2, axis=-1)
    assert np.allclose(s, t, atol=1e-4)
    # and the truncation error decreases with d
    errs = [kl.integrated_truncation_error(d) for d in (1, 2, 8, 64)]
    assert all(a > b for a, b in zip(errs, errs[1:]))
    assert kl.integrated_truncation_error(8) == pytest.approx(0.5 - np.sum(kl.eigenvalue(np.arange(1, 9))))


def test_variance_shares_table():
    rows = kl.variance_table(10)
    assert [round(r["share"], 4) for r in rows[:5]] == [0.8106, 0.0901, 0.0324, 0.0165, 0.0100]
    assert rows[7]["cumulative_share"] == pytest.approx(0.9747, abs=1e-4)
    assert rows[9]["cumulative_share"] == pytest.approx(0.9798, abs=1e-4)


def test_derivative_matches_finite_differences():
    t = np.linspace(0.1, 0.9, 7)
    h = 1e-6
    fd = (kl.phi(t + h, np.arange(1, 6)) - kl.phi(t - h, np.arange(1, 6))) / (2 * h)
    assert np.allclose(fd, kl.dphi(t, np.arange(1, 6)), atol=1e-6)


def test_truncated_paths_have_the_mercer_variance():
    rng = np.random.default_rng(0)
    t = np.array([0.25, 0.5, 1.0])
    W = kl.truncated_bm(t, rng.standard_normal((200_000, 8)))
    expected = np.sum(kl.phi(t, np.arange(1, 9)) ** 2, axis=-1)
    assert np.allclose(W.var(axis=0), expected, rtol=0.02)


def test_basis_table_shape_and_grid():
    E = kl.basis_table(20, 8)
    assert E.shape == (20, 8)
    assert np.allclose(E[-1], kl.basis_e(1.0, 8))


@pytest.mark.parametrize("call", [
    lambda: kl.basis_e(0.5, 0),
    lambda: kl.v_d(0.5, -1),
    lambda: kl.basis_e(0.0, 3),
    lambda: kl.numerical_eigenpairs("brownian", -5, 3),
    lambda: kl.numerical_eigenpairs("nope", 10, 3),
    lambda: kl.eigenvalue(0),
    lambda: kl.basis_table(0, 8),
])
def test_bad_input_is_refused(call):
    with pytest.raises(ConfigError):
        call()
