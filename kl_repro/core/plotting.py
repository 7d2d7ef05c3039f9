"""One figure style for the whole book, one colour per model, and image grids.

Every notebook calls :func:`set_theme` once; captions say profile, sample counts and seeds
(:func:`caption`).  Every figure colours a model's curve with :func:`color_for`, so a model keeps its
colour from figure to figure across the book (paper A's runs, paper B's samplers, "paper" values).  Image tensors follow the library convention (:mod:`kl_repro.core.images`):
``(N, C, H, W)`` floats in [-1, 1] or uint8 in [0, 255].
"""

from __future__ import annotations

import hashlib
import re
import warnings

import matplotlib
import numpy as np
import torch
from matplotlib.colors import to_hex, to_rgb

from kl_repro.core import images as image_convention

__all__ = ["set_theme", "PALETTE", "COLOURS", "MODEL_COLOURS", "PAPER_COLOUR", "color_for", "to_uint8_hwc",
           "image_grid", "show_grid", "caption"]

# tqdm.auto warns "IProgress not found" (with a local path) when a library imports it in a kernel without
# ipywidgets; every chapter imports this module before the libraries that import tqdm, so silence it here.
warnings.filterwarnings("ignore", message="IProgress not found")

PALETTE = "colorblind"
#: seaborn's colour-blind palette (C0..C9), the one palette of the book.
COLOURS = ("#0173b2", "#de8f05", "#029e73", "#d55e00", "#cc78bc", "#ca9161", "#fbafe4", "#949494", "#ece133", "#56b4e9")
#: The paper's own values, in every figure that draws them beside ours.
PAPER_COLOUR = "#555555"
#: The models every figure of the book shows, each with its one colour (prefix match on the label).
MODEL_COLOURS = {
    "Baseline-T20": COLOURS[5], "Baseline-b128": COLOURS[9], "Baseline": COLOURS[0],
    "KL*": COLOURS[2], "KL-8d-b32": COLOURS[3], "KL-8d-b64": COLOURS[8], "KL-8d": COLOURS[1],
    "KL-10d-b64": COLOURS[6], "KL-10d": COLOURS[4],
    "PC": COLOURS[0], "FP, paper": COLOURS[1], "FP, recommended": COLOURS[2], "FP": COLOURS[1],
    "paper": PAPER_COLOUR, "ours": COLOURS[0], "exact": "#222222",
}
_PARTIAL = re.compile(r"KL-10d(\d)-")  # partial loss d' of d = 10: lighter shades of KL-10d's colour
_TERMS = re.compile(r"KL-(\d+)d T\s*=\s*(\d+)")  # Fig. 6's (d, T) runs: a colour map over d


def _mix(colour: str, other: str, share: float) -> str:
    a, b = np.array(to_rgb(colour)), np.array(to_rgb(other))
    return to_hex((1 - share) * a + share * b)


def color_for(label: str) -> str:
    """The one colour of the model (or sampler) named ``label``, the same in every figure of the book.

    Paper A's runs are matched by label prefix (``Baseline-b16``, ``KL-8d-b16``, ``KL*-8d-b16``, ...);
    fine-tuned variants (``... (w)``) take a darker shade of their model's colour, partial-loss runs
    ``KL-10d<d'>`` lighter shades of KL-10d's, Fig. 6's ``KL-<d>d T=<T>`` runs a viridis colour by ``d``;
    paper B's samplers by name (``PC``, ``FP, paper``, ``FP, recommended``); "paper" is grey.  Any other
    label gets a palette colour chosen by a stable hash of its text.
    """
    text = (label or "").strip()
    if (m := _TERMS.match(text)) is not None:
        return to_hex(matplotlib.colormaps["viridis"](min(np.log2(int(m.group(1))) / np.log2(32), 1.0) * 0.9))
    if (m := _PARTIAL.match(text)) is not None:
        return _mix(MODEL_COLOURS["KL-10d"], "#ffffff", 0.6 - 0.12 * int(m.group(1)))
    base = next((c for key, c in MODEL_COLOURS.items() if text.startswith(key) or text.lower() == key), None)
    if base is None:
        base = COLOURS[int(hashlib.sha1(text.encode()).hexdigest(), 16) % len(COLOURS)]
    return _mix(base, "#000000", 0.35) if text.endswith("(w)") else base


def set_theme() -> None:
    """The book's seaborn theme: white grid, the colour-blind palette, fonts readable at page width.

    Also (again) silences tqdm's "IProgress not found" warning, which would print a local path into a page.
    """
    import seaborn as sns

    warnings.filterwarnings("ignore", message="IProgress not found")
    sns.set_theme(style="whitegrid", palette=list(COLOURS), context="notebook")
    matplotlib.rcParams.update({"figure.dpi": 100, "savefig.dpi": 110, "figure.autolayout": False,
                                "font.size": 12, "axes.titlesize": 12, "axes.labelsize": 12, "xtick.labelsize": 11,
                                "ytick.labelsize": 11, "legend.fontsize": 10.5, "figure.titlesize": 12,
                                "legend.framealpha": 0.85})


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
