"""Noise schedules: the continuous VP schedule and the discrete DDPM linear schedule.

Paper A, eq. (4) (Methods A.1); paper B's VP SDE is the same schedule (Methods B.1).  :class:`VPSchedule`
is the one place the VP constants live; every other module takes them from it.

* ``beta(t) = beta_min + t (beta_max - beta_min)``, ``beta_min = 0.1``, ``beta_max = 20``;
* ``alpha_t = exp(-1/2 int_0^t beta) = exp(-t^2 (beta_max - beta_min)/4 - t beta_min / 2)``;
* ``sigma_t = sqrt(1 - alpha_t^2)``, ``alpha_bar(t) = alpha_t^2`` (DDIM's "alpha").

Continuous time ``t`` lives in [0, 1]; an integer ``step`` indexes a discrete grid.
The DDPM linear schedule with T = 1000 (betas 1e-4 .. 0.02) is the same schedule sampled on
``t = (step + 1) / 1000``; :func:`schedule_agreement` measures how closely (Methods A.1).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kl_repro.core.config import Config, ConfigError, require

__all__ = ["VPSchedule", "ddpm_linear_alpha_bar", "training_grid", "time_input", "schedule_agreement"]


@dataclass(frozen=True)
class VPSchedule(Config):
    """Continuous variance-preserving schedule (Song et al. 2021; paper A eq. (4))."""

    beta_min: float = 0.1
    beta_max: float = 20.0

    def check(self) -> None:
        require(0 < self.beta_min <= self.beta_max, f"need 0 < beta_min <= beta_max, got {self.beta_min}, {self.beta_max}")

    def beta(self, t):
        """``beta(t)``, the noise rate at continuous time ``t`` (float64 NumPy)."""
        return self.beta_of(np.asarray(t, dtype=np.float64))

    def log_alpha(self, t):
        """``log alpha_t = -t^2 (beta_max - beta_min)/4 - t beta_min/2`` (float64 NumPy)."""
        return self.log_alpha_of(np.asarray(t, dtype=np.float64))

    def beta_of(self, t):
        """``beta(t)`` in ``t``'s own type and dtype: a float, a NumPy array or a torch tensor (no conversion)."""
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def log_alpha_of(self, t):
        """``log alpha_t`` in ``t``'s own type and dtype (float, NumPy array or torch tensor; no conversion)."""
        return -0.25 * t**2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

    def alpha(self, t):
        """Signal scale ``alpha_t``."""
        return np.exp(self.log_alpha(t))

    def alpha_bar(self, t):
        """``alpha_bar(t) = alpha_t^2`` (DDIM notation)."""
        return np.exp(2 * self.log_alpha(t))

    def sigma(self, t):
        """Noise scale ``sigma_t = sqrt(1 - alpha_t^2)``."""
        return np.sqrt(-np.expm1(2 * self.log_alpha(t)))

    def integral_beta(self, t0: float = 0.0, t1: float = 1.0) -> float:
        """``int_{t0}^{t1} beta(s) ds`` (= 10.05 over [0, 1]: the quadratic variation of a VP path)."""
        return float(self.beta_min * (t1 - t0) + 0.5 * (self.beta_max - self.beta_min) * (t1**2 - t0**2))


_VP = VPSchedule()


def ddpm_linear_alpha_bar(T: int = 1000, beta_start: float = _VP.beta_min / 1000,
                          beta_end: float = _VP.beta_max / 1000) -> np.ndarray:
    """``alpha_bar`` of the discrete DDPM linear schedule (Ho et al. 2020), shape ``(T,)``, 0-based step.

    The defaults, betas 1e-4 .. 0.02 over T = 1000 steps, are the VP constants divided by 1000.
    """
    if T < 2:
        raise ConfigError(f"T must be >= 2 for the linear schedule, got {T}")
    betas = np.linspace(beta_start, beta_end, T, dtype=np.float64)
    return np.cumprod(1.0 - betas)


def training_grid(T: int) -> np.ndarray:
    """The KL training grid ``t_i = i / T``, i = 1..T (Algorithm 1), shape ``(T,)``."""
    if T < 1:
        raise ConfigError(f"T must be >= 1, got {T}")
    return np.arange(1, T + 1, dtype=np.float64) / T


def time_input(t) -> np.ndarray:
    """Time-embedding input in 1000-step units, ``1000 t - 1`` (our choice for both the baseline and KL models;
    see the Deviations page).

    Baseline step ``j`` (0-based, T = 1000) corresponds to ``t = (j + 1)/1000`` and gets input ``j``;
    KL grid point ``t_i = i/20`` gets ``50 i - 1``, so checkpoints are interchangeable for fine-tuning.
    """
    return 1000.0 * np.asarray(t, dtype=np.float64) - 1.0


def schedule_agreement(T_coarse: int = 20, T: int = 1000, schedule: VPSchedule | None = None) -> dict:
    """Compare the VP ``alpha_bar(i / T_coarse)`` with DDPM ``alpha_bar[(T/T_coarse) i - 1]`` (Methods A.1).

    Returns the grid, both columns and the maximum absolute / relative differences.
    """
    schedule = schedule or VPSchedule()
    if T % T_coarse:
        raise ConfigError(f"T={T} must be a multiple of T_coarse={T_coarse}")
    t = training_grid(T_coarse)
    vp = schedule.alpha_bar(t)
    ddpm = ddpm_linear_alpha_bar(T)[(T // T_coarse) * np.arange(1, T_coarse + 1) - 1]
    return {
        "t": t,
        "alpha_bar_vp": vp,
        "alpha_bar_ddpm": ddpm,
        "max_abs": float(np.max(np.abs(vp - ddpm))),
        "max_rel": float(np.max(np.abs(vp - ddpm) / ddpm)),
    }
