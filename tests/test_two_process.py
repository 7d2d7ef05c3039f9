"""Data-parallel training in two CPU processes: ``torchrun --nproc_per_node 2 -m kl_repro.pipeline.cli train``.

The command a multi-GPU user launches, here on CPU (``accelerate`` joins the two processes over gloo;
CUDA runs the same code with NCCL).  One small toy2d KL run of a ``smoke``-sized matrix is trained:

1. in two processes it ends with the weights of ONE process with the same global batch ``B = 16``
   and ``grad_accum = 2``: process ``r`` takes micro-batch ``m = r`` of each step, with the images,
   flips and noise micro-batch ``m`` has in the single process, so the two runs differ only in
   where the gradient average is formed (the all-reduce of each process's gradient, divided by 2,
   against the accumulation of two halves).  Both are exact in binary floating point, so on CPU
   the weights agree bit for bit; the test allows ``TOL = 1e-6`` (absolute, on weights of order 0.1-1
   that the 8 steps move by more than 1e-3), room for a reduction that rounds differently;
2. only rank 0 writes: the run folder holds exactly the files of a one-process run, each line of
   ``metrics.jsonl`` once;
3. a SIGKILL of the launcher's process group mid-run (its workers die with it), then the same
   command again, ends bit-identical (weights, EMA, optimiser, RNG states, losses) to the
   uninterrupted two-process run;
4. the scheduler that ``make reproduce`` runs then finds the run finished and trains nothing.

About 3 launches of 3 processes each (mostly imports): roughly 40 s on an idle 2-core machine.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import kl_repro.paper_a.training.loop as loop
from kl_repro.core import store
from kl_repro.core.profiles import Profile, load_profile
from kl_repro.paper_a.matrix import planned_runs
from kl_repro.paper_a.training.checkpoint import verify_checkpoint
from kl_repro.paper_a.training.config import load_run_config
from kl_repro.paper_a.training.loop import train
from kl_repro.paper_a.training.run import Run
from kl_repro.pipeline import scheduler

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

REPO = Path(__file__).resolve().parents[1]
TORCHRUN = Path(sys.executable).with_name("torchrun")
TOL = 1e-6  # |weight difference| allowed between two processes and one process with the same global batch
DEFAULTS = {"dataset": "toy2d", "subset": 512, "threads": 1, "lr": 1e-3, "checkpoint_every": 3, "sample_every": 4,
            "eval_every": 0, "n_grid_samples": 8}
ROW = {"id": "toy2d/dp-kl4-b16", "label": "KL-4d-b16, 2 processes", "data": "toy2d",
       "params": {"model": "kl", "d": 4, "B": 16, "steps": 8}, "seeds": [0], "artefacts": [], "evaluate": False}
FILES = {".lock", "config.json", "run.json", "metrics.jsonl", "finished.json", "samples/step-00000004.pt",
         "samples/step-00000008.pt", *(f"checkpoints/step-0000000{s}.pt{x}" for s in (3, 6, 8) for x in ("", ".sha256"))}

# The CLI with one change: rank 0 stops for good after step 5's work (checkpoint 3 written, 6 not yet),
# so that the test kills the launcher at a known point.
PAUSING_CLI = """
import os, sys, time
import kl_repro.paper_a.training.loop as loop
from kl_repro.pipeline.cli import main

real = loop._after_step

def after_step(s, step, hooks, metrics):
    real(s, step, hooks, metrics)
    if step == 5 and s.main:
        with open(os.environ["PAUSE_MARK"] + ".tmp", "w") as f:
            f.write(str(os.getpid()))
        os.replace(os.environ["PAUSE_MARK"] + ".tmp", os.environ["PAUSE_MARK"])
        time.sleep(600)

loop._after_step = after_step
sys.exit(main(sys.argv[1:]))
"""


def smoke_sized_profile() -> Profile:
    """``smoke`` with a one-run paper-A matrix (the run under test, not evaluated): what `make reproduce` would plan."""
    smoke = load_profile("smoke")
    return Profile("smoke", {"name": "smoke", "description": smoke.description, "notebooks": smoke.get("notebooks"),
                             "paper_a": {"workers": 1, "defaults": {"toy2d": DEFAULTS}, "run": [ROW]}})


def launch(results: Path, params_file: Path, script: Path | None = None, **env) -> subprocess.Popen:
    """``torchrun --standalone --nproc_per_node 2 [-m kl_repro.pipeline.cli | script] train --profile smoke --config F``."""
    target = [str(script)] if script else ["-m", "kl_repro.pipeline.cli"]
    cmd = [str(TORCHRUN), "--standalone", "--nproc_per_node", "2", *target,
           "train", "--profile", "smoke", "--config", str(params_file), "--quiet"]
    return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True,  # its own process group: the one the test kills
                            env=dict(os.environ, KL_REPRO_RESULTS=str(results), OMP_NUM_THREADS="1",
                                     PYTHONUNBUFFERED="1", **env))


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the launcher's process group (its workers die with the launcher) unless it has ended."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)


def run_to_end(results: Path, params_file: Path) -> str:
    proc = launch(results, params_file)
    try:
        out, _ = proc.communicate(timeout=420)
    finally:
        kill_group(proc)
    assert proc.returncode == 0, out[-3000:]
    return out


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """The planned run, its parameters file, and its uninterrupted two-process run (results folder ``a``)."""
    base = tmp_path_factory.mktemp("two_process")
    assert TORCHRUN.exists(), f"{TORCHRUN} missing: torch's launcher comes with torch"
    profile = smoke_sized_profile()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KL_REPRO_RESULTS", str(base / "a"))  # where planned_runs puts the run folder
        planned = planned_runs(profile)[0]
    params_file = base / "params.json"
    params_file.write_text(json.dumps({k: v for k, v in planned.params.items() if k != "profile"}))
    assert load_run_config(params_file, runs_dir=planned.run_dir.parent) == planned.config
    out = run_to_end(base / "a", params_file)
    return {"base": base, "profile": profile, "planned": planned, "params": params_file, "out": out,
            "run": Run.open(planned.run_dir)}


@pytest.fixture(scope="module")
def one_process(setup):
    """The same global batch (B = 16) in one process as two micro-batches of 8 (``grad_accum = 2``)."""
    cfg = setup["planned"].config
    return train(cfg.replace(train=cfg.train.replace(grad_accum=2)), setup["base"] / "one", progress=False)


def final(run: Run) -> dict:
    return run.latest_checkpoint()[1]


def weights_diff(a: dict, b: dict) -> float:
    return max(float((a[p][k].double() - b[p][k].double()).abs().max())
               for p in ("model", "ema") for k in a[p] if a[p][k].is_floating_point())


def files(run: Run) -> set[str]:
    return {str(p.relative_to(run.dir)) for p in run.dir.rglob("*") if p.is_file()}


def test_two_processes_end_with_the_weights_of_one_process_with_the_same_global_batch(setup, one_process):
    two = setup["run"]
    assert two.finished and two.info()["num_processes"] == 2 and two.info()["device"].startswith("cpu")
    assert one_process.info()["num_processes"] == 1
    a, b = final(two), final(one_process)
    assert a["model"].keys() == b["model"].keys() and a["step"] == b["step"] == 8
    diff = weights_diff(a, b)
    moved = weights_diff(a, verify_checkpoint(two.checkpoint_path(3), two.hash))  # what steps 4-8 changed
    print(f"two processes vs one: max |weight difference| {diff:.3g}; steps 4-8 moved weights by up to {moved:.3g}")
    assert diff <= TOL and moved > 1000 * TOL
    rows2, rows1 = two.metrics(), one_process.metrics()
    assert [r["step"] for r in rows2] == [r["step"] for r in rows1] == list(range(1, 9))
    for r2, r1 in zip(rows2, rows1):  # the logged loss is the mean over processes (float32), the other a float64 sum
        assert r2["loss"] == pytest.approx(r1["loss"], rel=1e-6)
        assert r2["grad_norm"] == pytest.approx(r1["grad_norm"], rel=1e-5)


def test_only_rank_0_writes(setup, one_process):
    two = setup["run"]
    assert files(two) == FILES == files(one_process)  # nothing more than one process writes: no temporary or second files
    rows = [json.loads(line) for line in two.metrics_path.read_text().splitlines()]  # every line whole
    assert [(r["kind"], r["step"]) for r in rows if r["kind"] != "train"] == [("samples", 4), ("samples", 8)]
    assert [r["step"] for r in rows if r["kind"] == "train"] == list(range(1, 9))  # each step once
    assert store.read_json(two.dir / "config.json")["hash"] == two.hash
    for s in (3, 6, 8):
        assert verify_checkpoint(two.checkpoint_path(s), two.hash)["step"] == s
    assert setup["out"].count("(finished)") == 2  # both ranks ran to the end (each prints the run it returns)


def _wait_until_free(run_dir: Path, timeout: float = 120.0) -> None:
    """Wait until nobody holds the run's lock (the killed launcher's workers are gone)."""
    deadline = time.time() + timeout
    while True:
        try:
            with store.FolderLock(run_dir):
                return
        except store.LockBusy:
            assert time.time() < deadline, "a worker of the killed launcher still holds the run's lock"
            time.sleep(0.2)


def test_sigkill_of_the_launcher_then_the_same_command_is_bit_identical(setup, tmp_path):
    results, mark = setup["base"] / "b", tmp_path / "paused"
    script = tmp_path / "pausing_cli.py"
    script.write_text(PAUSING_CLI)
    proc = launch(results, setup["params"], script, PAUSE_MARK=str(mark))
    try:
        deadline = time.time() + 420
        while not mark.exists():
            assert proc.poll() is None, proc.communicate()[0][-3000:]
            assert time.time() < deadline, "the run did not reach step 5"
            time.sleep(0.1)
    finally:
        kill_group(proc)  # the launcher and everything in its process group, no clean-up
    proc.communicate(timeout=60)
    run = Run.open(results / "smoke" / "runs" / setup["run"].name)
    _wait_until_free(run.dir)
    rank0 = int(mark.read_text())
    assert not Path(f"/proc/{rank0}").exists() or "zombie" in Path(f"/proc/{rank0}/status").read_text()
    assert not run.finished and [p.name for p in run.checkpoints()] == ["step-00000003.pt"]
    assert max(r["step"] for r in run.metrics()) == 5

    run_to_end(results, setup["params"])  # the same command again
    ref = setup["run"]
    assert run.finished and run.info()["resumed_from_step"] == 3 and run.info()["num_processes"] == 2
    a, b = final(run), final(ref)
    for part in ("model", "ema"):
        for k in b[part]:
            assert torch.equal(a[part][k], b[part][k]), f"{part}.{k} differs"
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"]) and a["rng"]["python"] == b["rng"]["python"]
    assert torch.equal(a["rng"]["numpy"]["keys"], b["rng"]["numpy"]["keys"]) and a["rng"]["numpy"]["pos"] == b["rng"]["numpy"]["pos"]
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    assert sa.keys() == sb.keys() and all(torch.equal(sa[i][k], sb[i][k]) for i in sb for k in sb[i])
    assert [r["loss"] for r in run.metrics()] == [r["loss"] for r in ref.metrics()]
    assert files(run) == FILES  # the killed writes left nothing behind


def test_the_scheduler_then_finds_the_run_finished_and_trains_nothing(setup, monkeypatch):
    monkeypatch.setenv("KL_REPRO_RESULTS", str(setup["base"] / "a"))
    profile, planned = setup["profile"], setup["planned"]
    monkeypatch.setattr(loop, "_train", lambda *a, **k: pytest.fail("a finished run must not train again"))
    monkeypatch.setattr(store, "worker_pool", lambda *a, **k: pytest.fail("no worker may be started"))
    assert [(p.key, p.status()) for p in planned_runs(profile)] == [(planned.key, "finished")]
    assert scheduler.pending_runs(profile) == []  # `kl-repro plan --format commands` has nothing to run
    lines = []
    assert scheduler.run_matrix(profile, log=lines.append) == []  # make reproduce's training stage
    assert "1 reused, 0 to train" in lines[0] and any("finished" in line and planned.key in line for line in lines)
    assert train(planned.config, planned.run_dir.parent, progress=False).finished
