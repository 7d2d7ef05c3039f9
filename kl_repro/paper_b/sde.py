"""The VP and VE forward SDEs of paper B, with score_sde's sampling conventions.

Paper B, Sec. 2.1, eqs. (1)-(3) (Song et al. 2021, ``sde_lib.py``; CIFAR-10 defaults); Methods B.1.
Continuous time ``t`` in ``[0, T]`` with horizon ``T = 1``; ``t = 0`` is data.  Samplers stop at the
smallest time ``sampling_eps`` (score_sde's "sampling epsilon") and take ``N`` steps.

* **VP**: the noise schedule is :class:`kl_repro.schedule.VPSchedule` (``beta(t)``, ``alpha_t``,
  ``sigma_t``, Methods A.1); here only the SDE around it: ``f = -beta x / 2``, ``g = sqrt(beta)``,
  ``x_t | x_0 ~ N(alpha_t x_0, sigma_t^2 I)``, prior ``N(0, I)``, ``sampling_eps = 1e-3``.
* **VE**: ``sigma(t) = sigma_min (sigma_max / sigma_min)^t``, ``f = 0``,
  ``g = sigma(t) sqrt(2 log(sigma_max / sigma_min))``; ``x_t | x_0 ~ N(x_0, sigma(t)^2 I)``;
  prior ``N(0, sigma_max^2 I)``, ``sampling_eps = 1e-5``.

Every method accepts ``t`` as a float or a tensor and answers in the same kind (tensors keep their dtype).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Literal

import torch

from kl_repro.core.config import Config, ConfigError, require
from kl_repro.schedule import VPSchedule

__all__ = ["VPSDE", "VESDE", "make_sde", "time_column"]


def time_column(t, x: torch.Tensor) -> torch.Tensor:
    """``t`` as a tensor of ``x``'s dtype/device with shape ``(N, 1, ..., 1)`` broadcasting against ``x``."""
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    if t.ndim == 0:
        t = t.expand(x.shape[0])
    return t.reshape(-1, *([1] * (x.ndim - 1)))


def _check_times(sde) -> None:
    require(sde.N >= 1, f"N must be >= 1, got {sde.N}")
    require(0 < sde.sampling_eps < sde.T, f"need 0 < sampling_eps < T, got sampling_eps={sde.sampling_eps}, T={sde.T}")


class _Discrete:
    """score_sde's step index shared by both SDEs."""

    def step_index(self, t, x: torch.Tensor) -> torch.Tensor:
        """score_sde's ``timestep = (t (N - 1) / T).long()``, shape ``(N_batch,)``."""
        t = time_column(t, x).reshape(-1)
        return (t * (self.N - 1) / self.T).long()


@dataclass(frozen=True)
class VPSDE(_Discrete, Config):
    """Variance-preserving SDE (score_sde ``VPSDE``) on the shared :class:`~kl_repro.schedule.VPSchedule`."""

    beta_min: float = VPSchedule.beta_min
    beta_max: float = VPSchedule.beta_max
    N: int = 1000  # discretisation steps of the samplers (num_scales)
    T: float = 1.0  # time horizon
    sampling_eps: float = 1e-3  # smallest sampling time (score_sde run_lib.py)

    kind = "vp"

    def check(self) -> None:
        self.schedule.check()
        _check_times(self)

    @cached_property
    def schedule(self) -> VPSchedule:
        """The VP noise schedule with this SDE's ``beta_min``, ``beta_max``."""
        return VPSchedule(self.beta_min, self.beta_max)

    def beta(self, t):
        return self.schedule.beta_of(t)

    def log_alpha(self, t):
        return self.schedule.log_alpha_of(t)

    def alpha(self, t):
        """Signal scale ``alpha_t`` (float or tensor, like ``t``)."""
        return torch.exp(self.log_alpha(t)) if torch.is_tensor(t) else math.exp(self.log_alpha(t))

    def sigma(self, t):
        """Noise scale ``sigma_t = sqrt(1 - alpha_t^2)``."""
        if torch.is_tensor(t):
            return torch.sqrt(-torch.expm1(2 * self.log_alpha(t)))
        return math.sqrt(-math.expm1(2 * self.log_alpha(t)))

    def g2(self, t):
        """Squared diffusion ``g(t)^2 = beta(t)``."""
        return self.beta(t)

    def f(self, x: torch.Tensor, t) -> torch.Tensor:
        """Forward drift ``f(x, t) = -beta(t) x / 2``."""
        return -0.5 * self.beta(time_column(t, x)) * x

    def marginal(self, x0: torch.Tensor, t) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean ``alpha_t x0`` and std ``sigma_t`` (broadcast shape) of ``x_t | x_0``."""
        tt = time_column(t, x0)
        return self.alpha(tt) * x0, self.sigma(tt)

    @property
    def prior_std(self) -> float:
        return 1.0

    def prior_sample(self, shape, generator: torch.Generator | None = None, dtype=torch.float32) -> torch.Tensor:
        """Draws from the prior ``N(0, I)``."""
        return torch.randn(*shape, generator=generator, dtype=dtype)

    def _discrete_betas(self) -> torch.Tensor:
        """score_sde's DDPM betas ``linspace(beta_min / N, beta_max / N, N)``, float64 ``(N,)``."""
        return torch.linspace(self.beta_min / self.N, self.beta_max / self.N, self.N, dtype=torch.float64)

    def discretize(self, x: torch.Tensor, t) -> tuple[torch.Tensor, torch.Tensor]:
        """DDPM discretisation ``(f, G)``: ``f = sqrt(1 - beta_i) x - x``, ``G = sqrt(beta_i)`` (score_sde)."""
        b = self._discrete_betas()[self.step_index(t, x)].to(x)
        b = b.reshape(-1, *([1] * (x.ndim - 1)))
        return torch.sqrt(1.0 - b) * x - x, torch.sqrt(b)

    def corrector_alpha(self, t, x: torch.Tensor) -> torch.Tensor:
        """``alphas[timestep] = 1 - beta_i`` used by score_sde's Langevin corrector for VP, shape ``(N,)``."""
        return (1.0 - self._discrete_betas()[self.step_index(t, x)]).to(x)


@dataclass(frozen=True)
class VESDE(_Discrete, Config):
    """Variance-exploding SDE (score_sde ``VESDE``; CIFAR-10 defaults)."""

    sigma_min: float = 0.01
    sigma_max: float = 50.0
    N: int = 1000
    T: float = 1.0  # time horizon
    sampling_eps: float = 1e-5  # smallest sampling time (score_sde run_lib.py)

    kind = "ve"

    def check(self) -> None:
        require(0 < self.sigma_min < self.sigma_max, f"need 0 < sigma_min < sigma_max, got {self.sigma_min}, {self.sigma_max}")
        _check_times(self)

    def alpha(self, t):
        return torch.ones_like(t) if torch.is_tensor(t) else 1.0

    def sigma(self, t):
        """``sigma(t) = sigma_min (sigma_max / sigma_min)^t``."""
        r = self.sigma_max / self.sigma_min
        return self.sigma_min * (r**t if torch.is_tensor(t) else r ** float(t))

    def t_of_sigma(self, sigma: float) -> float:
        """The time ``t`` with ``sigma(t) = sigma``."""
        return math.log(sigma / self.sigma_min) / math.log(self.sigma_max / self.sigma_min)

    def g2(self, t):
        """``g(t)^2 = sigma(t)^2 2 log(sigma_max / sigma_min)``."""
        return self.sigma(t) ** 2 * 2.0 * math.log(self.sigma_max / self.sigma_min)

    def f(self, x: torch.Tensor, t) -> torch.Tensor:
        return torch.zeros_like(x)

    def marginal(self, x0: torch.Tensor, t) -> tuple[torch.Tensor, torch.Tensor]:
        return x0, self.sigma(time_column(t, x0))

    @property
    def prior_std(self) -> float:
        return self.sigma_max

    def prior_sample(self, shape, generator: torch.Generator | None = None, dtype=torch.float32) -> torch.Tensor:
        """Draws from the prior ``N(0, sigma_max^2 I)``."""
        return torch.randn(*shape, generator=generator, dtype=dtype) * self.sigma_max

    def discretize(self, x: torch.Tensor, t) -> tuple[torch.Tensor, torch.Tensor]:
        """SMLD discretisation: ``f = 0``, ``G = sqrt(sigma_i^2 - sigma_{i-1}^2)`` with ``sigma_{-1} = 0``."""
        i = self.step_index(t, x)
        sig = torch.exp(torch.linspace(math.log(self.sigma_min), math.log(self.sigma_max), self.N, dtype=torch.float64))
        s = sig[i]
        s_prev = torch.where(i == 0, torch.zeros_like(s), sig[(i - 1).clamp_min(0)])
        G = torch.sqrt(s**2 - s_prev**2).to(x).reshape(-1, *([1] * (x.ndim - 1)))
        return torch.zeros_like(x), G

    def corrector_alpha(self, t, x: torch.Tensor) -> torch.Tensor:
        return torch.ones(x.shape[0], dtype=x.dtype)


def make_sde(kind: Literal["vp", "ve"], **kwargs) -> VPSDE | VESDE:
    """``VPSDE(**kwargs)`` or ``VESDE(**kwargs)`` by name."""
    if kind == "vp":
        return VPSDE(**kwargs)
    if kind == "ve":
        return VESDE(**kwargs)
    raise ConfigError(f"unknown SDE {kind!r}; choose 'vp' or 've'")
