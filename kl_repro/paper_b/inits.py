"""Initial points of the Langevin chains: solid colours, Gaussian noise, structured patterns, boxes.

Paper B, Sec. 4.1 (solid-colour initialisations) and 4.3 (Fig. 2: initialisation-driven generation;
the paper gives no generator of structured images, so ours is our choice: the Deviations page).
Methods B.4.  Images are ``(n, C, H, W)`` float64 in the model's data range.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from kl_repro.core.config import ConfigError
from kl_repro.paper_b.fp_config import FPConfig

__all__ = ["solid_init", "gaussian_init", "box_init", "structured_init", "initial_points"]


def solid_init(n: int, shape: tuple[int, ...], lo: float, hi: float, generator: torch.Generator) -> torch.Tensor:
    """Solid-colour images (Sec. 4.1): one colour ``c ~ U[0, 1]^C`` per image, mapped to ``[lo, hi]``; ``(n, C, H, W)``."""
    c = torch.rand(n, shape[0], 1, 1, generator=generator, dtype=torch.float64)
    return (lo + (hi - lo) * c).expand(n, *shape).clone()


def gaussian_init(n: int, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """``N(0, I)`` initialisations (the paper's mode-collapse case), ``(n, *shape)``."""
    return torch.randn(n, *shape, generator=generator, dtype=torch.float64)


def box_init(n: int, lo: np.ndarray, hi: np.ndarray, generator: torch.Generator) -> torch.Tensor:
    """Uniform draws in the box ``[lo, hi]`` (the solid-colour analogue for points), ``(n, d)``."""
    lo, hi = torch.as_tensor(lo, dtype=torch.float64), torch.as_tensor(hi, dtype=torch.float64)
    return lo + (hi - lo) * torch.rand(n, lo.numel(), generator=generator, dtype=torch.float64)


def _uniform(generator: torch.Generator, *shape) -> torch.Tensor:
    return torch.rand(*shape, generator=generator, dtype=torch.float64)


def _blocks(yy, xx, cols, generator) -> torch.Tensor:
    """Axis-aligned blocks of 1-4 colours around a random corner point, ``(C, H, W)``."""
    k = int(torch.randint(1, 5, (1,), generator=generator))
    cy, cx = float(_uniform(generator, 1)), float(_uniform(generator, 1))
    quad = (yy > cy).long() * 2 + (xx > cx).long()
    return cols[quad % k].permute(2, 0, 1)


def _edge(yy, xx, cols, generator) -> torch.Tensor:
    """A straight edge between two colours at a random angle and offset, ``(C, H, W)``."""
    ang, off = float(_uniform(generator, 1)) * 2 * math.pi, float(_uniform(generator, 1)) - 0.5
    side = ((xx - 0.5) * math.cos(ang) + (yy - 0.5) * math.sin(ang) > off * 0.5).long()
    return cols[side].permute(2, 0, 1)


def _blob(yy, xx, cols, generator) -> torch.Tensor:
    """A filled ellipse on a background, ``(C, H, W)``."""
    u = [float(_uniform(generator, 1)) for _ in range(4)]
    cy, cx, ry, rx = 0.3 + 0.4 * u[0], 0.3 + 0.4 * u[1], 0.15 + 0.25 * u[2], 0.15 + 0.25 * u[3]
    inside = (((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1).long()
    return cols[inside].permute(2, 0, 1)


_PATTERNS = {"blocks": _blocks, "edge": _edge, "blob": _blob}


def structured_init(n: int, shape: tuple[int, ...], lo: float, hi: float, generator: torch.Generator) -> tuple[torch.Tensor, list[str]]:
    """Structured initialisations for Fig. 2 (our generator; the paper gives none).

    Cycles through ``blocks`` (axis-aligned blocks of 1-4 colours), ``edge`` (a straight edge between
    two colours) and ``blob`` (a filled ellipse on a background).  Returns ``(images (n, C, H, W), kinds)``.
    """
    C, H, W = shape
    yy, xx = torch.meshgrid(torch.linspace(0, 1, H, dtype=torch.float64), torch.linspace(0, 1, W, dtype=torch.float64), indexing="ij")
    out = torch.empty(n, C, H, W, dtype=torch.float64)
    kinds = []
    for i in range(n):
        kind = ("blocks", "edge", "blob")[i % 3]
        cols = _uniform(generator, 4, C)
        out[i] = lo + (hi - lo) * _PATTERNS[kind](yy, xx, cols, generator)
        kinds.append(kind)
    return out, kinds


def initial_points(cfg: FPConfig, n: int, shape, pool: torch.Tensor, g: torch.Generator, box=None) -> torch.Tensor:
    """``n`` initialisations ``(n, *shape)`` of kind ``cfg.init`` in the model's scale (Sec. 4.1, 4.3).

    Images ``(C, H, W)``: solid colours / structured patterns in the data range (VE ``[0, 1]``, VP
    ``[-1, 1]``) or ``N(0, I)``.  Points: ``solid`` is uniform in ``box`` (default: the pool's bounding box).
    """
    if len(shape) == 3:
        lo, hi = (-1.0, 1.0) if cfg.is_centered else (0.0, 1.0)
        if cfg.init == "solid":
            return solid_init(n, shape, lo, hi, g)
        if cfg.init == "structured":
            return structured_init(n, shape, lo, hi, g)[0]
        return gaussian_init(n, shape, g)
    if cfg.init == "gaussian":
        return gaussian_init(n, shape, g)
    if cfg.init == "structured":
        raise ConfigError("init='structured' needs image data (C, H, W)")
    flat = pool.reshape(pool.shape[0], -1).double()
    lo, hi = box if box is not None else (flat.min(0).values.numpy(), flat.max(0).values.numpy())
    return box_init(n, lo, hi, g).reshape(n, *shape)
