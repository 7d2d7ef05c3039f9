"""Samplers: DDIM (paper A, eqs. (23)-(24)) and the predictor-corrector baseline of paper B.

Each sampler is a small function over a model callable; sections are headed by the paper they implement.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

import torch

from kl_repro.core.config import Config, ConfigError, require

# ---------------------------------------------------------------------------------------------
# DDIM (paper A)
# ---------------------------------------------------------------------------------------------
# Song, Meng & Ermon 2021 as used by paper A, eq. (23), with the KL noise aggregation (24).  The
# sampling subsequence takes every (T/S)-th grid index: 0-based 999, 949, ..., 49 for the baseline
# (T = 1000, S = 20) and every grid point of the KL models (T = S = 20).  Image i draws its initial
# noise and its step noises from its own generator, seeded by (seed, i): samples do not depend on
# the batch size.

import math  # noqa: E402

from kl_repro.data import derive_seed  # noqa: E402
from kl_repro.core.rng import counter_normal  # noqa: E402
from kl_repro.paper_a.losses import DiffusionConfig, eps_predictor, make_grid  # noqa: E402


@dataclass(frozen=True)
class DDIMConfig(Config):
    """DDIM settings; defaults are paper A's sampler (spec section 2.2: eta = 1, S = 20, lucidrains clipping)."""

    eta: float = 1.0  # 1: DDPM-like ancestral steps (paper's FIDs); 0: deterministic DDIM
    S: int = 20  # sampling steps (the training grid for KL models)
    clip_x0: bool = True  # clip x0_hat to [-1, 1] and re-derive eps_hat from it (lucidrains); off for toy2d
    init_noise: Literal["unit", "kl_variance"] = "unit"  # x_T ~ N(0, I), or variance sigma_T^2 v_d(1) (ambiguity 19)

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

    ``x0_hat = (x - sqrt(1 - abar_t) eps) / sqrt(abar_t)`` (clipped and ``eps`` re-derived when
    ``clip_x0``), ``sigma = eta sqrt((1 - abar_prev)/(1 - abar_t)) sqrt(1 - abar_t/abar_prev)``,
    ``x_prev = sqrt(abar_prev) x0_hat + sqrt(1 - abar_prev - sigma^2) eps + sigma z``.
    """
    x0 = (x - math.sqrt(1.0 - alpha_bar_t) * eps) / math.sqrt(alpha_bar_t)
    if clip_x0:
        x0 = x0.clamp(-1.0, 1.0)
        eps = (x - math.sqrt(alpha_bar_t) * x0) / math.sqrt(1.0 - alpha_bar_t)
    sigma = eta * math.sqrt((1.0 - alpha_bar_prev) / (1.0 - alpha_bar_t)) * math.sqrt(max(0.0, 1.0 - alpha_bar_t / alpha_bar_prev))
    x_prev = math.sqrt(alpha_bar_prev) * x0 + math.sqrt(max(0.0, 1.0 - alpha_bar_prev - sigma**2)) * eps + sigma * z
    return x_prev, x0


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
    for name, v in (("n", n), ("batch_size", batch_size), ("first_index", first_index + 1)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ConfigError(f"{name} must be an integer >= {0 if name == 'first_index' else 1}, got {v!r}")
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
        from tqdm import tqdm

        bar = tqdm(total=n * len(taus), desc="DDIM", unit="step", disable=not progress, leave=False)
        with torch.no_grad():
            for start in range(0, n, batch_size):
                stop = min(n, start + batch_size)
                rows = range(first_index + start, first_index + stop)
                draw = lambda k: counter_normal(key, rows, k, shape).to(device)  # noqa: E731
                x = draw(0) * init_std
                for n_draw, j in enumerate(reversed(range(len(taus))), start=1):
                    ab_t = alpha_bar[taus[j]]
                    ab_prev = alpha_bar[taus[j - 1]] if j > 0 else 1.0
                    eps = eps_hat(x, taus[j])
                    z = draw(n_draw) if j > 0 else torch.zeros_like(x)
                    x, _ = ddim_step(x, eps, ab_t, ab_prev, ddim_cfg.eta, ddim_cfg.clip_x0, z)
                    bar.update(stop - start)
                out[start:stop] = x.float().cpu()
        bar.close()
    finally:
        net.train(was_training)
    return out


# ---------------------------------------------------------------------------------------------
# Predictor-corrector (paper B baseline, Song et al. 2021)
# ---------------------------------------------------------------------------------------------
# score_sde's loop: x ~ prior; for t in linspace(T, eps, N): corrector, then predictor; return the
# last noise-free mean (noise_removal).  PC1000 = N = 1000 predictor steps, one corrector step each.


@dataclass(frozen=True)
class PCConfig(Config):
    """Predictor-corrector sampler settings (score_sde ``configs``; defaults: VE NCSN++ cont., PC1000).

    * VE: ``reverse_diffusion`` + ``langevin`` with ``snr = 0.16`` (Song et al. App. H).
    * VP as Song ran it: ``euler_maruyama`` + ``none`` (P1000); a literal VP "PC1000" is
      ``reverse_diffusion`` + ``langevin`` with ``snr = 0.01`` (Song et al. Table 5).
    The number of steps is the SDE's ``N`` and the last time its ``eps``.
    """

    predictor: Literal["reverse_diffusion", "euler_maruyama", "none"] = "reverse_diffusion"
    corrector: Literal["langevin", "none"] = "langevin"
    snr: float = 0.16
    n_steps: int = 1  # corrector steps per predictor step (n_steps_each)
    denoise: bool = True  # noise_removal: return the last x_mean

    def check(self) -> None:
        require(self.snr > 0, f"snr must be > 0, got {self.snr}")
        require(self.n_steps >= 1, f"n_steps must be >= 1, got {self.n_steps}")
        require(self.predictor != "none" or self.corrector != "none", "predictor and corrector cannot both be 'none'")

    @property
    def label(self) -> str:
        p = {"reverse_diffusion": "RD", "euler_maruyama": "EM", "none": "C"}[self.predictor]
        c = "" if self.corrector == "none" else f"+Langevin(snr={self.snr:g})"
        return p + c


PC_PRESETS: dict[str, PCConfig] = {
    "ve_pc1000": PCConfig("reverse_diffusion", "langevin", 0.16),
    "vp_p1000": PCConfig("euler_maruyama", "none"),
    "vp_pc1000": PCConfig("reverse_diffusion", "langevin", 0.01),
}


def pc_preset(name: str) -> PCConfig:
    """A named baseline: ``ve_pc1000``, ``vp_p1000`` (Song's VP setting) or ``vp_pc1000`` (literal PC1000)."""
    try:
        return PC_PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown PC preset {name!r}; choose one of {', '.join(PC_PRESETS)}") from None


def _bshape(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return v.reshape(-1, *([1] * (x.ndim - 1)))


def reverse_diffusion_step(score: Callable, sde, x: torch.Tensor, t: torch.Tensor, z: torch.Tensor):
    """Reverse-diffusion predictor: ``x_mean = x - (f - G^2 s)``, ``x = x_mean + G z`` (score_sde)."""
    f, G = sde.discretize(x, t)
    x_mean = x - (f - G**2 * score(x, t))
    return x_mean + G * z, x_mean


def euler_maruyama_step(score: Callable, sde, x: torch.Tensor, t: torch.Tensor, z: torch.Tensor):
    """Euler-Maruyama predictor on the reverse SDE, ``dt = -T/N`` (paper B eq. (4))."""
    dt = -sde.T / sde.N
    g2 = _bshape(torch.as_tensor(sde.g2(t), dtype=x.dtype), x)
    x_mean = x + (sde.f(x, t) - g2 * score(x, t)) * dt
    return x_mean + torch.sqrt(g2 * -dt) * z, x_mean


def langevin_corrector_step(score: Callable, sde, x: torch.Tensor, t: torch.Tensor, snr: float, z: torch.Tensor):
    """score_sde ``LangevinCorrector``: ``step = 2 alpha (snr mean||z|| / mean||s||)^2`` (batch-averaged norms)."""
    grad = score(x, t)
    grad_norm = grad.reshape(x.shape[0], -1).norm(dim=1).mean()
    noise_norm = z.reshape(x.shape[0], -1).norm(dim=1).mean()
    step = _bshape(2.0 * sde.corrector_alpha(t, x) * (snr * noise_norm / grad_norm) ** 2, x)
    x_mean = x + step * grad
    return x_mean + torch.sqrt(2.0 * step) * z, x_mean


def pc_sample(
    score: Callable,
    sde,
    n: int,
    cfg: PCConfig = PCConfig(),
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, int]:
    """Draw ``n`` samples with the PC sampler of score_sde; returns ``(x, nfe)``.

    ``score(x, t)`` is a score model (``kl_repro.paper_b.sde``) with per-sample ``shape``; ``sde`` a ``VPSDE``
    or ``VESDE`` whose ``N`` steps and ``eps`` are used.  ``nfe`` counts the score calls actually made
    (each on the whole batch): ``N (n_steps + 1)`` for PC, ``N`` for a predictor without corrector.
    Samples are in the model's scale (no inverse scaling).
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"the number of samples n must be an integer >= 1, got {n!r}")
    shape = tuple(getattr(score, "shape", ()))
    if not shape:
        raise ConfigError("the score model must declare its per-sample `shape`")
    calls = [0]

    def s(x, t):
        calls[0] += 1
        return score(x, t)

    x = sde.prior_sample((n, *shape), generator=generator, dtype=dtype)
    x_mean = x
    timesteps = torch.linspace(sde.T, sde.eps, sde.N, dtype=torch.float64)
    with torch.no_grad():
        for t_i in timesteps:
            t = torch.full((n,), float(t_i), dtype=dtype)
            if cfg.corrector == "langevin":
                for _ in range(cfg.n_steps):
                    z = torch.randn(x.shape, generator=generator, dtype=dtype)
                    x, x_mean = langevin_corrector_step(s, sde, x, t, cfg.snr, z)
            if cfg.predictor != "none":
                z = torch.randn(x.shape, generator=generator, dtype=dtype)
                step = reverse_diffusion_step if cfg.predictor == "reverse_diffusion" else euler_maruyama_step
                x, x_mean = step(s, sde, x, t, z)
    out = x_mean if cfg.denoise else x
    n_bad = int((~torch.isfinite(out.reshape(n, -1)).all(1)).sum())
    if n_bad:
        raise FloatingPointError(f"PC sampler produced {n_bad} non-finite samples of {n} ({cfg.label}); check the score model")
    return out, calls[0]
