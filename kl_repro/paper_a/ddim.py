"""DDIM sampling of paper A, eqs. (23)-(24) (Song, Meng & Ermon 2021; Methods A.6).

The sampling subsequence takes every (T/S)-th grid index: 0-based 999, 949, ..., 49 for the baseline
(T = 1000 training grid points, S = 20 steps) and every grid point of the KL models (T = S = 20).  The
network's noise prediction ``eps`` is aggregated over the ``d`` KL terms by eq. (24)
(:func:`kl_repro.paper_a.losses.eps_predictor`).  Image ``i`` draws its initial noise and its step
noises from its own counter-based stream, keyed by ``(seed, i)``: samples do not depend on the batch size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Literal

import torch
from tqdm import tqdm

from kl_repro.core.config import Config, ConfigError, require
from kl_repro.core.rng import counter_normal
from kl_repro.data import derive_seed
from kl_repro.paper_a.losses import DiffusionConfig, eps_predictor, make_grid

__all__ = ["DDIMConfig", "ddim_timesteps", "ddim_step", "ddim_sample"]


@dataclass(frozen=True)
class DDIMConfig(Config):
    """DDIM settings; defaults are paper A's sampler as we read it: eta = 1, S = 20, clipping of ``x0_hat`` as
    in denoising-diffusion-pytorch (Methods A.6; the Deviations page)."""

    eta: float = 1.0  # 1: DDPM-like ancestral steps (paper's FIDs); 0: deterministic DDIM
    S: int = 20  # sampling steps (the training grid for KL models)
    clip_x0: bool = True  # clip x0_hat to [-1, 1] and re-derive eps from it (denoising-diffusion-pytorch); off for toy2d
    # x_T ~ N(0, I) as for the baseline (our choice), or with the KL noise's variance sigma_T^2 v_d(1):
    init_noise: Literal["unit", "kl_variance"] = "unit"

    def check(self) -> None:
        require(self.eta >= 0, f"eta must be >= 0, got {self.eta}")
        require(self.S >= 1, f"S (DDIM steps) must be >= 1, got {self.S}")


def ddim_timesteps(T: int, S: int) -> list[int]:
    """0-based grid indices ``tau_1 < ... < tau_S``, every ``T/S``-th ending at ``T - 1`` (T = 1000, S = 20: 49 .. 999)."""
    if S > T or T % S:
        raise ConfigError(f"DDIM needs S to divide the training grid: T={T}, S={S}")
    return [(T // S) * (j + 1) - 1 for j in range(S)]


def ddim_step(x: torch.Tensor, eps: torch.Tensor, alpha_bar_t: float, alpha_bar_prev: float, eta: float,
              clip_x0: bool, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One DDIM step, paper A eq. (23); returns ``(x_prev, x0_hat)``.

    ``eps`` is the predicted noise.  ``x0_hat = (x - sqrt(1 - abar_t) eps) / sqrt(abar_t)`` (clipped and
    ``eps`` re-derived when ``clip_x0``); the step's noise scale (DDIM's sigma, not the VP ``sigma_t``) is
    ``sigma_ddim = eta sqrt((1 - abar_prev)/(1 - abar_t)) sqrt(1 - abar_t/abar_prev)``, and
    ``x_prev = sqrt(abar_prev) x0_hat + sqrt(1 - abar_prev - sigma_ddim^2) eps + sigma_ddim z``.
    """
    x0 = (x - math.sqrt(1.0 - alpha_bar_t) * eps) / math.sqrt(alpha_bar_t)
    if clip_x0:
        x0 = x0.clamp(-1.0, 1.0)
        eps = (x - math.sqrt(alpha_bar_t) * x0) / math.sqrt(1.0 - alpha_bar_t)
    sigma_ddim = eta * math.sqrt((1.0 - alpha_bar_prev) / (1.0 - alpha_bar_t)) * math.sqrt(
        max(0.0, 1.0 - alpha_bar_t / alpha_bar_prev))
    x_prev = (math.sqrt(alpha_bar_prev) * x0 + math.sqrt(max(0.0, 1.0 - alpha_bar_prev - sigma_ddim**2)) * eps
              + sigma_ddim * z)
    return x_prev, x0


def _check_counts(n: int, batch_size: int, first_index: int) -> None:
    for name, v, least in (("n", n, 1), ("batch_size", batch_size, 1), ("first_index", first_index, 0)):
        if isinstance(v, bool) or not isinstance(v, int) or v < least:
            raise ConfigError(f"{name} must be an integer >= {least}, got {v!r}")


def _sample_rows(eps_hat: Callable, draw: Callable, taus: list[int], alpha_bar: list[float], init_std: float,
                 ddim_cfg: DDIMConfig, bar) -> torch.Tensor:
    """The reverse chain for one batch of rows: draw 0 is ``x_T``, then one noise draw per step but the last."""
    x = draw(0) * init_std
    for n_draw, j in enumerate(reversed(range(len(taus))), start=1):
        ab_t = alpha_bar[taus[j]]
        ab_prev = alpha_bar[taus[j - 1]] if j > 0 else 1.0
        eps = eps_hat(x, taus[j])
        z = draw(n_draw) if j > 0 else torch.zeros_like(x)
        x, _ = ddim_step(x, eps, ab_t, ab_prev, ddim_cfg.eta, ddim_cfg.clip_x0, z)
        bar.update(x.shape[0])
    return x


def ddim_sample(net: torch.nn.Module, diff_cfg: DiffusionConfig, ddim_cfg: DDIMConfig, n: int, seed: int,
                batch_size: int, data_shape: tuple[int, ...], device: str | torch.device = "cpu",
                progress: bool = False, first_index: int = 0) -> torch.Tensor:
    """Draw ``n`` samples ``(n, *data_shape)`` with DDIM (23) and the aggregated prediction (24) (float32, CPU).

    Images come out in [-1, 1] when ``clip_x0`` (the last step returns ``x0_hat``).  Image ``i``'s
    noises are its own counter-based stream (:func:`kl_repro.core.rng.counter_normal` with key
    ``derive_seed("ddim", seed)``: draw 0 is ``x_T``, then one draw per step), so the result does not
    depend on ``batch_size``; images ``first_index .. first_index + n - 1`` are drawn, so a large
    sample can be produced in pieces.
    """
    _check_counts(n, batch_size, first_index)
    key = derive_seed("ddim", seed)
    grid = make_grid(diff_cfg)
    taus = ddim_timesteps(grid.T, ddim_cfg.S)
    alpha_bar = [float(a) for a in grid.alpha_bar]
    init_std = 1.0
    if ddim_cfg.init_noise == "kl_variance":
        init_std = math.sqrt((1.0 - alpha_bar[-1]) * float((grid.E[-1] ** 2).sum()))
    eps_hat = eps_predictor(net, diff_cfg)
    shape = tuple(int(s) for s in data_shape)
    out = torch.empty((n, *shape), dtype=torch.float32)
    was_training = net.training
    net.eval()
    try:
        bar = tqdm(total=n * len(taus), desc="DDIM", unit="step", disable=not progress, leave=False)
        with torch.no_grad():
            for start in range(0, n, batch_size):
                stop = min(n, start + batch_size)
                rows = range(first_index + start, first_index + stop)
                draw = lambda n_draw, rows=rows: counter_normal(key, rows, n_draw, shape).to(device)  # noqa: E731
                out[start:stop] = _sample_rows(eps_hat, draw, taus, alpha_bar, init_std, ddim_cfg, bar).float().cpu()
        bar.close()
    finally:
        net.train(was_training)
    return out
