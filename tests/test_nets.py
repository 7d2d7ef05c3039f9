"""The denoising network: lucidrains' Unet wrapped with the basis-index conditioning (paper A section 5, spec section 3)."""

import pytest
import torch

from kl_repro.core.config import ConfigError
from kl_repro.nets import NetConfig, build_net, count_parameters

TINY = NetConfig(dim=8, dim_mults=(1, 2), attn_heads=1, attn_dim_head=8)


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def test_paper_unet_parameter_count():
    # lucidrains Unet(dim=64, dim_mults=(1, 2, 4, 8)) on RGB: 35.7 M parameters (environment.md)
    assert count_parameters(build_net(NetConfig(), (3, 32, 32))) == 35_711_491


def test_output_shapes():
    torch.manual_seed(0)
    x, t = torch.randn(3, 1, 8, 8), torch.tensor([0.0, 49.0, 999.0])
    assert build_net(TINY, (1, 8, 8))(x, t).shape == (3, 1, 8, 8)
    star = build_net(TINY, (1, 8, 8), out_mult=4, d=4)  # KL*: d * C output channels
    assert star(x, t).shape == (3, 4, 8, 8)
    mlp = build_net(NetConfig(kind="mlp", mlp_hidden=32), (2,), out_mult=3, d=3)
    assert mlp(torch.randn(5, 2), torch.zeros(5), torch.arange(5) % 3).shape == (5, 6)
    assert build_net(TINY.replace(channels_last=True), (3, 8, 8))(torch.randn(2, 3, 8, 8), t[:2]).shape == (2, 3, 8, 8)


def test_time_offset_conditioning_is_a_time_shift():
    torch.manual_seed(0)
    net = build_net(TINY, (1, 8, 8), d=4)
    x, t, k = torch.randn(3, 1, 8, 8), torch.tensor([49.0, 99.0, 999.0]), torch.tensor([0, 1, 3])
    assert torch.equal(net(x, t, k), net(x, t + 1000.0 * k))
    assert not torch.allclose(net(x, t, k), net(x, t, torch.zeros_like(k)))
    assert count_parameters(net) == count_parameters(build_net(TINY, (1, 8, 8)))  # zero new parameters


def test_learned_zero_init_starts_equal_for_every_k_and_loads_baseline_weights():
    torch.manual_seed(0)
    base = build_net(TINY, (1, 8, 8))
    net = build_net(TINY.replace(k_cond="learned_zero_init"), (1, 8, 8), d=4)
    missing, unexpected = net.load_state_dict(base.state_dict(), strict=False)
    assert missing == ["backbone.time_mlp.k_embed.weight"] and unexpected == []
    x, t = torch.randn(4, 1, 8, 8), torch.tensor([49.0, 99.0, 149.0, 999.0])
    ref = base(x, t)
    for k in range(4):
        assert torch.allclose(net(x, t, torch.full((4,), k)), ref, atol=1e-6)
    assert count_parameters(net) - count_parameters(base) == 4 * 4 * TINY.dim
    with torch.no_grad():
        net.backbone.time_mlp.k_embed.weight.normal_()
    assert not torch.allclose(net(x, t, torch.full((4,), 2)), ref, atol=1e-3)


def test_sinusoidal_added_conditioning_adds_no_parameters_and_separates_the_terms():
    """``sinusoidal_added``: MLP(SinEmb(t) + SinEmb(k)); same keys as the baseline, and k = 0 is not the baseline either."""
    torch.manual_seed(0)
    base = build_net(TINY, (1, 8, 8))
    net = build_net(TINY.replace(k_cond="sinusoidal_added"), (1, 8, 8), d=4)
    missing, unexpected = net.load_state_dict(base.state_dict(), strict=True)
    assert missing == [] and unexpected == [] and count_parameters(net) == count_parameters(base)
    x, t = torch.randn(4, 1, 8, 8), torch.tensor([49.0, 99.0, 149.0, 999.0])
    outs = [net(x, t, torch.full((4,), k)) for k in range(4)]
    assert all(not torch.allclose(outs[i], outs[j], atol=1e-4) for i in range(4) for j in range(i))
    assert torch.equal(net(x, t), base(x, t))  # without k the network is the baseline's
    emb = base.backbone.time_mlp[0]
    h = emb(t) + emb(torch.full((4,), 2.0))
    for layer in list(base.backbone.time_mlp)[1:]:
        h = layer(h)
    assert torch.allclose(net.backbone.time_mlp(torch.stack([t, torch.full((4,), 2.0)], 1)), h, atol=1e-6)


@pytest.mark.parametrize("cfg,shape,msg", [
    (TINY.replace(channels=3), (1, 8, 8), "channels=3"),
    (NetConfig(dim=8, dim_mults=(1, 2, 4, 8)), (1, 12, 12), "divisible"),
    (TINY, (2,), "image data"),
    (NetConfig(kind="mlp"), (1, 8, 8), "flat data"),
])
def test_bad_shapes_are_refused(cfg, shape, msg):
    with pytest.raises(ConfigError, match=msg):
        build_net(cfg, shape)


@pytest.mark.parametrize("bad", [dict(dim=7), dict(dim_mults=()), dict(full_attn=(True,)), dict(k_offset=0.0),
                                 dict(k_cond="onehot"), dict(dropout=1.0)])
def test_bad_net_config(bad):
    with pytest.raises(ConfigError):
        NetConfig(**bad)
