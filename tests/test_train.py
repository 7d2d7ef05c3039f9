"""Training runs of paper A: bit-identical resume, checkpoint integrity, bad input, fine-tuning, CLI, a 500-step digits run."""

import json
import shutil
import time

import numpy as np
import pytest
import torch

from kl_repro.core.config import ConfigError, from_dict, to_dict
from kl_repro.data import DataConfig, derive_seed, load_images
from kl_repro.paper_a.losses import DiffusionConfig, eps_predictor, make_grid
from kl_repro.nets import NetConfig
from kl_repro.chapters.train_page import TrainPageConfig
from kl_repro.core.profiles import load_profile
from kl_repro.paper_a.ddim import DDIMConfig
from kl_repro.paper_a.training.checkpoint import CheckpointError, rng_state, set_rng_state, verify_checkpoint
from kl_repro.paper_a.training.config import RunConfig, TrainConfig, TrainParams, load_run_config, run_name
from kl_repro.paper_a.training.loop import TrainingDiverged, batch_indices, resolve_mixed_precision, train, train_from_params
from kl_repro.paper_a.training.run import Run, build_model, init_from_baseline

TINY = NetConfig(dim=8, dim_mults=(1, 2), attn_heads=1, attn_dim_head=8)


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def tiny(model="kl", steps=8, net=TINY, **train_kw):
    kw = dict(steps=steps, B=8, checkpoint_every=3, sample_every=0, n_grid_samples=0, eval_every=1, threads=1)
    kw.update(train_kw)
    return RunConfig(data=DataConfig(name="digits", subset=64), net=net,
                     diffusion=DiffusionConfig(model=model, d=None if model == "baseline" else 2),
                     train=TrainConfig(**kw))


def final_state(run):
    path, payload = run.latest_checkpoint()
    return payload


def assert_same_weights(a, b):
    for part in ("model", "ema"):
        assert a[part].keys() == b[part].keys()
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), f"{part}.{k} differs"
    assert a["step"] == b["step"]


def assert_same_rng(a, b):
    """The global RNG states stored in two checkpoints (torch, numpy, Python) are equal."""
    ra, rb = a["rng"], b["rng"]
    assert torch.equal(ra["torch"], rb["torch"]), "torch RNG state differs"
    assert torch.equal(ra["numpy"]["keys"], rb["numpy"]["keys"]), "numpy RNG state differs"
    assert (ra["numpy"]["pos"], ra["numpy"]["has_gauss"], ra["numpy"]["cached"]) == \
        (rb["numpy"]["pos"], rb["numpy"]["has_gauss"], rb["numpy"]["cached"])
    assert tuple(ra["python"][1]) == tuple(rb["python"][1]) and ra["python"][2] == rb["python"][2], "Python RNG state differs"


class Interrupt(Exception):
    pass


def interrupt_at(n):
    def hook(step, model_ema, run):
        if step == n:
            raise Interrupt
    return hook


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    """An uninterrupted tiny KL run (8 steps, checkpoints at 3, 6, 8)."""
    return train(tiny(), tmp_path_factory.mktemp("ref"), progress=False)


def test_kill_after_step_n_and_restart_is_bit_identical(reference_run, tmp_path):
    cfg = tiny()
    with pytest.raises(Interrupt):
        train(cfg, tmp_path, hooks=[interrupt_at(5)], progress=False)
    run = Run(tmp_path / run_name(cfg), cfg)
    assert not run.finished and [p.name for p in run.checkpoints()] == ["step-00000003.pt"]
    assert [r["step"] for r in run.metrics()] == [1, 2, 3, 4, 5]
    run = train(cfg, tmp_path, progress=False)  # resumes from step 3
    assert run.finished and run.info()["resumed_from_step"] == 3
    assert_same_weights(final_state(run), final_state(reference_run))
    assert_same_rng(final_state(run), final_state(reference_run))
    rows, ref_rows = run.metrics(), reference_run.metrics()
    assert [r["step"] for r in rows] == list(range(1, 9))  # the lines of steps 4-5 from before the kill were dropped
    assert [r["loss"] for r in rows] == [r["loss"] for r in ref_rows]
    for r in rows:
        assert r["images_per_s"] > 0 and r["step_time_s"] > 0 and r["peak_mem_mb"] > 0 and np.isfinite(r["grad_norm"])


def test_finished_run_is_reused_without_training(reference_run, monkeypatch):
    import kl_repro.paper_a.training.loop as T

    monkeypatch.setattr(T, "_train", lambda *a, **k: pytest.fail("a finished run must not train again"))
    again = train(reference_run.config, reference_run.dir.parent, progress=False)
    assert again.dir == reference_run.dir and again.finished


def test_truncated_last_checkpoint_falls_back_to_the_previous(reference_run, tmp_path, capsys):
    folder = tmp_path / reference_run.name
    shutil.copytree(reference_run.dir, folder)
    (folder / "finished.json").unlink()
    last = folder / "checkpoints" / "step-00000008.pt"
    data = last.read_bytes()
    last.write_bytes(data[: len(data) // 2])
    run = train(reference_run.config, tmp_path, progress=False)
    out = capsys.readouterr().out
    assert "skipping bad checkpoint" in out and "step-00000008.pt" in out and "truncated" in out
    assert (folder / "checkpoints" / "step-00000008.pt.bad").exists()
    assert run.info()["resumed_from_step"] == 6
    assert_same_weights(final_state(run), final_state(reference_run))
    assert_same_rng(final_state(run), final_state(reference_run))


def test_altered_or_foreign_checkpoints_are_detected(reference_run, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(reference_run.dir, folder)
    path = folder / "checkpoints" / "step-00000006.pt"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="SHA-256"):
        verify_checkpoint(path, reference_run.hash)
    with pytest.raises(CheckpointError, match="written for config"):
        verify_checkpoint(folder / "checkpoints" / "step-00000008.pt", "0123456789")
    (folder / "checkpoints" / "step-00000008.pt.sha256").unlink()
    with pytest.raises(CheckpointError, match="did not complete"):
        verify_checkpoint(folder / "checkpoints" / "step-00000008.pt", reference_run.hash)
    assert len(reference_run.checkpoints()) == 3  # keep_checkpoints = 3: steps 3, 6, 8


def test_nan_loss_stops_with_the_step_and_keeps_the_checkpoint(tmp_path, monkeypatch):
    import kl_repro.paper_a.training.loop as T

    real = T.build_loss

    def poisoned(cfg):
        loss_fn, calls = real(cfg), [0]

        def f(net, x0, g, t_index=None):
            calls[0] += 1
            loss, info = loss_fn(net, x0, g, t_index)
            return (loss * float("nan") if calls[0] == 4 else loss), info
        return f

    monkeypatch.setattr(T, "build_loss", poisoned)
    cfg = tiny(steps=6)
    with pytest.raises(TrainingDiverged, match=r"step 4.*step-00000003\.pt"):
        train(cfg, tmp_path, progress=False)
    run = Run(tmp_path / run_name(cfg), cfg)
    assert not run.finished and run.latest_checkpoint()[1]["step"] == 3


def test_hooks_are_called_every_eval_every_and_logged(tmp_path):
    seen = []

    def probe(step, model_ema, run):
        seen.append(step)
        assert not model_ema.training
        return {"probe": step * 2.0}

    run = train(tiny(steps=5, eval_every=2, sample_every=2, n_grid_samples=4), tmp_path, hooks=[probe], progress=False)
    assert seen == [2, 4, 5]
    assert [(r["step"], r["probe"], r["hook"]) for r in run.metrics("eval")] == [(2, 4.0, "probe"), (4, 8.0, "probe"), (5, 10.0, "probe")]
    grids = run.metrics("samples")
    assert [r["step"] for r in grids] == [2, 4, 5] and all((run.dir / r["path"]).is_file() for r in grids)
    info = run.info()
    assert info["mixed_precision"] == "no" and info["device"] == "cpu" and info["n_params"] > 0
    x = run.sample(3, seed=1)
    assert x.shape == (3, 1, 8, 8) and float(x.abs().max()) <= 1.0
    assert torch.allclose(x, run.sample(3, seed=1, batch_size=1), atol=1e-5)


def test_batch_indices_are_epochs_of_permutations():
    N, B = 10, 4
    stream = torch.cat([batch_indices(s, B, N, seed=0) for s in range(1, 6)])  # 20 draws = 2 epochs
    assert sorted(stream[:10].tolist()) == list(range(10)) and sorted(stream[10:].tolist()) == list(range(10))
    assert torch.equal(batch_indices(3, B, N, 0), batch_indices(3, B, N, 0))
    assert not torch.equal(batch_indices(1, B, N, 0), batch_indices(1, B, N, 1))


def test_run_names_and_hash():
    cfg = tiny()
    name = run_name(cfg)
    assert name.startswith("digits-kl-2d-b8-s0-") and len(name.split("-")[-1]) == 10
    assert run_name(cfg.replace(data=cfg.data.replace(root="/elsewhere"))) == name  # the data location is not the run
    assert run_name(cfg.replace(train=cfg.train.replace(threads=2))) == name
    assert run_name(cfg.replace(train=cfg.train.replace(lr=2e-4))) != name
    assert run_name(cfg.replace(label="mine")).startswith("mine-")
    assert from_dict(RunConfig, json.loads(json.dumps(to_dict(cfg)))) == cfg


@pytest.mark.parametrize("build,msg", [
    (lambda: DiffusionConfig(model="kl_partial", d=4, d_prime=6), "d_prime"),
    (lambda: DiffusionConfig(model="kl", d=0), "d "),
    (lambda: DataConfig(name="svhn"), "name"),
    (lambda: RunConfig(net=NetConfig(channels=3)), "channel"),
    (lambda: RunConfig(data=DataConfig(name="toy2d")), "mlp"),
    (lambda: RunConfig(sampler=DDIMConfig(S=15)), "divide"),
    (lambda: TrainConfig(B=16, grad_accum=3), "grad_accum"),
    (lambda: RunConfig(diffusion=DiffusionConfig(model="baseline"), init_from="x"), "baseline"),
    (lambda: RunConfig(init_from="x"), "learned_zero_init"),
    (lambda: RunConfig(label="a b"), "label"),
    (lambda: from_dict(RunConfig, {"train": {"step": 10}}), "unknown key"),
    (lambda: from_dict(RunConfig, {"optimiser": {}}), "unknown key"),
])
def test_bad_input_is_refused_before_training(build, msg):
    with pytest.raises(ConfigError, match=msg):
        build()


def test_missing_data_without_network_is_refused(tmp_path):
    cfg = RunConfig(data=DataConfig(name="mnist", root=str(tmp_path / "empty")), net=TINY.replace(dim_mults=(1,)),
                    train=TrainConfig(steps=2))
    with pytest.raises(ConfigError, match="MNIST/raw"):
        train(cfg, tmp_path / "runs", progress=False)
    assert not list((tmp_path / "runs").glob("*/checkpoints/*"))


def test_mixed_precision_resolution():
    assert resolve_mixed_precision("auto", "cuda") == "fp16" and resolve_mixed_precision("auto", "cpu") == "no"
    assert resolve_mixed_precision("bf16", "cpu") == "bf16"
    assert resolve_mixed_precision("fp16", "cpu") == "fp16"  # the CUDA AMP code runs on CPU too (tests/test_fp16_cpu.py)
    with pytest.raises(ConfigError, match="runs on cuda or cpu"):
        resolve_mixed_precision("fp16", "mps")


def test_bf16_on_cpu_trains(tmp_path):
    run = train(tiny(steps=2, mixed_precision="bf16", eval_every=0), tmp_path, progress=False)
    assert run.info()["mixed_precision"] == "bf16" and np.isfinite(run.metrics()[-1]["loss"])


@pytest.fixture(scope="module")
def baseline_run(tmp_path_factory):
    return train(tiny("baseline", steps=3, eval_every=0), tmp_path_factory.mktemp("base"), progress=False)


@pytest.mark.parametrize("model,correction,variant", [
    ("kl", "split", "basis"), ("kl", "first_term", "basis"), ("kl_star", "split", "basis"), ("kl_star", "split", "sum"),
    ("kl_partial", "split", "basis")])
def test_finetuned_model_equals_the_baseline_at_step_0(baseline_run, model, correction, variant):
    d = 4
    net = TINY.replace(k_cond="learned_zero_init") if model != "kl_star" else TINY
    diff = DiffusionConfig(model=model, d=d, d_prime=2 if model == "kl_partial" else None, kl_star_variant=variant)
    cfg = RunConfig(data=baseline_run.config.data, net=net, diffusion=diff, train=baseline_run.config.train,
                    init_from=str(baseline_run.dir), finetune_correction=correction)
    model_ft = build_model(cfg)
    init_from_baseline(model_ft, cfg)
    base = baseline_run.load_model()
    torch.manual_seed(0)
    x = torch.randn(5, 1, 8, 8)
    eps_ft = eps_predictor(model_ft, diff)
    with torch.no_grad():
        for i in range(20):  # KL grid point i (t = (i+1)/20) <-> baseline step 50 (i + 1) - 1
            ref = base(x, torch.full((5,), 50.0 * (i + 1) - 1))
            assert torch.allclose(eps_ft(x, i), ref, atol=1e-5), f"grid index {i}"
    if model == "kl" and correction == "split":  # term k carries e_k^2 / v_d of the prediction
        E = make_grid(diff).E
        with torch.no_grad():
            one = model_ft(x, torch.full((5,), 999.0), torch.full((5,), 1))
        assert torch.allclose(one, ref * float(E[19, 1] ** 2 / (E[19] ** 2).sum()), atol=1e-5)


def test_finetuning_run_trains_from_the_baseline(baseline_run, tmp_path):
    cfg = RunConfig(data=baseline_run.config.data, net=TINY.replace(k_cond="learned_zero_init"),
                    diffusion=DiffusionConfig(model="kl", d=2), train=tiny().train.replace(steps=2, eval_every=0),
                    init_from=str(baseline_run.dir))
    run = train(cfg, tmp_path, progress=False)
    assert run.finished and run.name.startswith("digits-kl-2d-b8-s0-ft-")
    assert "gate" not in dict(run.load_model().named_parameters())
    with pytest.raises(ConfigError, match="not a run folder"):
        train(cfg.replace(init_from=str(tmp_path / "nope")), tmp_path / "other", progress=False)
    assert not (tmp_path / "other").exists()  # refused before a run folder is made
    kl_run = RunConfig(**{**cfg.__dict__, "init_from": str(run.dir)})  # a KL run is no base for fine-tuning
    with pytest.raises(ConfigError, match="finished baseline"):
        train(kl_run, tmp_path / "other", progress=False)


def test_notebook_parameters_map_onto_a_run_config():
    nb = TrainPageConfig(profile="smoke", dataset="digits", model="kl_partial", d=6, d_prime=2, B=4, steps=3,
                         dim=8, dim_mults=(1, 2), ddim_S=10)
    cfg = nb.run_config()
    assert (cfg.diffusion.d, cfg.diffusion.d_prime, cfg.diffusion.T, cfg.sampler.S) == (6, 2, 20, 10)
    assert cfg.net.dim == 8 and cfg.train.B == 4 and cfg.data.name == "digits"
    assert TrainParams(model="kl", T=25).run_config().sampler.S == 25  # KL: every grid point (d x T = 200 family)
    assert TrainParams(model="baseline").run_config().sampler.S == 20  # baseline: every 50th of 1000
    toy = TrainParams(dataset="toy2d", model="baseline").run_config()
    assert toy.net.kind == "mlp" and not toy.sampler.clip_x0
    with pytest.raises(ConfigError, match="profile"):
        TrainPageConfig(profile="huge")


def test_flat_parameters_have_the_run_configs_defaults():
    """One set of defaults: flat parameters left out keep the RunConfig's (the paper's) settings."""
    assert TrainParams().run_config() == RunConfig()
    assert TrainParams(model="baseline").run_config() == RunConfig(diffusion=DiffusionConfig(model="baseline"))
    page = TrainPageConfig(profile="smoke")
    assert {f: getattr(page, f) for f in TrainParams.__dataclass_fields__} == TrainParams().__dict__
    assert page.run_config() == RunConfig()


def test_readings_of_the_lost_equations_reach_the_run_config():
    """``k_cond``, ``kl_loss_form``, ``kl_noise_norm``: one flat parameter each; left out, the run (and its hash) is unchanged."""
    cfg = TrainParams(model="kl", k_cond="sinusoidal_added", kl_loss_form="per_term", kl_noise_norm="unit").run_config()
    assert (cfg.net.k_cond, cfg.diffusion.kl_loss_form, cfg.diffusion.kl_noise_norm) == ("sinusoidal_added", "per_term", "unit")
    assert TrainParams(model="kl", k_cond="time_offset").run_config() == TrainParams(model="kl").run_config()
    assert run_name(TrainParams(model="kl", kl_loss_form="per_term").run_config()) != run_name(TrainParams(model="kl").run_config())
    with pytest.raises(ConfigError, match="learned_zero_init"):  # fine-tuning keeps its reading
        TrainParams(model="kl", init_from="digits-baseline-b16-s0-0123456789", k_cond="time_offset").run_config()
    with pytest.raises(ConfigError):
        TrainParams(model="kl", k_cond="onehot")


def test_fine_tuning_parameters_name_the_base_run_in_the_runs_folder(tmp_path):
    cfg = TrainParams(model="kl", init_from="digits-baseline-b16-s0-0123456789").run_config(tmp_path / "runs")
    assert cfg.init_from == str(tmp_path / "runs" / "digits-baseline-b16-s0-0123456789")
    assert cfg.net.k_cond == "learned_zero_init" and cfg.finetune_correction == "split"


def test_rng_states_round_trip_exactly(tmp_path):
    """The global RNG states stored in a checkpoint come back exactly (numpy with a cached Gaussian included)."""
    import random

    np.random.seed(3)
    np.random.standard_normal(3)  # an odd count leaves a cached Gaussian
    random.seed(5)
    torch.manual_seed(7)
    torch.save(rng_state(), tmp_path / "rng.pt")
    expected = (np.random.standard_normal(5), np.random.random(2), random.random(), torch.rand(3))
    np.random.seed(0), random.seed(0), torch.manual_seed(0)
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    got = (np.random.standard_normal(5), np.random.random(2), random.random(), torch.rand(3))
    assert np.array_equal(got[0], expected[0]) and np.array_equal(got[1], expected[1])
    assert got[2] == expected[2] and torch.equal(got[3], expected[3])


def test_config_file_and_overrides(tmp_path):
    f = tmp_path / "run.toml"
    f.write_text('[data]\nname = "digits"\nsubset = 64\n[diffusion]\nmodel = "kl"\nd = 3\n[train]\nsteps = 5\n')
    cfg = load_run_config(f, ["train.B=4", "net.dim=8", "net.dim_mults=[1, 2]", "label=demo"])
    assert (cfg.diffusion.d, cfg.train.steps, cfg.train.B, cfg.net.dim_mults, cfg.label) == (3, 5, 4, (1, 2), "demo")
    f.write_text('[train]\nsteps = 5\nlearning_rate = 0.1\n')
    with pytest.raises(ConfigError, match="learning_rate"):
        load_run_config(f)
    f.write_text('dataset = "digits"\nsubset = 64\nmodel = "kl"\nd = 3\nsteps = 5\n')  # notebook-03 parameters
    flat = load_run_config(f, ["B=4", "dim=8", "dim_mults=[1, 2]", "label=demo"])
    assert flat == cfg  # the same run either way (KL with T = 20: DDIM on every grid point is S = 20)
    assert flat == TrainParams(subset=64, d=3, steps=5, B=4, dim=8, dim_mults=(1, 2), label="demo").run_config()
    with pytest.raises(ConfigError, match="not both"):
        load_run_config(f, ["train.B=4"])
    with pytest.raises(ConfigError, match="stepz"):
        load_run_config(f, ["stepz=4"])


def test_cli_train_and_sample(tmp_path, capsys):
    from kl_repro.pipeline.cli import main

    f = tmp_path / "run.json"
    f.write_text(json.dumps({"data": {"name": "digits", "subset": 32}, "net": {"dim": 8, "dim_mults": [1, 2], "attn_heads": 1,
                                                                             "attn_dim_head": 8},
                             "diffusion": {"model": "kl", "d": 2},
                             "train": {"steps": 2, "B": 4, "sample_every": 0, "n_grid_samples": 0, "threads": 1}}))
    assert main(["train", "--config", str(f), "--runs-dir", str(tmp_path / "runs"), "--quiet"]) == 0
    run_dir = next((tmp_path / "runs").iterdir())
    assert main(["sample", str(run_dir), "--n", "5", "--batch-size", "2", "--eta", "0", "--out", str(tmp_path / "s.npz")]) == 0
    arr = np.load(tmp_path / "s.npz")["arr_0"]
    assert arr.shape == (5, 8, 8, 1) and arr.dtype == np.uint8
    assert main(["sample", str(run_dir), "--n", "4", "--out", str(tmp_path / "s.png")]) == 0
    assert main(["train", "--config", str(f), "--set", "train.stepz=3", "--runs-dir", str(tmp_path / "runs")]) == 2
    assert "stepz" in capsys.readouterr().err


def _pixel_fd(a: np.ndarray, b: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to two sets of flattened images."""
    from scipy import linalg

    a, b = a.reshape(len(a), -1).astype(np.float64), b.reshape(len(b), -1).astype(np.float64)
    eps = 1e-6 * np.eye(a.shape[1])  # digits have constant border pixels: keep the covariances invertible
    c1, c2 = np.cov(a, rowvar=False) + eps, np.cov(b, rowvar=False) + eps
    return float(((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(c1 + c2 - 2 * linalg.sqrtm(c1 @ c2).real))


@pytest.mark.slow
def test_500_cpu_steps_on_digits_learn_digits(tmp_path):
    """Baseline (7) on digits: the loss falls well under its start and samples are far closer to digits than noise is."""
    cfg = RunConfig(data=DataConfig(name="digits"), net=NetConfig(dim=16, dim_mults=(1, 2), attn_heads=1, attn_dim_head=16),
                    diffusion=DiffusionConfig(model="baseline"),
                    train=TrainConfig(steps=500, B=32, lr=1e-3, checkpoint_every=500, sample_every=0, n_grid_samples=0,
                                      threads=1))  # lr 10x the paper's so that 500 steps suffice
    run = train(cfg, tmp_path, progress=False)
    loss = np.array([r["loss"] for r in run.metrics()])
    assert loss[-50:].mean() < 0.4 * loss[:20].mean()
    x, _ = load_images(DataConfig(name="digits", split="train"))
    real = x.numpy() / 255.0
    samples = ((run.sample(200, seed=0, batch_size=200).numpy() + 1) / 2).clip(0, 1)
    rng = np.random.default_rng(0)
    null_blob = np.clip(real.mean(0, keepdims=True) + 0.2 * rng.standard_normal((200, 1, 8, 8)), 0, 1)  # mean digit + noise
    null_noise = rng.random((200, 1, 8, 8))
    fd = _pixel_fd(samples, real)
    assert fd < 0.6 * _pixel_fd(null_blob, real) and fd < 0.2 * _pixel_fd(null_noise, real)
    assert abs(samples.mean() - real.mean()) < 0.05


@pytest.mark.slow
@pytest.mark.parametrize("model", ["baseline", "kl"])
def test_smoke_profile_trains_in_under_two_minutes(model, tmp_path, monkeypatch):
    monkeypatch.setenv("KL_REPRO_RESULTS", str(tmp_path))
    profile = load_profile("smoke")
    params = profile.notebook_parameters("03_train")
    params.pop("profile")
    params.update(model=model, d=None if model == "baseline" else params["d"])  # the baseline has no KL terms
    t0 = time.perf_counter()
    run = train_from_params(profile, params, progress=False)
    assert time.perf_counter() - t0 < 120 and run.finished
    assert run.dir.parent == tmp_path / "smoke" / "runs"


KILL_SCRIPT = """
import json, os, signal, sys
import torch
from kl_repro.core.config import from_dict
from kl_repro.paper_a.training.config import RunConfig
from kl_repro.paper_a.training.loop import train

torch.set_num_threads(1)
cfg = from_dict(RunConfig, json.load(open(sys.argv[1])))

def kill_at_5(step, model_ema, run):
    if step == 5:
        os.kill(os.getpid(), signal.SIGKILL)

train(cfg, sys.argv[2], hooks=[kill_at_5], progress=False)
"""


@pytest.mark.slow
def test_sigkill_after_step_n_and_restart_is_bit_identical(reference_run, tmp_path):
    """A real SIGKILL (no clean-up at all) after step 5; the restart resumes from step 3 and ends bit-identical."""
    import subprocess
    import sys

    cfg_file = tmp_path / "cfg.json"
    cfg_file.write_text(json.dumps(to_dict(reference_run.config)))
    proc = subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(cfg_file), str(tmp_path / "runs")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]
    run = Run(tmp_path / "runs" / reference_run.name, reference_run.config)
    assert not run.finished and max(r["step"] for r in run.metrics()) == 5
    run = train(reference_run.config, tmp_path / "runs", progress=False)
    assert run.info()["resumed_from_step"] == 3
    assert_same_weights(final_state(run), final_state(reference_run))
    assert [r["loss"] for r in run.metrics()] == [r["loss"] for r in reference_run.metrics()]
    # The killed process, the resumed one and the reference (this process) each started with other
    # global RNG states; the stored ones agree because every micro-batch reseeds them from (seed, step, m).
    assert_same_rng(final_state(run), final_state(reference_run))
    np.random.seed(derive_seed(0, 8, "global", 0) % 2**32)  # step 8, micro-batch 0; training draws no numpy numbers
    assert torch.equal(final_state(run)["rng"]["numpy"]["keys"], torch.from_numpy(np.random.get_state()[1].astype(np.int64)))


def test_toy2d_runs_end_to_end(tmp_path):
    nb = TrainParams(dataset="toy2d", subset=256, model="kl_star", d=3, B=16, steps=3, checkpoint_every=3,
                     sample_every=0, eval_every=0, n_grid_samples=8, threads=1)
    run = train(nb.run_config(), tmp_path, progress=False)
    assert run.finished and (run.dir / "samples" / "step-00000003.pt").is_file()
    x = run.sample(5, seed=0)
    assert x.shape == (5, 2) and torch.isfinite(x).all()
