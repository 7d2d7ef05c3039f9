"""What defines a training run of paper A: :class:`RunConfig`, its hash and name, and the ONE way to build it.

A run is named by its configuration (:func:`run_name`: a readable label plus :func:`run_hash`).
Every run of the book is described by the flat parameters of ``notebooks/03_train.ipynb``
(:class:`TrainParams`: ``dataset``, ``model``, ``d``, ``B``, ``steps``, ...), which a profile's
``[notebooks.03_train]`` section or a row of its ``[paper_a]`` run matrix set;
:meth:`TrainParams.run_config` turns them into the :class:`RunConfig`.  Every parameter not given
keeps the default of the field it sets, i.e. the paper's setting (Paper A, Sec. 6.2; Methods A.1-A.6),
so there is one set of defaults: those of the config dataclasses below and in
:mod:`kl_repro.data`, :mod:`kl_repro.nets`, :mod:`kl_repro.paper_a.losses` and
:mod:`kl_repro.paper_a.ddim`.  :func:`load_run_config` reads either form from a file (the command line).
"""

from __future__ import annotations

import dataclasses
import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping

from kl_repro.core.config import Config, ConfigError, config_hash, from_dict, parse_set_option, require, to_dict
from kl_repro.data import CHANNELS, DEFAULT_RESOLUTION, DataConfig, DatasetName
from kl_repro.nets import NetConfig
from kl_repro.paper_a.ddim import DDIMConfig
from kl_repro.paper_a.losses import DiffusionConfig

__all__ = [
    "TrainConfig",
    "RunConfig",
    "TrainParams",
    "run_config_from_params",
    "run_hash",
    "run_name",
    "load_run_config",
]

SECTIONS = ("data", "net", "diffusion", "train", "sampler")  # the nested sections of a RunConfig


@dataclass(frozen=True)
class TrainConfig(Config):
    """Optimisation (Paper A, Sec. 6.2).  What the paper leaves unstated (learning rate, EMA, Adam betas)
    follows lucidrains' ``Trainer`` defaults; see the Deviations page."""

    steps: int = 50_000  # paper: unstated; Table 3 reaches 49.92k steps
    B: int = 16  # images per optimiser step ("-b16"); the KL network batch is B * d
    grad_accum: int = 1  # micro-batches per step (memory only: B stays the images per step)
    lr: float = 1e-4  # lucidrains Trainer default (the paper gives none; see the Deviations page)
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
    # how the fine-tuned network's output is corrected (Paper A, Sec. 6.6; Methods A.7); used with init_from
    finetune_correction: Literal["split", "first_term", "none"] = "split"

    def check(self) -> None:
        require(bool(_LABEL.match(self.label)), f"label may hold letters, digits, '.', '_' and '-' only, got {self.label!r}")
        if self.data.name == "toy2d":
            require(self.net.kind == "mlp", "toy2d holds 2-D points: use net.kind='mlp'")
            require(not self.sampler.clip_x0, "toy2d points are not in [-1, 1]: set sampler.clip_x0=false")
        else:
            require(self.net.kind == "unet", f"{self.data.name} holds images: use net.kind='unet'")
            C = CHANNELS[self.data.name]
            require(self.net.channels is None or self.net.channels == C,
                    f"net.channels={self.net.channels} does not match {self.data.name}, which has {C} channel(s)")
        T, S = self.diffusion.T, self.sampler.S
        require(S <= T and T % S == 0, f"sampler.S={S} must divide the training grid T={T}")
        self._check_finetuning()

    def _check_finetuning(self) -> None:
        if self.init_from is None:
            require(self.finetune_correction == "split", "finetune_correction applies only with init_from")
            return
        model = self.diffusion.model
        require(model != "baseline", "init_from fine-tunes a KL or KL* model from a baseline run; this run is a baseline")
        if model in ("kl", "kl_partial"):
            require(self.net.k_cond == "learned_zero_init",
                    "fine-tuning a KL model needs net.k_cond='learned_zero_init' so that step 0 equals the baseline for every k")
        else:
            require(self.finetune_correction != "first_term", "finetune_correction='first_term' applies to KL models, not KL*")


# --- hash and name --------------------------------------------------------------------------------

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
        data = cfg.data.name + (f"{res}" if res != DEFAULT_RESOLUTION.get(cfg.data.name) else "")
        label = f"{data}-{cfg.diffusion.tag}-b{cfg.train.B}-s{cfg.train.seed}" + ("-ft" if cfg.init_from else "")
    return f"{label}-{run_hash(cfg)}"


# --- the flat parameters of one run ---------------------------------------------------------------

def _default(cls: type, name: str) -> Any:
    """The declared default of field ``name`` of the dataclass ``cls`` (before any resolution in ``__post_init__``)."""
    f = cls.__dataclass_fields__[name]
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()


@dataclass(frozen=True)
class TrainParams(Config):
    """The flat parameters of one run: notebook 03's parameters cell, a matrix row merged with its data set's defaults.

    Each field sets one field of :class:`RunConfig` and defaults to that field's default (the paper's
    setting).  ``d``, ``d_prime``, ``T`` and ``ddim_S`` left at None follow the model: ``d`` 8 and
    ``T`` 20 for KL models, 1 and 1000 for the baseline (Methods A.3-A.5); DDIM takes every 50th of
    the baseline's 1000 levels (``S = 20``) and every grid point of a KL model (``S = T``; Methods A.6).
    The network kind (U-Net, or an MLP for ``toy2d``), DDIM's clipping (off for ``toy2d``) and how a
    fine-tuned KL network sees ``k`` (zero-initialised embedding; Methods A.7) follow the data and ``init_from``;
    ``k_cond``, ``kl_loss_form`` and ``kl_noise_norm`` set the other readings of Paper A's lost equations.
    """

    dataset: DatasetName = _default(DataConfig, "name")
    resolution: int | None = _default(DataConfig, "resolution")
    split: Literal["train", "test", "all"] = _default(DataConfig, "split")
    subset: int | None = _default(DataConfig, "subset")
    model: Literal["baseline", "kl", "kl_partial", "kl_star"] = _default(DiffusionConfig, "model")
    d: int | None = _default(DiffusionConfig, "d")
    d_prime: int | None = _default(DiffusionConfig, "d_prime")
    T: int | None = _default(DiffusionConfig, "T")
    B: int = _default(TrainConfig, "B")
    steps: int = _default(TrainConfig, "steps")
    seed: int = _default(TrainConfig, "seed")
    lr: float = _default(TrainConfig, "lr")
    grad_accum: int = _default(TrainConfig, "grad_accum")
    dim: int = _default(NetConfig, "dim")
    dim_mults: tuple[int, ...] = _default(NetConfig, "dim_mults")
    attn_heads: int = _default(NetConfig, "attn_heads")
    attn_dim_head: int = _default(NetConfig, "attn_dim_head")
    ddim_eta: float = _default(DDIMConfig, "eta")
    ddim_S: int | None = None  # None: follows the model (see above)
    checkpoint_every: int = _default(TrainConfig, "checkpoint_every")
    sample_every: int = _default(TrainConfig, "sample_every")
    eval_every: int = _default(TrainConfig, "eval_every")
    n_grid_samples: int = _default(TrainConfig, "n_grid_samples")
    init_from: str | None = _default(RunConfig, "init_from")  # a baseline run's folder, or its name under runs_dir
    finetune_correction: Literal["split", "first_term", "none"] = _default(RunConfig, "finetune_correction")
    label: str = _default(RunConfig, "label")
    # readings of the lost equations (Methods A.5; Deviations): None follows the model (see above)
    k_cond: Literal["time_offset", "learned_zero_init", "sinusoidal_added"] | None = None
    kl_loss_form: Literal["sum", "per_term"] = _default(DiffusionConfig, "kl_loss_form")
    kl_noise_norm: Literal["none", "unit"] = _default(DiffusionConfig, "kl_noise_norm")
    threads: int | None = _default(TrainConfig, "threads")  # torch CPU threads (speed only; not part of the run's hash)
    # fast paths (same maths, rounded differently, so they enter the run's hash when on; make bench measures them)
    channels_last: bool = _default(NetConfig, "channels_last")
    fused_adamw: bool = _default(TrainConfig, "fused_adamw")

    def run_config(self, runs_dir: str | Path | None = None) -> RunConfig:
        """The validated :class:`RunConfig`; a relative ``init_from`` that is no existing path names a run under ``runs_dir``."""
        toy = self.dataset == "toy2d"
        init = self.init_from
        if init is not None and runs_dir is not None and not Path(init).is_absolute() and not Path(init).exists():
            init = str(Path(runs_dir) / init)
        k_cond = self.k_cond or ("learned_zero_init" if init is not None and self.model in ("kl", "kl_partial") else "time_offset")
        net = NetConfig(kind="mlp" if toy else "unet", dim=self.dim, dim_mults=self.dim_mults, attn_heads=self.attn_heads,
                        attn_dim_head=self.attn_dim_head, k_cond=k_cond, channels_last=self.channels_last)
        diffusion = DiffusionConfig(model=self.model, d=self.d, d_prime=self.d_prime, T=self.T,
                                    kl_loss_form=self.kl_loss_form, kl_noise_norm=self.kl_noise_norm)
        S = self.ddim_S if self.ddim_S is not None else (_default(DDIMConfig, "S") if self.model == "baseline" else diffusion.T)
        train = TrainConfig(steps=self.steps, B=self.B, seed=self.seed, lr=self.lr, grad_accum=self.grad_accum,
                            checkpoint_every=self.checkpoint_every, sample_every=self.sample_every,
                            eval_every=self.eval_every, n_grid_samples=self.n_grid_samples, threads=self.threads,
                            fused_adamw=self.fused_adamw)
        return RunConfig(data=DataConfig(name=self.dataset, resolution=self.resolution, split=self.split, subset=self.subset),
                         net=net, diffusion=diffusion, train=train, sampler=DDIMConfig(eta=self.ddim_eta, S=S, clip_x0=not toy),
                         label=self.label, init_from=init,
                         finetune_correction=self.finetune_correction if init is not None else _default(RunConfig, "finetune_correction"))


def run_config_from_params(params: Mapping[str, Any], runs_dir: str | Path | None = None) -> RunConfig:
    """:meth:`TrainParams.run_config` of a mapping of flat parameters (unknown keys raise :class:`ConfigError`)."""
    return from_dict(TrainParams, params).run_config(runs_dir)


# --- from a file ----------------------------------------------------------------------------------

def _read_config_file(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist")
    try:
        data = tomllib.loads(p.read_text()) if p.suffix == ".toml" else json.loads(p.read_text())
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"config file {p} cannot be parsed: {e}") from None
    if "config" in data and "hash" in data:  # a run folder's config.json
        data = data["config"]
    return data


def _apply_set(data: dict[str, Any], text: str) -> None:
    """Apply one ``key=value`` override (dotted keys reach into sections) to ``data`` in place."""
    key, value = parse_set_option(text)
    *parents, leaf = key.split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {key}: {part!r} is not a section")
    node[leaf] = value


def load_run_config(path: str | Path | None = None, sets: list[str] | tuple[str, ...] = (),
                    runs_dir: str | Path | None = None) -> RunConfig:
    """A :class:`RunConfig` from a TOML or JSON file plus ``key=value`` overrides.

    The file (and the overrides) hold either the flat parameters of :class:`TrainParams`
    (``model = "kl"``, ``steps = 100``; the same as notebook 03 and the run matrices) or the sections
    of a :class:`RunConfig` (``[data]``, ``[net]``, ``[diffusion]``, ``[train]``, ``[sampler]``, with
    dotted overrides such as ``train.steps=100``; a run folder's ``config.json`` also works), not both.
    ``runs_dir`` resolves a flat ``init_from`` given as a run's name.  Unknown keys raise :class:`ConfigError`.
    """
    data: dict[str, Any] = _read_config_file(path) if path is not None else {}
    for text in sets:
        _apply_set(data, text)
    if not any(k in SECTIONS for k in data):
        return run_config_from_params(data, runs_dir)
    flat_only = {f.name for f in dataclasses.fields(TrainParams)} - {f.name for f in dataclasses.fields(RunConfig)}
    mixed = sorted(set(data) & flat_only)
    require(not mixed, f"give either flat run parameters ({', '.join(mixed)}) or the sections {', '.join(SECTIONS)}, not both")
    return from_dict(RunConfig, data)
