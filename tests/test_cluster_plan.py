"""The matrix on a cluster: `kl-repro plan --format commands|slurm` and workers sharing one results folder.

The printed commands run as separate processes, each launched twice at once on the same folder: the
run folder's lock makes the second wait (or find the run finished), so no run trains twice, and
afterwards the scheduler of `make reproduce` finds every run finished and trains nothing.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from kl_repro.core.config import ConfigError
from kl_repro.core.profiles import Profile, load_profile
from kl_repro.paper_a.matrix import planned_runs
from kl_repro.paper_a.training.run import Run
from kl_repro.pipeline.scheduler import pending_runs, run_matrix, slurm_script, waves

REPO = Path(__file__).resolve().parents[1]
# a baseline run, a fine-tuning run that starts from it, and a cost-only run: two waves
KEYS = ("digits/baseline-b16@s0", "digits/cost-baseline-b16@s0", "digits/ft-klstar8-b16@s0")
# trained for real: a cost-only run and an evaluated one (final number in final.json), both a few seconds
TRAINED = ("digits/cost-baseline-b16@s0", "toy2d/baseline-b16@s0")


def _subset_profile(keys) -> Profile:
    """The smoke profile with only the runs and seeds of ``keys`` in its matrix (the run folders are the same: keyed by config)."""
    smoke = load_profile("smoke")
    data = {key: smoke.get(key) for key in ("name", "description", "notebooks", "paper_a")}
    seeds: dict[str, list[int]] = {}
    for k in keys:
        rid, seed = k.split("@s")
        seeds.setdefault(rid, []).append(int(seed))
    data["paper_a"] = {**data["paper_a"], "run": [{**r, "seeds": seeds[r["id"]]} for r in data["paper_a"]["run"] if r["id"] in seeds]}
    return Profile("smoke", data)


def test_waves_put_fine_tuning_runs_after_their_base_run(tmp_path, monkeypatch):
    monkeypatch.setenv("KL_REPRO_RESULTS", str(tmp_path))
    smoke = load_profile("smoke")
    runs = pending_runs(smoke, [k for k in KEYS])
    assert [[p.key for p in w] for w in waves(runs)] == [list(KEYS[:2]), [KEYS[2]]]
    with pytest.raises(ConfigError, match="neither finished nor among the selected runs"):
        waves(pending_runs(smoke, [KEYS[2]]))  # its base run is not finished and not selected


FAKE_SBATCH = """#!/bin/bash
# A stand-in for sbatch: records its arguments, then runs every task of the array at once, twice each, and waits.
echo "$*" >> "$FAKE_LOG/sbatch.log"
n=$(( $(wc -l < "$FAKE_LOG/sbatch.log") ))
for a in "$@"; do case $a in --array=*) last=${a#--array=0-};; esac; done
script=${@: -2:1}; list=${@: -1}
for i in $(seq 0 "$last"); do
  SLURM_ARRAY_TASK_ID=$i "$script" "$list" & SLURM_ARRAY_TASK_ID=$i "$script" "$list" &
done
wait
echo "100$n;cluster"
"""

FAKE_WORKER = """#!/bin/bash
echo "$KL_REPRO_RESULTS $*" >> "$FAKE_LOG/worker.log"
"""


def test_slurm_script_submits_one_array_per_wave_and_each_task_reads_its_run(tmp_path, monkeypatch):
    """The script (run with a stand-in sbatch) writes the run lists, submits array 2 with --dependency=afterok on
    array 1, and array task i runs `worker --key <line i+1>` against the shared results folder."""
    results, bin_dir = tmp_path / "results", tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("sbatch", FAKE_SBATCH), ("fake-kl-repro", FAKE_WORKER)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("KL_REPRO_RESULTS", str(results))
    smoke = load_profile("smoke")
    script = slurm_script(smoke, pending_runs(smoke, list(KEYS)), launcher=[str(bin_dir / "fake-kl-repro")])
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", FAKE_LOG=str(tmp_path), SBATCH_OPTS="--time=1:00:00")
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "array 1: 2 run(s), job 1001" in proc.stdout and "array 2: 1 run(s), job 1002" in proc.stdout
    calls = (tmp_path / "sbatch.log").read_text().splitlines()
    assert len(calls) == 2 and "--array=0-1" in calls[0] and "--dependency" not in calls[0]
    assert "--dependency=afterok:1001 " in calls[1] and "--array=0-0" in calls[1] and "--time=1:00:00" in calls[0]
    launched = sorted((tmp_path / "worker.log").read_text().splitlines())
    assert launched == sorted(f"{results.resolve()} worker --profile smoke --key {k}" for k in KEYS for _ in range(2))
    assert (results / "smoke" / "slurm" / "wave2.txt").read_text() == KEYS[2] + "\n"


def _commands_by_wave(text: str) -> list[list[str]]:
    out: list[list[str]] = []
    for line in text.splitlines():
        if line.startswith("# wave"):
            out.append([])
        elif line and not line.startswith("#"):
            out[-1].append(line)
    return out


@pytest.mark.slow
def test_printed_commands_run_twice_at_once_train_each_run_exactly_once(tmp_path, monkeypatch):
    results = tmp_path / "results"
    only = [arg for key in TRAINED for arg in ("--only", key)]
    proc = subprocess.run([sys.executable, "-m", "kl_repro.pipeline.cli", "plan", "--profile", "smoke", "--format",
                           "commands", *only], capture_output=True, text=True, cwd=REPO, timeout=300,
                          env=dict(os.environ, KL_REPRO_RESULTS=str(results)))
    assert proc.returncode == 0, proc.stderr
    by_wave = _commands_by_wave(proc.stdout)
    assert [len(w) for w in by_wave] == [2] and f"KL_REPRO_RESULTS={results.resolve()}" in by_wave[0][0]
    outputs: dict[str, list[str]] = {}
    for wave in by_wave:
        procs = [(cmd, subprocess.Popen(cmd, shell=True, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        text=True, env=dict(os.environ, PYTHONUNBUFFERED="1")))
                 for cmd in wave for _ in range(2)]  # every command twice, all at once
        for cmd, proc in procs:
            out, _ = proc.communicate(timeout=600)
            assert proc.returncode == 0, out[-3000:]
            outputs.setdefault(cmd.rsplit(" ", 1)[-1], []).append(out)
    monkeypatch.setenv("KL_REPRO_RESULTS", str(results))
    plan = {p.key: p for p in planned_runs(load_profile("smoke"))}
    for key in TRAINED:
        p = plan[key]
        run = Run.open(p.run_dir)
        assert p.status() == "finished" and run.finished
        assert [r["step"] for r in run.metrics("train")] == list(range(1, p.steps + 1))  # each step trained once
        assert run.info()["resumed_from_step"] == 0
        assert sum("(already; nothing to do)" in out for out in outputs[key]) == 1, outputs[key]  # one of two trained
    assert any("this worker waits" in out for outs in outputs.values() for out in outs)  # the two did overlap
    assert (plan[TRAINED[1]].run_dir / "final.json").exists()  # the worker's final evaluation, as the matrix's
    assert pending_runs(load_profile("smoke"), TRAINED) == []
    log: list[str] = []
    assert run_matrix(_subset_profile(TRAINED), log=log.append) == [] and "2 reused, 0 to train" in log[0]  # reproduce
