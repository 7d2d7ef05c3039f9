"""The chapter functions of notebooks 05 and 06 at tiny sizes: numbers with known answers, stored artefacts
with a sentence as verdict, and the objects a notebook displays."""

import json

import numpy as np
import pytest

from kl_repro.chapters import eigen_spectra as es
from kl_repro.chapters import operator_sampler as osm
from kl_repro.core import store
from kl_repro.core.verdict import NOT_TESTED, verdict_word
from kl_repro.paper_b.image_experiments import ABLATIONS


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


@pytest.fixture
def results(tmp_path, monkeypatch):
    monkeypatch.setenv("KL_REPRO_RESULTS", str(tmp_path))
    return tmp_path


def _stored(art_id: str) -> dict:
    data = json.loads(store.artefact_path("smoke", art_id).read_text())
    assert isinstance(data["verdict"], str) and len(data["verdict"]) > 20, data["verdict"]
    assert {"ours", "paper", "paper_summary", "ours_summary"} <= set(data)
    assert data["ours"]["profile"] == "smoke" and data["ours"]["seed"] == 0
    return data


def test_eigen_spectra_chapter(results, capsys):
    cfg = es.EigenSpectraConfig(profile="smoke", n_grid=200, n_eig=6, ou_M=300, mix_M=150, sigma_stars=(0.1, 1.0), grid_n=41,
                                image_pool=150, image_M=80, image_t_stars=(1e-5, 0.3), n_show=6)
    bm = es.brownian(cfg)
    assert bm.data["gap_ratio"] == pytest.approx(9.0, rel=1e-12)
    assert float(np.max(bm.data["rel_err"])) < 1e-2
    ou = es.ou(cfg)
    np.testing.assert_allclose(ou.data["lam_truncated"][:3], [0, -1, -2], atol=0.1)
    assert ou.data["spurious_truncated"] == 0 and ou.data["spurious_tikhonov"] >= 3
    assert "300 points" in ou.text and "zeta = 1" in ou.text  # values, not parameter names
    side = es.side_by_side(cfg, bm, ou)
    assert side.figure is not None and "gap ratio lambda_1 / lambda_2 = 9" in side.text
    mix = es.mixture(cfg)
    rows = {r["sigma_star"]: r for r in mix.data["rows"] if r["sde"] == "ve"}
    assert rows[0.1]["cluster_size"] >= 2  # separated modes: metastable cluster
    assert rows[1.0]["cluster_size"] == 1 and rows[1.0]["l1_to_p2"] < rows[1.0]["l1_to_p"]  # top eigen-density ~ p^2
    img = es.images(cfg)
    assert img.data["available"] and len(img.data["rows"]) == 2 and img.data["d"] == 64
    assert all(r["laplacian_shift"] < 0 for r in img.data["rows"])
    for art_id in ("B.spectra_ou", "B.spectra_side_by_side", "B.spectra_mixture", "B.spectra_images"):
        _stored(art_id)
        assert store.artefact_path("smoke", art_id, ".png").exists()
    img._ipython_display_()  # tables, figure and markdown; outside a kernel they print
    assert "images" not in capsys.readouterr().err


@pytest.fixture(scope="module")
def tiny():
    cfg = osm.OperatorSamplerConfig(profile="smoke", ou_M=150, ou_n_prior=500, mix_M=100, mix_chains=40, mix_J=30, pool=120, M=60,
                                    L=5, J=20, n_groups=1, n_per_group=8, pc_N=20, pc_images=8, fd=True, fd_extractor="tiny",
                                    M_values=(40, 60), L_values=(1, 5, 10), sweep_groups=1, sweep_per_group=12, fig2_M=60,
                                    fig2_images=3, ablation_images=6, extra_datasets=("no-such-set",), threads=1,
                                    score_width=32, score_blocks=1, score_steps=40, score_batch=32, score_warmup=5, fd_seeds=2,
                                    deep_timing=False)
    return cfg, osm.image_setup(cfg)


def test_operator_sampler_toy_sections(results, tiny):
    cfg, _ = tiny
    e1 = osm.e1(cfg)
    assert all(r["biorthogonal, e^{+lam tau}"] < 0.05 for r in e1.data["rows"] if r["L"] == 5)
    assert "biorthogonal" in _stored("B.E1")["verdict"]
    assert verdict_word(_stored("B.E1")["verdict"]) == "Does not hold at this scale"  # Theorem 1's projection (14)
    e2 = osm.e2(cfg)
    for r in e2.data["rows"]:
        assert float(np.sum(r["freq"])) == pytest.approx(1.0, abs=1e-12)
    pc = next(r for r in e2.data["rows"] if r["sampler"].startswith("PC"))
    assert pc["nfe"] == 2 * cfg.pc_N and min(pc["freq"]) > 0  # PC with the exact score visits every mode
    assert "sigma(t*) = 1" in e2.text and "40 chains of 30 Langevin steps" in e2.text
    assert _stored("B.E2")["ours"]["M"] == 100
    assert verdict_word(_stored("B.E2")["verdict"]) is not None and "bootstrap interval over chains" in _stored("B.E2")["verdict"]


def test_operator_sampler_image_sections(results, tiny):
    cfg, setup = tiny
    nets = osm.score_networks(cfg, setup)
    assert set(nets.data.networks) == {"ve", "vp"} and all(n["steps"] == 40 for n in nets.data.networks.values())
    assert nets.data.score_label.startswith("trained residual MLP") and nets.figure is not None
    t1 = osm.table1(cfg, setup, nets)
    for rows in (t1.data["rows"], t1.data["ideal"]["rows"]):
        assert [r["preset"] for r in rows] == ["baseline", "paper", "recommended"] * 2
        assert all(r["speedup_1"] > 0 for r in rows if r["preset"] != "baseline")
        assert all(r["memorisation"]["n_samples"] == 8 for r in rows)
        assert next(r for r in rows if r["preset"] == "baseline")["nfe"] == 2 * cfg.pc_N
    assert {r["score"] for r in t1.data["rows"]} == {nets.data.score_label}
    assert {r["score"] for r in t1.data["ideal"]["rows"]} == {"ideal score of the pool"}
    data = _stored("B.table1")
    assert {"speed", "speed_trained", "speed_ideal", "fid_cost", "fid_cost_vp", "memorisation", "quality_ideal"} == set(data["verdicts"])
    assert all(verdict_word(s) is not None for s in data["verdicts"].values()), data["verdicts"]
    assert data["verdicts"]["speed"].startswith(NOT_TESTED)  # no deep-network timing in this test
    assert data["verdicts"]["speed_ideal"].startswith(NOT_TESTED) and data["verdicts"]["quality_ideal"].startswith(NOT_TESTED)
    assert data["ours"]["fd_seed_spread"] is None and data["ours"]["rows"][0].get("fd") is None  # 8 images: no Frechet distance
    groups = set(t1.tables["Table 1: paper and ours"]["group"])
    headers = list(t1.tables["Table 1: paper and ours"].columns)
    assert "s, 1 image (with set-up)" in headers and "PC / FP time, 100 images" in headers
    assert not any("_" in h for h in headers), headers  # readers see words, not the rows' keys
    assert any(g.startswith("paper (") for g in groups) and any(g.startswith("ours, trained residual MLP") for g in groups)
    assert any(g.startswith("reference: ideal score") for g in groups)
    assert "1 group of 8 images" in t1.text and "20 steps" in t1.text
    extra = osm.extra_datasets(cfg)
    assert extra.data == {"no-such-set": {"available": False}}
    osm.fig1(cfg, t1, extra)
    assert _stored("B.fig1")["ours"]["extra"] == {"no-such-set": "data set absent"}
    osm.e3(cfg, t1, extra)
    assert set(_stored("B.E3")["verdicts"]) == {"memorisation", "projection"}
    t2 = osm.table2(cfg, setup, nets)
    assert [r["M"] for r in t2.data["rows"]] == [40, 60] and all(r["fd"]["metric"] for r in t2.data["rows"])
    assert np.isfinite(_stored("B.table2")["ours"]["time_exponent"])
    t3 = osm.table3(cfg, setup, nets)
    by_L = {r["L"]: r for r in t3.data["rows"]}
    assert by_L[1]["weight_corr_with_L1"] == pytest.approx(1.0, abs=1e-12)
    assert by_L[5]["displacement_vs_L5_over_train_nn"] == pytest.approx(0.0, abs=1e-6)  # common random numbers
    _stored("B.table3")
    f2 = osm.fig2(cfg, setup, nets)
    assert len(f2.data["kinds"]) == 3 and set(f2.data["runs"]) == {"paper", "recommended"}
    assert _stored("B.fig2")["ours"]["M"] == 60
    e4 = osm.e4(cfg, setup)
    assert [r["variant"] for r in e4.data["rows"]] == list(ABLATIONS)
    assert _stored("B.E4")["ours"]["images"] == 6
    for art_id in ("B.table1", "B.fig1", "B.E3", "B.table2", "B.table3", "B.fig2", "B.E4"):  # one verdict language
        stored = _stored(art_id)
        assert verdict_word(stored["verdict"]) is not None, (art_id, stored["verdict"][:80])
        assert all(verdict_word(s) is not None for s in stored.get("verdicts", {}).values()), art_id
    assert _stored("B.table2")["ours"]["score"].startswith("trained residual MLP")
