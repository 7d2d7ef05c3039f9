"""The predictor-corrector baseline of paper B (Song et al. 2021, score_sde's ``pc_sampler``).

Paper B, Sec. 2.1 and 4.1 (PC1000 as the baseline of Table 1); Methods B.1.  score_sde's loop:
``x ~ prior``; for ``t`` in ``linspace(T, sampling_eps, N)``: corrector, then predictor; return the
last noise-free mean (``noise_removal``).  PC1000 = ``N = 1000`` predictor steps, one corrector step each.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

import torch

from kl_repro.core.config import Config, ConfigError, require

__all__ = [
    "PCConfig",
    "PC_PRESETS",
    "pc_preset",
    "reverse_diffusion_step",
    "euler_maruyama_step",
    "langevin_corrector_step",
    "pc_sample",
]


@dataclass(frozen=True)
class PCConfig(Config):
    """Predictor-corrector sampler settings (score_sde ``configs``; defaults: VE NCSN++ cont., PC1000).

    * VE: ``reverse_diffusion`` + ``langevin`` with ``snr = 0.16`` (Song et al. App. H).
    * VP as Song ran it: ``euler_maruyama`` + ``none`` (P1000); a literal VP "PC1000" is
      ``reverse_diffusion`` + ``langevin`` with ``snr = 0.01`` (Song et al. Table 5).
    The number of steps is the SDE's ``N`` and the last time its ``sampling_eps``.
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
    """score_sde ``LangevinCorrector``: step ``2 alpha (snr mean||z|| / mean||s||)^2`` (batch-averaged norms)."""
    grad = score(x, t)
    grad_norm = grad.reshape(x.shape[0], -1).norm(dim=1).mean()
    noise_norm = z.reshape(x.shape[0], -1).norm(dim=1).mean()
    step = _bshape(2.0 * sde.corrector_alpha(t, x) * (snr * noise_norm / grad_norm) ** 2, x)
    x_mean = x + step * grad
    return x_mean + torch.sqrt(2.0 * step) * z, x_mean


class _Counted:
    """A score model that counts its calls (each on the whole batch): the NFE."""

    def __init__(self, score: Callable):
        self.score, self.calls = score, 0

    def __call__(self, x, t):
        self.calls += 1
        return self.score(x, t)


def _check_request(score: Callable, n) -> tuple[int, ...]:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"the number of samples n must be an integer >= 1, got {n!r}")
    shape = tuple(getattr(score, "shape", ()))
    if not shape:
        raise ConfigError("the score model must declare its per-sample `shape`")
    return shape


def pc_sample(
    score: Callable,
    sde,
    n: int,
    cfg: PCConfig = PCConfig(),
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, int]:
    """Draw ``n`` samples with the PC sampler of score_sde; returns ``(x, nfe)``.

    ``score(x, t)`` is a score model (:mod:`kl_repro.paper_b.scores`) with per-sample ``shape``; ``sde`` a
    ``VPSDE`` or ``VESDE`` whose ``N`` steps and ``sampling_eps`` are used.  ``nfe`` counts the score calls
    actually made (each on the whole batch): ``N (n_steps + 1)`` for PC, ``N`` for a predictor without
    corrector.  Samples ``(n, *shape)`` are in the model's scale (no inverse scaling).
    """
    shape = _check_request(score, n)
    s = _Counted(score)
    x = sde.prior_sample((n, *shape), generator=generator, dtype=dtype)
    x_mean = x
    predictor = reverse_diffusion_step if cfg.predictor == "reverse_diffusion" else euler_maruyama_step
    with torch.no_grad():
        for t_i in torch.linspace(sde.T, sde.sampling_eps, sde.N, dtype=torch.float64):
            t = torch.full((n,), float(t_i), dtype=dtype)
            if cfg.corrector == "langevin":
                for _ in range(cfg.n_steps):
                    z = torch.randn(x.shape, generator=generator, dtype=dtype)
                    x, x_mean = langevin_corrector_step(s, sde, x, t, cfg.snr, z)
            if cfg.predictor != "none":
                z = torch.randn(x.shape, generator=generator, dtype=dtype)
                x, x_mean = predictor(s, sde, x, t, z)
    out = x_mean if cfg.denoise else x
    n_bad = int((~torch.isfinite(out.reshape(n, -1)).all(1)).sum())
    if n_bad:
        raise FloatingPointError(f"PC sampler produced {n_bad} non-finite samples of {n} ({cfg.label}); check the score model")
    return out, s.calls
