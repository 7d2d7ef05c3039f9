"""fp16 AMP of paper A's training loop, run on CPU through the code a CUDA run takes (autocast, GradScaler, skipped steps).

The only difference between the two devices is the device type given to ``torch.autocast`` and
``torch.amp.GradScaler`` (``kl_repro.paper_a.training.precision.Fp16Amp.device_type``).
"""

import math

import pytest
import torch

from kl_repro.data import DataConfig, derive_seed
from kl_repro.nets import NetConfig
from kl_repro.paper_a.losses import DiffusionConfig
from kl_repro.paper_a.training import loop, precision
from kl_repro.paper_a.training.config import RunConfig, TrainConfig, run_name
from kl_repro.paper_a.training.loop import train
from kl_repro.paper_a.training.run import Run, build_model

TINY = NetConfig(dim=8, dim_mults=(1, 2), attn_heads=1, attn_dim_head=8)

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def tiny(mixed_precision="fp16", steps=6, model="kl", **train_kw):
    kw = dict(steps=steps, B=8, checkpoint_every=2, keep_checkpoints=3, sample_every=0, n_grid_samples=0, eval_every=0,
              threads=1, device="cpu", mixed_precision=mixed_precision)
    kw.update(train_kw)
    return RunConfig(data=DataConfig(name="digits", subset=64), net=TINY,
                     diffusion=DiffusionConfig(model=model, d=None if model == "baseline" else 2), train=TrainConfig(**kw))


def final_payload(run: Run) -> dict:
    return run.latest_checkpoint()[1]


def _norm(state: dict, minus: dict | None = None) -> float:
    return math.sqrt(sum(float((v.float() - (minus[k].float() if minus else 0)).pow(2).sum()) for k, v in state.items()))


class _InfGrad(torch.autograd.Function):
    """Identity forward, infinite gradient backward: an fp16 gradient overflow with a finite loss."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        return g * float("inf")


@pytest.fixture
def overflow_at(monkeypatch):
    """``overflow_at({n, ...})``: the loss of those optimiser steps back-propagates infinite gradients."""
    current = {}
    real_indices, real_build = loop.batch_indices, loop.build_loss

    def indices(step, *args):
        current["step"] = step
        return real_indices(step, *args)

    def install(steps: set[int]) -> None:
        def build(diffusion):
            fn = real_build(diffusion)

            def loss_fn(model, x0, g):
                loss, aux = fn(model, x0, g)
                return (_InfGrad.apply(loss) if current["step"] in steps else loss), aux
            return loss_fn

        monkeypatch.setattr(loop, "batch_indices", indices)
        monkeypatch.setattr(loop, "build_loss", build)

    return install


@pytest.mark.parametrize("model", ["kl", "baseline"])
def test_fp16_steps_are_finite_and_close_to_fp32(tmp_path, monkeypatch, model):
    """Six fp16 steps against six fp32 steps from the same weights, batches and noise.  With a loss scale that does
    not overflow (2**10), no step is skipped and: each step's loss and gradient norm agree within 2e-3 (relative;
    measured <= 3e-4), and the fp16 weights differ from the fp32 ones by under 5% of the distance fp32 training
    moved them (measured 1-2%).  At the default scale 2**16 every step is finite, and each skipped step halves it."""
    ref = train(tiny("no", model=model), tmp_path, progress=False)
    monkeypatch.setattr(precision.Fp16Amp, "init_scale", 2.0**10)
    run = train(tiny(model=model), tmp_path, progress=False)
    assert run.info()["mixed_precision"] == "fp16" and run.info()["device"] == "cpu"
    rows, ref_rows = run.metrics(), ref.metrics()
    assert [r["skipped"] for r in rows] == [False] * 6 and {r["loss_scale"] for r in rows} == {2.0**10}
    for r, q in zip(rows, ref_rows):
        assert math.isfinite(r["loss"]) and r["loss"] == pytest.approx(q["loss"], rel=2e-3)
        assert r["grad_norm"] == pytest.approx(q["grad_norm"], rel=2e-3)
    w16, w32 = final_payload(run)["model"], final_payload(ref)["model"]
    assert all(torch.isfinite(v).all() for v in w16.values())
    torch.manual_seed(derive_seed(0, "init"))  # the loop's initial weights
    w0 = build_model(ref.config).state_dict()
    assert _norm(w16, w32) < 0.05 * _norm(w32, w0)

    monkeypatch.setattr(precision.Fp16Amp, "init_scale", 2.0**16)
    default = train(tiny(model=model, seed=1), tmp_path, progress=False)
    scale = 2.0**16
    for r in default.metrics():
        assert math.isfinite(r["loss"])
        scale = scale / 2 if r["skipped"] else scale
        assert r["loss_scale"] == scale and (r["grad_norm"] is None) == r["skipped"]
    assert final_payload(default)["scaler"]["scale"] == scale
    assert all(torch.isfinite(v).all() for v in final_payload(default)["model"].values())


def test_an_overflow_skips_the_step_keeps_the_weights_and_halves_the_scale(tmp_path, overflow_at):
    overflow_at({4})
    run = train(tiny(steps=5, checkpoint_every=1, keep_checkpoints=10), tmp_path, progress=False)
    rows = {r["step"]: r for r in run.metrics()}
    assert rows[4]["skipped"] and rows[4]["grad_norm"] is None and math.isfinite(rows[4]["loss"])
    assert rows[4]["loss_scale"] == rows[3]["loss_scale"] / 2
    assert not rows[3]["skipped"] and not rows[5]["skipped"] and rows[5]["loss_scale"] == rows[4]["loss_scale"]
    ckpt = {n: run.latest_checkpoint()[1] if n == 5 else _load(run, n) for n in (2, 3, 4, 5)}
    for k, v in ckpt[3]["model"].items():
        assert torch.equal(v, ckpt[4]["model"][k]), f"{k} changed in the skipped step"
    assert _norm(ckpt[3]["model"], ckpt[2]["model"]) > 0 and _norm(ckpt[5]["model"], ckpt[4]["model"]) > 0
    for a, b in zip(ckpt[3]["optimizer"]["state"].values(), ckpt[4]["optimizer"]["state"].values()):
        assert all(torch.equal(a[key], b[key]) for key in a), "the optimiser state changed in the skipped step"
    assert ckpt[4]["scaler"]["scale"] == ckpt[3]["scaler"]["scale"] / 2 and ckpt[4]["scaler"]["_growth_tracker"] == 0


def _load(run: Run, step: int) -> dict:
    return torch.load(run.checkpoint_path(step), map_location="cpu", weights_only=True)


class Interrupt(Exception):
    pass


def test_kill_and_resume_in_fp16_is_bit_identical_including_the_scaler(tmp_path, overflow_at):
    """An overflow at step 2 (scale halved, growth tracker reset), a kill at step 5 and a resume from the step-3
    checkpoint end with the weights, EMA, optimiser and scaler state of an uninterrupted run, bit for bit."""
    overflow_at({2})
    cfg = tiny(steps=8, checkpoint_every=3, eval_every=1)
    reference = train(cfg, tmp_path / "ref", progress=False)

    def interrupt(step, model_ema, run):
        if step == 5:
            raise Interrupt

    with pytest.raises(Interrupt):
        train(cfg, tmp_path / "runs", hooks=[interrupt], progress=False)
    assert [p.name for p in Run(tmp_path / "runs" / run_name(cfg), cfg).checkpoints()] == ["step-00000003.pt"]
    run = train(cfg, tmp_path / "runs", progress=False)
    assert run.finished and run.info()["resumed_from_step"] == 3
    a, b = final_payload(run), final_payload(reference)
    assert a["step"] == b["step"] == 8 and a["scaler"] == b["scaler"]
    assert b["scaler"]["_growth_tracker"] > 0 and b["scaler"]["scale"] < 2.0**16
    for part in ("model", "ema"):
        assert a[part].keys() == b[part].keys()
        assert all(torch.equal(a[part][k], b[part][k]) for k in a[part]), part
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert all(torch.equal(sa[key], sb[key]) for key in sa)
    keys = ("step", "loss", "grad_norm", "loss_scale", "skipped")
    assert [[r[k] for k in keys] for r in run.metrics()] == [[r[k] for k in keys] for r in reference.metrics()]
