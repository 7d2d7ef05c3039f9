"""Reliability (issue 8): kill -9 at random points, corrupted checkpoints, non-finite losses, concurrent processes,
hostile inputs, bounded disk use.  Nothing finished is ever lost or silently replaced.

``tests/test_train.py`` has the single-kill resume, the truncated-checkpoint fallback and the NaN stop;
these tests repeat the kill at random points, check every file a run leaves, and go through the
command line and the locks.
"""

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from kl_repro.core.config import ConfigError, to_dict
from kl_repro.data import DataConfig
from kl_repro.paper_a.losses import DiffusionConfig
from kl_repro.nets import NetConfig
from kl_repro.paper_a.training.checkpoint import CheckpointError, verify_checkpoint
from kl_repro.paper_a.training.config import RunConfig, TrainConfig, _hash_view, run_name
from kl_repro.paper_a.training.run import Run
from kl_repro.core.store import FolderLock, LockBusy
from kl_repro.paper_a.training.loop import TrainingDiverged, train

REPO = Path(__file__).resolve().parents[1]
TINY = NetConfig(dim=8, dim_mults=(1, 2), attn_heads=1, attn_dim_head=8)


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def tiny(steps=6, seed=0, **train_kw):
    kw = dict(steps=steps, B=8, seed=seed, checkpoint_every=2, keep_checkpoints=3, sample_every=0, n_grid_samples=0,
              eval_every=0, threads=1)
    kw.update(train_kw)
    return RunConfig(data=DataConfig(name="digits", subset=64), net=TINY, diffusion=DiffusionConfig(model="kl", d=2),
                     train=TrainConfig(**kw))


def final_payload(run: Run) -> dict:
    return run.latest_checkpoint()[1]


def assert_same_weights(a: dict, b: dict) -> None:
    assert a["step"] == b["step"]
    for part in ("model", "ema"):
        assert a[part].keys() == b[part].keys()
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), f"{part}.{k} differs"


def cli(*args, env_extra=None, timeout=300) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONUNBUFFERED="1", **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "kl_repro.pipeline.cli", *args], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=REPO)


def check_run_folder(folder: Path, cfg_hash: str, finished: bool = False) -> None:
    """Every file of a run folder is complete and verifiable; only dot-files may be temporary.

    Checkpoints verify (size, SHA-256, config); JSON files parse; PNG grids decode; every complete
    line of ``metrics.jsonl`` parses (only a last line without its newline may be torn).  A checksum
    sidecar may precede its checkpoint (it is written first).  Once ``finished``: no temporary file,
    no orphan sidecar, no torn line.
    """
    from PIL import Image

    for p in sorted(folder.rglob("*")):
        if p.is_dir():
            continue
        rel = p.relative_to(folder)
        assert not p.name.endswith(".bad"), f"{rel}: a kill left a corrupt checkpoint"
        if p.name.startswith("."):
            assert p.name == ".lock" or (p.name.endswith(".tmp") and not finished), f"unexpected file {rel}"
        elif p.suffix == ".pt" and p.parent.name == "checkpoints":
            verify_checkpoint(p, cfg_hash)  # raises CheckpointError when incomplete
        elif p.name.endswith(".pt.sha256"):
            json.loads(p.read_text())
            assert not finished or p.with_name(p.name[: -len(".sha256")]).exists(), f"orphan sidecar {rel}"
        elif p.suffix == ".json":
            json.loads(p.read_text())
        elif p.suffix == ".png":
            with Image.open(p) as im:
                im.verify()
        elif p.name == "metrics.jsonl":
            text = p.read_text()
            lines = text.split("\n")
            complete, tail = lines[:-1], lines[-1]
            for line in complete:
                json.loads(line)
            assert tail == "" or not finished, "torn metrics line in a finished run"
        else:
            raise AssertionError(f"unexpected file {rel}")


# --- kill -9 at random points --------------------------------------------------------------------

def _train_rows(folder: Path) -> int:
    try:
        return (folder / "metrics.jsonl").read_text().count('"kind": "train"')
    except FileNotFoundError:
        return 0


def _cli_exit(argv: list[str]) -> None:
    from kl_repro.pipeline.cli import main

    sys.exit(main(argv))


def launch_cli(argv: list[str]):
    """``kl-repro <argv>`` in a forked child process (the imports are inherited, so it starts at once)."""
    import multiprocessing

    proc = multiprocessing.get_context("fork").Process(target=_cli_exit, args=(argv,))
    proc.start()
    return proc


@pytest.mark.slow
def test_repeated_sigkill_at_random_points_resumes_bit_identical(tmp_path):
    """SIGKILL `kl-repro train` at random moments (steps, checkpoint and grid writes, pruning), at least 5 times;
    after each kill every file is complete or absent; the finished run equals an uninterrupted one bit for bit."""
    cfg = tiny(steps=24, checkpoint_every=2, keep_checkpoints=2, sample_every=6, n_grid_samples=4)
    reference = train(cfg, tmp_path / "ref", progress=False)
    cfg_file = tmp_path / "cfg.json"
    cfg_file.write_text(json.dumps(to_dict(cfg)))
    runs = tmp_path / "runs"
    folder = runs / run_name(cfg)
    rng = random.Random(8)
    argv = ["train", "--config", str(cfg_file), "--runs-dir", str(runs), "--quiet"]
    kills, launches = [], 0
    while not (folder / "finished.json").exists():
        launches += 1
        assert launches <= 30, "the run does not progress between kills"
        before = _train_rows(folder)
        proc = launch_cli(argv)
        if len(kills) < 6:
            deadline = time.monotonic() + 120
            while proc.is_alive() and _train_rows(folder) <= before and time.monotonic() < deadline:
                time.sleep(0.002)  # until a first new step is logged (after a resume, re-done steps count too)
            time.sleep(rng.uniform(0.0, 0.4))
            if proc.is_alive():
                os.kill(proc.pid, signal.SIGKILL)
                kills.append(_train_rows(folder))
        proc.join(timeout=300)
        assert proc.exitcode in (0, -signal.SIGKILL), f"kl-repro train exited with {proc.exitcode}"
        check_run_folder(folder, reference.hash, finished=proc.exitcode == 0)
    assert len(kills) >= 5, kills
    run = Run.open(folder)
    check_run_folder(folder, reference.hash, finished=True)
    assert_same_weights(final_payload(run), final_payload(reference))
    assert [r["step"] for r in run.metrics()] == list(range(1, 25))
    assert [r["loss"] for r in run.metrics()] == [r["loss"] for r in reference.metrics()]
    assert [p.name for p in run.checkpoints()] == ["step-00000022.pt", "step-00000024.pt"]


def test_stale_temporaries_and_orphan_sidecars_are_removed_on_restart(tmp_path):
    """What a kill can leave (a ``.*.tmp`` of an atomic write, a sidecar written before its checkpoint) is cleaned
    by the next training process; the checkpoints themselves are untouched."""
    cfg = tiny(steps=4)
    run = train(cfg, tmp_path, progress=False)
    (run.dir / "finished.json").unlink()
    ckpts = {p.name: p.read_bytes() for p in run.ckpt_dir.iterdir()}
    (run.ckpt_dir / ".step-00000006.pt.x1y2.tmp").write_bytes(b"partial")
    (run.dir / ".metrics.jsonl.abc.tmp").write_text("{")
    (run.ckpt_dir / "step-00000006.pt.sha256").write_text(json.dumps({"sha256": "0" * 64, "bytes": 1, "step": 6,
                                                                      "config_hash": run.hash}))
    run = train(cfg, tmp_path, progress=False)
    assert run.finished
    check_run_folder(run.dir, run.hash, finished=True)
    assert {p.name: p.read_bytes() for p in run.ckpt_dir.iterdir()} == ckpts


# --- corrupted checkpoints -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    """An uninterrupted run: 6 steps, checkpoints at 2, 4, 6."""
    return train(tiny(), tmp_path_factory.mktemp("ref"), progress=False)


@pytest.fixture(scope="module")
def foreign_run(tmp_path_factory):
    """The same run with another seed: its checkpoints belong to another configuration."""
    return train(tiny(seed=1), tmp_path_factory.mktemp("foreign"), progress=False)


def _corrupt(path: Path, how: str, foreign: Run) -> None:
    if how == "truncated":
        path.write_bytes(path.read_bytes()[:1000])
    elif how == "flipped":
        data = bytearray(path.read_bytes())
        for i in (len(data) // 3, len(data) // 2):
            data[i] ^= 0xFF
        path.write_bytes(bytes(data))
    else:  # a checkpoint of another configuration, with its own (valid) sidecar
        src = foreign.checkpoint_path(6)
        shutil.copy(src, path)
        shutil.copy(src.with_name(src.name + ".sha256"), path.with_name(path.name + ".sha256"))


@pytest.mark.parametrize("how,reason", [("truncated", "truncated"), ("flipped", "SHA-256 mismatch"),
                                        ("foreign", "written for config")])
def test_corrupt_checkpoint_is_reported_kept_and_the_previous_used(reference_run, foreign_run, tmp_path, capsys, how, reason):
    folder = tmp_path / reference_run.name
    shutil.copytree(reference_run.dir, folder)
    (folder / "finished.json").unlink()
    last = folder / "checkpoints" / "step-00000006.pt"
    _corrupt(last, how, foreign_run)
    bad_bytes = last.read_bytes()
    good = {p.name: p.read_bytes() for p in (folder / "checkpoints").glob("step-0000000[24].pt*")}

    with pytest.raises(CheckpointError, match=reason):
        verify_checkpoint(last, reference_run.hash)
    # readers (sampling, evaluation) fall back to step 4 and change nothing on disk
    model = Run.open(folder).load_model()
    assert not list(folder.rglob("*.bad")) and last.read_bytes() == bad_bytes
    assert isinstance(model, torch.nn.Module)

    capsys.readouterr()
    run = train(reference_run.config, tmp_path, progress=False)  # the trainer reports, keeps the file aside, resumes
    out = capsys.readouterr().out
    assert f"skipping bad checkpoint: {last}" in out and reason in out
    assert (folder / "checkpoints" / "step-00000006.pt.bad").read_bytes() == bad_bytes  # kept for inspection, intact
    assert run.info()["resumed_from_step"] == 4
    assert {p.name: p.read_bytes() for p in (folder / "checkpoints").glob("step-0000000[24].pt*")} == good
    assert_same_weights(final_payload(run), final_payload(reference_run))


# --- non-finite losses ------------------------------------------------------------------------------

@pytest.mark.parametrize("poison", [float("inf"), float("nan")])
def test_non_finite_data_stops_training_keeps_the_checkpoint_and_a_restart_recovers(reference_run, tmp_path, monkeypatch, poison):
    """An Inf/NaN pixel in the batch of step 5 makes the loss non-finite: the run stops naming step 5 and the
    checkpoint of step 4; nothing of step 5 is stored; once the data are sound the run resumes and ends bit-identical."""
    import kl_repro.data as D

    real_batch = D.ImageDataset.batch
    calls = []

    def poisoned(self, indices, flip_mask=None):
        x = real_batch(self, indices, flip_mask)
        calls.append(1)
        if len(calls) == 5:
            x = x.clone()
            x[0, 0, 3, 3] = poison
        return x

    monkeypatch.setattr(D.ImageDataset, "batch", poisoned)
    cfg = reference_run.config
    with pytest.raises(TrainingDiverged, match=r"(nan|inf) at step 5.*step-00000004\.pt"):
        train(cfg, tmp_path, progress=False)
    run = Run(tmp_path / run_name(cfg), cfg)
    assert not run.finished
    assert [p.name for p in run.checkpoints()] == ["step-00000002.pt", "step-00000004.pt"]
    assert max(r["step"] for r in run.metrics()) == 4
    check_run_folder(run.dir, run.hash)

    monkeypatch.setattr(D.ImageDataset, "batch", real_batch)
    run = train(cfg, tmp_path, progress=False)
    assert run.info()["resumed_from_step"] == 4
    assert_same_weights(final_payload(run), final_payload(reference_run))


# --- concurrent processes ------------------------------------------------------------------------

HOLD_SCRIPT = """
import json, sys, time
from pathlib import Path
import torch
from kl_repro.core.config import from_dict
from kl_repro.paper_a.training.config import RunConfig
from kl_repro.paper_a.training.loop import train

torch.set_num_threads(1)
cfg = from_dict(RunConfig, json.load(open(sys.argv[1])))
started, release = Path(sys.argv[3]), Path(sys.argv[4])

def hold(step, model_ema, run):  # pause inside the training loop until the test says so
    if step == 2:
        started.write_text("training")
        while not release.exists():
            time.sleep(0.01)

train(cfg, sys.argv[2], hooks=[hold], progress=False)
"""


@pytest.mark.slow
def test_two_processes_never_train_the_same_run(reference_run, tmp_path):
    """While one process trains a run, a second `kl-repro train` (and `train()` here) refuses naming the holder's pid;
    the first one finishes undisturbed, bit-identical to the reference."""
    cfg = reference_run.config.replace(train=reference_run.config.train.replace(eval_every=1))
    cfg_file = tmp_path / "cfg.json"
    cfg_file.write_text(json.dumps(to_dict(cfg)))
    runs, started, release = tmp_path / "runs", tmp_path / "started", tmp_path / "release"
    first = subprocess.Popen([sys.executable, "-c", HOLD_SCRIPT, str(cfg_file), str(runs), str(started), str(release)],
                             cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not started.exists():
            assert first.poll() is None, first.communicate()[1][-3000:]
            assert time.monotonic() < deadline
            time.sleep(0.02)
        folder = runs / run_name(cfg)
        snapshot = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
        second = cli("train", "--config", str(cfg_file), "--runs-dir", str(runs), "--quiet")
        assert second.returncode == 3
        assert f"in use by another process (pid {first.pid})" in second.stderr
        with pytest.raises(LockBusy, match=f"pid {first.pid}"):
            train(cfg, runs, progress=False)
        assert {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()} == snapshot  # the refusals wrote nothing
    finally:
        release.write_text("go")
        _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err[-3000:]
    run = Run.open(folder)
    assert run.finished
    assert_same_weights(final_payload(run), final_payload(reference_run))


@pytest.mark.slow
def test_second_reproduce_on_the_same_results_folder_refuses(tmp_path):
    """`kl-repro reproduce` exits 3 naming the pid holding ``results/<profile>``, before doing any work."""
    results = tmp_path / "results"
    with FolderLock(results / "smoke"):
        proc = cli("reproduce", "--profile", "smoke", "--build-root", str(tmp_path / "build"),
                   env_extra={"KL_REPRO_RESULTS": str(results)})
        assert proc.returncode == 3, proc.stderr[-3000:]
        assert f"in use by another process (pid {os.getpid()})" in proc.stderr
        with pytest.raises(LockBusy, match=str(os.getpid())):
            with FolderLock(results / "smoke"):
                pass
    assert sorted(p.name for p in (results / "smoke").iterdir()) == [".lock"]
    assert not (tmp_path / "build").exists()
    with FolderLock(results / "smoke"):  # released by its holder: free again
        pass


# --- hostile and malformed inputs ----------------------------------------------------------------

def _notebook_cells(stem: str) -> list[str]:
    nb = json.loads((REPO / "notebooks" / f"{stem}.ipynb").read_text())
    return ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]


@pytest.mark.parametrize("name,value,field", [("B", "'16'", "B"), ("dim_mults", "[1, '2']", "dim_mults"),
                                              ("model", "'kl9'", "model"), ("steps", "2.5", "steps")])
def test_a_notebook_parameter_of_the_wrong_type_fails_in_its_config_cell(tmp_path, monkeypatch, name, value, field):
    """Notebook 03_train as papermill runs it (parameters cell, injected values, then the config cell): a
    wrongly typed parameter is a ConfigError naming it, before anything is trained or written."""
    monkeypatch.setenv("KL_REPRO_RESULTS", str(tmp_path))
    params_cell, config_cell = _notebook_cells("03_train")[:2]
    assert "TrainPageConfig(" in config_cell
    ns: dict = {}
    exec(params_cell, ns)
    exec(f"profile = 'smoke'\n{name} = {value}", ns)  # papermill's injected-parameters cell
    with pytest.raises(ConfigError, match=field):
        exec(config_cell, ns)
    assert not list(tmp_path.iterdir())


def test_config_files_with_unknown_keys_or_wrong_types_are_refused_by_the_cli(tmp_path, capsys):
    from kl_repro.pipeline.cli import main

    runs = tmp_path / "runs"
    bad = tmp_path / "bad.toml"
    bad.write_text('[data]\nname = "digits"\n[train]\nsteps = 5\nlearnig_rate = 0.1\n')
    assert main(["train", "--config", str(bad), "--runs-dir", str(runs), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "learnig_rate" in err and "valid keys are" in err
    bad.write_text('[data]\nname = "digits"\n[train]\nsteps = "5"\n')
    assert main(["train", "--config", str(bad), "--runs-dir", str(runs), "--quiet"]) == 2
    assert "steps" in capsys.readouterr().err
    bad.write_text('[data\nname = "digits"\n')
    assert main(["train", "--config", str(bad), "--runs-dir", str(runs), "--quiet"]) == 2
    assert "cannot be parsed" in capsys.readouterr().err
    assert not runs.exists()


def _image_folder(root: Path, n: int = 4) -> Path:
    import numpy as np
    from PIL import Image

    folder = root / "celebahq"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(folder / f"{i:05d}.png")
    return folder


@pytest.mark.parametrize("bad_file,content,msg", [("00009.png", b"", "zero-byte"),
                                                  ("00009.png", b"GIF89a not really", "cannot be read"),
                                                  ("readme.txt", b"hello", "not an image")])
def test_bad_files_in_an_image_folder_stop_training_before_compute(tmp_path, bad_file, content, msg):
    folder = _image_folder(tmp_path / "data")
    (folder / bad_file).write_bytes(content)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    cfg = RunConfig(data=DataConfig(name="celebahq", root=str(tmp_path / "data"), resolution=8), net=TINY,
                    diffusion=DiffusionConfig(model="baseline"), train=TrainConfig(steps=2, B=2, threads=1))
    with pytest.raises(ConfigError, match=f"{bad_file}.*{msg}"):
        train(cfg, tmp_path / "runs", progress=False)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # the data are untouched
    assert not list((tmp_path / "runs").rglob("*.pt")) and not list((tmp_path / "runs").rglob("metrics.jsonl"))


@pytest.mark.parametrize("name", ["mnist", "cifar10", "celebahq"])
def test_a_data_root_that_does_not_exist_is_a_clear_error(tmp_path, name):
    root = tmp_path / "no" / "such" / "folder"
    cfg = RunConfig(data=DataConfig(name=name, root=str(root)), net=TINY.replace(dim_mults=(1,)),
                    diffusion=DiffusionConfig(model="baseline"), train=TrainConfig(steps=2, B=2, threads=1))
    with pytest.raises(ConfigError, match=re.escape(str(root))):
        train(cfg, tmp_path / "runs", progress=False)
    assert not root.exists() and not list((tmp_path / "runs").rglob("*.pt"))


def test_checkpoints_are_only_ever_loaded_with_weights_only(reference_run, tmp_path, monkeypatch):
    """Resume, model loading, sampling and fine-tuning all call ``torch.load(..., weights_only=True)``."""
    real_load = torch.load
    calls = []

    def recording_load(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", recording_load)
    folder = tmp_path / reference_run.name
    shutil.copytree(reference_run.dir, folder)
    (folder / "finished.json").unlink()
    (folder / "checkpoints" / "step-00000006.pt").unlink()
    run = train(reference_run.config, tmp_path, progress=False)  # resumes from step 4
    assert run.info()["resumed_from_step"] == 4
    run.sample(2, seed=0)
    base = train(RunConfig(data=reference_run.config.data, net=TINY, diffusion=DiffusionConfig(model="baseline"),
                           train=tiny(steps=2).train), tmp_path / "base", progress=False)
    ft = RunConfig(data=base.config.data, net=TINY.replace(k_cond="learned_zero_init"), diffusion=DiffusionConfig(model="kl", d=2),
                   train=tiny(steps=2).train, init_from=str(base.dir))
    train(ft, tmp_path / "ft", progress=False)
    assert calls == [True, True, True]  # the resume, the sampler's model, the fine-tuning's base weights


# --- bounded disk use ------------------------------------------------------------------------------

@pytest.mark.parametrize("keep", [1, 3])
def test_only_the_newest_checkpoints_are_kept(tmp_path, keep):
    cfg = tiny(steps=12, checkpoint_every=1, keep_checkpoints=keep)
    run = train(cfg, tmp_path, progress=False)
    names = sorted(p.name for p in run.ckpt_dir.iterdir())
    newest = [f"step-{s:08d}.pt" for s in range(13 - keep, 13)]
    assert names == sorted(newest + [n + ".sha256" for n in newest])
    sizes = [p.stat().st_size for p in run.checkpoints()]
    assert sum(p.stat().st_size for p in run.ckpt_dir.iterdir()) <= keep * max(sizes) + keep * 4096
    with pytest.raises(ConfigError, match="keep_checkpoints"):
        TrainConfig(keep_checkpoints=0)


# --- fast-path fields ------------------------------------------------------------------------------

def test_fast_path_fields_key_the_run_only_when_on_and_are_recorded(tmp_path, monkeypatch):
    """``compile``, ``tf32`` and ``fused_adamw`` change rounding: on, they name a new run; off, names stay as before.
    ``run.json`` records every fast path; ``compile`` compiles the trained network in place (state-dict keys unchanged)."""
    cfg = tiny(steps=2)
    name = run_name(cfg)
    hashed = set(_hash_view(cfg)["train"])  # off: the hashed view is the one runs had before these fields
    assert hashed == set(to_dict(cfg.train)) - {"threads", "compile", "tf32", "fused_adamw"}
    for field in ("compile", "tf32", "fused_adamw"):
        assert run_name(cfg.replace(train=cfg.train.replace(**{field: True}))) != name
    assert run_name(cfg.replace(net=cfg.net.replace(channels_last=True))) != name
    assert run_name(cfg.replace(train=cfg.train.replace(threads=2))) == name  # speed only

    compiled = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, *a, **k: compiled.append(type(self).__name__))
    fast = cfg.replace(train=cfg.train.replace(compile=True, fused_adamw=True))
    run = train(fast, tmp_path, progress=False)
    assert compiled == ["DiffusionNet"]
    assert run.info()["fast_paths"] == {"channels_last": False, "mixed_precision": "no", "compile": True, "tf32": False,
                                        "fused_adamw": True, "threads": 1}
    payload = final_payload(run)
    assert payload["optimizer"]["param_groups"][0]["fused"] is True
    assert all(not k.startswith("_orig_mod") for k in payload["model"])
