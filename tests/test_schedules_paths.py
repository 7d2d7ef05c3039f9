"""VP schedule (paper A eq. (4)) and the path-smoothness diagnostics (paper A Sec. 3.3; Methods A.8)."""

import numpy as np
import pytest

from kl_repro.paper_a import forward_paths as paths
from kl_repro.paper_a import kl
from kl_repro.core.config import ConfigError
from kl_repro.schedule import VPSchedule, ddpm_linear_alpha_bar, schedule_agreement, time_input


def test_vp_schedule_identities():
    s = VPSchedule()
    t = np.linspace(0, 1, 11)
    assert np.allclose(s.alpha(t) ** 2 + s.sigma(t) ** 2, 1.0)
    assert s.alpha(0.0) == pytest.approx(1.0)
    assert s.integral_beta() == pytest.approx(10.05)
    # d log alpha / dt = -beta / 2
    h = 1e-6
    assert (s.log_alpha(0.3 + h) - s.log_alpha(0.3 - h)) / (2 * h) == pytest.approx(-s.beta(0.3) / 2, rel=1e-6)


def test_continuous_and_discrete_schedules_agree():
    r = schedule_agreement(20, 1000)
    assert r["max_abs"] < 8.5e-4
    assert r["alpha_bar_vp"][0] == pytest.approx(0.97057, abs=1e-5)
    assert r["alpha_bar_ddpm"][0] == pytest.approx(0.97102, abs=1e-5)
    assert ddpm_linear_alpha_bar(1000).shape == (1000,)
    assert time_input(np.array([0.05, 1.0])).tolist() == pytest.approx([49.0, 999.0])


def test_quadratic_variation_vp_tends_to_integral_of_beta_kl_to_zero():
    rng = np.random.default_rng(1)
    x0 = 0.5 * rng.standard_normal((4, 64))
    qv_vp = paths.quadratic_variation(paths.vp_em_paths(x0, 10_000, rng))
    assert qv_vp == pytest.approx(10.05, rel=0.03)
    Z = rng.standard_normal((4, 8, 64))
    qv_kl = [paths.quadratic_variation(paths.kl_exact_paths(x0, Z, n)) for n in (100, 1000, 10_000)]
    qv_ap = [paths.quadratic_variation(paths.kl_approx_paths(x0, Z, n)) for n in (100, 1000, 10_000)]
    for seq in (qv_kl, qv_ap):
        assert seq[-1] < 0.01
        assert seq[0] / seq[1] == pytest.approx(10, rel=0.1)  # O(1/N)
        assert seq[1] / seq[2] == pytest.approx(10, rel=0.1)


def test_path_length_grows_for_vp_and_converges_for_kl():
    rows = paths.smoothness_table(4, 32, (100, 10_000), d=8, seed=0)
    get = {(r["process"].split()[0] + r["process"].split()[1], r["N"]): r["path_length"] for r in rows}
    assert get[("VP(Brownian,", 10_000)] / get[("VP(Brownian,", 100)] == pytest.approx(10, rel=0.1)  # sqrt(N)
    assert get[("KLexact", 10_000)] / get[("KLexact", 100)] == pytest.approx(1.0, abs=0.01)


def test_kl_paths_have_rank_at_most_d_plus_one():
    rows = paths.rank_table((1, 2, 8), n_steps=100, n_pixels=128)
    assert rows[0]["rank"] == 101
    assert [r["rank"] for r in rows[1:]] == [2, 3, 9]


def test_exact_solution_keeps_less_variance_near_one_than_the_approximation():
    kept = paths.exact_variance_kept(np.array([0.05, 0.25, 1.0]), 8)
    assert kept == pytest.approx([0.606, 0.874, 0.547], abs=2e-3)
    # Parseval (13): the exact coefficients recover sigma_t^2 as d grows
    assert paths.exact_variance_kept(np.array([0.5]), 200)[0] == pytest.approx(0.994, abs=3e-3)


def test_noise_correlations():
    assert paths.noise_correlation_kl(0.5, 0.55, 8) == pytest.approx(0.981, abs=1e-3)
    assert paths.noise_correlation_kl(0.5, 1.0, 8) == pytest.approx(0.725, abs=1e-3)
    assert paths.noise_correlation_bm(0.5, 1.0) == pytest.approx(0.7071, abs=1e-4)
    rng = np.random.default_rng(0)
    Z = rng.standard_normal((20_000, 8, 1))
    t = np.array([0.5, 0.55, 1.0])
    noise = np.einsum("nk,pkd->pnd", kl.basis_e(t, 8), Z)
    C = paths.empirical_noise_correlation(noise)
    assert C[0, 1] == pytest.approx(0.981, abs=5e-3)


def test_bad_grid_is_refused():
    with pytest.raises(ConfigError):
        paths.uniform_grid(-3)
    with pytest.raises(ConfigError):
        VPSchedule(beta_min=-1.0)
