"""Continuous-time denoising score matching: a small score network and its training loop.

Paper B, eq. (3) (score_sde ``get_sde_loss_fn``, ``lambda(t) = sigma_t^2``); Methods B.1.  :func:`train_dsm`
serves the low-dimensional checks; the image experiments train their network with the same
:func:`dsm_loss` as a stored, resumable model (:mod:`kl_repro.paper_b.score_training`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from kl_repro.core.config import Config, require
from kl_repro.paper_b.scores import NetScore
from kl_repro.paper_b.sde import VESDE, VPSDE

__all__ = ["ScoreMLP", "DSMConfig", "dsm_loss", "train_dsm"]


class ScoreMLP(torch.nn.Module):
    """Small MLP ``(x, label) -> (N, d)`` for low-dimensional data; the label enters as Fourier features of its log."""

    def __init__(self, d: int, hidden: int = 128, layers: int = 3, n_freq: int = 16, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("freq", torch.randn(n_freq, generator=g) * 4.0)
        dims = [d + 2 * n_freq] + [hidden] * layers
        mods: list[torch.nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:]):
            mods += [torch.nn.Linear(a, b), torch.nn.SiLU()]
        mods.append(torch.nn.Linear(hidden, d))
        self.body = torch.nn.Sequential(*mods)

    def forward(self, x: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        c = torch.log(label.to(x.dtype)).reshape(-1, 1) / 4.0
        emb = torch.cat([torch.sin(c * self.freq), torch.cos(c * self.freq)], dim=1)
        return self.body(torch.cat([x, emb], dim=1))


@dataclass(frozen=True)
class DSMConfig(Config):
    """Continuous-time denoising score matching (paper B eq. (3); score_sde ``get_sde_loss_fn``)."""

    steps: int = 2000
    batch: int = 256
    lr: float = 2e-3
    hidden: int = 128
    layers: int = 3
    seed: int = 0

    def check(self) -> None:
        require(self.steps >= 1 and self.batch >= 1, f"steps and batch must be >= 1, got {self.steps}, {self.batch}")
        require(self.lr > 0, f"lr must be > 0, got {self.lr}")


def dsm_loss(score: Callable, x0: torch.Tensor, sde: VPSDE | VESDE, generator: torch.Generator | None = None) -> torch.Tensor:
    """``E_t E_z ||s(x_t, t) sigma_t + z||^2`` with ``t ~ U(sampling_eps, T)`` (eq. (3), ``lambda(t) = sigma_t^2``)."""
    t = sde.sampling_eps + (sde.T - sde.sampling_eps) * torch.rand(x0.shape[0], generator=generator, dtype=x0.dtype)
    z = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
    mean, std = sde.marginal(x0, t)
    s = score(mean + std * z, t)
    return ((s * std + z) ** 2).reshape(x0.shape[0], -1).sum(1).mean()


def train_dsm(data: torch.Tensor, sde: VPSDE | VESDE, cfg: DSMConfig = DSMConfig(), net: torch.nn.Module | None = None) -> tuple[NetScore, list[float]]:
    """Train a score network on ``data`` ``(n, *shape)`` by DSM; a :class:`ScoreMLP` unless ``net`` is given.

    Returns the score model and the loss per step.  Adam, constant learning rate, float32.
    """
    data = data.float()
    shape = tuple(data.shape[1:])
    torch.manual_seed(cfg.seed)
    net = net or ScoreMLP(int(np.prod(shape)), cfg.hidden, cfg.layers, seed=cfg.seed)
    model = NetScore(net, sde, shape)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    g = torch.Generator().manual_seed(cfg.seed)
    losses = []
    for _ in range(cfg.steps):
        idx = torch.randint(0, data.shape[0], (cfg.batch,), generator=g)
        loss = dsm_loss(model, data[idx], sde, g)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    net.eval()
    return model, losses
