"""The chapter functions of notebooks 01, 02 and 04 at tiny sizes: their numbers, verdicts and stored artefacts."""

import matplotlib.pyplot as plt
import numpy as np
import pytest

from kl_repro.chapters import kl_expansion, paper_a_results, path_smoothness
from kl_repro.core import store
from kl_repro.paper_a import verdicts

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


@pytest.fixture(autouse=True)
def results(tmp_path, monkeypatch):
    """A fresh results folder per test; figures closed afterwards."""
    monkeypatch.setenv("KL_REPRO_RESULTS", str(tmp_path))
    yield tmp_path
    plt.close("all")


def _artefact(artefact_id):
    art = store.load_artefact("smoke", artefact_id)
    assert art is not None, f"{artefact_id} was not stored"
    return art


# --- chapter 1: the KL expansion ----------------------------------------------------------------------

KL_CFG = kl_expansion.KLExpansionConfig(profile="smoke", n_grid=400, n_eig=8, path_grid=200, n_paths=3)


def test_brownian_spectrum_matches_the_closed_form_and_is_stored(capsys):
    table = kl_expansion.brownian_spectrum(KL_CFG).data
    assert list(table["k"]) == list(range(1, 9))
    assert table["lambda_k (closed form)"].iloc[0] == pytest.approx(4 / np.pi**2)
    assert table["relative error"].max() < 1e-3
    assert table["max |eigenfunction error|"].max() < 2e-2
    art = _artefact("A.eq8_spectrum")
    assert art["ours"]["n_grid"] == 400
    assert art["ours"]["max_rel_err_lambda_k<=8"] == pytest.approx(table["relative error"].max())
    assert art["verdict"].startswith("Holds") and art["figure"] == "A.eq8_spectrum.png"
    assert "Nyström on 400 cells" in capsys.readouterr().out


def test_other_kernels_match_their_closed_forms():
    table = kl_expansion.other_kernels(KL_CFG).data
    assert list(table["kernel"]) == ["brownian", "brownian_bridge", "ornstein_uhlenbeck"]
    assert (table["max relative eigenvalue error"] < 2e-3).all()
    # Brownian bridge: lambda_1 = 1/pi^2; OU (theta = 2): lambda_1 = 2 theta / (theta^2 + w_1^2) < 2 / theta
    assert table["lambda_1"].iloc[1] == pytest.approx(1 / np.pi**2)
    assert 0 < table["lambda_1"].iloc[2] < 1.0


def test_variance_shares_are_the_closed_form():
    table = kl_expansion.variance_shares(KL_CFG).data
    assert [round(s, 4) for s in table["share"][:3]] == [0.8106, 0.0901, 0.0324]
    art = _artefact("A.variance_shares")
    assert art["ours"]["rows"][7]["cumulative_share"] == pytest.approx(0.9747, abs=1e-4)
    assert "97.47 %" in art["verdict"] and "97.98 %" in art["verdict"]


def test_truncation_error_and_sample_paths():
    fig = kl_expansion.truncation_error(KL_CFG)
    assert len(fig.axes) == 2
    fig = kl_expansion.sample_paths(KL_CFG)
    assert len(fig.axes) == len(KL_CFG.d_values) + 1
    # every panel draws the same n_paths paths, on path_grid + 1 points
    assert all(len(ax.lines) == KL_CFG.n_paths for ax in fig.axes)
    assert len(fig.axes[0].lines[0].get_xdata()) == KL_CFG.path_grid + 1
    art = _artefact("A.kl_paths")
    assert art["ours"] == {"d": [1, 2, 8], "paths": 3, "seed": 0, "profile": "smoke"}


# --- chapter 2: path smoothness -----------------------------------------------------------------------

SM_CFG = path_smoothness.SmoothnessConfig(profile="smoke", n_paths=4, n_pixels=32, grids=(100, 1000), d_values=(1, 2, 8),
                                          gradient_conflict=False)


def test_quadratic_variation_tends_to_the_integral_of_beta_for_vp_and_falls_like_one_over_n_for_kl():
    table = path_smoothness.smoothness(SM_CFG).data
    qv = table["quadratic variation per coordinate"]
    vp, kl_exact = qv.iloc[0], qv.iloc[1]
    assert vp[1000] == pytest.approx(10.05, rel=0.03)
    assert kl_exact[100] / kl_exact[1000] == pytest.approx(10, rel=0.1)  # O(1/N)
    length = table["path length per sqrt(D)"]
    assert length.iloc[0][1000] / length.iloc[0][100] == pytest.approx(np.sqrt(10), rel=0.1)  # VP: sqrt(N)
    assert length.iloc[1][1000] / length.iloc[1][100] == pytest.approx(1.0, abs=0.01)  # KL: converges
    art = _artefact("A.smoothness")
    assert len(art["ours"]["rows"]) == 6 and art["verdict"].startswith("Holds")


def test_forward_path_and_rank():
    fig = path_smoothness.forward_path(SM_CFG)
    assert [len(ax.lines) for ax in fig.axes] == [3, 3]
    ranks = path_smoothness.rank(SM_CFG).data
    assert ranks["rank"].tolist() == [201, 2, 3, 9]


def test_noise_correlation_closed_forms_are_stored():
    table = path_smoothness.noise_correlation(SM_CFG).data
    assert table["KL d=8"].tolist() == pytest.approx([0.981, 0.725], abs=1e-3)
    pairs = _artefact("A.noise_correlation")["ours"]["pairs"]
    assert pairs[1]["brownian"] == pytest.approx(np.sqrt(0.5))


def test_grid_table_schedules_agree_and_truncated_variance():
    table = path_smoothness.grid_table(SM_CFG).data
    assert len(table) == 20
    assert table["v_8"].iloc[-1] == pytest.approx(0.97470, abs=1e-5)
    assert table["alpha_bar VP"].iloc[0] == pytest.approx(0.97057, abs=1e-5)
    art = _artefact("A.tableA1")
    assert art["ours"]["max_abs_alpha_bar_diff"] < 8.5e-4
    assert art["ours"]["v_10(1)"] == pytest.approx(0.97975, abs=1e-5)


def test_gradient_conflict_can_be_switched_off(capsys):
    assert path_smoothness.gradient_conflict(SM_CFG) is None
    assert store.load_artefact("smoke", "A.gradient_conflict") is None
    assert "switched off" in capsys.readouterr().out


# --- chapter 4: paper A's results -----------------------------------------------------------------------

def test_results_chapter_says_what_is_absent_without_runs(capsys):
    res = paper_a_results.load(paper_a_results.PaperAResultsConfig(profile="smoke"))
    assert "0 finished" in capsys.readouterr().out
    assert len(paper_a_results.plan(res).data) == len(res.plan) > 0
    assert paper_a_results.table1(res).data.empty
    assert _artefact("A.table1")["verdict"].startswith("Not tested by this experiment")
    assert paper_a_results.speedup(res).data["speed-up"].isna().all()
    assert _artefact("A.speedup")["verdict"].startswith("Not tested by this experiment")
    assert paper_a_results.effects(res) is None  # no effect has an estimate yet: no forest figure
    assert "faster at equal compute? Not tested by this experiment" in capsys.readouterr().out
    assert paper_a_results.metric_noise(res).data.empty
    paper_a_results.fig10(res)
    assert "A.fig10: " in capsys.readouterr().out
    claims = paper_a_results.claims(res).data
    assert len(claims) == len(verdicts.CLAIM_ARTEFACTS) and "verdict" in claims


def test_verdicts():
    assert verdicts.partial_verdict([(1, 9.0), (2, 7.0), (4, 5.0)], 4.0).startswith("Holds")
    assert verdicts.partial_verdict([(1, 9.0), (2, 9.5), (4, 5.0)], 4.0).startswith("Partly holds")
    assert verdicts.partial_verdict([(1, 3.0)], 4.0).startswith("Does not hold")
    assert verdicts.partial_verdict([], 4.0).startswith("Not tested by this experiment")
    assert verdicts.final_score_verdict([1.0, 1.1], [2.0, 2.1], "digits", "FD_clf").startswith("Holds")
    assert verdicts.final_score_verdict([1.0, 2.5], [2.0, 2.1], "digits", "FD_clf").startswith("Inconclusive")
    assert verdicts.final_score_verdict([], [2.0], "digits", "FD_clf").startswith("Not tested by this experiment")
    assert "consistent" in verdicts.optimal_d_verdict((8, 20, 1.0), (10, 20, 1.0))
    assert "not reproduced" in verdicts.optimal_d_verdict((1, 20, 1.0), (1, 200, 1.0))
    assert verdicts.baseline_t20_verdict(2.0, 1.5, 1.0).endswith("same 20 levels.")
    assert verdicts.baseline_t20_verdict(2.0, 0.9, 1.0).endswith("accounts for KL's advantage here.")
    step_s = {"Baseline-b16": 0.10, "KL-8d-b16": 0.30, "KL*-8d-b16": 0.11}
    assert verdicts.kl_star_verdict(step_s, {"KL-8d-b16": 1.0, "KL*-8d-b16": 1.2}).startswith("Holds for cost: a KL* step costs 1.10x")
    rows = [{"run": "Baseline-b16", "time / baseline": 1.0}, {"run": "KL-10d1-b16", "time / baseline": 1.05}]
    assert verdicts.cost_verdict(rows).startswith("Holds: KL-10d1 costs 1.05x")


def test_table1_lists_the_runs_behind_its_verdict(monkeypatch):
    """Where the verdict's pair (the longest, most-seeded runs) is not among panel (a)'s runs, Table 1 adds their rows
    and marks them, so a reader sees which numbers the verdict quotes."""
    from kl_repro.paper_a import tables

    monkeypatch.setattr(tables, "panel_runs", lambda res, panel: ["base", "kl"] if panel == "a" else [])
    monkeypatch.setattr(tables, "_headline_pair", lambda res: ("kl_3k", "base_3k"))
    monkeypatch.setattr(tables, "_table1_row", lambda res, rid, paper_data, rows: {"id": rid, "paper data set": paper_data, "final": None})
    monkeypatch.setattr(tables, "_headline_verdict", lambda res: "x")
    monkeypatch.setattr(tables.store, "save_artefact", lambda *a, **k: None)
    res = type("R", (), {"name": "smoke"})()
    rows = tables.table1(res)
    assert [(r["id"], r["behind the verdict"]) for r in rows] == [("base", ""), ("kl", ""), ("kl_3k", "yes"), ("base_3k", "yes")]
    assert {r["paper data set"] for r in rows} == {tables.PANELS["a"][0]}
