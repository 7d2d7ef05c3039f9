"""Paper B's deep baseline networks (NCSN++ / DDPM++ deep, Table 1) and the speed arithmetic of :mod:`kl_repro.paper_b.speed`.

The full-size networks are built on the meta device (parameter counts only); shapes and the score
conventions are checked on a small network of the same layout.  No timings are asserted.
"""

import pytest
import torch
from diffusers.models.attention_processor import Attention

from kl_repro.core.config import ConfigError
from kl_repro.paper_b import speed
from kl_repro.paper_b.score_nets import PAPER_PARAMETERS, count_parameters, ddpmpp_deep, ncsnpp_deep
from kl_repro.paper_b.sde import VESDE, VPSDE

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py

TINY = dict(image_size=32, width=32, num_res_blocks=1)


@pytest.mark.parametrize("build,paper,reported", [(ncsnpp_deep, "ncsnpp_deep", 107.6e6), (ddpmpp_deep, "ddpmpp_deep", 106.6e6)])
def test_parameter_counts_are_the_papers_networks(build, paper, reported):
    with torch.device("meta"):
        net = build()
    n = count_parameters(net)
    assert abs(n / reported - 1) < 0.03 and abs(n / PAPER_PARAMETERS[paper] - 1) < 0.03
    assert PAPER_PARAMETERS[paper] == pytest.approx(reported, rel=1e-3)
    # score_sde's attention layout at 16x16: after each of the 8 down blocks, one in the middle, one per up level
    assert sum(isinstance(m, Attention) for m in net.modules()) == 10


@pytest.mark.parametrize("build", [ncsnpp_deep, ddpmpp_deep])
def test_forward_shape_and_score_conventions(build):
    torch.manual_seed(0)
    net = build(**TINY)
    assert sum(isinstance(m, Attention) for m in net.modules()) == 3
    x = torch.rand(3, *speed.SHAPE)
    t = torch.tensor([0.2, 0.5, 0.9])
    sde = VESDE() if net.kind == "ve" else VPSDE()
    with torch.no_grad():
        out = net(x, sde.sigma(t) if net.kind == "ve" else t)
        s = speed.DeepNetScore(net, sde)(x, t)
        s1 = speed.DeepNetScore(net, sde, rows=1)(x, t)
    assert out.shape == x.shape and torch.isfinite(out).all()
    expected = out if net.kind == "ve" else -out / sde.sigma(t).reshape(-1, 1, 1, 1)
    torch.testing.assert_close(s, expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(s1[1], s1[0]) and torch.equal(s1[2], s1[0])  # the first row's score repeated
    # batch 1 against batch 3: the same score up to the convolution algorithm's rounding
    torch.testing.assert_close(s1[0], s[0], rtol=1e-3, atol=1e-4 * float(s[0].abs().max()))


def test_bad_shapes_are_refused():
    with pytest.raises(ConfigError, match="channels = 3"):
        ncsnpp_deep(channels=1, width=32, num_res_blocks=1)
    with pytest.raises(ConfigError, match="multiple of 32"):
        ddpmpp_deep(width=48, num_res_blocks=1)


def test_ratio_arithmetic_on_synthetic_timings():
    fwd = {1: 2.0, 100: 50.0}
    assert speed.forward_at(fwd, 1) == 2.0 and speed.forward_at(fwd, 100) == 50.0
    assert speed.forward_at(fwd, 200) == 100.0 and speed.forward_at(fwd, 50) == 100.0  # scaled from batch 1
    assert speed.pc_seconds(200, fwd, 2, 1000, 0.01) == pytest.approx(1000 * (2 * 100.0 + 0.01))
    pc = {"ve_pc1000": {1: 100.0, 100: 1000.0, 200: 2000.0}}
    rows = speed.speed_rows("ve", pc, 10.0, {1: 1.0, 100: 10.0, 200: 20.0}, group=200)
    got = {r["images"]: (r["ratio_without_setup"], r["ratio_with_setup"], r["paper_ratio"], r["amortised_group"]) for r in rows}
    assert got[1] == pytest.approx((100.0, 100 / 11, 261.6, False))
    assert got[100] == pytest.approx((100.0, 50.0, 23.9, False))
    assert got[200][:2] == pytest.approx((100.0, 2000 / 30)) and got[200][2] is None and got[200][3]
    assert speed.paper_ratio("vp", 1) == 119.8 and speed.paper_ratio("vp", 100) == 11.0
    with pytest.raises(ConfigError):
        speed.speed_rows("ve", pc, 10.0, {1: 0.0}, group=200)


def test_short_vp_sampler_keeps_the_discrete_betas():
    sde = VPSDE()
    short = sde.replace(N=5, beta_min=sde.beta_min * 5 / sde.N, beta_max=sde.beta_max * 5 / sde.N)
    full, part = sde._discrete_betas(), short._discrete_betas()
    assert float(part[0]) == pytest.approx(float(full[0])) and float(part[-1]) == pytest.approx(float(full[-1]))
    assert speed._pc_step_seconds(sde, "vp_pc1000", 2, 3) > 0  # runs: no non-finite samples


def test_fp_pipeline_timing_adds_up():
    torch.manual_seed(0)
    net = ncsnpp_deep(**TINY)
    cfg = speed.SpeedConfig(M=12, L=2, J=10, J_timed=2, forward_batches=(1, 4), forward_calls=(1, 1), images=(1,), group=3)
    fwd = {1: 0.5, 4: 1.0}
    fp = speed._fp_times(net, VESDE(), cfg, fwd, [1, 3])
    assert fp["drift_s"] == pytest.approx(12 * 1.0 / 4) and fp["drift_batch"] == 4
    assert fp["setup_s"] == pytest.approx(fp["drift_s"] + fp["gram_eig_prior_s"])
    assert set(fp["sampling_s"]) == {1, 3} and all(v > 0 for v in fp["sampling_s"].values())
