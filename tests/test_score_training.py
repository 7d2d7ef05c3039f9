"""The small score network of paper B's image experiments (DSM, eq. (3)): it learns, it is stored and resumed, its
score points the right way; and every paper-B verdict sentence speaks the one verdict language."""

import numpy as np
import pytest
import torch

from kl_repro.core import verdict as V
from kl_repro.core.registry import paper_values
from kl_repro.paper_b import verdicts as v
from kl_repro.paper_b.image_runs import FrechetSpec, boot_interval, diversity, resample_indices
from kl_repro.paper_b.score_training import load_or_train, model_dir
from kl_repro.paper_b.scores import GaussianMixture, MixtureScore
from kl_repro.paper_b.sde import VESDE, VPSDE
from kl_repro.paper_b.trained_score import ScoreNetConfig

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py

TOY = dict(dataset="digits", pool=2, width=64, blocks=2, n_freq=16, batch=128, lr=3e-3, warmup=20, ema_decay=0.98,
           checkpoint_every=20, seed=0)


@pytest.fixture
def results(tmp_path, monkeypatch):
    monkeypatch.setenv("KL_REPRO_RESULTS", str(tmp_path))
    return tmp_path


def _toy_data(n: int = 2000) -> torch.Tensor:
    x, _ = GaussianMixture().sample(n, torch.Generator().manual_seed(0), dtype=torch.float32)
    return x


def test_dsm_loss_decreases_on_a_toy_set(results):
    cfg = ScoreNetConfig(sde="vp", steps=300, **TOY)
    model, info = load_or_train("smoke", cfg, _toy_data(), VPSDE())
    curve = info["loss_curve"]
    assert info["steps"] == 300 and not info["reused"] and info["parameters"] > 0
    assert np.mean(curve[-10:]) < 0.6 * np.mean(curve[:10]), curve  # 2-D eps-prediction: from ~2 to well below


def test_resume_reuses_the_stored_model(results, tmp_path_factory, monkeypatch):
    cfg = ScoreNetConfig(sde="vp", steps=40, **TOY)
    data, sde = _toy_data(500), VPSDE()
    assert load_or_train("smoke", cfg, data, sde, stop_at=20) == (None, {"step": 20, "resumed_from": 0})  # interrupted
    resumed, info = load_or_train("smoke", cfg, data, sde)
    assert info["resumed_from"] == 20 and info["steps"] == 40 and not info["reused"]
    again, info2 = load_or_train("smoke", cfg, data, sde)
    assert info2["reused"] and info2["seconds"] == info["seconds"]  # loaded, not trained again
    assert (model_dir("smoke", cfg) / "finished.json").exists() and not (model_dir("smoke", cfg) / "checkpoint.pt").exists()
    monkeypatch.setenv("KL_REPRO_RESULTS", str(tmp_path_factory.mktemp("straight")))
    straight, _ = load_or_train("smoke", cfg, data, sde)  # the same 40 steps without the interruption
    for a, b, c in zip(resumed.net.state_dict().values(), again.net.state_dict().values(), straight.net.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
        torch.testing.assert_close(a, c, rtol=1e-5, atol=1e-6)


def test_trained_score_points_toward_the_data(results):
    """At small noise the trained VE score agrees with the exact score of the 2-D mixture and moves points toward the modes."""
    sde, mix = VESDE(), GaussianMixture()
    cfg = ScoreNetConfig(sde="ve", steps=600, **TOY)
    model, _ = load_or_train("smoke", cfg, _toy_data(), sde)
    t = sde.t_of_sigma(0.3)
    x0, _ = mix.sample(500, torch.Generator().manual_seed(1), dtype=torch.float32)
    x = x0 + 0.3 * torch.randn(x0.shape, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        s = model(x, torch.full((500,), t))
    exact = MixtureScore(mix, sde)(x.double(), torch.full((500,), t, dtype=torch.float64)).float()
    cos = torch.nn.functional.cosine_similarity(s, exact, dim=1)
    assert float(cos.median()) > 0.9, float(cos.median())
    mu = torch.tensor(mix.means, dtype=torch.float32)
    before, after = torch.cdist(x, mu).min(1).values, torch.cdist(x + 0.09 * s, mu).min(1).values  # one Tweedie step
    assert float(after.mean()) < 0.8 * float(before.mean())


def test_bootstrap_of_the_frechet_distance_and_of_diversity():
    g = torch.Generator().manual_seed(0)
    imgs = torch.rand(60, 1, 8, 8, generator=g) * 2 - 1
    fd = FrechetSpec("digits", extractor="tiny", n_boot=50)(imgs, "uniform noise")
    lo, hi = boot_interval(fd["boot"])
    assert fd["boot"].shape == (50,) and fd["boot_std"] > 0 and lo < hi
    assert lo <= fd["value"] * 1.5 and hi >= fd["value"] * 0.5
    div = diversity(imgs, n_boot=50)
    lo, hi = boot_interval(div["boot"])
    assert lo < div["mean_pairwise"] < hi
    # FP groups share their references: resampled as clusters, whole groups at a time, which widens the interval
    idx = resample_indices(60, 3, group_size=20).reshape(3, 20)
    assert all(len(set(row // 20)) == 1 for row in idx)
    shifted = imgs + torch.repeat_interleave(torch.tensor([-0.5, 0.0, 0.5]), 20).reshape(-1, 1, 1, 1)
    plain = np.std(diversity(shifted, n_boot=100)["boot"])
    assert np.std(diversity(shifted, n_boot=100, group_size=20)["boot"]) > 1.5 * plain


def _t1(fp_boot, pc_boot, fp_div=5.0, pc_div=6.0) -> dict:
    def row(preset, boot, div, n=500):
        return {"method": f"{'PC (VE, RD+Langevin(snr=0.16), N=1000)' if preset == 'baseline' else 'FP (VE, preset ' + preset + ')'}",
                "sde": "ve", "preset": preset, "n_samples": n, "nfe": 2000, "speedup_1": 2.0, "speedup_1_no_setup": 3.0,
                "speedup_100": 1.5, "speedup_100_no_setup": 2.5, "config": {"M": 1000, "J": 1000},
                "fd": {"metric": "FD_clf", "value": float(np.mean(boot)), "boot": np.asarray(boot)},
                "diversity": {"mean_pairwise": div, "boot": np.full(50, div) + np.linspace(-0.1, 0.1, 50)},
                "memorisation": {"ratio_to_train_nn": 1.2, "distinct_nn": 300, "n_samples": n, "frac_copies": 0.01}}
    return {"score": "trained residual MLP (3 x 256, 0.61 M parameters)", "fd_floor": None,
            "rows": [row("baseline", pc_boot, pc_div), row("paper", fp_boot, fp_div), row("recommended", fp_boot, fp_div)]}


def test_verdict_sentences_start_with_a_verdict_word_and_follow_the_intervals():
    paper = paper_values("b")
    rng = np.random.default_rng(0)
    worse = _t1(100 + rng.normal(0, 2, 50), 60 + rng.normal(0, 2, 50))
    same = _t1(60 + rng.normal(0, 2, 50), 60 + rng.normal(0, 2, 50))
    assert v.verdict_quality(worse, "ve", "digits").startswith(V.HOLDS + " (VE, trained residual MLP")
    assert "95 % bootstrap interval over samples" in v.verdict_quality(worse, "ve", "digits")
    assert v.verdict_quality(same, "ve", "digits").startswith(V.INCONCLUSIVE)
    assert v.verdict_quality(same, "vp", "digits").startswith(V.NOT_TESTED + ", because")
    assert v.verdict_memorisation(worse).startswith(V.HOLDS)  # FP less diverse than PC beyond the noise
    assert v.verdict_speed(None, paper).startswith(V.NOT_TESTED + ", because")
    deep = [{"network": "NCSN++ deep", "parameters": 1e8, "sde": "ve", "sampler": "PC1000 (reverse diffusion + Langevin, snr 0.16)",
             "nfe": 2000, "s_per_image_1": 300.0, "s_per_image_100": 30.0, "s_per_image_1_with_setup": 300.0,
             "s_per_image_100_with_setup": 30.0},
            {"network": "NCSN++ deep", "parameters": 1e8, "sde": "ve", "sampler": "FP (M = 500, L = 5, J = 1000)", "nfe": 500,
             "s_per_image_1": 1.0, "s_per_image_100": 0.5, "s_per_image_1_with_setup": 80.0, "s_per_image_100_with_setup": 1.3,
             "included": "M network evaluations"}]
    sp = v.verdict_speed(deep, paper)
    assert sp.startswith(V.HOLDS + " (NCSN++ deep") and "with the set-up counted: partly holds" in sp and "300x" in sp
    assert v.verdict_speed_not_tested(worse, "a reason").startswith(V.NOT_TESTED + ", because a reason; measured")
    # Table 2: FD rising with M, time linear in M; Table 3: a flat L sweep
    t2 = {"score": "x", "rows": [{"M": m, "n_samples": 100, "fd": {"metric": "FD_clf", "value": f, "boot": f + rng.normal(0, 1, 50)},
                                  "n_eff_prior": 1.0, "n_eff_weights_over_M": 0.5, "distinct_nn": 50, "time_100_no_setup": 0.01 * m,
                                  "t_sampling_groups": [0.01 * m * 0.98, 0.01 * m * 1.02]} for m, f in ((250, 50.0), (1000, 80.0))]}
    assert v.verdict_effect_of_M(t2).startswith(V.HOLDS)
    sentence, p = v.verdict_time_of_M(t2)
    assert sentence.startswith(V.HOLDS) and p == pytest.approx(1.0, abs=0.05)
    t3 = {"M": 1000, "ref_L": 5, "score": "x", "rows": [{"L": L, "n_samples": 100, "displacement_vs_L5_over_train_nn": 0.0,
                                                         "weight_corr_with_L1": 1.0, "lam_spread_tau": 0.0,
                                                         "fd": {"metric": "FD_clf", "value": 60.0, "boot": 60.0 + np.linspace(-0.5, 0.5, 50)}}
                                                        for L in (1, 5, 10)]}
    assert v.verdict_robustness_to_L(t3)[0].startswith(V.HOLDS)
    for s in (v.verdict_quality_reference(same), v.verdict_effect_of_M({**t2, "rows": [{**r, "fd": None} for r in t2["rows"]]})):
        assert V.verdict_word(s) is not None, s
