"""DDIM sampling of paper A, eqs. (23)-(24): DDPM at eta = 1 and S = T, determinism, per-image seeds, an exact toy check."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from kl_repro.core.config import ConfigError
from kl_repro.data import Toy2D, derive_seed, generator
from kl_repro.core.rng import counter_normal
from kl_repro.paper_a.losses import DiffusionConfig, make_grid
from kl_repro.nets import NetConfig, build_net
from kl_repro.paper_a.ddim import DDIMConfig, ddim_sample, ddim_timesteps


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


class WavyNet(nn.Module):
    """A fixed nonlinear eps_theta(x, time, k), cheap and batch-independent."""

    def forward(self, x, time_input, k=None):
        t = time_input.view(-1, *([1] * (x.ndim - 1))) / 1000.0
        y = 0.8 * torch.tanh(1.5 * x) * (0.5 + t) + 0.1 * torch.sin(3 * x + t)
        return y if k is None else y * (1.0 + 0.2 * k.view_as(t)) / 3.0


def test_timesteps_are_every_t_over_s_th_grid_index():
    assert ddim_timesteps(1000, 20) == list(range(49, 1000, 50))
    assert ddim_timesteps(20, 20) == list(range(20))
    with pytest.raises(ConfigError, match="divide"):
        ddim_timesteps(1000, 30)
    with pytest.raises(ConfigError):
        DDIMConfig(S=0)


def test_eta_one_with_s_equal_t_is_ddpm_ancestral_sampling():
    """DDPM (Ho et al. 2020, Alg. 2 with lucidrains' x0 clipping) with the same noises equals DDIM eta = 1, S = T."""
    diff = DiffusionConfig(model="baseline", T=50)  # vp schedule on t = i/50
    net, shape, n, seed = WavyNet(), (1, 4, 4), 3, 7
    out = ddim_sample(net, diff, DDIMConfig(eta=1.0, S=50), n, seed, n, shape)
    abar = make_grid(diff).alpha_bar
    tin = torch.tensor(make_grid(diff).time_input, dtype=torch.float32)
    ref = []
    for i in range(n):
        draws = iter(range(51))  # image i's own stream: x_T first, then one draw per step
        noise = lambda: counter_normal(derive_seed("ddim", seed), [i], next(draws), shape)  # noqa: E731
        x = noise()
        for t in reversed(range(50)):
            ab, ab_prev = abar[t], (abar[t - 1] if t > 0 else 1.0)
            beta = 1 - ab / ab_prev
            eps = net(x, tin[t:t + 1])
            x0 = ((x - math.sqrt(1 - ab) * eps) / math.sqrt(ab)).clamp(-1, 1)
            mean = (math.sqrt(ab_prev) * beta / (1 - ab)) * x0 + (math.sqrt(1 - beta) * (1 - ab_prev) / (1 - ab)) * x
            var = beta * (1 - ab_prev) / (1 - ab)  # posterior variance beta_tilde
            x = mean + math.sqrt(var) * noise() if t > 0 else mean
        ref.append(x[0])
    assert torch.allclose(out, torch.stack(ref), atol=1e-5)
    assert float(out.abs().max()) <= 1.0


def test_eta_zero_is_deterministic_given_the_seed():
    diff = DiffusionConfig(model="kl", d=3)
    cfg = DDIMConfig(eta=0.0)
    a = ddim_sample(WavyNet(), diff, cfg, 4, 1, 4, (1, 4, 4))
    b = ddim_sample(WavyNet(), diff, cfg, 4, 1, 4, (1, 4, 4))
    c = ddim_sample(WavyNet(), diff, cfg, 4, 2, 4, (1, 4, 4))
    assert torch.equal(a, b) and not torch.allclose(a, c)
    # eta = 0 uses the seed only for x_T: eta = 1 from the same x_T differs
    assert not torch.allclose(a, ddim_sample(WavyNet(), diff, DDIMConfig(eta=1.0), 4, 1, 4, (1, 4, 4)))


@pytest.mark.parametrize("model", ["baseline", "kl", "kl_star"])
def test_per_image_seeds_do_not_depend_on_batch_size(model):
    torch.manual_seed(0)
    diff = DiffusionConfig(model=model, d=None if model == "baseline" else 3)
    net = build_net(NetConfig(dim=8, dim_mults=(1, 2), attn_heads=1, attn_dim_head=8), (1, 8, 8), out_mult=diff.out_mult, d=diff.d)
    one = ddim_sample(net, diff, DDIMConfig(), 7, 3, 1, (1, 8, 8))
    seven = ddim_sample(net, diff, DDIMConfig(), 7, 3, 7, (1, 8, 8))
    assert torch.allclose(one, seven, atol=1e-5)
    assert float(one.abs().max()) <= 1.0 and not torch.allclose(one[0], one[1])
    assert net.training  # the sampler restores the mode


def test_kl_sampling_aggregates_the_d_terms():
    """Eq. (24): a KL net whose terms sum to the baseline net samples exactly like the baseline on the same grid."""

    class Split(nn.Module):
        def forward(self, x, time_input, k=None):
            w = torch.tensor([0.5, 0.3, 0.2])[k].view(-1, 1, 1, 1)
            return w * WavyNet()(x, time_input)

    kl = ddim_sample(Split(), DiffusionConfig(model="kl", d=3), DDIMConfig(), 3, 0, 3, (1, 4, 4))
    base = ddim_sample(WavyNet(), DiffusionConfig(model="baseline", T=20), DDIMConfig(), 3, 0, 3, (1, 4, 4))
    assert torch.allclose(kl, base, atol=1e-5)


@pytest.mark.parametrize("eta", [1.0, 0.0])
def test_exact_noise_model_recovers_the_toy_mixture(eta):
    """With the exact eps of the toy mixture, eps = -sigma_t * score_t, DDIM reproduces its mode weights."""
    toy = Toy2D(means=((-0.6, 0.0), (0.6, 0.0), (0.0, 0.6)), stds=(0.1, 0.1, 0.1))
    diff = DiffusionConfig(model="baseline")  # T = 1000, DDPM linear; DDIM visits 999, 949, ..., 49
    abar = torch.tensor(make_grid(diff).alpha_bar)

    class Oracle(nn.Module):
        def forward(self, x, time_input, k=None):
            j = int(round(float(time_input[0])))
            a, s = math.sqrt(float(abar[j])), math.sqrt(1 - float(abar[j]))
            return -s * toy.perturbed(a, s).score(x.double()).float()

    x = ddim_sample(Oracle(), diff, DDIMConfig(eta=eta, clip_x0=False), 3000, 0, 3000, (2,))
    nearest = torch.cdist(x.double(), torch.tensor(toy.means, dtype=torch.float64)).argmin(1)
    freq = torch.bincount(nearest, minlength=3).double() / len(x)
    assert torch.allclose(freq, torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64), atol=0.035)
    spread = (x.double() - torch.tensor(toy.means, dtype=torch.float64)[nearest]).std()
    assert 0.07 < float(spread) < 0.14  # component std 0.1


def test_bad_sampling_arguments():
    with pytest.raises(ConfigError, match="batch_size"):
        ddim_sample(WavyNet(), DiffusionConfig(model="kl", d=2), DDIMConfig(), 4, 0, 0, (1, 4, 4))
    with pytest.raises(ConfigError, match="divide"):
        ddim_sample(WavyNet(), DiffusionConfig(model="kl", d=2), DDIMConfig(S=15), 4, 0, 2, (1, 4, 4))
