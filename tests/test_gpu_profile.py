"""The `gpu` profile: paper A's headline claims at the paper's network and settings within about one GPU-day.

No training here: every run's RunConfig is built, the plan's estimate is computed from the profile's
cost model (and from a `make gpu-check` measurement when one is stored), and the cost model's FLOP
counts are checked against a count of the network itself.
"""

import json

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from kl_repro.chapters.train_page import TrainPageConfig
from kl_repro.core.profiles import load_profile
from kl_repro.core.registry import paper_values
from kl_repro.paper_a.matrix import load_matrix, planned_runs
from kl_repro.paper_a.training.config import run_name
from kl_repro.paper_a.training.precision import resolve_mixed_precision
from kl_repro.paper_a.training.run import build_model
from kl_repro.pipeline import cli
from kl_repro.pipeline.plan import GPU_CHECK_FILE, cost_model, network_rows, plan_rows, plan_totals

HEADLINE_PAIRS = {"mnist": ("Baseline-b16", "KL-8d-b16"), "cifar10": ("Baseline-b128", "KL-8d-b64")}  # Sec. 6.3's speed-ups


@pytest.fixture()
def gpu(tmp_path, monkeypatch):
    monkeypatch.setenv("KL_REPRO_RESULTS", str(tmp_path))  # no stored runs, no gpu-check measurement
    return load_profile("gpu")


def test_every_run_is_the_papers_network_and_settings(gpu):
    plan = planned_runs(gpu)
    assert len(plan) >= 12
    for p in plan:
        cfg = p.config
        assert (cfg.net.kind, cfg.net.dim, cfg.net.dim_mults) == ("unet", 64, (1, 2, 4, 8)), p.key
        assert (cfg.net.attn_heads, cfg.net.attn_dim_head) == (4, 32), p.key
        assert resolve_mixed_precision(cfg.train.mixed_precision, "cuda") == "fp16", p.key  # fp16 AMP on the GPU
        assert cfg.data.name in ("mnist", "cifar10") and cfg.data.res == 32, p.key
        assert cfg.train.lr == pytest.approx(1e-4) and cfg.sampler.eta == 1.0 and cfg.sampler.S == 20, p.key
        assert cfg.diffusion.T == (1000 if cfg.diffusion.model == "baseline" else 20), p.key
    for ev in load_matrix(gpu).evals.values():
        assert ev.metric == "FID" and ev.proxy_samples >= 10_000 and ev.final_samples >= 10_000


def test_headline_pairs_have_three_seeds_and_cover_table1_and_fig2(gpu):
    m = load_matrix(gpu)
    seeds = {(r.data, r.label): len(r.seeds) for r in m.runs}
    for data, pair in HEADLINE_PAIRS.items():
        for label in pair:
            assert seeds.get((data, label), 0) >= 3, (data, label)
    pv = paper_values("A")
    wanted = {"mnist": set(pv["table1"]["MNIST-32"]), "cifar10": set(pv["table1_cifar"]["CIFAR10-32"]) - {"DDIM (ref.)"}}
    for data, labels in wanted.items():
        assert labels <= {label for d, label in seeds if d == data}, (data, labels)
    made = {a for r in m.runs for a in r.artefacts}
    assert {"A.table1", "A.fig2a", "A.fig2c", "A.speedup"} <= made
    assert not {"A.table1", "A.fig2a", "A.fig2c"} & set(m.absent)


def test_plan_fits_one_gpu_day_and_says_where_each_estimate_comes_from(gpu):
    rows = plan_rows(gpu)
    tot = plan_totals(gpu, rows)
    assert tot["unknown"] == 0 and tot["cost_model"].kind == "derived"
    assert 12.0 <= tot["total_h"] <= 24.0, tot
    assert tot["eval_h"] > 0.2 * tot["train_h"] and tot["notebooks_h"] > 0
    assert all(r["source"] == "derived" and r["eval_h"] > 0 for r in rows)
    cm = tot["cost_model"]
    for p in planned_runs(gpu):  # the rows' est_s_per_step (read by make reproduce's log) agree with the cost model
        per_step = cm.step_overhead_s + network_rows(p.config)[0] * cm.s_per_image_step
        assert p.spec.est_s_per_step == pytest.approx(per_step, rel=0.01), p.key
    # a KL-8d-b16 step costs 8 network rows per image: its eval and training dwarf the baseline's of the same B
    by = {r["run"]: r for r in rows}
    assert by["mnist/kl8-b16@s0"]["train_h"] > 3 * by["mnist/baseline-b16@s0"]["train_h"]
    assert by["mnist/kl8-b16@s0"]["eval_h"] == pytest.approx(8 * by["mnist/baseline-b16@s0"]["eval_h"], rel=0.2)


def test_a_gpu_check_measurement_replaces_the_derived_costs(gpu, tmp_path, capsys):
    derived = plan_totals(gpu)["total_h"]
    cm = cost_model(gpu)
    measured = {"step_overhead_s": cm.step_overhead_s * 2, "s_per_image_step": cm.s_per_image_step * 2,
                "s_per_forward": cm.s_per_forward * 2, "s_per_feature": cm.s_per_feature * 2, "resolution": 32,
                "device": "NVIDIA Test GPU", "source": "make gpu-check, test"}
    (tmp_path / GPU_CHECK_FILE).write_text(json.dumps({"cuda": True, "cost_model": measured}))
    tot = plan_totals(gpu)
    assert tot["cost_model"].kind == "gpu-check" and {r["source"] for r in plan_rows(gpu)} == {"gpu-check"}
    assert tot["total_h"] - tot["notebooks_h"] == pytest.approx(2 * (derived - tot["notebooks_h"]), rel=1e-6)
    assert cli.main(["plan", "--profile", "gpu"]) == 0
    out = capsys.readouterr().out
    assert "GPU-hours" in out and "measured by make gpu-check on NVIDIA Test GPU" in out
    (tmp_path / GPU_CHECK_FILE).write_text(json.dumps({"cuda": False, "not_checked": ["everything"]}))
    assert cost_model(gpu).kind == "derived"  # a CPU-only check measures nothing the plan can use


def test_cost_models_flop_counts_are_the_networks(gpu):
    sec = gpu["paper_a"]["cost"]
    p = next(q for q in planned_runs(gpu) if q.config.data.name == "cifar10" and q.config.diffusion.model == "baseline")
    with torch.device("meta"):  # shapes only: FLOPs are counted without computing anything
        net = build_model(p.config)
        x, t = torch.randn(2, 3, 32, 32), torch.rand(2)
    with FlopCounterMode(display=False) as fwd, torch.no_grad():
        net(x, t)
    with FlopCounterMode(display=False) as step:
        net(x, t).square().mean().backward()
    assert fwd.get_total_flops() / 2e9 == pytest.approx(sec["gflop_per_forward"], rel=0.02)
    assert step.get_total_flops() / 2e9 == pytest.approx(sec["gflop_per_image_step"], rel=0.02)


def test_notebook_03_reuses_a_matrix_run(gpu):
    page = TrainPageConfig(**gpu.notebook_parameters("03_train"))
    assert run_name(page.run_config()) in {p.run_dir.name for p in planned_runs(gpu)}
