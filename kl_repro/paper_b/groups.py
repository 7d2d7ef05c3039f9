"""Groups of Algorithm 1: fresh references, one fitted density, then a batch of Langevin chains.

Paper B, Algorithm 1 and Sec. 4.1 (250 groups of 200 images for 50,000 samples); Methods B.4.  Each
group has its own generator, seeded by the config's ``seed`` and the group's index.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from kl_repro.core.config import ConfigError, to_dict
from kl_repro.paper_b.fp_config import FPConfig
from kl_repro.paper_b.fp_density import FPDensity
from kl_repro.paper_b.fp_operator import fit_density, freeze_time, reference_set
from kl_repro.paper_b.inits import initial_points
from kl_repro.paper_b.langevin import run_chains
from kl_repro.paper_b.scores import check_score_input

__all__ = ["GroupResult", "group_references", "sample_group", "sample_groups"]


@dataclass
class GroupResult:
    """One group: samples ``(B, d)`` (model scale, flat), initialisations, the density and timings (seconds)."""

    samples: torch.Tensor
    x0: torch.Tensor
    density: FPDensity
    ref_idx: torch.Tensor
    stats: dict
    t_setup: float
    t_sampling: float


def group_references(pool: torch.Tensor, sde, cfg: FPConfig, group: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Generator]:
    """Step 1 of group ``group``: its generator (seeded by ``cfg.seed`` and ``group``) and its ``M`` references."""
    g = torch.Generator().manual_seed(cfg.seed * 100_003 + group)
    t_star = freeze_time(cfg, sde)
    perturb = cfg.perturb_refs if cfg.perturb_refs is not None else t_star > sde.sampling_eps
    X, idx = reference_set(pool, cfg.M, sde, t_star, perturb, g)
    return X, idx, g


def sample_group(score: Callable, sde, pool: torch.Tensor, cfg: FPConfig, group: int = 0, x0: torch.Tensor | None = None,
                 n: int | None = None, box: tuple[np.ndarray, np.ndarray] | None = None) -> GroupResult:
    """One group of Algorithm 1: references, density, then ``n`` Langevin chains (default ``n_per_group``).

    ``pool``: candidate references ``(n_pool, *shape)`` in the model's scale, the same per-sample shape as
    the score model (else :class:`ConfigError`).  ``x0``: initialisations ``(n, *shape)``; by default
    from ``cfg.init`` (:func:`~kl_repro.paper_b.inits.initial_points`).  Seeds: ``cfg.seed`` and ``group``.
    """
    check_score_input(score, pool)
    n = n or cfg.n_per_group
    t0 = time.perf_counter()
    X, idx, g = group_references(pool, sde, cfg, group)
    density = fit_density(score, sde, X, cfg, g)
    t_setup = time.perf_counter() - t0
    shape = tuple(pool.shape[1:])
    if x0 is None:
        x0 = initial_points(cfg, n, shape, pool, g, box)
    elif tuple(x0.shape[1:]) != shape:
        raise ConfigError(f"initialisations of shape {tuple(x0.shape[1:])} do not match the data shape {shape}")
    x, stats, t_sampling = run_chains(density, x0, cfg, g)
    return GroupResult(x, x0, density, idx, stats, t_setup, t_sampling)


def sample_groups(score: Callable, sde, pool: torch.Tensor, cfg: FPConfig, n_groups: int | None = None, n_per_group: int | None = None) -> dict:
    """``n_groups`` independent groups (fresh references each); returns samples ``(G B, d)`` and a report.

    The report names the preset and config, sums fallback counts, and separates set-up (``M`` score
    calls, Gram matrices, eigenpairs, coefficients) from Langevin time.
    """
    n_groups = n_groups or cfg.n_groups
    groups = [sample_group(score, sde, pool, cfg, group=k, n=n_per_group) for k in range(n_groups)]
    samples = torch.cat([r.samples for r in groups])
    fb = np.concatenate([r.stats["n_fallback"] for r in groups])
    report = {
        "preset": cfg.preset,
        "config": to_dict(cfg),
        "n_groups": n_groups,
        "n_samples": int(samples.shape[0]),
        "t_setup": float(sum(r.t_setup for r in groups)),
        "t_sampling": float(sum(r.t_sampling for r in groups)),
        "fallback_steps": int(fb.sum()),
        "chains_with_fallback": int((fb > 0).sum()),
        "nonfinite_samples": int(sum(r.stats["n_nonfinite_samples"] for r in groups)),
        "nonfinite_score_steps": int(sum(r.stats["n_nonfinite_score"].sum() for r in groups)),
    }
    return {"samples": samples, "groups": groups, "report": report}
