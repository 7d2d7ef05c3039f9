"""`make gpu-check` (bench/gpu_check.py) on a machine without CUDA: it runs its CPU-reachable parts at tiny
size, reports every GPU-only item as not checked, exits 0, and its summary is one JSON object.

One subprocess with ``--cpu --quick`` (the CPU path even where CUDA is present); no timings are asserted.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kl_repro.core.profiles import load_profile
from kl_repro.core.registry import paper_values
from kl_repro.pipeline.plan import GPU_CHECK_FILE, cost_model

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import gpu_check  # noqa: E402


@pytest.fixture(scope="module")
def summary(tmp_path_factory):
    results = tmp_path_factory.mktemp("gpu_check")
    env = {"PATH": "", "HOME": os.environ.get("HOME", "/tmp"), "KL_REPRO_RESULTS": str(results), "KL_REPRO_DATA": str(results / "no-data"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "bench.gpu_check", "--cpu", "--quick"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    assert json.loads((results / GPU_CHECK_FILE).read_text()) == out  # the file the plan reads
    return out, results


def test_gpu_only_items_are_reported_as_not_checked(summary):
    s, _ = summary
    assert s["cuda"] is False and s["failed"] == [] and "cost_model" not in s
    assert all(item.startswith("not checked without CUDA: ") for item in s["not_checked"])
    named = {item.split(": ")[1] for item in s["not_checked"]}
    assert named == set(gpu_check.GPU_ONLY) >= {"train_steps", "peak_memory", "step_ratios", "ddim", "fid", "two_process",
                                                 "score_nets", "cost_model"}
    assert s["two_process"]["checked"] is False and s["score_nets"]["checked"] is False


def test_cpu_parts_ran_beside_table2(summary):
    s, _ = summary
    t2 = paper_values("A")["table2"]
    rows = {r["model"]: r for r in s["train_steps"]["rows"]}
    assert set(rows) == set(gpu_check.MODELS) and set(t2["columns"]) <= set(rows)
    for name, r in rows.items():
        assert r["finite_loss"] and r["precision"] == "no" and r["step_s"] > 0 and r["gflop_per_step"] > 0, name
        if name in t2["columns"]:
            assert r["paper_table2"]["vram_mb"] == t2["vram_mb"][name]
            assert r["paper_table2"]["s_per_step"] == pytest.approx(t2["hours_per_10k_steps"][name] * 0.36, abs=1e-3)
    assert rows["KL-8d"]["network_rows"] == 8 * rows["Baseline-b16"]["network_rows"]
    assert rows["KL-10d4-b16"]["network_rows"] == 4 * rows["Baseline-b16"]["network_rows"]
    ratios = {r["model"]: r for r in s["train_steps"]["step_ratios"]}
    assert ratios["KL-8d"]["paper"] == pytest.approx(13.983 / 4.617, abs=0.01)  # Table 2: 13h59m / 4h37m
    assert ratios["KL*-8d-b16"]["paper"] is None and ratios["KL-8d"]["ours"] > 0
    for name, d in s["ddim"].items():
        assert d["finite"] and d["in_range"] and d["S"] == 20 and d["eta"] == 1.0, name
    fid = s["fid"]
    assert fid["metric"] == "FID" and fid["finite"] and fid["value"] > 0 and fid["samples"] >= 2
    assert fid["samples"] == s["ddim"]["Baseline-b16"]["images"] and f"random: {fid['samples']} " in fid["reference"]
    assert fid["reference"].startswith("random:")  # KL_REPRO_DATA points at an empty folder


def test_a_cpu_summary_leaves_the_plan_on_its_derived_costs(summary, monkeypatch):
    _, results = summary
    monkeypatch.setenv("KL_REPRO_RESULTS", str(results))
    assert cost_model(load_profile("gpu")).kind == "derived"


def test_help_answers(capsys):
    with pytest.raises(SystemExit) as e:
        gpu_check.main(["--help"])
    assert e.value.code == 0 and "not checked without CUDA" in capsys.readouterr().out


def test_the_measured_cost_model_is_what_the_plan_reads(tmp_path, monkeypatch):
    steps = {"what": "cifar10 32x32, paper U-Net", "rows": [{"model": "Baseline-b16", "step_s": 0.05, "network_rows": 16},
                                                          {"model": "KL-8d", "step_s": 0.2, "network_rows": 128}]}
    ddim = {"Baseline-b16": {"ms_per_network_row": 0.1}, "KL-8d": {"ms_per_network_row": 0.05}}
    cm = gpu_check.cost_model(steps, ddim, {"ms_per_feature_image": 0.5, "samples": 1000}, "NVIDIA Test GPU")
    (tmp_path / GPU_CHECK_FILE).write_text(json.dumps({"cuda": True, "cost_model": cm}))
    monkeypatch.setenv("KL_REPRO_RESULTS", str(tmp_path))
    m = cost_model(load_profile("gpu"))
    per_row = 0.15 / 112  # two-point fit: (0.2 s - 0.05 s) over (128 - 16) rows
    assert m.kind == "gpu-check" and m.device == "NVIDIA Test GPU"
    assert m.s_per_image_step == pytest.approx(per_row) and m.step_overhead_s == pytest.approx(0.05 - 16 * per_row)
    assert m.s_per_forward == pytest.approx(1e-4) and m.s_per_feature == pytest.approx(5e-4)  # the slower DDIM row: conservative
