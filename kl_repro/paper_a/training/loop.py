"""The training loop of paper A (Algorithm 1; losses of Methods A.2 and A.5) on ``accelerate``.

One optimiser step takes ``B`` images (split into ``grad_accum`` micro-batches and over processes
under ``torchrun`` / ``accelerate launch``), evaluates the configured loss (baseline (7), KL (19), partial (20) or
KL* (25)), clips the gradient norm, steps AdamW and updates the EMA (``ema_pytorch``, lucidrains'
Trainer settings).  Mixed precision (:mod:`~kl_repro.paper_a.training.precision`): ``auto`` is fp16 AMP
on CUDA as in the paper and none on CPU; ``fp16`` runs the same AMP code on CPU too (autocast, loss
scaling, a step skipped on gradient overflow, the scaler's state checkpointed); bf16 on request.

Every random choice of step ``n`` (batch indices, flips, time indices, noise, subsets) comes from
generators seeded by ``(seed, n)`` and, per micro-batch, by its index ``m`` within the step, so a
resumed run is bit-identical on CPU to an uninterrupted one; the global generators are reseeded from
``(seed, n, m)`` too, and their states checkpointed and restored.  Data parallel: process ``r`` of
``P`` takes micro-batches ``m = r * grad_accum + j`` of the same step, so ``P`` processes with
``grad_accum = a`` draw exactly the images and noise of one process with ``grad_accum = P a``; only
rank 0 writes (config, checkpoints, metrics, samples, ``finished.json``) and holds the run's lock,
and every process dies with its launcher.  A run is stopped by a non-finite loss with a message
naming the step; the last good checkpoint stays.

:func:`train` trains or reuses the run of a :class:`~kl_repro.paper_a.training.config.RunConfig`;
:func:`train_from_params` does so for the flat parameters of notebook 03 under a profile.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import resource
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import torch
from accelerate import Accelerator, PartialState
from accelerate.state import AcceleratorState, GradientState
from ema_pytorch import EMA
from tqdm import tqdm

from kl_repro.core import store
from kl_repro.core.config import require
from kl_repro.core.profiles import Profile
from kl_repro.data import data_shape, derive_seed, generator, load_dataset
from kl_repro.nets import count_parameters
from kl_repro.paper_a.ddim import ddim_sample
from kl_repro.paper_a.losses import build_loss
from kl_repro.paper_a.training.checkpoint import CKPT_FORMAT, rng_state, save_checkpoint, seed_global_rngs, set_rng_state
from kl_repro.paper_a.training.config import RunConfig, TrainConfig, run_config_from_params
from kl_repro.paper_a.training.precision import Fp16Amp, NoAmp, accelerate_precision, amp_for, resolve_mixed_precision
from kl_repro.paper_a.training.run import MetricsLog, Run, build_model, init_from_baseline, runs_dir

__all__ = ["train", "train_from_params", "TrainingDiverged", "resolve_mixed_precision", "batch_indices", "Hook",
           "process_state"]

log = logging.getLogger("kl_repro")
Hook = Callable[[int, torch.nn.Module, Run], "dict | None"]


class TrainingDiverged(FloatingPointError):
    """The loss became NaN or infinite; the message names the step and the checkpoint kept."""


def _cpu(tcfg: TrainConfig) -> bool:
    """THE device switch given to ``accelerate``: ``device = "cpu"``, or no accelerator on this machine.

    Without an accelerator ``accelerate``'s default (``cpu=False``) would start no process group, so
    each process of a ``torchrun`` launch would train alone; ``cpu=True`` joins them over gloo.
    """
    return tcfg.device == "cpu" or not torch.accelerator.is_available()


def process_state(tcfg: TrainConfig) -> PartialState:
    """The processes of this launch (one, or those of ``torchrun`` / ``accelerate launch``) for a run's training."""
    return PartialState(cpu=_cpu(tcfg))


def _accelerator(tcfg: TrainConfig) -> tuple[Accelerator, str]:
    """An ``accelerate.Accelerator`` for this run, and the resolved mixed precision (fp16 is driven by :class:`Fp16Amp`)."""
    cpu = _cpu(tcfg)
    device_type = "cuda" if torch.cuda.is_available() and not cpu else "cpu"
    mp = resolve_mixed_precision(tcfg.mixed_precision, device_type)
    if process_state(tcfg).num_processes == 1:
        # Single process: forget the settings of an earlier run in this interpreter (notebooks, tests).
        AcceleratorState._reset_state()
        GradientState._reset_state()
    return Accelerator(mixed_precision=accelerate_precision(mp), cpu=cpu), mp


def batch_indices(step: int, B: int, N: int, seed: int) -> torch.Tensor:
    """Data indices ``(B,)`` of optimiser step ``step`` (1-based): epochs of random permutations, seeded by ``(seed, epoch)``.

    Image ``j`` of step ``n`` is position ``c = (n - 1) B + j`` of the infinite stream; its epoch is
    ``c // N``.  Stateless, so a resumed run reads exactly the same batches.
    """
    c = (step - 1) * B + torch.arange(B)
    epoch, pos = c // N, c % N
    out = torch.empty(B, dtype=torch.long)
    for e in epoch.unique().tolist():
        perm = torch.randperm(N, generator=generator(seed, "epoch", e))
        sel = epoch == e
        out[sel] = perm[pos[sel]]
    return out


def _peak_memory_mb(device: torch.device) -> float:
    """Peak memory: ``torch.cuda.max_memory_allocated`` on GPU, the process's peak RSS on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # kB on Linux


def train(cfg: RunConfig, runs_dir: str | os.PathLike, hooks: Iterable[Hook] = (), progress: bool = True,
          lock: bool = True) -> Run:
    """Train the run of ``cfg`` under ``runs_dir``, or return it if it already finished.

    An interrupted run resumes from its newest good checkpoint.  ``hooks``: callables
    ``hook(step, model_ema, run) -> dict | None`` called every ``eval_every`` steps and at the end;
    their dicts are logged to ``metrics.jsonl`` (``"kind": "eval"``) with the step.  The run folder's
    lock is taken by rank 0 (``store.LockBusy`` if another process holds it) unless ``lock=False``: the
    caller holds it already (the scheduler's worker, which waits for it).  Under several processes
    every rank calls this; rank 0 creates the folder and decides, holding the lock, whether to train.
    """
    if cfg.init_from is not None:  # a missing or unfinished base run is bad input: refuse before creating anything
        base = Run.open(cfg.init_from)
        require(base.finished and base.config.diffusion.model == "baseline",
                f"init_from must be a finished baseline run; {base.dir} is {'finished' if base.finished else 'unfinished'} "
                f"and trains {base.config.diffusion.model!r}")
    state = process_state(cfg.train)
    if state.num_processes > 1:
        store.die_with_parent()  # a killed launcher (even kill -9) takes its processes with it: no orphan holds the lock
    with state.main_process_first():  # rank 0 writes config.json; the others read it
        run = Run.create(cfg, runs_dir)
    if run.finished:
        return run
    with store.FolderLock(run.dir) if state.is_main_process and lock else nullcontext():
        state.wait_for_everyone()  # every rank reads the status once rank 0 holds the lock
        if run.finished:
            return run
        _train(run, list(hooks), progress)
    return run


def train_from_params(profile: Profile, params: Mapping[str, Any], hooks: Iterable[Hook] = (), progress: bool = True) -> Run:
    """Train (or reuse) the run of notebook 03's flat ``params`` under ``profile``'s runs folder."""
    folder = runs_dir(profile)
    return train(run_config_from_params(params, folder), folder, hooks=hooks, progress=progress)


# --- one (re)start of a run: setup ----------------------------------------------------------------

@dataclass
class _Session:
    """What one (re)start of a run's training holds: data, accelerator, model, optimiser, EMA and progress."""

    run: Run
    dataset: Any
    accelerator: Accelerator
    mp: str
    loss_fn: Callable
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    amp: Fp16Amp | NoAmp = NoAmp()  # fp16 loss scaling, or none
    ema: EMA | None = None
    start: int = 0  # the step resumed from
    last_ckpt: Path | None = None  # the newest checkpoint written or resumed from
    opt_time: float = 0.0  # optimisation seconds so far, over every (re)start

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process


def _setup(run: Run) -> tuple[_Session, dict | None]:
    """Data, accelerator, loss, model and optimiser of ``run`` (random initial weights), and its newest good checkpoint."""
    cfg, tc = run.config, run.config.train
    if tc.threads is not None:
        torch.set_num_threads(tc.threads)
    dataset = load_dataset(cfg.data)  # ConfigError for missing data, before any compute
    accelerator, mp = _accelerator(tc)
    P = accelerator.num_processes
    require(tc.B % (P * tc.grad_accum) == 0,
            f"B={tc.B} must be divisible by processes x grad_accum = {P} x {tc.grad_accum}")
    if accelerator.device.type == "cuda":  # process-wide switches, set for every run: TF32 everywhere, or torch's defaults
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tc.tf32, True
    loss_fn = build_loss(cfg.diffusion)
    torch.manual_seed(derive_seed(tc.seed, "init"))  # the network's initial weights depend on the seed only
    model = build_model(cfg).to(accelerator.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=tc.lr, betas=tc.adam_betas, weight_decay=tc.weight_decay,
                                  fused=tc.fused_adamw or None)
    s = _Session(run, dataset, accelerator, mp, loss_fn, model, optimizer, amp_for(mp, accelerator.device.type))
    if s.main:
        run.remove_stale_files()  # temporary files and checksum sidecars left by a killed process
        s.last_ckpt, payload = run.latest_checkpoint(quarantine=True)
    accelerator.wait_for_everyone()
    if not s.main:
        s.last_ckpt, payload = run.latest_checkpoint()
    return s, payload


def _restore(s: _Session, payload: dict | None) -> None:
    """Load the checkpoint ``payload`` (or the baseline of a fine-tuning run), build the EMA, and prepare for ``accelerate``."""
    run, tc = s.run, s.run.config.train
    if payload is not None:
        s.model.load_state_dict(payload["model"])
    elif run.config.init_from is not None:
        init_from_baseline(s.model, run.config)
    s.ema = EMA(s.model, beta=tc.ema_beta, update_every=tc.ema_update_every, update_after_step=tc.ema_update_after_step,
                inv_gamma=tc.ema_inv_gamma, power=tc.ema_power, include_online_model=False)
    if payload is None and s.main:
        run.truncate_metrics(0)  # a restart before the first checkpoint: drop the lost steps' lines (keep step-0 evaluations)
    if payload is not None:
        s.ema.load_state_dict(payload["ema"])
        s.optimizer.load_state_dict(payload["optimizer"])
        s.start = int(payload["step"])
        if s.main:
            run.truncate_metrics(s.start)
        log.info("resuming %s from step %d (%s)", run.name, s.start, s.last_ckpt.name)
    if tc.compile:  # in place, after the EMA's copy: state-dict keys stay those of the plain module
        s.model.compile()
    s.amp.wrap_forward(s.model)  # fp16: autocast the forward pass (after the EMA's copy, as accelerate does)
    s.model, s.optimizer = s.accelerator.prepare(s.model, s.optimizer)
    if payload is not None:
        s.amp.load_state_dict(payload.get("scaler"))
        set_rng_state(payload["rng"])
    prev = run.metrics("train")
    s.opt_time = prev[-1]["opt_time_s"] if prev else 0.0


def _write_run_info(s: _Session) -> None:
    """``run.json``: the facts of this (re)start (device, precision, fast paths, parameters, data)."""
    cfg, tc, device = s.run.config, s.run.config.train, s.device
    store.atomic_write_json(s.run.dir / "run.json", {
        "name": s.run.name, "device": str(device), "mixed_precision": s.mp, "num_processes": s.accelerator.num_processes,
        "fast_paths": {"channels_last": cfg.net.channels_last, "mixed_precision": s.mp, "compile": tc.compile,
                       "tf32": tc.tf32 and device.type == "cuda", "fused_adamw": tc.fused_adamw,
                       "threads": torch.get_num_threads()},
        "n_params": count_parameters(s.accelerator.unwrap_model(s.model)), "resumed_from_step": s.start,
        "torch": torch.__version__, "started": _dt.datetime.now().isoformat(timespec="seconds"),
        "data_size": len(s.dataset), "data_shape": list(data_shape(cfg.data))})


# --- one optimiser step ---------------------------------------------------------------------------

def _step(s: _Session, step: int) -> tuple[float, float, bool]:
    """Optimiser step ``step``: its micro-batches, gradient clipping, AdamW and the EMA.

    Returns ``(mean loss, grad norm, skipped)``; ``skipped``: fp16 only, a gradient overflowed, so the
    weights and the optimiser state were left as they were and the loss scale halved.
    """
    tc, acc, device = s.run.config.train, s.accelerator, s.device
    P, rank, N = acc.num_processes, acc.process_index, len(s.dataset)
    per_proc, micro = tc.B // P, tc.B // (P * tc.grad_accum)
    noise_device = device if device.type == "cuda" else "cpu"
    idx = batch_indices(step, tc.B, N, tc.seed)
    flips = torch.rand(tc.B, generator=generator(tc.seed, step, "flip")) < 0.5
    idx, flips = idx[rank * per_proc:(rank + 1) * per_proc], flips[rank * per_proc:(rank + 1) * per_proc]
    s.model.train()
    total = 0.0
    for j in range(tc.grad_accum):
        x0 = s.dataset.batch(idx[j * micro:(j + 1) * micro], flips[j * micro:(j + 1) * micro]).to(device)
        m = rank * tc.grad_accum + j  # the micro-batch's index within the step, whichever process draws it
        seed_global_rngs(derive_seed(tc.seed, step, "global", m))  # dropout and anything else using a global RNG
        g = generator(tc.seed, step, 0, m, device=noise_device)  # the 0 keeps one process's draws as they were
        with nullcontext() if j == tc.grad_accum - 1 else acc.no_sync(s.model):
            loss, _ = s.loss_fn(s.model, x0, g)
            value = float(loss.detach())
            if not np.isfinite(value):
                raise TrainingDiverged(
                    f"{s.run.name}: loss is {value} at step {step}; stopped. Last good checkpoint: "
                    f"{s.last_ckpt if s.last_ckpt else 'none (no checkpoint written yet)'}")
            acc.backward(s.amp.scale(loss / tc.grad_accum))
        total += value / tc.grad_accum
    if P > 1:  # log the mean loss over processes, not rank 0's share
        total = float(acc.reduce(torch.tensor(total, device=device), reduction="mean"))
    s.amp.unscale_(s.optimizer)
    grad_norm = float(acc.clip_grad_norm_(s.model.parameters(), tc.clip_grad))
    skipped = s.amp.step(s.optimizer)
    s.optimizer.zero_grad(set_to_none=True)
    s.ema.update()
    return total, grad_norm, skipped


def _timed_step(s: _Session, step: int, metrics: MetricsLog) -> dict[str, Any]:
    """:func:`_step` timed (synchronised on CUDA) and logged as a ``train`` line of ``metrics.jsonl``; returns the line."""
    tc, device = s.run.config.train, s.device
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    total, grad_norm, skipped = _step(s, step)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    dt = time.perf_counter() - t0
    s.opt_time += dt
    row = {"kind": "train", "step": step, "loss": total, "grad_norm": grad_norm, "lr": tc.lr, "step_time_s": dt,
           "images_per_s": tc.B / dt, "opt_time_s": s.opt_time, "peak_mem_mb": _peak_memory_mb(device),
           "epoch": (step * tc.B - 1) // len(s.dataset)}
    if s.amp.enabled:  # fp16: the scale after this step's update; a skipped step's gradient norm is inf or NaN
        row.update(loss_scale=s.amp.loss_scale, skipped=skipped, grad_norm=None if skipped else grad_norm)
    metrics.write(row)
    return row


# --- after a step: checkpoint, sample grid, hooks -------------------------------------------------

def _checkpoint(s: _Session, step: int) -> None:
    """Write the checkpoint of ``step`` (model, EMA, optimiser, scaler, RNG states) and prune old ones."""
    acc = s.accelerator
    s.last_ckpt = save_checkpoint(s.run.checkpoint_path(step), {
        "format": CKPT_FORMAT, "step": step, "config_hash": s.run.hash,
        "model": acc.unwrap_model(s.model).state_dict(), "ema": s.ema.state_dict(),
        "optimizer": s.optimizer.state_dict(), "scaler": s.amp.state_dict(),
        "rng": rng_state()})
    s.run.prune_checkpoints(s.run.config.train.keep_checkpoints)


def _sample_grid(s: _Session, step: int, metrics: MetricsLog) -> None:
    """A DDIM grid of the EMA model (seeded by the run's seed only), saved under ``samples/`` and logged."""
    cfg, tc = s.run.config, s.run.config.train
    samples = ddim_sample(s.ema.ema_model, cfg.diffusion, cfg.sampler, tc.n_grid_samples, derive_seed(tc.seed, "grid"),
                          tc.n_grid_samples, data_shape(cfg.data), device=s.device)
    metrics.write({"kind": "samples", "step": step, "path": str(s.run.save_samples(step, samples).relative_to(s.run.dir))})


def _run_hooks(s: _Session, step: int, hooks: list[Hook], metrics: MetricsLog) -> None:
    """Call every hook on the EMA model (in eval mode) and log what it returns as ``eval`` lines."""
    for hook in hooks:
        s.ema.ema_model.eval()
        out = hook(step, s.ema.ema_model, s.run)
        if out:
            metrics.write({"kind": "eval", "step": step, "hook": getattr(hook, "__name__", type(hook).__name__), **out})


def _after_step(s: _Session, step: int, hooks: list[Hook], metrics: MetricsLog) -> None:
    """Rank 0's work after ``step``: checkpoint, sample grid and hooks, each on its schedule and at the last step."""
    tc = s.run.config.train
    last = step == tc.steps
    if not s.main:
        return
    if step % tc.checkpoint_every == 0 or last:
        _checkpoint(s, step)
    if tc.n_grid_samples and ((tc.sample_every and step % tc.sample_every == 0) or last):
        _sample_grid(s, step, metrics)
    if hooks and ((tc.eval_every and step % tc.eval_every == 0) or last):
        _run_hooks(s, step, hooks, metrics)


# --- the loop -------------------------------------------------------------------------------------

def _train(run: Run, hooks: list[Hook], progress: bool) -> None:
    """Train ``run`` from its newest good checkpoint (or from scratch) to its last step."""
    s, payload = _setup(run)
    _restore(s, payload)
    if s.main:
        _write_run_info(s)
    tc = run.config.train
    metrics = MetricsLog(run.metrics_path, s.main)
    bar = tqdm(total=tc.steps, initial=s.start, desc=run.name, disable=not (progress and s.main), dynamic_ncols=True)
    try:
        for step in range(s.start + 1, tc.steps + 1):
            row = _timed_step(s, step, metrics)
            bar.update(1)
            bar.set_postfix(loss=f"{row['loss']:.4f}", img_s=f"{row['images_per_s']:.1f}")
            _after_step(s, step, hooks, metrics)
            s.accelerator.wait_for_everyone()
    finally:
        bar.close()
        metrics.close()
    if s.main:
        store.atomic_write_json(run.dir / "finished.json", {
            "step": tc.steps, "opt_time_s": s.opt_time, "finished": _dt.datetime.now().isoformat(timespec="seconds")})
    s.accelerator.wait_for_everyone()  # no rank returns before the run is finished on disk
