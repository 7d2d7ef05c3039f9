"""Corrector-only Langevin dynamics on the fitted density ``p0`` (step 4 of a group).

Paper B, Algorithm 1 and eq. (18) with the noise scale ``eta`` of Sec. 4.1; Methods B.4.  Langevin
with noise ``eta`` targets ``p0^(1/eta^2)``, not ``p0`` itself (for ``eta < 1``: a sharpened density).
"""

from __future__ import annotations

import math
import time
import warnings

import torch

from kl_repro.core.config import ConfigError
from kl_repro.paper_b.fp_config import FPConfig
from kl_repro.paper_b.fp_density import FPDensity, kde_score

__all__ = ["langevin", "run_chains"]


def _check_chain(density: FPDensity, x0: torch.Tensor, step_size: float, J: int, eta: float) -> None:
    if step_size <= 0 or eta < 0 or J < 1:
        raise ConfigError(f"need step_size > 0, eta >= 0, J >= 1; got step_size={step_size}, eta={eta}, J={J}")
    if x0.ndim != 2 or x0.shape[1] != density.refs.shape[1]:
        raise ConfigError(f"initial points must be (B, d) with d = {density.refs.shape[1]}, got {tuple(x0.shape)}")


def _finite_score(density: FPDensity, x: torch.Tensor, C_pos, lw_pos) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(score, fallback mask, non-finite mask)``: a non-finite score is replaced by the positive-part score."""
    s, _, fb = density.score(x)
    bad = ~torch.isfinite(s).all(1)
    if bad.any():
        s[bad] = kde_score(x[bad], C_pos, lw_pos, zeta_s=density.zeta_s)[0]
    return s, fb, bad


def _chain_output(density: FPDensity, x: torch.Tensor, x_mean: torch.Tensor, output: str) -> torch.Tensor:
    if output == "mean":
        return x_mean
    if output == "tweedie":
        return density.score(x)[1]
    if output != "last":
        raise ConfigError(f"output must be 'last', 'mean' or 'tweedie', got {output!r}")
    return x


def langevin(density: FPDensity, x0: torch.Tensor, step_size: float, J: int, eta: float, output: str = "last",
             step_rule: str = "fixed", snr: float = 0.16, generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict]:
    """Corrector-only Langevin on ``p0`` (eq. (18) with noise scale ``eta``, Sec. 4.1).

    ``x_{j+1} = x_j + h grad log p0(x_j) + eta sqrt(2 h) z_j`` for ``j < J`` with ``h = step_size``;
    ``step_rule="snr"`` uses score_sde's ``h_j = 2 (snr mean||z|| / mean||grad||)^2``.  ``output``: ``last`` =
    ``x_J`` (Algorithm 1's loop result), ``mean`` = the last noise-free update, ``tweedie`` =
    ``x_J + zeta_s^2 grad log p0(x_J)``.  ``x0``: ``(B, d)``.  Returns ``(x, stats)``; ``stats`` counts
    fallback steps per chain and any non-finite score (replaced by the positive-part score and counted,
    never silently).
    """
    _check_chain(density, x0, step_size, J, eta)
    x = x0.clone()
    x_mean = x
    n_fb = torch.zeros(x.shape[0], dtype=torch.long)
    n_nonfinite = torch.zeros(x.shape[0], dtype=torch.long)
    C_pos, lw_pos, _, _ = density.parts(x.dtype)
    for _ in range(J):
        s, fb, bad = _finite_score(density, x, C_pos, lw_pos)
        n_nonfinite += bad.long()
        n_fb += fb.long()
        z = torch.randn(x.shape, generator=generator, dtype=x.dtype)
        if step_rule == "snr":
            h = 2.0 * (snr * z.norm(dim=1).mean() / s.norm(dim=1).mean().clamp_min(1e-30)) ** 2
        else:
            h = step_size
        x_mean = x + h * s
        x = x_mean + eta * math.sqrt(2.0 * float(h)) * z
    x = _chain_output(density, x, x_mean, output)
    bad_rows = ~torch.isfinite(x).all(1)
    stats = {"n_fallback": n_fb.numpy(), "n_nonfinite_score": n_nonfinite.numpy(), "n_nonfinite_samples": int(bad_rows.sum())}
    if bad_rows.any():
        warnings.warn(f"{int(bad_rows.sum())} of {x.shape[0]} Langevin chains ended non-finite; they are reported in stats")
    return x, stats


def run_chains(density: FPDensity, x0: torch.Tensor, cfg: FPConfig, generator: torch.Generator) -> tuple[torch.Tensor, dict, float]:
    """Step 4: Langevin from ``x0`` ``(n, *shape)`` on ``density`` with ``cfg``'s ``J, eta, output, step_rule``.

    Uses the effective step of the bandwidth rule (``density.report["step_size"]``).  Returns
    ``(x (n, d), stats, seconds)``.
    """
    step_size = density.report.get("step_size", cfg.step_size)
    t0 = time.perf_counter()
    x, stats = langevin(density, x0.reshape(x0.shape[0], -1).float(), step_size, cfg.J, cfg.eta, cfg.output,
                        cfg.step_rule, cfg.snr, generator)
    stats.update(step_size=step_size, zeta_s=density.zeta_s)
    return x, stats, time.perf_counter() - t0
