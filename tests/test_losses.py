"""Losses of paper A: baseline (7), KL (19), partial KL (20) with its bound (21)-(22), KL* (25); the grid and noise (16)."""

import itertools

import numpy as np
import pytest
import torch
from torch import nn

from kl_repro.paper_a import kl
from kl_repro.core.config import ConfigError
from kl_repro.paper_a.losses import (DiffusionConfig, KLLoss, KLPartialLoss, build_loss, eps_predictor, kl_noise,
                             make_grid)
from kl_repro.nets import NetConfig, build_net
from kl_repro.schedule import VPSchedule


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


class AffineNet(nn.Module):
    """A fixed, hand-checkable eps_theta: ``0.3 x + 1e-4 time + 0.01 (k + 1)`` (per basis index k), ``d * C`` outputs for KL*."""

    def __init__(self, out_mult: int = 1):
        super().__init__()
        self.out_mult = out_mult

    def forward(self, x, time_input, k=None):
        y = 0.3 * x + 1e-4 * time_input.view(-1, *([1] * (x.ndim - 1)))
        if k is not None:
            y = y + 0.01 * (k.view(-1, *([1] * (x.ndim - 1))) + 1)
        return torch.cat([y * (j + 1) for j in range(self.out_mult)], dim=1)


def _draws(seed, B, d, shape, T):
    """The loss's own draws, repeated by hand: time indices, then noise (B, d, ...)."""
    g = torch.Generator().manual_seed(seed)
    i = torch.randint(T, (B,), generator=g)
    Z = torch.randn((B, d, *shape), generator=g)
    return g, i, Z


X0 = torch.linspace(-1, 1, 2 * 1 * 4 * 4).view(2, 1, 4, 4)


def test_baseline_loss_matches_hand_reference():
    cfg = DiffusionConfig(model="baseline")
    loss, info = build_loss(cfg)(AffineNet(), X0, torch.Generator().manual_seed(3))
    _, i, noise = _draws(3, 2, 1, (1, 4, 4), 1000)
    abar = np.cumprod(1 - np.linspace(1e-4, 0.02, 1000))  # DDPM linear, T = 1000
    ref = 0.0
    for b in range(2):
        a, s = np.sqrt(abar[i[b]]), np.sqrt(1 - abar[i[b]])
        x_t = a * X0[b] + s * noise[b, 0]
        eps = 0.3 * x_t + 1e-4 * float(i[b])  # the prediction; time input of step j is j
        ref += float(((eps - noise[b, 0]) ** 2).sum())
    assert float(loss) == pytest.approx(ref / X0.numel(), rel=1e-5)
    assert info["n_eval"] == 2


@pytest.mark.parametrize("form", ["sum", "per_term"])
def test_kl_loss_matches_hand_reference(form):
    d, T = 3, 20
    cfg = DiffusionConfig(model="kl", d=d, kl_loss_form=form)
    loss, info = build_loss(cfg)(AffineNet(), X0, torch.Generator().manual_seed(5))
    _, i, Z = _draws(5, 2, d, (1, 4, 4), T)
    sched = VPSchedule()
    total = 0.0
    for b in range(2):
        t = (int(i[b]) + 1) / T
        e = kl.basis_e(t, d)
        eps_d = sum(float(e[k]) * Z[b, k] for k in range(d))
        x_t = sched.alpha(t) * X0[b] + sched.sigma(t) * eps_d
        outs = [0.3 * x_t + 1e-4 * (1000 * t - 1) + 0.01 * (k + 1) for k in range(d)]
        if form == "sum":
            total += float(((sum(outs) - eps_d) ** 2).sum())
        else:
            total += sum(float(((outs[k] - float(e[k]) * Z[b, k]) ** 2).sum()) for k in range(d)) / d
    assert float(loss) == pytest.approx(total / X0.numel(), rel=1e-5)
    assert info["n_eval"] == 2 * d


@pytest.mark.parametrize("form", ["sum", "per_term"])
def test_partial_loss_matches_hand_reference(form):
    d, dp, T = 5, 2, 20
    cfg = DiffusionConfig(model="kl_partial", d=d, d_prime=dp, partial_form=form)
    loss, info = build_loss(cfg)(AffineNet(), X0, torch.Generator().manual_seed(8))
    g, i, Z = _draws(8, 2, d, (1, 4, 4), T)
    S = torch.rand((2, d), generator=g).argsort(dim=1)[:, :dp]  # one subset per sample, drawn after the noise
    assert all(len(set(row.tolist())) == dp for row in S)
    sched = VPSchedule()
    total = 0.0
    for b in range(2):
        t = (int(i[b]) + 1) / T
        e = kl.basis_e(t, d)
        x_t = sched.alpha(t) * X0[b] + sched.sigma(t) * sum(float(e[k]) * Z[b, k] for k in range(d))  # all d terms
        outs = {int(k): 0.3 * x_t + 1e-4 * (1000 * t - 1) + 0.01 * (int(k) + 1) for k in S[b]}
        if form == "sum":
            total += float(((sum(outs.values()) - sum(float(e[k]) * Z[b, k] for k in outs)) ** 2).sum())
        else:
            total += sum(float(((outs[k] - float(e[k]) * Z[b, k]) ** 2).sum()) for k in outs) / dp
    assert float(loss) == pytest.approx(total / X0.numel(), rel=1e-5)
    assert info["n_eval"] == 2 * dp  # only d' evaluations per image


@pytest.mark.parametrize("variant", ["basis", "sum"])
def test_kl_star_loss_matches_hand_reference(variant):
    d, T = 3, 20
    cfg = DiffusionConfig(model="kl_star", d=d, kl_star_variant=variant)
    loss, info = build_loss(cfg)(AffineNet(out_mult=d), X0, torch.Generator().manual_seed(2))
    _, i, Z = _draws(2, 2, d, (1, 4, 4), T)
    sched = VPSchedule()
    total = 0.0
    for b in range(2):
        t = (int(i[b]) + 1) / T
        e = kl.basis_e(t, d)
        eps_d = sum(float(e[k]) * Z[b, k] for k in range(d))
        x_t = sched.alpha(t) * X0[b] + sched.sigma(t) * eps_d
        y = 0.3 * x_t + 1e-4 * (1000 * t - 1)
        groups = [y * (k + 1) for k in range(d)]  # output group k holds Z*_k
        w = e if variant == "basis" else np.ones(d)
        total += float(((sum(float(w[k]) * groups[k] for k in range(d)) - eps_d) ** 2).sum())
    assert float(loss) == pytest.approx(total / X0.numel(), rel=1e-5)
    assert info["n_eval"] == 2  # one pass of B rows


def test_kl_noise_has_variance_v_d():
    d, T, n = 8, 20, 200_000
    E = torch.as_tensor(kl.basis_table(T, d), dtype=torch.float32)
    Z = torch.randn(n, d, generator=torch.Generator().manual_seed(0))
    for i in (0, 4, 9, 19):
        noise_d = kl_noise(E[i].expand(n, d), Z)
        assert float(noise_d.var()) == pytest.approx(float(kl.v_d((i + 1) / T, d)), abs=0.01)
    # eq. (16) on the T = 20 grid (Methods A.4): v_8(0.05) = 0.6764, v_8(1) = 0.9747
    assert kl.v_d(0.05, 8) == pytest.approx(0.6764, abs=1e-4) and kl.v_d(1.0, 8) == pytest.approx(0.9747, abs=1e-4)


def test_partial_with_d_prime_equal_d_is_the_full_loss():
    torch.manual_seed(0)
    net = build_net(NetConfig(dim=8, dim_mults=(1, 2), attn_heads=1, attn_dim_head=8), (1, 8, 8), d=4)
    x0 = torch.rand(3, 1, 8, 8) * 2 - 1
    full, _ = build_loss(DiffusionConfig(model="kl", d=4))(net, x0, torch.Generator().manual_seed(11))
    part, _ = build_loss(DiffusionConfig(model="kl_partial", d=4, d_prime=4))(net, x0, torch.Generator().manual_seed(11))
    assert float(part.detach()) == pytest.approx(float(full.detach()), rel=1e-6)


def test_partial_loss_bound_monte_carlo():
    """Eq. (21): E_S ||sum_{k in S} a_k||^2 = d'/d (d-d')/(d-1) P + d'(d'-1)/(d(d-1)) Q >= (d'/d)^2 Q (22)."""
    d, dp, n = 6, 2, 40_000
    g = torch.Generator().manual_seed(0)
    a = torch.randn(d, 5, generator=g) + torch.linspace(-1, 1, d)[:, None]  # residuals a_k = eps_theta(k) - e_k Z_k
    P, Q = float((a**2).sum()), float((a.sum(0) ** 2).sum())
    loss = KLPartialLoss(DiffusionConfig(model="kl_partial", d=d, d_prime=dp))
    S = loss.draw_subset(n, torch.Generator().manual_seed(1), "cpu")  # (n, d') subsets, as the loss draws them
    mc = float((a[S].sum(1) ** 2).sum(-1).mean())
    exact = dp / d * (d - dp) / (d - 1) * P + dp * (dp - 1) / (d * (d - 1)) * Q
    assert mc == pytest.approx(exact, rel=0.02)
    assert mc >= (dp / d) ** 2 * Q
    # every subset is equally likely
    counts = torch.bincount(S.flatten(), minlength=d).double() / (n * dp)
    assert torch.allclose(counts, torch.full((d,), 1 / d, dtype=torch.float64), atol=0.01)
    # the expectation over all subsets, enumerated exactly, equals (21) and (22) binds at d' = d
    subsets = list(itertools.combinations(range(d), dp))
    assert np.mean([float((a[list(s)].sum(0) ** 2).sum()) for s in subsets]) == pytest.approx(exact, rel=1e-6)


def test_batched_b_times_d_equals_loop_over_k():
    torch.manual_seed(0)
    d = 4
    net = build_net(NetConfig(dim=8, dim_mults=(1, 2), attn_heads=1, attn_dim_head=8), (1, 8, 8), d=d)
    cfg = DiffusionConfig(model="kl", d=d)
    loss = KLLoss(cfg)
    x_t, i = torch.randn(3, 1, 8, 8), torch.tensor([0, 7, 19])
    batched = loss.evaluate(net, x_t, i, torch.arange(d).repeat(3, 1))  # one pass of 3 * d rows
    tin = torch.tensor(make_grid(cfg).time_input, dtype=torch.float32)[i]
    with torch.no_grad():
        for k in range(d):
            assert torch.allclose(batched[:, k], net(x_t, tin, torch.full((3,), k)), atol=1e-6)
        loop = sum(net(x_t, tin, torch.full((3,), k)) for k in range(d))
        agg = eps_predictor(net, cfg)(x_t, i)
        agg_chunked = eps_predictor(net, cfg.replace(chunk=5))(x_t, i)
    assert torch.allclose(agg, loop, atol=1e-6) and torch.allclose(agg_chunked, loop, atol=1e-6)


def test_t_index_fixes_the_noise_level():
    cfg = DiffusionConfig(model="kl", d=2)
    _, info = build_loss(cfg)(AffineNet(), X0, torch.Generator().manual_seed(0), t_index=7)
    assert info["t_index"].tolist() == [7, 7]
    with pytest.raises(ConfigError, match="t_index"):
        build_loss(cfg)(AffineNet(), X0, torch.Generator().manual_seed(0), t_index=20)


def test_grid_schedules_and_basis_variants():
    base = make_grid(DiffusionConfig(model="baseline"))
    assert base.time_input[:3].tolist() == [0, 1, 2] and base.T == 1000
    assert base.alpha_bar[49] == pytest.approx(0.97102, abs=1e-5)  # the DDPM linear schedule at 0-based step 49 (Methods A.1)
    g = make_grid(DiffusionConfig(model="kl", d=8))
    assert g.time_input.tolist() == [50 * i - 1 for i in range(1, 21)]  # time input 1000 t - 1 (the Deviations page)
    assert g.alpha_bar[0] == pytest.approx(0.97057, abs=1e-5) and g.E[-1, 1] == pytest.approx(-0.30011, abs=1e-5)
    unit = make_grid(DiffusionConfig(model="kl", d=8, kl_noise_norm="unit"))
    assert np.allclose((unit.E**2).sum(1), 1.0)
    exact = make_grid(DiffusionConfig(model="kl", d=8, kl_coeffs="exact"))
    # share of the variance the exact solution (12) keeps with d = 8 at t = 0.5 and t = 1 (Methods A.4)
    assert (exact.E[9] ** 2).sum() == pytest.approx(0.864, abs=0.01)
    assert (exact.E[19] ** 2).sum() == pytest.approx(0.547, abs=0.01)
    t20 = DiffusionConfig(model="baseline", T=20)
    assert t20.schedule == "vp" and make_grid(t20).alpha_bar[0] == pytest.approx(0.97057, abs=1e-5)


def test_config_defaults_and_tags():
    c = DiffusionConfig()
    assert (c.model, c.d, c.d_prime, c.T, c.schedule) == ("kl", 8, 8, 20, "vp")
    b = DiffusionConfig(model="baseline")
    assert (b.d, b.T, b.schedule, b.tag) == (1, 1000, "ddpm_linear", "baseline")
    assert b.replace(model="kl").tag == "kl-8d" and c.replace(model="baseline").T == 1000
    assert DiffusionConfig(model="kl_partial", d=10, d_prime=4).tag == "kl-10d4"
    assert DiffusionConfig(model="kl_star").tag == "klstar-8d" and DiffusionConfig(model="kl_star").out_mult == 8
    assert DiffusionConfig(model="baseline", T=20).tag == "baseline-T20"


@pytest.mark.parametrize("bad,msg", [
    (dict(model="kl_partial", d=4, d_prime=5), "d_prime"),
    (dict(model="kl", d=0), "d "),
    (dict(model="kl", d=4, d_prime=2), "kl_partial"),
    (dict(model="baseline", d=8), "baseline"),
    (dict(model="baseline", schedule="ddpm_linear", T=20), "vp"),
    (dict(model="vae"), "model"),
    (dict(chunk=0), "chunk"),
])
def test_bad_diffusion_config(bad, msg):
    with pytest.raises(ConfigError, match=msg):
        DiffusionConfig(**bad)
