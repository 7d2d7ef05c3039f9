"""Training runs on disk: their configuration, name, folder, checkpoints and metrics.

A run is named by its configuration (:func:`run_name`: a readable label plus a hash) and lives in
``<runs_dir>/<name>/``::

    config.json              the resolved RunConfig, its hash and name
    run.json                 facts of the latest (re)start: device, resolved mixed precision, parameters
    metrics.jsonl            one JSON line per optimiser step ("kind": "train"), hook results ("eval"), grids ("samples")
    checkpoints/step-NNNNNNNN.pt (+ .sha256)   model, EMA, optimiser, scaler, step, RNG states, config hash
    samples/step-NNNNNNNN.png                  DDIM sample grids of the EMA model
    finished.json            written when the last step is done

Checkpoints are written atomically with a SHA-256 sidecar (written first), loaded with
``weights_only=True``; a truncated, altered or foreign checkpoint is reported with its path, moved
aside (``*.bad``, by the training process) and the previous good one used.  Fine-tuning from a baseline run (paper A Sec. 6.6,
spec ambiguity 16) is set up by :func:`init_from_baseline`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from kl_repro.core import store
from kl_repro.core.config import Config, ConfigError, config_hash, from_dict, require, to_dict
from kl_repro.data import CHANNELS, DataConfig, data_shape
from kl_repro.paper_a.losses import DiffusionConfig, make_grid
from kl_repro.nets import NetConfig, build_net, count_parameters
from kl_repro.paper_a.ddim import DDIMConfig, ddim_sample

__all__ = [
    "TrainConfig",
    "RunConfig",
    "run_hash",
    "run_name",
    "Run",
    "build_model",
    "FinetuneHead",
    "init_from_baseline",
    "CheckpointError",
    "load_run_config",
]

log = logging.getLogger("kl_repro")
CKPT_FORMAT = 1


@dataclass(frozen=True)
class TrainConfig(Config):
    """Optimisation (paper A Sec. 6.2, lucidrains Trainer defaults; spec section 4.2 and ambiguities 11-12)."""

    steps: int = 50_000  # paper: unstated; Table 3 reaches 49.92k steps
    B: int = 16  # images per optimiser step ("-b16"); the KL network batch is B * d
    grad_accum: int = 1  # micro-batches per step (memory only: B stays the images per step)
    lr: float = 1e-4  # lucidrains Trainer default (spec ambiguity 11)
    adam_betas: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = 0.01  # AdamW, torch default (paper says AdamW)
    clip_grad: float = 1.0  # max gradient norm
    mixed_precision: Literal["auto", "no", "fp16", "bf16"] = "auto"  # auto: fp16 on CUDA (paper), no on CPU
    device: Literal["auto", "cpu"] = "auto"  # auto: accelerate's choice (CUDA when present)
    threads: int | None = None  # torch CPU threads (None: torch's default); speed only, not part of the run hash
    # --- fast paths (bench/bench_train.py measures each; the run hash holds them only when on) ---
    compile: bool = False  # torch.compile the network (in place): fused kernels round differently, so it is a new run
    tf32: bool = False  # CUDA: TF32 matmuls too (False: torch's defaults, TF32 convolutions only); no effect on CPU
    fused_adamw: bool = False  # torch's fused AdamW kernel (CPU and CUDA): same update, rounded differently
    ema_beta: float = 0.995  # ema_pytorch.EMA as in lucidrains' Trainer
    ema_update_every: int = 10
    ema_update_after_step: int = 100
    ema_inv_gamma: float = 1.0
    ema_power: float = 2 / 3
    seed: int = 0
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3  # newest N checkpoints kept
    sample_every: int = 1000  # DDIM grid of the EMA model every N steps (0: only at the end)
    n_grid_samples: int = 16  # images per grid
    eval_every: int = 1000  # hooks every N steps and at the end (0: only at the end)

    def check(self) -> None:
        require(self.steps >= 1, f"steps must be >= 1, got {self.steps}")
        require(self.B >= 1, f"B (images per step) must be >= 1, got {self.B}")
        require(self.grad_accum >= 1 and self.B % self.grad_accum == 0,
                f"grad_accum must be >= 1 and divide B={self.B}, got {self.grad_accum}")
        require(self.lr > 0, f"lr must be > 0, got {self.lr}")
        require(all(0 <= b < 1 for b in self.adam_betas), f"adam_betas must lie in [0, 1), got {self.adam_betas}")
        require(self.weight_decay >= 0 and self.clip_grad > 0, "weight_decay must be >= 0 and clip_grad > 0")
        require(0 <= self.ema_beta <= 1 and self.ema_update_every >= 1 and self.ema_update_after_step >= 0,
                "need 0 <= ema_beta <= 1, ema_update_every >= 1, ema_update_after_step >= 0")
        require(self.threads is None or self.threads >= 1, f"threads must be None or >= 1, got {self.threads}")
        require(self.checkpoint_every >= 1 and self.keep_checkpoints >= 1, "checkpoint_every and keep_checkpoints must be >= 1")
        require(self.sample_every >= 0 and self.eval_every >= 0 and self.n_grid_samples >= 0,
                "sample_every, eval_every and n_grid_samples must be >= 0")


_LABEL = re.compile(r"^[A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class RunConfig(Config):
    """Everything that defines a training run; its hash names the run folder."""

    data: DataConfig = field(default_factory=DataConfig)
    net: NetConfig = field(default_factory=NetConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sampler: DDIMConfig = field(default_factory=DDIMConfig)
    label: str = ""  # readable part of the run name ("" : dataset-model-bB-sSEED)
    init_from: str | None = None  # folder of a finished baseline run to fine-tune from (paper A Sec. 6.6)
    finetune_correction: Literal["split", "first_term", "none"] = "split"  # spec ambiguity 16; used with init_from

    def check(self) -> None:
        require(bool(_LABEL.match(self.label)), f"label may hold letters, digits, '.', '_' and '-' only, got {self.label!r}")
        toy = self.data.name == "toy2d"
        if toy:
            require(self.net.kind == "mlp", "toy2d holds 2-D points: use net.kind='mlp'")
            require(not self.sampler.clip_x0, "toy2d points are not in [-1, 1]: set sampler.clip_x0=false")
        else:
            require(self.net.kind == "unet", f"{self.data.name} holds images: use net.kind='unet'")
            C = CHANNELS[self.data.name]
            require(self.net.channels is None or self.net.channels == C,
                    f"net.channels={self.net.channels} does not match {self.data.name}, which has {C} channel(s)")
        T, S = self.diffusion.T, self.sampler.S
        require(S <= T and T % S == 0, f"sampler.S={S} must divide the training grid T={T}")
        if self.init_from is None:
            require(self.finetune_correction == "split", "finetune_correction applies only with init_from")
        else:
            model = self.diffusion.model
            require(model != "baseline", "init_from fine-tunes a KL or KL* model from a baseline run; this run is a baseline")
            if model in ("kl", "kl_partial"):
                require(self.net.k_cond == "learned_zero_init",
                        "fine-tuning a KL model needs net.k_cond='learned_zero_init' so that step 0 equals the baseline for every k")
            else:
                require(self.finetune_correction != "first_term", "finetune_correction='first_term' applies to KL models, not KL*")


def _hash_view(cfg: RunConfig) -> dict[str, Any]:
    """The config as hashed: data location, download permission, sampling chunk size and CPU threads do not change a run.

    ``compile``, ``tf32`` and ``fused_adamw`` change the rounding of the results, so they enter the hash, but only when on:
    runs made before these fields existed keep their names.
    """
    d = to_dict(cfg)
    d["data"].pop("root"), d["data"].pop("download"), d["diffusion"].pop("chunk"), d["train"].pop("threads")
    for fast_path in ("compile", "tf32", "fused_adamw"):
        if not d["train"][fast_path]:
            d["train"].pop(fast_path)
    if cfg.init_from is not None:
        d["init_from"] = Path(cfg.init_from).name  # the base run's name (which carries its hash), not the path
    return d


def run_hash(cfg: RunConfig) -> str:
    """10-hex-digit hash of :func:`_hash_view`."""
    return config_hash(_hash_view(cfg))


def run_name(cfg: RunConfig) -> str:
    """``<label>-<hash>``; the default label reads ``<data>-<model>-b<B>-s<seed>`` (e.g. ``digits-kl-8d-b16-s0-1a2b3c4d5e``)."""
    label = cfg.label
    if not label:
        res = cfg.data.res
        default_res = {"digits": 8, "mnist": 32, "cifar10": 32, "celebahq": 64}.get(cfg.data.name)
        data = cfg.data.name + (f"{res}" if res != default_res else "")
        label = f"{data}-{cfg.diffusion.tag}-b{cfg.train.B}-s{cfg.train.seed}" + ("-ft" if cfg.init_from else "")
    return f"{label}-{run_hash(cfg)}"


def load_run_config(path: str | Path | None = None, sets: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """A :class:`RunConfig` from a TOML or JSON file (sections ``[data]``, ``[net]``, ``[diffusion]``,
    ``[train]``, ``[sampler]``; a ``config.json`` of a run folder also works) plus ``key=value``
    overrides with dotted keys (``train.steps=100``).  Unknown keys raise :class:`ConfigError`.
    """
    import tomllib

    from kl_repro.core.config import parse_set_option

    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {str(p)!r} does not exist")
        try:
            data = tomllib.loads(p.read_text()) if p.suffix == ".toml" else json.loads(p.read_text())
        except (tomllib.TOMLDecodeError, json.JSONDecodeError) as e:
            raise ConfigError(f"config file {p} cannot be parsed: {e}") from None
        if "config" in data and "hash" in data:  # a run folder's config.json
            data = data["config"]
    for text in sets:
        key, value = parse_set_option(text)
        *parents, leaf = key.split(".")
        node = data
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {key}: {part!r} is not a section")
        node[leaf] = value
    return from_dict(RunConfig, data)


# --- the model and fine-tuning --------------------------------------------------------------------

class FinetuneHead(nn.Module):
    """Fixed (or gated) output weights on a network loaded from a baseline, paper A Sec. 6.6 (spec ambiguity 16).

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


# --- checkpoints ----------------------------------------------------------------------------------

class CheckpointError(RuntimeError):
    """A checkpoint file is truncated, altered, incomplete or belongs to another configuration."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def save_checkpoint(path: Path, payload: dict[str, Any]) -> Path:
    """Write the SHA-256 sidecar, then the checkpoint, each atomically: every ``*.pt`` on disk has its sidecar."""
    import io

    buf = io.BytesIO()
    torch.save(payload, buf)
    data = buf.getvalue()
    info = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data), "step": payload["step"],
            "config_hash": payload["config_hash"]}
    store.atomic_write_json(_sidecar(path), info)
    store.atomic_write_bytes(path, data)
    return path


def verify_checkpoint(path: Path, cfg_hash: str) -> dict[str, Any]:
    """Load a checkpoint after checking size, SHA-256 and config hash; :class:`CheckpointError` says what is wrong."""
    side = _sidecar(path)
    if not side.exists():
        raise CheckpointError(f"{path}: no checksum file {side.name} (the write did not complete)")
    try:
        info = store.read_json(side)
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: unreadable checksum file ({e})") from None
    if info.get("config_hash") != cfg_hash:
        raise CheckpointError(f"{path}: written for config {info.get('config_hash')}, this run is {cfg_hash}")
    size = path.stat().st_size
    if size != info.get("bytes"):
        raise CheckpointError(f"{path}: {size} bytes, expected {info.get('bytes')} (truncated?)")
    if _sha256(path) != info.get("sha256"):
        raise CheckpointError(f"{path}: SHA-256 mismatch (file altered or corrupt)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{path}: cannot be loaded ({type(e).__name__}: {e})") from None
    if payload.get("config_hash") != cfg_hash or payload.get("format") != CKPT_FORMAT:
        raise CheckpointError(f"{path}: belongs to config {payload.get('config_hash')} (format {payload.get('format')})")
    return payload


# --- the run folder -------------------------------------------------------------------------------

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
                    bad = path.with_name(path.name + ".bad")
                    path.replace(bad)
                    if _sidecar(path).exists():
                        _sidecar(path).replace(bad.with_name(bad.name + ".sha256"))
                    msg += f"; moved to {bad.name}"
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
            _sidecar(path).unlink(missing_ok=True)

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

