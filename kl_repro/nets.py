"""The denoising network ``eps_theta(x, t, k)`` of paper A (Sec. 5, Sec. 6.2; Methods A.5 for how it sees ``k``).

The paper borrows the U-Net of lucidrains' ``denoising-diffusion-pytorch`` ("a fixed U-Net
architecture for all experiments"); we use that class itself (pinned 2.1.1), configured by
:class:`NetConfig` (``dim=64, dim_mults=(1, 2, 4, 8)``, the library README's size: the paper gives
none).  For 2-D data a small MLP with the
same time embedding stands in.

The basis index ``k`` (0-based here, ``k = 0..d-1`` for the paper's ``k = 1..d``) enters in one of
two ways (the paper only says "no additional learnable parameters"; our choice, see the Deviations page):

* ``time_offset`` (default, zero new parameters): the time input becomes
  ``time_input + k_offset * k``, so each basis term gets its own band of the sinusoidal embedding;
* ``learned_zero_init``: ``nn.Embedding(d, time_dim)``, initialised to zero and added to the output
  of the time MLP, so at step 0 the network equals a pretrained one for every ``k`` (fine-tuning).

KL* (paper Sec. 6.5) widens the last convolution to ``out_mult * C = d * C`` outputs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from kl_repro.core.config import Config, ConfigError, require

__all__ = ["NetConfig", "DiffusionNet", "MLPDenoiser", "KTimeEmbedding", "build_net", "count_parameters"]

log = logging.getLogger("kl_repro")


@dataclass(frozen=True)
class NetConfig(Config):
    """Network settings; U-Net defaults are lucidrains' ``Unet`` with its README's ``dim=64, dim_mults=(1,2,4,8)``."""

    kind: Literal["unet", "mlp"] = "unet"  # "mlp" for 2-D data (toy2d)
    channels: int | None = None  # None: taken from the data; set it to insist on a channel count
    # --- lucidrains Unet: the paper's "fixed U-Net"; we take the README's size at every resolution ---
    dim: int = 64
    dim_mults: tuple[int, ...] = (1, 2, 4, 8)
    attn_heads: int = 4
    attn_dim_head: int = 32
    full_attn: tuple[bool, ...] | None = None  # None: lucidrains default, full attention at the innermost level only
    dropout: float = 0.0
    flash_attn: bool = False  # numerically irrelevant (lucidrains' default; its README example sets True)
    sinusoidal_pos_emb_theta: int = 10000
    # --- how the basis index k enters (Methods A.5; the Deviations page) ---
    k_cond: Literal["time_offset", "learned_zero_init", "sinusoidal_added"] = "time_offset"
    k_offset: float = 1000.0  # time-input offset per basis term, in 1000-step units
    # --- MLP for 2-D data (our choice; the paper has no 2-D experiments) ---
    mlp_hidden: int = 256
    mlp_layers: int = 3
    mlp_time_dim: int = 64  # sinusoidal embedding size; the time MLP outputs 4x this
    # --- performance switches (no effect on the maths) ---
    channels_last: bool = False  # NHWC memory layout: helps some CPU/GPU conv shapes, hurts others

    def check(self) -> None:
        require(self.channels is None or self.channels >= 1, f"channels must be None or >= 1, got {self.channels}")
        require(self.dim >= 4 and self.dim % 2 == 0, f"dim must be an even integer >= 4, got {self.dim}")
        require(len(self.dim_mults) >= 1 and all(m >= 1 for m in self.dim_mults), f"dim_mults must be positive integers, got {self.dim_mults}")
        require(self.full_attn is None or len(self.full_attn) == len(self.dim_mults),
                f"full_attn needs one flag per level of dim_mults ({len(self.dim_mults)}), got {self.full_attn}")
        require(self.attn_heads >= 1 and self.attn_dim_head >= 1, f"attn_heads and attn_dim_head must be >= 1")
        require(0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout}")
        require(self.sinusoidal_pos_emb_theta >= 2, f"sinusoidal_pos_emb_theta must be >= 2, got {self.sinusoidal_pos_emb_theta}")
        require(self.k_offset > 0, f"k_offset must be > 0, got {self.k_offset}")
        require(self.mlp_hidden >= 1 and self.mlp_layers >= 1, f"mlp_hidden and mlp_layers must be >= 1")
        require(self.mlp_time_dim >= 4 and self.mlp_time_dim % 2 == 0, f"mlp_time_dim must be an even integer >= 4, got {self.mlp_time_dim}")
        require(not (self.kind == "mlp" and self.channels_last), "channels_last applies to the U-Net only")


class _LayeredTimeMLP(nn.Module):
    """lucidrains' time MLP re-hosted layer by layer: the layers keep their names ``0..3``, so state-dict keys equal
    those of the plain ``nn.Sequential`` and a baseline checkpoint loads unchanged."""

    def __init__(self, time_mlp: nn.Sequential):
        super().__init__()
        self.n_layers = len(time_mlp)
        for i, layer in enumerate(time_mlp):
            self.add_module(str(i), layer)

    def _layers(self, h: torch.Tensor, start: int = 0) -> torch.Tensor:
        for i in range(start, self.n_layers):
            h = self._modules[str(i)](h)
        return h


class KTimeEmbedding(_LayeredTimeMLP):
    """lucidrains' time MLP plus a zero-initialised embedding of ``k`` added to its output (``learned_zero_init``).

    Only ``k_embed`` is new to a baseline checkpoint.  Input: ``(B,)`` time (no k) or ``(B, 2)`` rows ``(time, k)``.
    """

    def __init__(self, time_mlp: nn.Sequential, d: int, time_dim: int):
        super().__init__(time_mlp)
        self.k_embed = nn.Embedding(d, time_dim)
        nn.init.zeros_(self.k_embed.weight)

    def forward(self, time_k: torch.Tensor) -> torch.Tensor:
        h = self._layers(time_k if time_k.ndim == 1 else time_k[:, 0])
        if time_k.ndim == 2:
            h = h + self.k_embed(time_k[:, 1].round().long())
        return h


class KSinusoidalTimeEmbedding(_LayeredTimeMLP):
    """lucidrains' time MLP with a fixed sinusoidal embedding of ``k`` added to the time's (``sinusoidal_added``).

    ``h = MLP(SinEmb(t) + SinEmb(k))``: the first layer of the time MLP is the sinusoidal embedding
    itself, applied to ``k`` (0-based) as to the time; no new parameters.  One reading of "no additional
    learnable parameters" (Paper A, Sec. 4; Methods A.5).  Input: ``(B,)`` time (no k) or ``(B, 2)`` rows ``(time, k)``.
    """

    def forward(self, time_k: torch.Tensor) -> torch.Tensor:
        if time_k.ndim == 1:
            return self._layers(time_k)
        embed = self._modules["0"]
        return self._layers(embed(time_k[:, 0]) + embed(time_k[:, 1]), start=1)


class MLPDenoiser(nn.Module):
    """Noise predictor for 2-D points: ``[x, MLP(SinusoidalPosEmb(t))] -> MLP -> out_dim``; ``(B, D) -> (B, out_dim)``."""

    def __init__(self, in_dim: int, out_dim: int, hidden: int, layers: int, time_dim: int, theta: int):
        super().__init__()
        from denoising_diffusion_pytorch.denoising_diffusion_pytorch import SinusoidalPosEmb

        self.time_mlp = nn.Sequential(SinusoidalPosEmb(time_dim, theta=theta), nn.Linear(time_dim, 4 * time_dim), nn.GELU(),
                                      nn.Linear(4 * time_dim, 4 * time_dim))
        blocks: list[nn.Module] = [nn.Linear(in_dim + 4 * time_dim, hidden), nn.SiLU()]
        for _ in range(layers - 1):
            blocks += [nn.Linear(hidden, hidden), nn.SiLU()]
        blocks.append(nn.Linear(hidden, out_dim))
        self.body = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
        return self.body(torch.cat([x, self.time_mlp(time)], dim=1))


class DiffusionNet(nn.Module):
    """``eps_theta(x, time_input, k)``: a backbone (lucidrains ``Unet`` or :class:`MLPDenoiser`) plus k conditioning.

    ``x``: ``(B, C, H, W)`` or ``(B, D)``; ``time_input``: float ``(B,)`` in 1000-step units
    (``1000 t - 1`` for baseline and KL models alike, so checkpoints stay interchangeable; see the Deviations
    page); ``k``: long ``(B,)`` 0-based basis index, or None (baseline).
    Returns ``(B, out_mult * C, H, W)`` (or ``(B, out_mult * D)``).
    """

    def __init__(self, backbone: nn.Module, k_cond: str, k_offset: float, channels_last: bool, out_mult: int, d: int):
        super().__init__()
        self.backbone = backbone
        self.k_cond, self.k_offset, self.channels_last = k_cond, float(k_offset), channels_last
        self.out_mult, self.d = out_mult, d

    def forward(self, x: torch.Tensor, time_input: torch.Tensor, k: torch.Tensor | None = None) -> torch.Tensor:
        time_input = time_input.to(torch.float32)
        if k is not None:
            if self.k_cond == "time_offset":
                time_input = time_input + self.k_offset * k.to(torch.float32)
            else:
                time_input = torch.stack([time_input, k.to(torch.float32)], dim=1)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.backbone(x, time_input)


def count_parameters(module: nn.Module) -> int:
    """Number of parameters (trainable or not) of ``module``."""
    return sum(p.numel() for p in module.parameters())


def build_net(cfg: NetConfig, data_shape: tuple[int, ...], out_mult: int = 1, d: int = 1) -> DiffusionNet:
    """Build ``eps_theta`` for data of shape ``(C, H, W)`` (U-Net) or ``(D,)`` (MLP).

    ``out_mult``: output channels per data channel (``d`` for KL*, else 1); ``d``: number of basis
    terms, sizing the ``learned_zero_init`` embedding.  Bad shapes raise :class:`ConfigError`.
    """
    data_shape = tuple(int(s) for s in data_shape)
    require(out_mult >= 1 and d >= 1, f"out_mult and d must be >= 1, got {out_mult}, {d}")
    if cfg.kind == "unet":
        if len(data_shape) != 3:
            raise ConfigError(f"the U-Net needs image data (C, H, W), got shape {data_shape}; use NetConfig(kind='mlp') for 2-D points")
        C, H, W = data_shape
        factor = 2 ** (len(cfg.dim_mults) - 1)
        require(H % factor == 0 and W % factor == 0,
                f"image size {H}x{W} must be divisible by 2^(len(dim_mults)-1) = {factor} for dim_mults={cfg.dim_mults}")
    else:
        if len(data_shape) != 1:
            raise ConfigError(f"the MLP needs flat data (D,), got shape {data_shape}; use NetConfig(kind='unet') for images")
        C = data_shape[0]
    if cfg.channels is not None and cfg.channels != C:
        raise ConfigError(f"the network is configured for channels={cfg.channels} but the data has {C} channel(s)")

    if cfg.kind == "unet":
        from denoising_diffusion_pytorch import Unet

        backbone = Unet(
            dim=cfg.dim, dim_mults=cfg.dim_mults, channels=C, out_dim=out_mult * C,
            attn_heads=cfg.attn_heads, attn_dim_head=cfg.attn_dim_head, full_attn=cfg.full_attn,
            dropout=cfg.dropout, flash_attn=cfg.flash_attn, sinusoidal_pos_emb_theta=cfg.sinusoidal_pos_emb_theta,
        )
        time_dim = 4 * cfg.dim
    else:
        backbone = MLPDenoiser(C, out_mult * C, cfg.mlp_hidden, cfg.mlp_layers, cfg.mlp_time_dim, cfg.sinusoidal_pos_emb_theta)
        time_dim = 4 * cfg.mlp_time_dim
    if cfg.k_cond == "learned_zero_init":
        backbone.time_mlp = KTimeEmbedding(backbone.time_mlp, d, time_dim)
    elif cfg.k_cond == "sinusoidal_added":
        backbone.time_mlp = KSinusoidalTimeEmbedding(backbone.time_mlp)
    net = DiffusionNet(backbone, cfg.k_cond, cfg.k_offset, cfg.channels_last, out_mult, d)
    if cfg.channels_last:
        net = net.to(memory_format=torch.channels_last)
    log.info("built %s eps_theta for data %s (out_mult=%d, d=%d): %d parameters",
             cfg.kind, data_shape, out_mult, d, count_parameters(net))
    return net
