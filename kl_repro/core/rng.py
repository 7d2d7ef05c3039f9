"""Counter-based Gaussian noise: per-image streams drawn for a whole batch in one vectorised call.

Samplers give image ``i`` its own noise so that a sample never depends on the batch it was drawn in
(DDIM sampling, Methods A.6; EDM's per-image seeds).  One ``torch.Generator`` per image costs a
Python call per image and step; here the noise of image ``i`` at draw ``j`` is a pure function of
``(key, i, j, element)`` (SplitMix64 hashing of counters, then Box-Muller), computed for all images at
once with numpy's wrapping uint64 arithmetic.  Identical on every machine and device.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["counter_normal"]

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def _splitmix64(z: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser (Steele, Lea and Flood 2014), elementwise on uint64 (wrapping)."""
    z = z + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def counter_normal(key: int, rows, draw: int, shape: tuple[int, ...]) -> torch.Tensor:
    """Standard normal noise ``(len(rows), *shape)`` (float32): row ``r``'s values depend only on ``(key, r, draw)``.

    ``key``: a 63-bit stream key (e.g. ``derive_seed("ddim", seed)``); ``rows``: global image indices;
    ``draw``: the index of the draw within an image's stream (0 for ``x_T``, then one per step).
    """
    rows = np.asarray(rows, dtype=np.uint64).reshape(-1)
    m = int(np.prod(shape)) if shape else 1
    with np.errstate(over="ignore"):
        base = _splitmix64(_splitmix64(np.uint64(key) + rows) + np.uint64(draw))  # (n,)
        e = np.arange(m, dtype=np.uint64) * np.uint64(2)
        b1 = _splitmix64(base[:, None] + e)
        b2 = _splitmix64(base[:, None] + e + np.uint64(1))
    u1 = ((b1 >> np.uint64(11)).astype(np.float64) + 1.0) * 2.0**-53  # (0, 1]
    u2 = (b2 >> np.uint64(11)).astype(np.float64) * 2.0**-53  # [0, 1)
    z = np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)
    return torch.from_numpy(z.astype(np.float32)).reshape(len(rows), *shape)
