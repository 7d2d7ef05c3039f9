"""One figure style for the whole book, and image grids.

Every notebook calls :func:`set_theme` once; captions say profile, sample counts and seeds
(:func:`caption`).  Image tensors follow the library convention (:mod:`kl_repro.core.images`):
``(N, C, H, W)`` floats in [-1, 1] or uint8 in [0, 255].
"""

from __future__ import annotations

import numpy as np
import torch

from kl_repro.core import images as image_convention

__all__ = ["set_theme", "PALETTE", "to_uint8_hwc", "image_grid", "show_grid", "caption"]

PALETTE = "colorblind"


def set_theme() -> None:
    """The book's seaborn theme (white grid, colour-blind palette, readable fonts)."""
    import matplotlib
    import seaborn as sns

    sns.set_theme(style="whitegrid", palette=PALETTE, context="notebook")
    matplotlib.rcParams.update({"figure.dpi": 100, "savefig.dpi": 110, "axes.titlesize": "medium", "figure.autolayout": False})


def to_uint8_hwc(images) -> np.ndarray:
    """``(N, C, H, W)`` floats in [-1, 1] (or uint8; tensor or array) to a uint8 array ``(N, H, W, C)``.

    Pixel values by :func:`kl_repro.core.images.to_uint8`; only the layout changes here.
    """
    x = images.detach().cpu() if torch.is_tensor(images) else torch.as_tensor(np.asarray(images))
    return np.transpose(image_convention.to_uint8(x).numpy(), (0, 2, 3, 1))


def image_grid(images, nrow: int | None = None, pad: int = 1) -> np.ndarray:
    """Tile images into one ``(H', W', C)`` uint8 array, ``nrow`` images per row (default: square)."""
    x = to_uint8_hwc(images)
    n, h, w, c = x.shape
    nrow = nrow or int(np.ceil(np.sqrt(n)))
    ncol_rows = int(np.ceil(n / nrow))
    grid = np.full((ncol_rows * (h + pad) + pad, nrow * (w + pad) + pad, c), 255, dtype=np.uint8)
    for i in range(n):
        r, col = divmod(i, nrow)
        grid[pad + r * (h + pad): pad + r * (h + pad) + h, pad + col * (w + pad): pad + col * (w + pad) + w] = x[i]
    return grid


def show_grid(ax, images, nrow: int | None = None, title: str | None = None) -> None:
    """Draw :func:`image_grid` on a matplotlib axis (grey colour map for one channel)."""
    g = image_grid(images, nrow)
    if g.shape[-1] == 1:
        ax.imshow(g[..., 0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    else:
        ax.imshow(g, interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title)


def caption(profile: str, **facts) -> str:
    """A caption fragment naming the profile and the facts a reader needs (samples, seeds, sampler)."""
    parts = [f"profile `{profile}`"] + [f"{k.replace('_', ' ')} {v}" for k, v in facts.items()]
    return "; ".join(parts)
