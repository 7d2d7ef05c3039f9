"""Paper A's effect statistics on synthetic curves with a planted answer: speed-up, final gap, censoring."""

import math

import numpy as np
import pytest

from kl_repro.core import verdict as V
from kl_repro.evaluation.intervals import difference_interval, first_crossing, mean_interval, smooth
from kl_repro.paper_a.statistics import final_gap_effect, seed_speedup, speedup_effect

STEPS = np.arange(100, 3001, 100)


def _curve(rng, speed: float, noise: float = 0.02, floor: float = 1.0) -> np.ndarray:
    """``floor + 9 exp(-speed s / 400)`` with multiplicative noise: a run ``speed`` times faster than speed 1."""
    return (floor + 9 * np.exp(-speed * STEPS / 400)) * np.exp(noise * rng.standard_normal(len(STEPS)))


def _rows(seed: int, values) -> list[dict]:
    return [{"seed": seed, "step": int(s), "value": float(v)} for s, v in zip(STEPS, values)]


def _pairs(speed: float, seeds: int, rng, **kw) -> list[dict]:
    out = []
    for s in range(seeds):
        base, kl = _rows(s, _curve(rng, 1.0)), _rows(s, _curve(rng, speed, **kw))
        out.append(seed_speedup(base, kl, s))
    return out


def test_crossing_is_interpolated_and_smoothing_is_geometric():
    assert first_crossing([100, 200, 300], [4.0, 2.0, 1.0], 3.0) == pytest.approx(150.0)
    assert first_crossing([100, 200], [4.0, 3.5], 1.0) is None
    assert smooth([1.0, 100.0, 1.0])[1] == pytest.approx(100 ** (1 / 3))


def test_interval_contains_a_planted_speedup():
    eff = speedup_effect(_pairs(1.6, 5, np.random.default_rng(0)), target=2.0)
    iv = eff["interval"]
    assert iv["lo"] < 1.6 < iv["hi"] and iv["hi"] - iv["lo"] < 0.5
    assert eff["word"] == V.PARTLY and eff["censored"] == 0  # faster beyond the noise, short of 2x
    assert speedup_effect(_pairs(2.6, 5, np.random.default_rng(1)))["word"] == V.HOLDS


def test_planted_zero_effect_is_never_judged_holds():
    words = [speedup_effect(_pairs(1.0, 3, np.random.default_rng(k)))["word"] for k in range(20)]
    assert V.HOLDS not in words and words.count(V.PARTLY) <= 2
    assert words.count(V.INCONCLUSIVE) >= 15


def test_a_censored_seed_is_kept_with_its_bound():
    rng = np.random.default_rng(3)
    per_seed = _pairs(1.6, 2, rng) + _pairs(1.6, 1, rng, floor=1.3)  # third KL seed stalls above the target
    never = per_seed[-1]
    assert never["censored"] and never["kl_step"] is None
    assert never["speedup"] == pytest.approx(never["baseline_step"] / 3000)  # the most KL's data allow
    eff = speedup_effect(per_seed)
    assert eff["n"] == 3 and eff["censored"] == 1 and eff["word"] == V.INCONCLUSIVE
    all_never = _pairs(1.6, 3, rng, floor=1.3)
    assert speedup_effect(all_never)["word"] == V.DOES_NOT_HOLD


def test_final_gap_interval_and_words():
    rng = np.random.default_rng(4)
    base = 5.0 * np.exp(0.03 * rng.standard_normal(4))
    kl = 3.5 * np.exp(0.03 * rng.standard_normal(4))
    eff = final_gap_effect(list(kl), list(base), paper_ratio=3.6 / 5.35)
    assert eff["interval"]["lo"] < -0.3 < eff["interval"]["hi"]
    assert eff["word"] in (V.PARTLY, V.HOLDS)
    same = [final_gap_effect(list(5 * np.exp(0.05 * r.standard_normal(3))), list(5 * np.exp(0.05 * r.standard_normal(3))),
                             paper_ratio=3.6 / 5.35)["word"] for r in (np.random.default_rng(k) for k in range(20))]
    assert V.HOLDS not in same and same.count(V.PARTLY) <= 2  # a 95 % interval errs on one side in ~1 case of 40
    assert final_gap_effect([1.0], [2.0, 2.1])["word"] == V.NOT_TESTED  # one seed: no interval


def test_intervals_cover_and_need_two_values():
    assert math.isnan(mean_interval([1.0]).lo)
    iv = mean_interval([1.0, 2.0, 3.0])
    assert iv.lo < 2.0 < iv.hi and iv.hi - iv.lo == pytest.approx(2 * 4.303 * 1 / math.sqrt(3), rel=1e-3)
    d = difference_interval([2.0, 2.2, 2.1], [1.0, 1.1, 0.9])
    assert (d.lo, d.hi) == pytest.approx((1.1 - 0.2266, 1.1 + 0.2266), abs=1e-3)  # Welch: se 0.0816, 4 dof


def test_forest_rows_come_from_the_stored_speedup_and_carry_the_paper_values(tmp_path, monkeypatch):
    from kl_repro.core import store
    from kl_repro.paper_a import forest
    from kl_repro.paper_a.results import load_results

    monkeypatch.setenv("KL_REPRO_RESULTS", str(tmp_path))
    eff = speedup_effect(_pairs(1.6, 3, np.random.default_rng(5)), target=2.0, cost_ratio=1 / 8)
    gap = final_gap_effect([3.5, 3.6, 3.4], [5.0, 5.2, 4.9], paper_ratio=3.6 / 5.35)
    pair = {"kl": "KL-8d-b16", "baseline": "Baseline-b16", "effect": eff, "final_gap": gap}
    store.save_artefact("smoke", "A.speedup", {"ours": {"per_data": {"digits": {"pairs": [pair]}}}, "verdict": "x"})
    rows = forest.effect_rows(("smoke",))
    assert [r["panel"] for r in rows] == [p[3] for p in forest.PANELS]
    assert rows[1]["estimate"] == pytest.approx(rows[0]["estimate"] / 8)  # per network evaluation
    assert rows[2]["estimate"] == pytest.approx(np.exp(np.mean(np.log([3.5, 3.6, 3.4])) - np.mean(np.log([5.0, 5.2, 4.9]))))
    fig = forest.forest(load_results("smoke"))
    assert fig is not None and store.load_artefact("smoke", "A.effects")["paper"]["speedup_per_evaluation"] == pytest.approx(
        2 / (13.983 / 4.617), rel=1e-4)


def test_readings_table_finds_a_planted_reading_that_makes_the_claim_hold(tmp_path, monkeypatch):
    """A.readings on the cpu matrix with planted curves: the learned-k reading is 2.5x faster than its baseline,
    the default reading equally fast, the lr-3e-4 pair (its own baseline) 1.5x; the other readings have no runs yet."""
    from kl_repro.core import store
    from kl_repro.core.profiles import load_profile
    from kl_repro.paper_a import readings
    from kl_repro.paper_a import matrix as E
    from kl_repro.paper_a.results import Results

    monkeypatch.setenv("KL_REPRO_RESULTS", str(tmp_path))
    rng = np.random.default_rng(11)
    speeds = {"toy2d/baseline-b16": 1.0, "toy2d/kl8-b16": 1.0, "toy2d/kl8-b16-klearned": 2.5,
              "toy2d/baseline-b16-lr3e-4": 1.0, "toy2d/kl8-b16-lr3e-4": 1.5}
    curves = {rid: [r for s in range(3) for r in _rows(s, _curve(rng, sp, noise=0.005))] for rid, sp in speeds.items()}
    cpu = load_profile("cpu")
    res = Results(cpu, E.load_matrix(cpu), E.planned_runs(cpu), curves)
    pairs = {p["reading"]: p for p in readings.reading_pairs(res)}
    assert len(pairs) == 6  # every KL run of A.readings found its baseline (the lr run: the one of lr 3e-4)
    default = pairs["ours (time_offset, sum, none, 0.001)"]
    learned = pairs["k conditioning: learned_zero_init"]
    slow_lr = pairs["learning rate: 0.0003"]
    assert default["default"] and slow_lr["baseline"] == "Baseline-b16 (lr 3e-4)"
    sp = {k: p["effect"]["interval"] for k, p in (("default", default), ("learned", learned), ("lr", slow_lr))}
    assert sp["learned"]["lo"] <= 2.5 * 1.1 and sp["learned"]["hi"] >= 2.5 * 0.9 and sp["learned"]["lo"] > 2.0
    assert sp["default"]["lo"] <= 1.0 <= sp["default"]["hi"] * 1.05 and sp["lr"]["estimate"] == pytest.approx(1.5, rel=0.15)
    assert learned["effect"]["word"] == V.HOLDS and default["effect"]["word"] != V.HOLDS
    assert pairs["loss form: per_term"]["effect"]["n"] == 0  # no curves: not judged
    text = readings.readings_verdict(list(pairs.values()))
    assert text.startswith("Holds under the most favourable reading (toy2d, k conditioning: learned_zero_init)")
    assert "1 of 3 readings make the claim hold" in text and "under our reading 1" in text
    rows, fig = readings.readings_table(res)
    assert fig is not None and len(rows) == 6
    art = store.load_artefact("cpu", "A.readings")
    assert art["verdict"] == text and art["figure"]
    assert readings.readings_sentence(res) == f" Against the readings of the lost equations (A.readings): {text}"


def test_readings_verdict_with_no_reading_that_holds_says_so():
    from kl_repro.paper_a import readings

    def pair(name, speed, default=False):
        eff = speedup_effect(_pairs(speed, 3, np.random.default_rng(int(10 * speed))), target=2.0)
        return {"reading": name, "default": default, "data": "toy2d", "kl": "KL-8d-b16", "effect": eff}

    text = readings.readings_verdict([pair("ours", 1.0, True), pair("unit noise", 1.3)])
    assert not text.startswith(V.HOLDS) and "no reading of the 2 tested makes the claim hold" in text
    assert "most favourable reading (toy2d, unit noise)" in text
    assert readings.readings_verdict([]).startswith(V.NOT_TESTED)


def _ladder_results(tmp_path, monkeypatch, speeds: dict, kl_floor: dict):
    """The mnist matrix's ladder runs with planted curves (3 seeds each; baselines speed 1, floor 1)."""
    from kl_repro.core.profiles import load_profile
    from kl_repro.paper_a import matrix as E
    from kl_repro.paper_a.results import Results

    monkeypatch.setenv("KL_REPRO_RESULTS", str(tmp_path))
    rng = np.random.default_rng(3)
    curves = {}
    for dim, sp in speeds.items():
        suffix = "" if dim == 16 else f"-dim{dim}"
        curves[f"mnist/baseline-b16{suffix}"] = [r for s in range(3) for r in _rows(s, _curve(rng, 1.0, noise=0.005))]
        curves[f"mnist/kl8-b16{suffix}"] = [r for s in range(3) for r in _rows(s, _curve(rng, sp, noise=0.005,
                                                                                          floor=kl_floor[dim]))]
    mnist = load_profile("mnist")
    return Results(mnist, E.load_matrix(mnist), E.planned_runs(mnist), curves)


def test_ladder_finds_a_planted_speedup_that_grows_with_the_network(tmp_path, monkeypatch):
    """A.ladder on the mnist matrix: speed-ups 0.8x, 1.2x, 1.8x over 12 k ... 186 k
    parameters must give intervals that contain the planted values and a growing speed-up (all runs share one floor,
    so the final ratio has no trend upwards)."""
    from kl_repro.core import store
    from kl_repro.paper_a import ladder

    res = _ladder_results(tmp_path, monkeypatch, {4: 0.8, 8: 1.2, 16: 1.8}, {4: 1.0, 8: 1.0, 16: 1.0})
    pairs = ladder.rung_pairs(res)
    assert [p["dim"] for p in pairs] == [4, 8, 16] and pairs[0]["params"] < pairs[1]["params"] < pairs[2]["params"]
    assert pairs[2]["params"] / pairs[0]["params"] > 10 and pairs[2]["kl_id"] == "mnist/kl8-b16"
    for p, planted in zip(pairs, (0.8, 1.2, 1.8)):
        iv = p["effect"]["interval"]
        assert iv["lo"] <= planted * 1.1 and iv["hi"] >= planted * 0.9 and p["effect"]["n"] == 3
    tr = ladder.trends(pairs)
    assert tr["speedup"]["direction"] == "grows" and tr["speedup"]["lo"] > 0
    assert tr["ratio"]["direction"] != "grows" and tr["ratio"]["n"] == 9
    assert tr["speedup"]["at_paper"] > 1.8  # the line keeps rising to 35.7 M
    text = ladder.ladder_verdict(pairs)
    assert "The speed-up grows with the network" in text and "an extrapolation over" in text and "not a measurement" in text
    rows, fig = ladder.ladder_table(res)
    assert fig is not None and [r["dim"] for r in rows] == [4, 8, 16]
    art = store.load_artefact("mnist", "A.ladder")
    assert art["verdict"] == text and art["figure"] and art["paper"]["value"]["params"] == pytest.approx(35.7e6)


def test_ladder_with_a_planted_zero_effect_sees_no_trend_and_no_speedup(tmp_path, monkeypatch):
    from kl_repro.paper_a import ladder

    res = _ladder_results(tmp_path, monkeypatch, {4: 1.0, 8: 1.0, 16: 1.0}, {4: 1.0, 8: 1.0, 16: 1.0})
    pairs = ladder.rung_pairs(res)
    assert all(p["effect"]["word"] != V.HOLDS for p in pairs)
    tr = ladder.trends(pairs)
    assert tr["speedup"]["direction"] == "no trend detectable" and tr["speedup"]["lo"] < 0 < tr["speedup"]["hi"]
    assert ladder.ladder_verdict(pairs[:1]).startswith(V.NOT_TESTED)


def test_slope_interval_covers_a_planted_slope():
    from kl_repro.paper_a.ladder import slope_interval

    rng = np.random.default_rng(0)
    x = np.repeat([4.0, 4.6, 5.3], 3)
    fit = slope_interval(x, 0.1 + 0.5 * x + 0.05 * rng.standard_normal(len(x)))
    assert fit["lo"] < 0.5 < fit["hi"] and fit["hi"] - fit["lo"] < 0.4 and fit["n"] == 9
    m, lo, hi = fit["predict"](7.55)
    assert lo < 0.1 + 0.5 * 7.55 < hi
    assert np.isnan(slope_interval([1.0, 1.0, 1.0], [1.0, 2.0, 3.0])["slope"])
