"""VP/VE SDEs, score models, DSM, and the predictor-corrector baseline (check T8, Methods B.5)."""

import math

import numpy as np
import pytest
import torch

from kl_repro.core.config import ConfigError
from kl_repro.paper_b.pc import PCConfig, pc_preset, pc_sample
from kl_repro.schedule import VPSchedule
from kl_repro.paper_b.dsm import DSMConfig, dsm_loss, train_dsm
from kl_repro.paper_b.scores import GaussianMixture, IdealScore, MixtureScore
from kl_repro.paper_b.sde import VESDE, VPSDE, make_sde


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def test_vp_marginals_match_the_schedule_and_score_sde():
    sde, sch = VPSDE(), VPSchedule()
    t = torch.tensor([1e-3, 0.1, 0.5, 1.0], dtype=torch.float64)
    np.testing.assert_allclose(sde.alpha(t).numpy(), sch.alpha(t.numpy()), rtol=1e-12)
    np.testing.assert_allclose(sde.sigma(t).numpy(), sch.sigma(t.numpy()), rtol=1e-12)
    assert float(sde.g2(0.5)) == pytest.approx(0.1 + 0.5 * 19.9)
    # the reverse-diffusion discretisation uses score_sde's betas linspace(0.1/N, 20/N, N)
    x = torch.ones(2, 3, dtype=torch.float64)
    f, G = sde.discretize(x, torch.tensor([1.0, 0.0], dtype=torch.float64))
    assert float(G[0, 0]) ** 2 == pytest.approx(20 / 1000) and float(G[1, 0]) ** 2 == pytest.approx(0.1 / 1000)


def test_ve_sigma_g_and_discretisation():
    sde = VESDE()
    assert sde.sigma(0.0) == pytest.approx(0.01) and sde.sigma(1.0) == pytest.approx(50.0)
    assert math.sqrt(sde.g2(0.3)) / sde.sigma(0.3) == pytest.approx(4.127, abs=1e-3)  # score_sde's VE g(t) / sigma(t) = sqrt(2 log(5000)) (Methods B.1)
    x = torch.zeros(2, 1, dtype=torch.float64)
    _, G = sde.discretize(x, torch.tensor([1.0, 0.0], dtype=torch.float64))
    sig = np.exp(np.linspace(np.log(0.01), np.log(50), 1000))
    assert float(G[0, 0]) == pytest.approx(math.sqrt(sig[-1] ** 2 - sig[-2] ** 2))
    assert float(G[1, 0]) == pytest.approx(0.01)  # sigma_{-1} = 0


def test_ideal_score_matches_mixture_score_for_a_single_point_and_its_gradient():
    """The ideal score of one point is the Gaussian score; for several it is grad log of the perturbed mixture."""
    sde = VPSDE()
    data = torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    ideal = IdealScore(data, sde)
    x = torch.randn(7, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    t = torch.full((7,), 0.4, dtype=torch.float64)
    mix = GaussianMixture(means=tuple(tuple(r) for r in data.tolist()), weights=(1.0,) * 5, std=1e-12)
    np.testing.assert_allclose(ideal(x, t).numpy(), mix.score(x, t, sde).numpy(), rtol=1e-9, atol=1e-9)
    xr = x.clone().requires_grad_(True)
    logp = mix.log_prob(xr, t, sde).sum()
    np.testing.assert_allclose(torch.autograd.grad(logp, xr)[0].numpy(), ideal(x, t).numpy(), rtol=1e-9, atol=1e-9)


def test_score_shape_mismatch_is_a_config_error():
    ideal = IdealScore(torch.zeros(4, 1, 8, 8), VESDE())
    with pytest.raises(ConfigError, match="does not match"):
        ideal(torch.zeros(2, 1, 4, 4), 0.5)
    with pytest.raises(ConfigError, match="does not match"):
        MixtureScore(GaussianMixture(), VESDE())(torch.zeros(3, 5), 0.5)
    with pytest.raises(ConfigError):
        make_sde("subvp")
    with pytest.raises(ConfigError):
        VPSDE(beta_min=-1.0)
    with pytest.raises(ConfigError):
        GaussianMixture(weights=(1.0,))


def test_dsm_loss_is_minimised_by_the_exact_score():
    sde = VESDE()
    mix = GaussianMixture(means=((0.0, 0.0),), weights=(1.0,), std=1.0)
    x0, _ = mix.sample(4000, torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(1)
    exact = dsm_loss(MixtureScore(mix, sde), x0, sde, g)
    g = torch.Generator().manual_seed(1)
    wrong = dsm_loss(lambda x, t: 0.5 * MixtureScore(mix, sde)(x, t), x0, sde, g)
    # E||s sigma + z||^2 at the exact score is d * E[1 - sigma^2/(1 + sigma^2)] < d
    assert float(exact) < 2.0 and float(wrong) > float(exact) + 0.1


def test_train_dsm_learns_a_2d_score():
    sde = VPSDE()
    mix = GaussianMixture(means=((1.0, 0.0), (-1.0, 0.0)), weights=(0.5, 0.5), std=0.3)
    data, _ = mix.sample(2000, torch.Generator().manual_seed(0))
    model, losses = train_dsm(data, sde, DSMConfig(steps=300, batch=128, hidden=64, layers=2))
    assert np.mean(losses[-50:]) < np.mean(losses[:50])
    x, _ = mix.sample(256, torch.Generator().manual_seed(2))
    t = torch.full((256,), 0.5)
    with torch.no_grad():
        err = (model(x.float(), t) - mix.score(x, 0.5, sde).float()).norm(dim=1).mean()
    ref = mix.score(x, 0.5, sde).norm(dim=1).mean()
    assert float(err) < 0.5 * float(ref)


# ---------------------------------------------------------------- T8: PC baseline


GAUSS16 = GaussianMixture(means=((0.5,) * 16,), weights=(1.0,), std=0.2)


@pytest.mark.parametrize(
    "kind,preset",
    [("ve", "ve_pc1000"), ("vp", "vp_p1000")],
)
def test_t8_pc_sampler_reproduces_gaussian_moments(kind, preset):
    sde = make_sde(kind)
    x, nfe = pc_sample(MixtureScore(GAUSS16, sde), sde, 1000, pc_preset(preset), torch.Generator().manual_seed(0))
    assert abs(float(x.mean()) - 0.5) < 0.02 * 0.5
    assert abs(float(x.std()) - 0.2) < 0.02 * 0.2
    assert nfe == (2000 if preset == "ve_pc1000" else 1000)


def test_t8_pc_corrector_off_and_literal_vp_pc1000():
    sde = VESDE()
    x, nfe = pc_sample(MixtureScore(GAUSS16, sde), sde, 1000, PCConfig(corrector="none"), torch.Generator().manual_seed(1))
    assert nfe == 1000
    assert abs(float(x.mean()) - 0.5) < 0.01 and abs(float(x.std()) - 0.2) < 0.02 * 0.2
    vp = VPSDE()
    x, nfe = pc_sample(MixtureScore(GAUSS16, vp), vp, 1000, pc_preset("vp_pc1000"), torch.Generator().manual_seed(2))
    assert nfe == 2000
    assert abs(float(x.mean()) - 0.5) < 0.01 and abs(float(x.std()) - 0.2) < 0.02 * 0.2


def test_pc_bad_inputs():
    sde = VESDE()
    with pytest.raises(ConfigError):
        PCConfig(snr=0.0)
    with pytest.raises(ConfigError):
        PCConfig(predictor="none", corrector="none")
    with pytest.raises(ConfigError):
        pc_preset("ve_pc2000")
    with pytest.raises(ConfigError):
        pc_sample(MixtureScore(GAUSS16, sde), sde, 0)
