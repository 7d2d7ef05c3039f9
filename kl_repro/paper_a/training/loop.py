"""The training loop of paper A (Algorithm 1, ``kl_paper_spec.md`` sections 2.1 and 4.2) on ``accelerate``.

One optimiser step takes ``B`` images (split into ``grad_accum`` micro-batches and over processes
under ``accelerate launch``), evaluates the configured loss (baseline (7), KL (19), partial (20) or
KL* (25)), clips the gradient norm, steps AdamW and updates the EMA (``ema_pytorch``, lucidrains'
Trainer settings).  Mixed precision: fp16 AMP on CUDA as in the paper, none on CPU (bf16 on request).

Every random choice of step ``n`` (batch indices, flips, time indices, noise, subsets) comes from
generators seeded by ``(seed, n)``, so a resumed run is bit-identical on CPU to an uninterrupted one;
the RNG states are checkpointed as well.  A run is stopped by a non-finite loss with a message
naming the step; the last good checkpoint stays.

``train(cfg, runs_dir)`` trains or reuses a run (:mod:`kl_repro.paper_a.training.run`); :class:`TrainNotebookConfig`
maps the parameters of ``notebooks/03_train.ipynb`` onto a :class:`RunConfig`.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import random
import resource
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Literal

import numpy as np
import torch

from kl_repro.core import store
from kl_repro.core.config import Config, ConfigError, require
from kl_repro.data import DataConfig, data_shape, derive_seed, generator, load_dataset
from kl_repro.paper_a.losses import DiffusionConfig, build_loss
from kl_repro.nets import NetConfig, count_parameters
from kl_repro.paper_a.training.run import Run, RunConfig, TrainConfig, build_model, init_from_baseline, run_name, save_checkpoint
from kl_repro.paper_a.ddim import DDIMConfig, ddim_sample

__all__ = [
    "TrainConfig",
    "RunConfig",
    "Run",
    "run_name",
    "train",
    "TrainingDiverged",
    "resolve_mixed_precision",
    "batch_indices",
    "TrainNotebookConfig",
    "runs_dir",
    "run_from_notebook_params",
    "training_figure",
]

log = logging.getLogger("kl_repro")
Hook = Callable[[int, torch.nn.Module, Run], "dict | None"]


class TrainingDiverged(FloatingPointError):
    """The loss became NaN or infinite; the message names the step and the checkpoint kept."""


def resolve_mixed_precision(setting: str, device_type: str) -> str:
    """``auto`` -> ``fp16`` on CUDA (paper: AMP fp16), ``no`` elsewhere; ``fp16`` off CUDA is refused."""
    if setting == "auto":
        return "fp16" if device_type == "cuda" else "no"
    if setting == "fp16" and device_type != "cuda":
        raise ConfigError("mixed_precision='fp16' needs a CUDA device; on CPU use 'no' or 'bf16'")
    return setting


def _accelerator(tcfg: TrainConfig):
    """An ``accelerate.Accelerator`` for this run, and the resolved mixed precision."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState, PartialState

    cpu = tcfg.device == "cpu"
    device_type = "cuda" if torch.cuda.is_available() and not cpu else "cpu"
    mp = resolve_mixed_precision(tcfg.mixed_precision, device_type)
    if PartialState(cpu=cpu).num_processes == 1:
        # Single process: forget the settings of an earlier run in this interpreter (notebooks, tests).
        AcceleratorState._reset_state()
        GradientState._reset_state()
    return Accelerator(mixed_precision=mp, cpu=cpu), mp


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


def _rng_state() -> dict[str, Any]:
    """All RNG states, as types ``torch.load(weights_only=True)`` accepts."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": random.getstate(),
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    v, internal, gauss = state["python"]
    random.setstate((v, tuple(internal), gauss))


def _peak_memory_mb(device: torch.device) -> float:
    """Peak memory: ``torch.cuda.max_memory_allocated`` on GPU, the process's peak RSS on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # kB on Linux


def _save_grid(run: Run, step: int, samples: torch.Tensor) -> Path:
    """A sample grid as PNG (images) or a tensor file (2-D points) under ``samples/``."""
    folder = run.dir / "samples"
    if samples.ndim == 4:
        import io

        from PIL import Image

        from kl_repro.core.plotting import image_grid

        g = image_grid(samples)
        buf = io.BytesIO()
        Image.fromarray(g[..., 0] if g.shape[-1] == 1 else g).save(buf, format="PNG")
        return store.atomic_write_bytes(folder / f"step-{step:08d}.png", buf.getvalue())
    path = folder / f"step-{step:08d}.pt"
    store.atomic_torch_save(samples, path)
    return path


class _MetricsLog:
    """Appends JSON lines to ``metrics.jsonl`` (flushed each line; a torn last line is ignored on read)."""

    def __init__(self, path: Path, enabled: bool):
        self.f = open(path, "a", encoding="utf-8") if enabled else None

    def write(self, row: dict[str, Any]) -> None:
        if self.f:
            self.f.write(json.dumps(row, sort_keys=True) + "\n")
            self.f.flush()

    def close(self) -> None:
        if self.f:
            self.f.close()


def train(cfg: RunConfig, runs_dir: str | os.PathLike, hooks: Iterable[Hook] = (), progress: bool = True) -> Run:
    """Train the run of ``cfg`` under ``runs_dir``, or return it if it already finished.

    An interrupted run resumes from its newest good checkpoint.  ``hooks``: callables
    ``hook(step, model_ema, run) -> dict | None`` called every ``eval_every`` steps and at the end;
    their dicts are logged to ``metrics.jsonl`` (``"kind": "eval"``) with the step.
    """
    if cfg.init_from is not None:  # a missing or unfinished base run is bad input: refuse before creating anything
        base = Run.open(cfg.init_from)
        require(base.finished and base.config.diffusion.model == "baseline",
                f"init_from must be a finished baseline run; {base.dir} is {'finished' if base.finished else 'unfinished'} "
                f"and trains {base.config.diffusion.model!r}")
    run = Run.create(cfg, runs_dir)
    if run.finished:
        return run
    from accelerate import PartialState

    main = PartialState(cpu=cfg.train.device == "cpu").is_main_process  # under `accelerate launch`, rank 0 holds the lock
    with store.FolderLock(run.dir) if main else nullcontext():
        if run.finished:
            return run
        _train(run, list(hooks), progress)
    return run


def _train(run: Run, hooks: list[Hook], progress: bool) -> None:
    cfg, tc = run.config, run.config.train
    if tc.threads is not None:
        torch.set_num_threads(tc.threads)
    dataset = load_dataset(cfg.data)  # ConfigError for missing data, before any compute
    shape = data_shape(cfg.data)
    N = len(dataset)
    accelerator, mp = _accelerator(tc)
    P, rank, main = accelerator.num_processes, accelerator.process_index, accelerator.is_main_process
    require(tc.B % (P * tc.grad_accum) == 0,
            f"B={tc.B} must be divisible by processes x grad_accum = {P} x {tc.grad_accum}")
    device = accelerator.device
    if device.type == "cuda":  # process-wide switches, set for every run: TF32 everywhere, or torch's defaults
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tc.tf32, True
    loss_fn = build_loss(cfg.diffusion)

    from ema_pytorch import EMA

    torch.manual_seed(derive_seed(tc.seed, "init"))  # the network's initial weights depend on the seed only
    model = build_model(cfg).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=tc.lr, betas=tc.adam_betas, weight_decay=tc.weight_decay,
                                  fused=tc.fused_adamw or None)
    if main:
        run.remove_stale_files()  # temporary files and checksum sidecars left by a killed process
        path, payload = run.latest_checkpoint(quarantine=True)
    accelerator.wait_for_everyone()
    if not main:
        path, payload = run.latest_checkpoint()
    start = 0
    if payload is not None:
        model.load_state_dict(payload["model"])
    elif cfg.init_from is not None:
        init_from_baseline(model, cfg)
    ema = EMA(model, beta=tc.ema_beta, update_every=tc.ema_update_every, update_after_step=tc.ema_update_after_step,
              inv_gamma=tc.ema_inv_gamma, power=tc.ema_power, include_online_model=False)
    if payload is None and main:
        run.truncate_metrics(0)  # a restart before the first checkpoint: drop the lost steps' lines (keep step-0 evaluations)
    if payload is not None:
        ema.load_state_dict(payload["ema"])
        optimizer.load_state_dict(payload["optimizer"])
        start = int(payload["step"])
        if main:
            run.truncate_metrics(start)
        log.info("resuming %s from step %d (%s)", run.name, start, path.name)
    if tc.compile:  # in place, after the EMA's copy: state-dict keys stay those of the plain module
        model.compile()
    model, optimizer = accelerator.prepare(model, optimizer)
    if payload is not None:
        if accelerator.scaler is not None and payload.get("scaler") is not None:
            accelerator.scaler.load_state_dict(payload["scaler"])
        _set_rng_state(payload["rng"])
    if main:
        store.atomic_write_json(run.dir / "run.json", {
            "name": run.name, "device": str(device), "mixed_precision": mp, "num_processes": P,
            "fast_paths": {"channels_last": cfg.net.channels_last, "mixed_precision": mp, "compile": tc.compile,
                           "tf32": tc.tf32 and device.type == "cuda", "fused_adamw": tc.fused_adamw,
                           "threads": torch.get_num_threads()},
            "n_params": count_parameters(accelerator.unwrap_model(model)), "resumed_from_step": start,
            "torch": torch.__version__, "started": _dt.datetime.now().isoformat(timespec="seconds"),
            "data_size": N, "data_shape": list(shape)})
    prev = run.metrics("train")
    opt_time = prev[-1]["opt_time_s"] if prev else 0.0
    metrics = _MetricsLog(run.metrics_path, main)

    from tqdm import tqdm

    bar = tqdm(total=tc.steps, initial=start, desc=run.name, disable=not (progress and main), dynamic_ncols=True)
    per_proc, micro = tc.B // P, tc.B // (P * tc.grad_accum)
    noise_device = device if device.type == "cuda" else "cpu"
    last_ckpt = path
    try:
        for step in range(start + 1, tc.steps + 1):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            torch.manual_seed(derive_seed(tc.seed, step, "global"))  # dropout and anything else using the global RNG
            idx = batch_indices(step, tc.B, N, tc.seed)
            flips = torch.rand(tc.B, generator=generator(tc.seed, step, "flip")) < 0.5
            idx, flips = idx[rank * per_proc:(rank + 1) * per_proc], flips[rank * per_proc:(rank + 1) * per_proc]
            model.train()
            total = 0.0
            for j in range(tc.grad_accum):
                x0 = dataset.batch(idx[j * micro:(j + 1) * micro], flips[j * micro:(j + 1) * micro]).to(device)
                g = generator(tc.seed, step, rank, j, device=noise_device)
                sync = nullcontext() if j == tc.grad_accum - 1 else accelerator.no_sync(model)
                with sync:
                    loss, _ = loss_fn(model, x0, g)
                    value = float(loss.detach())
                    if not np.isfinite(value):
                        raise TrainingDiverged(
                            f"{run.name}: loss is {value} at step {step}; stopped. Last good checkpoint: "
                            f"{last_ckpt if last_ckpt else 'none (no checkpoint written yet)'}")
                    accelerator.backward(loss / tc.grad_accum)
                total += value / tc.grad_accum
            if P > 1:  # log the mean loss over processes, not rank 0's share
                total = float(accelerator.reduce(torch.tensor(total, device=device), reduction="mean"))
            grad_norm = float(accelerator.clip_grad_norm_(model.parameters(), tc.clip_grad))
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            ema.update()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            dt = time.perf_counter() - t0
            opt_time += dt
            ips = tc.B / dt
            metrics.write({"kind": "train", "step": step, "loss": total, "grad_norm": grad_norm, "lr": tc.lr,
                           "step_time_s": dt, "images_per_s": ips, "opt_time_s": opt_time,
                           "peak_mem_mb": _peak_memory_mb(device), "epoch": (step * tc.B - 1) // N})
            bar.update(1)
            bar.set_postfix(loss=f"{total:.4f}", img_s=f"{ips:.1f}")
            last = step == tc.steps
            if main and (step % tc.checkpoint_every == 0 or last):
                last_ckpt = save_checkpoint(run.checkpoint_path(step), {
                    "format": 1, "step": step, "config_hash": run.hash,
                    "model": accelerator.unwrap_model(model).state_dict(), "ema": ema.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scaler": accelerator.scaler.state_dict() if accelerator.scaler is not None else None,
                    "rng": _rng_state()})
                run.prune_checkpoints(tc.keep_checkpoints)
            if main and tc.n_grid_samples and ((tc.sample_every and step % tc.sample_every == 0) or last):
                samples = ddim_sample(ema.ema_model, cfg.diffusion, cfg.sampler, tc.n_grid_samples,
                                      derive_seed(tc.seed, "grid"), tc.n_grid_samples, shape, device=device)
                metrics.write({"kind": "samples", "step": step, "path": str(_save_grid(run, step, samples).relative_to(run.dir))})
            if main and hooks and ((tc.eval_every and step % tc.eval_every == 0) or last):
                for hook in hooks:
                    ema.ema_model.eval()
                    out = hook(step, ema.ema_model, run)
                    if out:
                        metrics.write({"kind": "eval", "step": step, "hook": getattr(hook, "__name__", type(hook).__name__), **out})
            accelerator.wait_for_everyone()
    finally:
        bar.close()
        metrics.close()
    if main:
        store.atomic_write_json(run.dir / "finished.json", {
            "step": tc.steps, "opt_time_s": opt_time, "finished": _dt.datetime.now().isoformat(timespec="seconds")})


# --- notebook 03_train ----------------------------------------------------------------------------

@dataclass(frozen=True)
class TrainNotebookConfig(Config):
    """Parameters of ``notebooks/03_train.ipynb`` (one run); :meth:`run_config` maps them onto a :class:`RunConfig`.

    Fields not listed keep the paper's defaults of :class:`RunConfig`.
    """

    profile: str = "cpu"
    dataset: Literal["digits", "mnist", "cifar10", "celebahq", "toy2d"] = "digits"
    resolution: int | None = None
    split: Literal["train", "test", "all"] = "train"
    subset: int | None = None
    model: Literal["baseline", "kl", "kl_partial", "kl_star"] = "kl"
    d: int | None = None
    d_prime: int | None = None
    T: int | None = None
    B: int = 16
    steps: int = 500
    seed: int = 0
    lr: float = 1e-4
    grad_accum: int = 1
    dim: int = 64
    dim_mults: tuple[int, ...] = (1, 2, 4, 8)
    attn_heads: int = 4
    attn_dim_head: int = 32
    ddim_eta: float = 1.0
    ddim_S: int | None = None  # None: 20 for the baseline (every 50th of T = 1000), every grid point (S = T) for KL models
    checkpoint_every: int = 1000
    sample_every: int = 1000
    eval_every: int = 1000
    n_grid_samples: int = 16
    init_from: str | None = None  # a baseline run's folder, or its name under this profile's runs folder
    finetune_correction: Literal["split", "first_term", "none"] = "split"
    label: str = ""
    threads: int | None = None  # torch CPU threads (speed only; not part of the run's hash)

    def check(self) -> None:
        from kl_repro.core.profiles import check_profile_name

        check_profile_name(self.profile)

    def run_config(self) -> RunConfig:
        """The validated :class:`RunConfig` of these parameters."""
        toy = self.dataset == "toy2d"
        init = self.init_from
        if init is not None and not Path(init).is_absolute() and not Path(init).exists():
            init = str(runs_dir(self.profile) / init)
        net = NetConfig(kind="mlp" if toy else "unet", dim=self.dim, dim_mults=self.dim_mults, attn_heads=self.attn_heads,
                        attn_dim_head=self.attn_dim_head,
                        k_cond="learned_zero_init" if init is not None and self.model in ("kl", "kl_partial") else "time_offset")
        diffusion = DiffusionConfig(model=self.model, d=self.d, d_prime=self.d_prime, T=self.T)
        S = self.ddim_S if self.ddim_S is not None else (20 if self.model == "baseline" else diffusion.T)
        return RunConfig(
            data=DataConfig(name=self.dataset, resolution=self.resolution, split=self.split, subset=self.subset),
            net=net,
            diffusion=diffusion,
            train=TrainConfig(steps=self.steps, B=self.B, seed=self.seed, lr=self.lr, grad_accum=self.grad_accum,
                              checkpoint_every=self.checkpoint_every, sample_every=self.sample_every,
                              eval_every=self.eval_every, n_grid_samples=self.n_grid_samples, threads=self.threads),
            sampler=DDIMConfig(eta=self.ddim_eta, S=S, clip_x0=not toy),
            label=self.label, init_from=init,
            finetune_correction=self.finetune_correction if init is not None else "split",
        )


def runs_dir(profile: str) -> Path:
    """``<results>/<profile>/runs``: where the profile's training runs live."""
    return store.profile_dir(profile) / "runs"


def run_from_notebook_params(progress: bool = True, hooks: Iterable[Hook] = (), **params) -> Run:
    """Build the run of notebook ``03_train``'s parameters and train or reuse it."""
    nb = TrainNotebookConfig(**params)
    return train(nb.run_config(), runs_dir(nb.profile), hooks=hooks, progress=progress)


def training_figure(run: Run, n_samples: int = 16, seed: int = 0):
    """Loss curve (per step and a running mean) beside a DDIM sample grid of the EMA model; returns the figure."""
    import matplotlib.pyplot as plt

    from kl_repro.core.plotting import show_grid

    rows = run.metrics("train")
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(10, 4), gridspec_kw={"width_ratios": [1.4, 1]})
    if rows:
        steps = np.array([r["step"] for r in rows])
        loss = np.array([r["loss"] for r in rows])
        w = max(1, len(loss) // 50)
        ax0.plot(steps, loss, lw=0.6 if w > 1 else 1.4, alpha=0.35 if w > 1 else 1.0, label="per step")
        if w > 1:
            ax0.plot(steps[w - 1:], np.convolve(loss, np.ones(w) / w, mode="valid"), lw=1.6, label=f"mean of {w} steps")
        ax0.set_yscale("log")
        ax0.set_xlabel("optimiser step")
        ax0.set_ylabel("training loss")
        ax0.legend()
    ax0.set_title(run.name, fontsize="small")
    samples = run.sample(n_samples, seed=seed)
    if samples.ndim == 4:
        show_grid(ax1, samples, title=f"{n_samples} DDIM samples (eta={run.config.sampler.eta:g}, S={run.config.sampler.S}), EMA")
    else:
        ax1.scatter(samples[:, 0], samples[:, 1], s=4)
        ax1.set_title(f"{n_samples} DDIM samples, EMA")
        ax1.set_aspect("equal")
    fig.tight_layout()
    return fig
