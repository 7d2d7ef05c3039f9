"""A training run on disk (its folder, metrics, checkpoints and trained model) and the network it trains.

A run is named by its configuration (:func:`~kl_repro.paper_a.training.config.run_name`) and lives in
``<runs_dir>/<name>/`` (:func:`runs_dir`: ``<results>/<profile>/runs``)::

    config.json              the resolved RunConfig, its hash and name
    run.json                 facts of the latest (re)start: device, resolved mixed precision, parameters
    metrics.jsonl            one JSON line per optimiser step ("kind": "train"), hook results ("eval"), grids ("samples")
    checkpoints/step-NNNNNNNN.pt (+ .sha256)   model, EMA, optimiser, scaler, step, RNG states, config hash
    samples/step-NNNNNNNN.png                  DDIM sample grids of the EMA model
    finished.json            written when the last step is done

Checkpoints (:mod:`kl_repro.paper_a.training.checkpoint`) are verified on load; a bad one is reported
with its path, moved aside (``*.bad``, by the training process) and the previous good one used.  Under
several processes only rank 0 writes into the folder (:class:`MetricsLog` is disabled elsewhere).
Fine-tuning from a baseline run (Paper A, Sec. 6.6; Methods A.7) is set up by :func:`init_from_baseline`.
"""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import nn

from kl_repro.core import store
from kl_repro.core.config import ConfigError, from_dict, require, to_dict
from kl_repro.core.plotting import image_grid
from kl_repro.core.profiles import Profile
from kl_repro.data import data_shape
from kl_repro.nets import build_net
from kl_repro.paper_a.ddim import DDIMConfig, ddim_sample
from kl_repro.paper_a.losses import make_grid
from kl_repro.paper_a.training.checkpoint import CheckpointError, sidecar, verify_checkpoint
from kl_repro.paper_a.training.checkpoint import quarantine as move_aside
from kl_repro.paper_a.training.config import RunConfig, run_hash, run_name

__all__ = ["Run", "MetricsLog", "runs_dir", "build_model", "FinetuneHead", "init_from_baseline"]

log = logging.getLogger("kl_repro")


def runs_dir(profile: Profile) -> Path:
    """``<results>/<profile>/runs``: where the profile's training runs live."""
    return store.profile_dir(profile) / "runs"


# --- the model and fine-tuning --------------------------------------------------------------------

class FinetuneHead(nn.Module):
    """Fixed (or gated) output weights on a network loaded from a baseline, Paper A, Sec. 6.6 (Methods A.7).

    KL, ``split``: ``eps_KL(x, t_i, k) = c_k(t_i) U(x, t_i, k)``, ``c_k = e_k^2 / v_d`` (sum over k is 1);
    KL, ``first_term``: ``g_k U(x, t_i, k)`` with a learnable gate ``g`` initialised to ``(1, 0, ..., 0)``;
    KL* ``basis``: the ``d`` copied groups scaled by ``1 / sum_k e_k(t_i)``.  The grid index is
    recovered from the time input ``1000 t_i - 1``.
    """

    def __init__(self, net: nn.Module, weights: torch.Tensor | None, T: int, gate_d: int = 0):
        super().__init__()
        self.net, self.T = net, T
        self.register_buffer("weights", weights if weights is not None else torch.ones(T))
        self.gate = nn.Parameter(torch.eye(1, gate_d).flatten()) if gate_d else None

    def forward(self, x: torch.Tensor, time_input: torch.Tensor, k: torch.Tensor | None = None) -> torch.Tensor:
        out = self.net(x, time_input, k)
        if self.gate is not None:
            w = self.gate[k]
        else:
            i = ((time_input.float() + 1.0) * self.T / 1000.0).round().long() - 1
            w = self.weights[i, k] if self.weights.ndim == 2 else self.weights[i]
        return out * w.to(out.dtype).reshape(-1, *([1] * (out.ndim - 1)))


def build_model(cfg: RunConfig) -> nn.Module:
    """The network of ``cfg`` (architecture only; weights random or as initialised, see :func:`init_from_baseline`)."""
    diff = cfg.diffusion
    net = build_net(cfg.net, data_shape(cfg.data), out_mult=diff.out_mult, d=diff.d)
    if cfg.init_from is None or cfg.finetune_correction == "none":
        return net
    E = torch.as_tensor(make_grid(diff).E, dtype=torch.float64)
    if diff.model == "kl_star":
        if diff.kl_star_variant == "sum":
            return net  # the copied groups are scaled by 1/d in the weights instead
        return FinetuneHead(net, (1.0 / E.sum(1)).float(), diff.T)
    if cfg.finetune_correction == "first_term":
        return FinetuneHead(net, None, diff.T, gate_d=diff.d)
    return FinetuneHead(net, (E**2 / (E**2).sum(1, keepdim=True)).float(), diff.T)


_ARCH_FIELDS = ("kind", "dim", "dim_mults", "attn_heads", "attn_dim_head", "full_attn", "mlp_hidden", "mlp_layers",
                "mlp_time_dim", "sinusoidal_pos_emb_theta")


def init_from_baseline(model: nn.Module, cfg: RunConfig) -> Path:
    """Load the EMA weights of the finished baseline run ``cfg.init_from`` into ``model`` (built by :func:`build_model`).

    KL: every weight is copied; the zero-initialised k embedding stays zero, so ``U(., k)`` equals
    the baseline for every ``k``.  KL*: the final 1x1 convolution is copied into all ``d`` output
    groups (scaled by ``1/d`` for the ``sum`` variant).  Returns the base run's checkpoint path.
    """
    base = Run.open(cfg.init_from)
    bcfg = base.config
    require(bcfg.diffusion.model == "baseline", f"init_from must be a baseline run; {base.dir} trains {bcfg.diffusion.model!r}")
    require(base.finished, f"init_from run {base.dir} has not finished training")
    require(data_shape(bcfg.data) == data_shape(cfg.data),
            f"init_from run {base.dir} has data of shape {data_shape(bcfg.data)}, this run {data_shape(cfg.data)}")
    diffs = [f for f in _ARCH_FIELDS if getattr(bcfg.net, f) != getattr(cfg.net, f)]
    require(not diffs, f"init_from run {base.dir} has a different network ({', '.join(diffs)})")
    path, payload = base.latest_checkpoint()
    state = _ema_state(payload["ema"])
    net = model.net if isinstance(model, FinetuneHead) else model
    diff = cfg.diffusion
    if diff.model == "kl_star":
        scale = 1.0 / diff.d if diff.kl_star_variant == "sum" else 1.0
        for key in _last_linear(state):  # output rows k*C + c <- c: every group starts as the baseline
            state[key] = state[key].repeat(diff.d, *([1] * (state[key].ndim - 1))) * scale
    missing, unexpected = net.load_state_dict(state, strict=False)
    allowed = {"backbone.time_mlp.k_embed.weight"}
    if unexpected or set(missing) - allowed:
        raise ConfigError(f"cannot load {path} into this network: missing {sorted(set(missing) - allowed)}, unexpected {sorted(unexpected)}")
    log.info("initialised from baseline %s (%s)", base.dir.name, path.name)
    return path


def _last_linear(state: dict[str, torch.Tensor]) -> tuple[str, str]:
    """Weight and bias keys of the output layer (U-Net final conv, or the MLP's last linear)."""
    if "backbone.final_conv.weight" in state:
        return "backbone.final_conv.weight", "backbone.final_conv.bias"
    idx = max(int(k.split(".")[2]) for k in state if k.startswith("backbone.body."))
    return f"backbone.body.{idx}.weight", f"backbone.body.{idx}.bias"


def _ema_state(ema_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The EMA model's own state dict out of ``ema_pytorch.EMA.state_dict()``."""
    return {k[len("ema_model."):]: v for k, v in ema_state.items() if k.startswith("ema_model.")}


# --- the run folder -------------------------------------------------------------------------------

class MetricsLog:
    """Appends JSON lines to ``metrics.jsonl`` (flushed each line; a torn last line is ignored on read).

    ``enabled=False`` (every process of a data-parallel launch but rank 0) opens nothing and writes nothing.
    """

    def __init__(self, path: Path, enabled: bool):
        self.f = open(path, "a", encoding="utf-8") if enabled else None

    def write(self, row: dict[str, Any]) -> None:
        if self.f:
            self.f.write(json.dumps(row, sort_keys=True) + "\n")
            self.f.flush()

    def close(self) -> None:
        if self.f:
            self.f.close()


class Run:
    """A run folder: its config, metrics, checkpoints and the trained model."""

    def __init__(self, dir: str | Path, config: RunConfig):
        self.dir = Path(dir)
        self.config = config
        self.hash = run_hash(config)

    # folders and files
    @property
    def name(self) -> str:
        return self.dir.name

    @property
    def ckpt_dir(self) -> Path:
        return self.dir / "checkpoints"

    @property
    def metrics_path(self) -> Path:
        return self.dir / "metrics.jsonl"

    @property
    def finished(self) -> bool:
        """Whether the last step was trained and checkpointed."""
        return (self.dir / "finished.json").exists()

    @classmethod
    def create(cls, cfg: RunConfig, runs_dir: str | Path) -> "Run":
        """The folder of ``cfg`` under ``runs_dir`` (created with its ``config.json`` if new)."""
        run = cls(Path(runs_dir) / run_name(cfg), cfg)
        cfg_path = run.dir / "config.json"
        if cfg_path.exists():
            stored = store.read_json(cfg_path)
            if stored.get("hash") != run.hash:
                raise ConfigError(f"{run.dir} holds a run of another configuration (hash {stored.get('hash')}, expected {run.hash})")
        else:
            run.dir.mkdir(parents=True, exist_ok=True)
            store.atomic_write_json(cfg_path, {"name": run.name, "hash": run.hash, "config": to_dict(cfg)})
        return run

    @classmethod
    def open(cls, path: str | Path) -> "Run":
        """An existing run folder."""
        p = Path(path)
        cfg_path = p / "config.json"
        if not cfg_path.is_file():
            raise ConfigError(f"{p} is not a run folder (no config.json)")
        return cls(p, from_dict(RunConfig, store.read_json(cfg_path)["config"]))

    def metrics(self, kind: str | None = "train") -> list[dict[str, Any]]:
        """Lines of ``metrics.jsonl`` (``kind``: ``train``, ``eval``, ``samples`` or None for all); a torn last line is skipped."""
        if not self.metrics_path.exists():
            return []
        rows = []
        for line in self.metrics_path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if kind is None or row.get("kind") == kind:
                rows.append(row)
        return rows

    def truncate_metrics(self, step: int) -> None:
        """Drop metric lines of steps after ``step`` (the checkpoint a run resumes from)."""
        if self.metrics_path.exists():
            keep = [json.dumps(r, sort_keys=True) for r in self.metrics(None) if r.get("step", 0) <= step]
            store.atomic_write_text(self.metrics_path, "".join(line + "\n" for line in keep))

    def checkpoints(self) -> list[Path]:
        """Checkpoint files, oldest first."""
        return sorted(self.ckpt_dir.glob("step-*.pt")) if self.ckpt_dir.is_dir() else []

    def checkpoint_path(self, step: int) -> Path:
        return self.ckpt_dir / f"step-{step:08d}.pt"

    def latest_checkpoint(self, quarantine: bool = False) -> tuple[Path, dict[str, Any]] | tuple[None, None]:
        """The newest checkpoint that verifies, as ``(path, payload)``; bad ones are reported and skipped.

        ``quarantine`` (the training process, which holds the run's lock): also move bad files aside to
        ``*.bad``, so that they are kept for inspection and never overwritten.
        """
        for path in reversed(self.checkpoints()):
            try:
                return path, verify_checkpoint(path, self.hash)
            except CheckpointError as e:
                msg = f"skipping bad checkpoint: {e}"
                if quarantine:
                    msg += f"; moved to {move_aside(path).name}"
                log.warning(msg)
                print(f"kl-repro: {msg}")
        return None, None

    def prune_checkpoints(self, keep: int) -> None:
        """Delete all but the newest ``keep`` checkpoints (with their sidecars).

        The checkpoint goes first: a kill in between leaves an orphan sidecar (removed by
        :meth:`remove_stale_files`), never a checkpoint without its checksum.
        """
        for path in self.checkpoints()[:-keep]:
            path.unlink(missing_ok=True)
            sidecar(path).unlink(missing_ok=True)

    def remove_stale_files(self) -> list[Path]:
        """Delete what an interrupted writer leaves behind: ``.*.tmp`` files of :mod:`kl_repro.core.store`'s atomic
        writes and checksum sidecars whose checkpoint is absent.  Call it only while holding the run's lock."""
        stale = [p for p in self.dir.rglob(".*.tmp") if p.is_file()]
        if self.ckpt_dir.is_dir():
            stale += [s for s in self.ckpt_dir.glob("step-*.pt.sha256") if not s.with_name(s.name[: -len(".sha256")]).exists()]
        for p in stale:
            p.unlink(missing_ok=True)
        if stale:
            log.info("removed %d stale file(s) of an interrupted write in %s", len(stale), self.dir)
        return stale

    def save_samples(self, step: int, samples: torch.Tensor) -> Path:
        """A sample grid as PNG (images) or a tensor file (2-D points): ``samples/step-NNNNNNNN.png`` or ``.pt``."""
        folder = self.dir / "samples"
        if samples.ndim == 4:
            g = image_grid(samples)
            buf = io.BytesIO()
            Image.fromarray(g[..., 0] if g.shape[-1] == 1 else g).save(buf, format="PNG")
            return store.atomic_write_bytes(folder / f"step-{step:08d}.png", buf.getvalue())
        path = folder / f"step-{step:08d}.pt"
        store.atomic_torch_save(samples, path)
        return path

    def load_model(self, ema: bool = True) -> nn.Module:
        """The model of the newest good checkpoint (EMA weights by default), on CPU in eval mode."""
        path, payload = self.latest_checkpoint()
        if path is None:
            raise ConfigError(f"{self.dir} has no usable checkpoint")
        model = build_model(self.config)
        model.load_state_dict(_ema_state(payload["ema"]) if ema else payload["model"])
        return model.eval()

    def sample(self, n: int, seed: int = 0, batch_size: int = 64, device: str = "cpu", ema: bool = True,
               sampler: DDIMConfig | None = None) -> torch.Tensor:
        """``n`` DDIM samples of the trained model (the run's sampler settings unless ``sampler`` is given)."""
        model = self.load_model(ema).to(device)
        return ddim_sample(model, self.config.diffusion, sampler or self.config.sampler, n, seed, batch_size,
                           data_shape(self.config.data), device=device)

    def info(self) -> dict[str, Any]:
        """``run.json`` (facts of the latest start), or {}."""
        p = self.dir / "run.json"
        return store.read_json(p) if p.exists() else {}

    def __repr__(self) -> str:
        return f"Run({str(self.dir)!r}, finished={self.finished})"

