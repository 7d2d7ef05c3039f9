"""A small score network for paper B's image experiments, trained by denoising score matching.

Paper B's baselines are score_sde's NCSN++ (VE) and DDPM++ (VP) continuous networks trained with the
continuous DSM loss, eq. (3) (Methods B.1).  Training one of those is out of reach on a CPU, so the
quality claims are tested on a small network trained here with the same loss
(:func:`kl_repro.paper_b.dsm.dsm_loss`) and the same SDEs; PC and the FP sampler then use the *same*
trained network (the Deviations page).

* :class:`ScoreNetConfig`: the network and its training (frozen; its hash keys the stored model);
* :class:`ResidualMLP`: ``eps_theta(x_in, c)`` on flattened images, a residual MLP whose blocks see
  Gaussian Fourier features of the noise level ``c = log(sigma_t / alpha_t)`` (score_sde's NCSN++
  embeds ``log sigma`` the same way);
* :class:`TrainedScore`: the score model ``s(x, t) = -eps_theta(c_in (x - alpha_t mu), c) / sigma_t``
  with ``c_in = 1 / sqrt(alpha_t^2 s_d^2 + sigma_t^2)`` (input scaling to unit variance; ``mu``,
  ``s_d`` the training pixels' mean and standard deviation).  With ``-eps / sigma`` as the output the
  DSM loss (3) with ``lambda(t) = sigma_t^2`` is the noise-prediction loss (score_sde's
  ``scale_by_sigma`` for VE, its ``-eps / sigma`` for VP).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn

from kl_repro.core.config import Config, require
from kl_repro.paper_b.scores import check_score_input
from kl_repro.paper_b.sde import VESDE, VPSDE, time_column

__all__ = ["ScoreNetConfig", "ResidualMLP", "TrainedScore", "build_score_model", "net_label"]


@dataclass(frozen=True)
class ScoreNetConfig(Config):
    """A small score network and its DSM training (paper B eq. (3)); training defaults are score_sde's CIFAR-10 ones.

    The stored model is keyed by the hash of this config (:mod:`kl_repro.paper_b.score_training`): two
    chapters with the same config share one trained network.
    """

    dataset: str = "digits"
    pool: int = 1500  # the first `pool` training images (the ideal score's pool)
    resolution: int | None = None  # None: the data set's default (digits 8, MNIST 32)
    sde: Literal["ve", "vp"] = "ve"
    # --- the network: deviation, a residual MLP instead of NCSN++ / DDPM++ (CPU budget; the Deviations page) ---
    width: int = 256
    blocks: int = 4
    n_freq: int = 32  # Gaussian Fourier features of the noise level
    fourier_scale: float = 1.0  # their frequencies ~ N(0, scale^2) (score_sde: 16 on log sigma)
    # --- training: score_sde's CIFAR-10 settings (Adam, warm-up, gradient clipping, EMA) ---
    steps: int = 1_300_000  # score_sde n_iters; the profiles train for a few thousand steps
    batch: int = 128
    lr: float = 2e-4
    warmup: int = 5000
    grad_clip: float = 1.0
    ema_decay: float = 0.9999
    checkpoint_every: int = 500  # steps between resumable checkpoints
    seed: int = 0

    def check(self) -> None:
        require(self.dataset in ("digits", "mnist", "cifar10"), f"dataset must be digits, mnist or cifar10, got {self.dataset!r}")
        require(self.pool >= 2, f"pool must be >= 2, got {self.pool}")
        require(self.width >= 8 and self.blocks >= 1 and self.n_freq >= 1, "width >= 8, blocks >= 1 and n_freq >= 1 are needed")
        require(self.fourier_scale > 0, f"fourier_scale must be > 0, got {self.fourier_scale}")
        require(self.steps >= 1 and self.batch >= 1, f"steps and batch must be >= 1, got {self.steps}, {self.batch}")
        require(self.lr > 0 and self.warmup >= 0 and self.grad_clip >= 0, "lr > 0, warmup >= 0 and grad_clip >= 0 are needed")
        require(0 <= self.ema_decay < 1, f"ema_decay must be in [0, 1), got {self.ema_decay}")
        require(self.checkpoint_every >= 1, f"checkpoint_every must be >= 1, got {self.checkpoint_every}")


class _Block(nn.Module):
    """``h + W2 silu(W1 silu(LN h) + E e)``: one residual block conditioned on the noise embedding ``e``."""

    def __init__(self, width: int):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc1, self.emb, self.fc2 = nn.Linear(width, width), nn.Linear(width, width), nn.Linear(width, width)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, h: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        return h + self.fc2(torch.nn.functional.silu(self.fc1(torch.nn.functional.silu(self.norm(h))) + self.emb(e)))


class ResidualMLP(nn.Module):
    """``eps_theta(x_in (N, d), c (N,)) -> (N, d)``: input layer, ``blocks`` residual blocks of ``width``, output layer."""

    def __init__(self, d: int, width: int, blocks: int, n_freq: int, fourier_scale: float, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("freq", torch.randn(n_freq, generator=g) * fourier_scale)
        self.inp = nn.Linear(d, width)
        self.embed = nn.Sequential(nn.Linear(2 * n_freq, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU())
        self.blocks = nn.ModuleList(_Block(width) for _ in range(blocks))
        self.out = nn.Sequential(nn.LayerNorm(width), nn.SiLU(), nn.Linear(width, d))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        proj = 2 * math.pi * c.reshape(-1, 1).to(x.dtype) * self.freq
        e = self.embed(torch.cat([torch.sin(proj), torch.cos(proj)], dim=1))
        h = self.inp(x)
        for block in self.blocks:
            h = block(h, e)
        return self.out(h)


class TrainedScore(nn.Module):
    """A trained network as a score model ``score(x (N, *shape), t) -> (N, *shape)`` (see the module docstring).

    ``center``, ``scale``: the training pixels' mean and standard deviation in the model's scale
    (buffers, stored with the weights).  float32; ``dtype`` tells the FP set-up which precision to feed.
    """

    dtype = torch.float32

    def __init__(self, net: nn.Module, sde: VPSDE | VESDE, shape: tuple[int, ...], center: float = 0.0, scale: float = 1.0):
        super().__init__()
        self.net, self.sde, self.shape = net, sde, tuple(shape)
        self.register_buffer("center", torch.tensor(float(center)))
        self.register_buffer("scale", torch.tensor(float(scale)))

    def noise_level(self, t, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``alpha_t`` and ``sigma_t`` as ``(N, 1)`` columns of ``x``'s dtype."""
        tt = time_column(t, x.reshape(x.shape[0], -1))
        return self.sde.alpha(tt), self.sde.sigma(tt)

    def forward(self, x: torch.Tensor, t) -> torch.Tensor:
        check_score_input(self, x)
        xf = x.reshape(x.shape[0], -1).to(self.dtype)
        alpha, sigma = self.noise_level(t, xf)
        c_in = torch.rsqrt(alpha**2 * self.scale**2 + sigma**2)
        eps = self.net(c_in * (xf - alpha * self.center), torch.log(sigma / alpha).reshape(-1))
        return (-eps / sigma).reshape(x.shape).to(x.dtype)


def build_score_model(cfg: ScoreNetConfig, sde: VPSDE | VESDE, shape: tuple[int, ...], center: float = 0.0,
                      scale: float = 1.0) -> TrainedScore:
    """The (untrained) score model of ``cfg`` for images of per-sample ``shape`` in the model's scale."""
    with torch.random.fork_rng():  # the initialisation is seeded by cfg.seed and leaves the global generator alone
        torch.manual_seed(cfg.seed)
        net = ResidualMLP(int(np.prod(shape)), cfg.width, cfg.blocks, cfg.n_freq, cfg.fourier_scale, cfg.seed)
    return TrainedScore(net, sde, shape, center, scale)


def net_label(cfg: ScoreNetConfig, n_params: int) -> str:
    """``"residual MLP (4 x 256, 0.61 M parameters, VE)"``: how tables and verdicts name the network."""
    return f"residual MLP ({cfg.blocks} x {cfg.width}, {n_params / 1e6:.2f} M parameters, {cfg.sde.upper()})"
