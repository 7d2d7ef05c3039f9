"""The Fokker-Planck sampler: checks T7 and T9 (Methods B.5), presets, bad inputs, NaN accounting."""

import math
import warnings

import numpy as np
import pytest
import torch

from kl_repro.core.config import ConfigError
from kl_repro.paper_b.kernels import gram, log_gram
from kl_repro.paper_b.fp_config import FPConfig, fp_preset
from kl_repro.paper_b.fp_density import FPDensity, kde_score
from kl_repro.paper_b.fp_operator import coefficients, mode_weights, prior_log_mass, select_modes
from kl_repro.paper_b.groups import sample_group, sample_groups
from kl_repro.paper_b.inits import solid_init, structured_init
from kl_repro.paper_b.langevin import langevin
from kl_repro.paper_b.memorisation import memorisation_report
from kl_repro.paper_b.scores import GaussianMixture, IdealScore, MixtureScore
from kl_repro.paper_b.sde import VESDE


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


# ---------------------------------------------------------------- T7: Langevin and the KDE score


def test_t7_stationary_variance_around_one_component():
    """w = (1): per-coordinate variance eta^2 zeta_s^2 / (1 - step_size / 2 zeta_s^2) = 1.0101 with the paper's values."""
    d = 64
    density = FPDensity(np.zeros((1, d)), np.ones(1), zeta_s=5.0)
    x0 = torch.zeros(2000, d)
    x, stats = langevin(density, x0, step_size=0.5, J=400, eta=0.2, generator=torch.Generator().manual_seed(0))
    expected = 0.2**2 * 25 / (1 - 0.5 / (2 * 25))
    assert expected == pytest.approx(1.0101, abs=1e-4)
    assert float(x.var()) == pytest.approx(expected, rel=0.03)
    assert stats["n_fallback"].sum() == 0 and stats["n_nonfinite_samples"] == 0


def _signed_density(seed=0, M=40, d=3, zeta_s=0.7):
    rng = np.random.default_rng(seed)
    refs = rng.normal(size=(M, d))
    w = rng.normal(size=M) + 0.3
    return FPDensity(refs, w, zeta_s)


def test_t7_score_invariant_to_weight_scale_and_eigenvalue_shift():
    rng = np.random.default_rng(1)
    M, L = 30, 4
    U = rng.normal(size=(M, L)) + 1j * 0
    lam = -np.arange(L, dtype=float) + 0j
    c = rng.normal(size=L) + 0j
    refs = rng.normal(size=(M, 2))
    x = torch.tensor(rng.normal(size=(50, 2)))
    s0 = FPDensity(refs, mode_weights(lam, U, c, 1.0), 0.8).score(x)[0]
    s_scaled = FPDensity(refs, 3 * mode_weights(lam, U, c, 1.0), 0.8).score(x)[0]
    s_shift = FPDensity(refs, mode_weights(lam + 5, U, c, 1.0), 0.8).score(x)[0]
    assert (s0 - s_scaled).abs().max() < 1e-10
    assert (s0 - s_shift).abs().max() < 1e-10


def test_t7_signed_score_is_the_gradient_of_log_p0_where_positive():
    density = _signed_density()
    x = np.random.default_rng(2).normal(size=(400, 3)) * 1.5
    score, tweedie, fb = density.score(torch.tensor(x))
    logp, sign = density.log_abs(x)
    h = 1e-6
    fd = np.stack([(density.log_abs(x + h * e)[0] - density.log_abs(x - h * e)[0]) / (2 * h) for e in np.eye(3)], 1)
    pos = sign > 0
    assert pos.sum() > 50 and (~pos).sum() > 5  # both regions are exercised
    np.testing.assert_allclose(score.numpy()[pos], fd[pos], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(tweedie.numpy(), x + density.zeta_s**2 * score.numpy(), atol=1e-10)
    # the fallback fires exactly where p0 <= 0
    np.testing.assert_array_equal(fb.numpy(), ~pos)


def test_t7_fallback_policies():
    density = _signed_density()
    x = torch.tensor(np.random.default_rng(3).normal(size=(400, 3)) * 1.5)
    Cp, lp, Cn, ln = density.parts(torch.float64)
    s_pos, _, fb = kde_score(x, Cp, lp, Cn, ln, density.zeta_s, "positive_part")
    s_abs, _, fb2 = kde_score(x, Cp, lp, Cn, ln, density.zeta_s, "abs")
    s_clip, _, _ = kde_score(x, Cp, lp, Cn, ln, density.zeta_s, "clip")
    g_pos = kde_score(x, Cp, lp, zeta_s=density.zeta_s)[0]
    assert torch.equal(fb, fb2) and fb.any()
    assert torch.allclose(s_pos[fb], g_pos[fb])  # positive part: g+
    assert torch.allclose(s_pos[~fb], s_abs[~fb])  # identical where p0 > 0
    # abs: the score of |p0| (finite differences of log|p0|) where p0 < 0
    xn = x.numpy()
    h = 1e-6
    fd = np.stack([(density.log_abs(xn + h * e)[0] - density.log_abs(xn - h * e)[0]) / (2 * h) for e in np.eye(3)], 1)
    np.testing.assert_allclose(s_abs.numpy()[fb.numpy()], fd[fb.numpy()], rtol=1e-4, atol=1e-4)
    assert torch.all(s_clip[fb].norm(dim=1) <= g_pos[fb].norm(dim=1) * (1 + 1e-9))


def test_t7_far_inputs_stay_finite():
    density = _signed_density()
    far = torch.tensor([[1000 * 0.7, 0.0, 0.0], [-700.0, 700.0, 700.0], [0.0, 0.0, -1e4]], dtype=torch.float64)
    for x in (far, far.float()):
        s, t, _ = density.score(x)
        assert torch.isfinite(s).all() and torch.isfinite(t).all()
    uniform = FPDensity(density.refs, np.ones(40), 0.7)
    assert torch.isfinite(uniform.score(far)[0]).all()


def test_nonfinite_scores_are_counted_and_replaced():
    class Broken(FPDensity):
        def score(self, x):
            s, t, fb = super().score(x)
            s = s.clone()
            s[0] = float("nan")
            return s, t, fb

    density = Broken(np.zeros((1, 4)), np.ones(1), 1.0)
    x, stats = langevin(density, torch.zeros(5, 4), step_size=0.1, J=20, eta=0.1, generator=torch.Generator().manual_seed(0))
    assert stats["n_nonfinite_score"].tolist() == [20, 0, 0, 0, 0]
    assert torch.isfinite(x).all() and stats["n_nonfinite_samples"] == 0


def test_nonfinite_samples_are_reported_not_silent():
    density = FPDensity(np.zeros((1, 2)), np.ones(1), 1.0)
    x0 = torch.zeros(3, 2)
    x0[1, 0] = float("inf")
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        x, stats = langevin(density, x0, step_size=0.1, J=3, eta=0.1)
    assert stats["n_nonfinite_samples"] == 1 and any("non-finite" in str(r.message) for r in rec)


# ---------------------------------------------------------------- T9: VE projection underflow


def test_t9_ve_prior_projection_underflows_naively_but_not_in_log_space():
    g = torch.Generator().manual_seed(0)
    M, N, d, L = 200, 200, 3072, 5
    X = torch.rand(M, d, generator=g, dtype=torch.float64).numpy()
    Y = (50.0 * torch.randn(N, d, generator=g, dtype=torch.float64)).numpy()
    U = np.linalg.qr(np.random.default_rng(0).normal(size=(M, L)))[0] + 0j
    naive = U.T @ np.exp(log_gram(Y, X, 22.0)).sum(0)
    assert np.all(naive == 0)  # exp(-8000) is 0 in float64
    log_s, info = prior_log_mass(X, Y, 22.0)
    c = coefficients(U, U, np.ones(L), log_s, "paper")
    assert np.all(np.isfinite(c)) and np.all(np.abs(c) > 0)
    assert info["log_k_max"] < -700 and info["n_eff_prior"] < 2.0  # one prior draw dominates (Methods B.3)


def test_t9_log_space_coefficients_agree_with_direct_ones_where_no_underflow():
    rng = np.random.default_rng(1)
    X, Y = rng.uniform(-1, 1, (100, 8)), rng.normal(size=(300, 8))
    U = rng.normal(size=(100, 4)) + 0j
    V = rng.normal(size=(100, 4)) + 0j
    pairing = rng.uniform(0.5, 1.5, 4) + 0j
    log_s, _ = prior_log_mass(X, Y, 1.5)
    direct_s = gram(Y, X, 1.5).sum(0)
    for mode, ref in (("paper", U.T @ direct_s), ("biorthogonal", (V.T @ direct_s) / pairing)):
        c = coefficients(U, V, pairing, log_s, mode)
        ratio = ref / c
        assert np.allclose(ratio, ratio[0], rtol=1e-10) and ratio[0].real > 0  # same up to a positive factor
    lam = np.array([0, -1, -2, -3]) + 0j
    w1 = mode_weights(lam, U, coefficients(U, V, pairing, log_s, "paper"), 1.0)
    w2 = mode_weights(lam, U, U.T @ direct_s, 1.0)
    np.testing.assert_allclose(w1 / w1.sum(), w2 / w2.sum(), rtol=1e-9)


# ---------------------------------------------------------------- modes, presets, bad inputs


def test_conjugate_pair_completion():
    lam = np.array([0, -1 + 2j, -1 - 2j, -3])
    assert select_modes(lam, 2) == 3 and select_modes(lam, 3) == 3 and select_modes(lam, 1) == 1


def test_presets_name_every_result():
    assert fp_preset("paper").coeffs == "paper" and fp_preset("paper").output == "last"
    rec = fp_preset("recommended")
    assert (rec.coeffs, rec.output, rec.preset) == ("biorthogonal", "tweedie", "recommended")
    assert fp_preset("paper", M=100, L=3).preset == "paper"
    assert fp_preset("paper", output="tweedie").preset == "custom"
    with pytest.raises(ConfigError, match="preset"):
        FPConfig(coeffs="biorthogonal")  # claims preset 'paper' with a non-paper setting


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"M": 3, "L": 5}, "M >= L"),
        ({"zeta": 0.0}, "zeta"),
        ({"zeta_s": -1.0}, "zeta_s"),
        ({"eta": -0.1}, "eta"),
        ({"step_size": 0.0}, "step_size"),
        ({"t_star": 0.0}, "t_star"),
        ({"sde": "subvp"}, "sde"),
    ],
)
def test_bad_config_is_a_config_error(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        FPConfig(**kwargs)


def test_data_dimension_mismatch_is_caught_before_compute():
    sde = VESDE()
    score = MixtureScore(GaussianMixture(), sde)
    cfg = fp_preset("paper", M=10, L=2, zeta=0.5, zeta_s=0.5, J=2, n_per_group=2)
    with pytest.raises(ConfigError, match="does not match"):
        sample_group(score, sde, torch.zeros(50, 3, dtype=torch.float64), cfg)
    with pytest.raises(ConfigError, match="pool"):
        sample_group(score, sde, torch.zeros(5, 2, dtype=torch.float64), cfg)
    with pytest.raises(ConfigError, match="initial"):
        langevin(FPDensity(np.zeros((2, 2)), np.ones(2), 1.0), torch.zeros(3, 5), 0.1, 2, 0.1)


# ---------------------------------------------------------------- end to end


def _ve_t(s, sde=VESDE()):
    return math.log(s / sde.sigma_min) / math.log(sde.sigma_max / sde.sigma_min)


def test_end_to_end_2d_mixture_concentrates_on_modes():
    sde = VESDE()
    gmm = GaussianMixture()
    pool, _ = gmm.sample(2000, torch.Generator().manual_seed(0))
    cfg = fp_preset("recommended", M=300, L=3, zeta=0.5, zeta_s=0.5, step_size=0.02, J=200, eta=1.0, t_star=_ve_t(1.0), n_per_group=300)
    res = sample_group(MixtureScore(gmm, sde), sde, pool, cfg)
    x = res.samples.double()
    assert x.shape == (300, 2) and torch.isfinite(x).all()
    assert res.density.report["L_used"] == 3
    freq = np.bincount(gmm.component_of(x).numpy(), minlength=3) / 300
    assert freq[0] > 0.45 and freq[0] > freq[1] > freq[2] > 0.02, freq  # all modes, heaviest favoured (p^2)
    assert res.t_setup > 0 and res.t_sampling > 0 and res.stats["n_nonfinite_samples"] == 0


def test_end_to_end_images_with_ideal_score_and_memorisation_report():
    g = torch.Generator().manual_seed(0)
    pool = (torch.rand(120, 1, 4, 4, generator=g, dtype=torch.float64) > 0.5).double()
    sde = VESDE()
    cfg = fp_preset("paper", M=60, L=3, J=50, n_per_group=10, bandwidth="median")
    out = sample_groups(IdealScore(pool, sde), sde, pool, cfg, n_groups=2)
    rep = out["report"]
    assert out["samples"].shape == (20, 16) and rep["preset"] == "paper" and rep["n_groups"] == 2
    assert rep["nonfinite_samples"] == 0 and rep["t_setup"] > 0
    mem = memorisation_report(out["samples"], pool.reshape(120, -1), [r.density.refs for r in out["groups"]])
    assert mem["n_samples"] == 20 and len(mem["distinct_refs_per_group"]) == 2
    assert 0.0 <= mem["frac_copies"] <= 1.0 and mem["train_nn_median"] >= 0


def test_structured_and_solid_inits_are_in_range():
    g = torch.Generator().manual_seed(0)
    imgs, kinds = structured_init(6, (3, 8, 8), -1.0, 1.0, g)
    assert imgs.shape == (6, 3, 8, 8) and set(kinds) == {"blocks", "edge", "blob"}
    assert float(imgs.min()) >= -1 and float(imgs.max()) <= 1
    solid = solid_init(4, (3, 8, 8), 0.0, 1.0, g)
    assert torch.all(solid.flatten(2).std(2) == 0)  # one colour per channel
