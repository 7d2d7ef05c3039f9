"""Paper A's run matrices as data, their validation, and the speed-up and verdict arithmetic."""

import functools
import json

import pytest

from kl_repro.paper_a import matrix as E
from kl_repro.paper_a.results import Results
from kl_repro.paper_a.tables import speedup
from kl_repro.paper_a.statistics import speedup_effect
from kl_repro.paper_a.verdicts import compute_verdict, speedup_verdict
from kl_repro.pipeline.scheduler import SideTask
from kl_repro.core.config import ConfigError
from kl_repro.core.profiles import PROFILES, Profile, load_profile
from kl_repro.core.registry import artefact_registry


@pytest.mark.parametrize("profile", PROFILES)
def test_every_paper_table_and_figure_is_made_or_declared_absent(profile):
    m = E.load_matrix(load_profile(profile))
    in_paper = {a["id"] for a in artefact_registry() if a["in_paper"] and a["id"].startswith("A.")}
    assert in_paper <= m.artefacts(), sorted(in_paper - m.artefacts())
    assert not (set(m.absent) & {a for r in m.runs for a in r.artefacts})  # absent means absent
    plan = E.planned_runs(load_profile(profile))  # every run's parameters validate
    assert len({p.run_dir.name for p in plan}) == len(plan)  # distinct runs, distinct folders


def test_every_run_is_a_notebook_03_page():
    smoke = load_profile("smoke")
    pages = E.training_pages(smoke)
    assert len(pages) == len(E.planned_runs(smoke))
    name, title, params = pages[0]
    assert params["profile"] == "smoke" and name.startswith("digits-baseline-b16")


def test_planned_runs_are_computed_once_per_profile_and_results_folder(tmp_path, monkeypatch):
    cpu = load_profile("cpu")
    assert E.planned_runs(cpu) is E.planned_runs(cpu)
    monkeypatch.setenv("KL_REPRO_RESULTS", str(tmp_path))
    moved = E.planned_runs(cpu)
    assert all(p.run_dir.is_relative_to(tmp_path) for p in moved)
    assert [p.run_dir.name for p in moved] == [p.run_dir.name for p in E.planned_runs(load_profile("cpu"))]


def test_fine_tuning_runs_start_from_the_baseline_run_of_the_same_seed():
    plan = {p.key: p for p in E.planned_runs(load_profile("cpu"))}
    ft = plan["digits/ft-kl8-b16@s0"]
    assert ft.depends_on == "digits/baseline-b16@s0"
    assert ft.run_config().init_from.endswith(plan[ft.depends_on].run_dir.name)


def _matrix_with(mutate) -> Profile:
    """The smoke profile with its ``[paper_a]`` section changed by ``mutate``."""
    smoke = load_profile("smoke")
    data = {key: smoke.get(key) for key in ("name", "description", "notebooks", "paper_a")}
    mutate(data["paper_a"])
    return Profile("smoke", data)


@pytest.mark.parametrize("mutate,match", [
    (lambda s: s["run"].append(dict(s["run"][0])), "duplicate run ids"),
    (lambda s: s["run"][0].update(artefacts=["A.fig99"]), "unknown artefact"),
    (lambda s: s["run"][0].update(data="cifar"), "no \\[paper_a.defaults.cifar\\]"),
    (lambda s: s["run"][0].update(colour="red"), "unknown key"),
    (lambda s: s["run"][-1].update(init_from="nope"), "unknown run"),
    (lambda s: s["run"][0]["params"].update(d_prime=3, model="kl", d=2), "d_prime"),
])
def test_bad_matrices_are_refused_before_any_run(mutate, match):
    profile = _matrix_with(mutate)
    with pytest.raises(ConfigError, match=match):
        E.planned_runs(profile)


class _FakeResults(Results):
    def __init__(self, curves):
        cpu = load_profile("cpu")
        super().__init__(cpu, E.load_matrix(cpu), E.planned_runs(cpu), curves)


def _rows(seed, pairs):
    return [{"seed": seed, "step": s, "value": v, "metric": "FD_clf", "opt_time_s": 0.0} for s, v in pairs]


def test_speedup_is_the_ratio_of_steps_to_the_baseline_best():
    base = _rows(0, [(250, 10.0), (500, 6.0), (750, 5.0), (1000, 5.5)]) + _rows(1, [(250, 9.0), (500, 4.0), (750, 4.5), (1000, 4.2)])
    kl = _rows(0, [(250, 7.0), (500, 4.9), (750, 3.0), (1000, 2.0)]) + _rows(1, [(250, 8.0), (500, 7.0), (750, 5.0), (1000, 4.1)])
    res = _FakeResults({"digits/baseline-b16-long": base, "digits/kl8-b16-long": kl})  # the cpu headline pair
    sp = E_sp = speedup(res, "digits")
    pair = E_sp["pairs"][0]
    assert pair["kl"] == "KL-8d-b16 (3k)" and pair["baseline"] == "Baseline-b16 (3k)"
    # seed 0: baseline best 5.0 first at 750, KL <= 5.0 first at 500 -> 1.5x; seed 1: 4.0 at 500, KL never
    assert [p["speedup"] for p in pair["per_seed"]] == [pytest.approx(1.5), None]
    assert pair["reached"] == "1/2" and pair["mean"] == pytest.approx(1.5)  # the raw definition, kept for comparison
    # the verdict's: plateau level on smoothed curves; seed 1 never reaches it and is kept, censored at its bound
    robust = pair["robust_per_seed"]
    assert robust[0]["speedup"] == pytest.approx(745.57 / 324.83, rel=1e-3) and robust[1]["censored"]
    assert robust[1]["speedup"] == pytest.approx(robust[1]["baseline_step"] / 1000)
    assert pair["effect"]["censored"] == 1 and pair["evals_kl"] == 8 * pair["evals_base"] == 128
    assert speedup_verdict(sp, "digits").startswith("Inconclusive (digits)")  # one seed of two is no 1.5x
    assert compute_verdict(sp, "digits").startswith("Inconclusive (digits)")
    assert json.dumps(sp)  # serialisable for the artefact


def test_speedup_target_is_the_papers_factor_for_each_data_set():
    """"About 2x" on MNIST-32 and CelebAHQ-64, "more than 3x" on CIFAR10-32 and CelebAHQ-128 (Paper A, abstract, App. D)."""
    from kl_repro.paper_a.tables import speedup_target

    assert [speedup_target(d) for d in ("mnist", "celebahq64", "cifar10", "celebahq128", "digits")] == [2.0, 2.0, 3.0, 3.0, 2.0]
    base = _rows(0, [(250, 10.0), (500, 6.0), (750, 5.0), (1000, 5.5)])
    sp = speedup(_FakeResults({"digits/baseline-b16-long": base, "digits/kl8-b16-long": base}), "digits")
    assert sp["pairs"][0]["effect"]["target"] == 2.0


def test_speedup_verdicts():
    def mk(m, censored=False, seeds=(0.98, 1.0, 1.02)):
        per_seed = [{"speedup": m * f, "censored": censored, "baseline_plateaued": True} for f in seeds]
        return {"pairs": [{"kl": "KL-8d-b16", "baseline": "Baseline-b16", "evals_kl": 128, "evals_base": 16,
                           "effect": speedup_effect(per_seed, target=2.0, cost_ratio=1 / 8)}]}
    assert speedup_verdict(mk(2.5), "x").startswith("Holds (x): KL-8d-b16 reached the plateau level")
    assert "2.5x [2.4, 2.6] (95 % CI, 3 seeds)" in speedup_verdict(mk(2.5), "x")
    assert speedup_verdict(mk(1.0), "x").startswith("Inconclusive")  # 1x +- noise straddles "no speed-up"
    assert speedup_verdict(mk(0.7), "x").startswith("Does not hold at this scale")
    assert speedup_verdict(mk(0.5, censored=True), "x").startswith("Does not hold at this scale")  # never reached
    assert "3 of 3 KL seeds never reached it" in speedup_verdict(mk(0.5, censored=True), "x")
    assert speedup_verdict(mk(2.5, seeds=(1.0,)), "x").startswith("Not tested by this experiment, because one seed")
    assert compute_verdict(mk(2.5), "x").startswith("Does not hold at this scale (x): per network evaluation")


def _side_record(status: str) -> dict:
    return {"status": status, "error": "deliberate"}


def test_the_start_order_is_longest_first_with_unknown_times_first():
    from kl_repro.pipeline.scheduler import longest_first

    class Run:
        def __init__(self, key):
            self.key = key

    runs = [Run("a"), Run("b"), Run("c")]
    rows = {"a": {"train_h": 0.1, "eval_h": 0.0}, "b": {"train_h": 0.5, "eval_h": 0.1}, "c": {"train_h": None, "eval_h": None}}
    side = [SideTask("nb short", _side_record, est_s=60.0), SideTask("nb new", _side_record)]
    order = [x.key if isinstance(x, Run) else x.label for x in longest_first(runs, side, rows)]
    assert order == ["nb new", "b", "a", "nb short", "c"]  # unknown, 2160 s, 360 s, 60 s, then a run with no estimate (0)


@pytest.mark.slow
def test_run_matrix_trains_in_worker_processes_then_reuses(tmp_path, monkeypatch):
    """A two-run matrix through the scheduler's process pool: each run trains, logs to its train.log and gets its
    final number; a second pass reuses everything."""
    from kl_repro.pipeline.scheduler import run_matrix

    def two_runs(sec):
        sec["run"] = [r for r in sec["run"] if r["id"] in ("digits/cost-baseline-b16", "toy2d/baseline-b16")]
        toy = sec["run"][1]  # toy2d, one seed: checkpoint and evaluation at step 30
        sec["run"][1] = {**toy, "seeds": [0], "params": {**toy["params"], "steps": 30}}

    monkeypatch.setenv("KL_REPRO_RESULTS", str(tmp_path))
    profile = _matrix_with(two_runs)
    lines = []
    side = [SideTask("notebook ok", functools.partial(_side_record, "ok")),  # a chapter that reads no run
            SideTask("notebook broken", functools.partial(_side_record, "failed"), est_s=1.0)]
    assert run_matrix(profile, log=lines.append, workers=2, side=side) == ["notebook broken (deliberate)"]
    assert any("2 to train" in line for line in lines) and sum("done" in line for line in lines) == 3
    starts = [line.split("start")[1].strip() for line in lines if line.lstrip().startswith("start")]
    assert starts[0] == "notebook ok"  # unknown time counts as longest: it starts first
    assert "  FAILED   notebook broken" in lines
    plan = E.planned_runs(profile)
    assert [p.status() for p in plan] == ["finished", "finished"]
    assert "finished " in (plan[0].run_dir / "train.log").read_text()
    assert json.loads((plan[1].run_dir / "final.json").read_text())["result"]["metric"] == "energy"
    again = []
    assert run_matrix(profile, log=again.append) == [] and "2 reused" in again[0]


def test_the_progress_line_weights_each_step_by_its_runs_estimated_cost(tmp_path, monkeypatch):
    """Half of one KL-8d-b16 run of the mnist matrix done: the line shows its share of the estimated seconds, not of the steps."""
    from kl_repro.pipeline.scheduler import _Queue

    monkeypatch.setenv("KL_REPRO_RESULTS", str(tmp_path))
    mnist = load_profile("mnist")
    plan = E.planned_runs(mnist)
    kl = next(p for p in plan if p.key == "mnist/kl8-b16@s0")
    kl.run_dir.mkdir(parents=True)
    (kl.run_dir / "metrics.jsonl").write_text(json.dumps({"kind": "train", "step": 1000}) + "\n")
    lines = []
    _Queue(mnist, list(plan), set(), lines.append).report(0.0)
    cost = sum(p.spec.est_s_per_step * p.steps for p in plan)
    want = 100 * kl.spec.est_s_per_step * 1000 / cost
    assert f"progress {want:5.1f}% of the training" in lines[0]
    assert abs(want - 100 * 1000 / sum(p.steps for p in plan)) > 0.5  # unweighted would read differently
