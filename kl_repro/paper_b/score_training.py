"""Training the small score network by DSM (paper B eq. (3)) as a stored, resumable model keyed by its config.

A trained model lives in ``<results>/<profile>/score_models/<dataset>-<sde>-<hash>/`` (the hash is
:func:`kl_repro.core.config.config_hash` of its :class:`~kl_repro.paper_b.trained_score.ScoreNetConfig`)::

    config.json       the config, its hash
    checkpoint.pt     while training: the latest resumable state (weights, EMA weights, optimiser, step, generator, losses)
    model.pt          the finished EMA weights and the data statistics
    finished.json     steps, seconds, parameters, final loss, loss curve (written last; checkpoint.pt is then removed)

:func:`load_or_train` returns the finished model when ``finished.json`` exists, resumes from
``checkpoint.pt`` otherwise (a resumed run equals an uninterrupted one: batches and noise come from one
generator whose state is checkpointed), and holds the folder's lock while it trains, so two processes
never train the same model.  Results are keyed by config, never by code: a model is not retrained
because code changed.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

import torch
from tqdm import tqdm

from kl_repro.core import store
from kl_repro.core.config import config_hash, to_dict
from kl_repro.nets import count_parameters
from kl_repro.paper_b.dsm import dsm_loss
from kl_repro.paper_b.sde import VESDE, VPSDE
from kl_repro.paper_b.trained_score import ScoreNetConfig, TrainedScore, build_score_model

__all__ = ["model_dir", "train_steps", "load_or_train", "load_trained"]


def model_dir(profile, cfg: ScoreNetConfig) -> Path:
    """``<results>/<profile>/score_models/<dataset>-<sde>-<hash>``: where ``cfg``'s model is stored."""
    return store.profile_dir(profile) / "score_models" / f"{cfg.dataset}-{cfg.sde}-{config_hash(cfg)}"


def _lr(cfg: ScoreNetConfig, step: int) -> float:
    """score_sde's schedule: linear warm-up over ``warmup`` steps, then constant."""
    return cfg.lr * min(1.0, (step + 1) / cfg.warmup) if cfg.warmup else cfg.lr


def _fresh_state(cfg: ScoreNetConfig, model: TrainedScore) -> dict:
    opt = torch.optim.Adam(model.net.parameters(), lr=cfg.lr)
    return {"step": 0, "model": model, "ema": copy.deepcopy(model.net).requires_grad_(False), "opt": opt,
            "gen": torch.Generator().manual_seed(cfg.seed), "losses": [], "seconds": 0.0}


def _save_checkpoint(path: Path, s: dict) -> None:
    store.atomic_torch_save({"step": s["step"], "net": s["model"].net.state_dict(), "ema": s["ema"].state_dict(),
                             "opt": s["opt"].state_dict(), "gen": s["gen"].get_state(), "losses": s["losses"],
                             "seconds": s["seconds"]}, path)


def _load_checkpoint(path: Path, s: dict) -> None:
    ck = torch.load(path, weights_only=True)
    s["model"].net.load_state_dict(ck["net"])
    s["ema"].load_state_dict(ck["ema"])
    s["opt"].load_state_dict(ck["opt"])
    s["gen"].set_state(ck["gen"])
    s.update(step=int(ck["step"]), losses=list(ck["losses"]), seconds=float(ck["seconds"]))


def _one_step(cfg: ScoreNetConfig, s: dict, data: torch.Tensor) -> None:
    """One Adam step on a batch of ``cfg.batch`` images drawn with replacement, then the EMA update."""
    model, opt, g = s["model"], s["opt"], s["gen"]
    idx = torch.randint(0, data.shape[0], (cfg.batch,), generator=g)
    loss = dsm_loss(model, data[idx], model.sde, g)
    for group in opt.param_groups:
        group["lr"] = _lr(cfg, s["step"])
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.net.parameters(), cfg.grad_clip)
    opt.step()
    with torch.no_grad():
        for pe, p in zip(s["ema"].parameters(), model.net.parameters()):
            pe.lerp_(p, 1.0 - cfg.ema_decay)
    s["losses"].append(loss.item())
    s["step"] += 1


def train_steps(cfg: ScoreNetConfig, s: dict, data: torch.Tensor, until: int, checkpoint: Path | None = None,
                progress: bool = False) -> None:
    """Train state ``s`` up to step ``until`` (checkpointing every ``cfg.checkpoint_every`` steps to ``checkpoint``)."""
    bar = tqdm(total=cfg.steps, initial=s["step"], desc=f"DSM {cfg.dataset} {cfg.sde.upper()}", unit="step",
               disable=not progress, mininterval=2.0, dynamic_ncols=True)
    s["model"].train()
    t0 = time.perf_counter()
    while s["step"] < until:
        _one_step(cfg, s, data)
        bar.update(1)
        if checkpoint is not None and (s["step"] % cfg.checkpoint_every == 0 or s["step"] == until):
            s["seconds"] += time.perf_counter() - t0
            t0 = time.perf_counter()
            _save_checkpoint(checkpoint, s)
    s["seconds"] += time.perf_counter() - t0
    bar.close()
    s["model"].eval()


def _stats(data: torch.Tensor) -> tuple[float, float]:
    return float(data.mean()), float(data.std())


def _finished(folder: Path, cfg: ScoreNetConfig, sde, shape) -> tuple[TrainedScore, dict]:
    info = store.read_json(folder / "finished.json")
    ck = torch.load(folder / "model.pt", weights_only=True)
    model = build_score_model(cfg, sde, shape, float(ck["center"]), float(ck["scale"]))
    model.net.load_state_dict(ck["ema"])
    return model.eval().requires_grad_(False), info


def load_trained(profile, cfg: ScoreNetConfig, sde: VPSDE | VESDE, shape: tuple[int, ...]) -> tuple[TrainedScore, dict] | None:
    """The finished model of ``cfg`` and its ``finished.json``, or None when it was not trained yet."""
    folder = model_dir(profile, cfg)
    return _finished(folder, cfg, sde, shape) if (folder / "finished.json").exists() else None


def load_or_train(profile, cfg: ScoreNetConfig, data: torch.Tensor, sde: VPSDE | VESDE, progress: bool = False,
                  stop_at: int | None = None) -> tuple[TrainedScore | None, dict]:
    """The trained EMA score model of ``cfg`` on ``data`` ``(n, *shape)`` (model scale), trained once and stored.

    Finished: loaded (``info["reused"]`` True).  Otherwise trained, from the last checkpoint if there is
    one, up to ``cfg.steps`` (``stop_at``: stop early, as an interruption would, and return None).
    ``info``: steps, seconds of training, parameters, final loss, ``loss_curve`` (mean per 1 % of steps).
    """
    folder = model_dir(profile, cfg)
    data = data.float()
    shape = tuple(data.shape[1:])
    with store.FolderLock(folder, wait=True):
        if (folder / "finished.json").exists():
            model, info = _finished(folder, cfg, sde, shape)
            return model, {**info, "reused": True}
        store.atomic_write_json(folder / "config.json", {"config": to_dict(cfg), "hash": config_hash(cfg)})
        s = _fresh_state(cfg, build_score_model(cfg, sde, shape, *_stats(data)))
        if (folder / "checkpoint.pt").exists():
            _load_checkpoint(folder / "checkpoint.pt", s)
        resumed_from = s["step"]
        train_steps(cfg, s, data, min(cfg.steps, stop_at or cfg.steps), folder / "checkpoint.pt", progress)
        if s["step"] < cfg.steps:
            return None, {"step": s["step"], "resumed_from": resumed_from}
        return _finish(folder, cfg, s, sde, shape, resumed_from)


def _loss_curve(losses: list[float], points: int = 100) -> list[float]:
    """Mean loss in ``points`` equal chunks of the run (the curve the chapter plots)."""
    t = torch.tensor(losses, dtype=torch.float64)
    return [float(c.mean()) for c in torch.tensor_split(t, min(points, len(t)))]


def _finish(folder: Path, cfg: ScoreNetConfig, s: dict, sde, shape, resumed_from: int) -> tuple[TrainedScore, dict]:
    model = s["model"]
    store.atomic_torch_save({"ema": s["ema"].state_dict(), "center": model.center, "scale": model.scale}, folder / "model.pt")
    tail = s["losses"][-max(1, len(s["losses"]) // 10):]
    info = {"config": to_dict(cfg), "hash": config_hash(cfg), "steps": s["step"], "seconds": s["seconds"],
            "parameters": count_parameters(model.net), "final_loss": sum(tail) / len(tail),
            "loss_curve": _loss_curve(s["losses"]), "resumed_from": resumed_from}
    store.atomic_write_json(folder / "finished.json", info)
    (folder / "checkpoint.pt").unlink(missing_ok=True)  # the finished model is model.pt; the optimiser state is not kept
    trained, info = _finished(folder, cfg, sde, shape)
    return trained, {**info, "reused": False}
