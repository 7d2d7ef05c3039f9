"""Data sets of paper A (Sec. 6.1) and a 2-D toy mixture.

* ``digits``   scikit-learn's bundled 8x8 digits (1,797 images, embedded: no download);
* ``mnist``    MNIST rescaled 28 -> 32 as in the paper (torchvision layout under the data root);
* ``cifar10``  CIFAR-10 at 32 (torchvision "python version" layout; the per-file MD5 check is off);
* ``celebahq`` CelebA-HQ from an image folder, at 64 (paper) or any resolution;
* ``toy2d``    a 2-D Gaussian mixture with exact density and score (:class:`Toy2D`).

:func:`load_images` returns the unaugmented uint8 images ``(N, C, H, W)`` in a fixed order;
:func:`load_dataset` wraps them as float32 in [-1, 1] (:func:`kl_repro.core.images.to_float`) with the
paper's random horizontal flip.
The training loop draws its batches with :meth:`ImageDataset.batch` from indices and flips that
are derived from ``(seed, step)`` (:func:`generator`), so a resumed run sees the same data.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from kl_repro.core.config import Config, ConfigError, require
from kl_repro.core.images import to_float

__all__ = [
    "DataConfig",
    "DEFAULT_RESOLUTION",
    "data_root",
    "load_images",
    "load_dataset",
    "data_shape",
    "source_files",
    "ImageDataset",
    "PointDataset",
    "Toy2D",
    "derive_seed",
    "generator",
]

DatasetName = Literal["digits", "mnist", "cifar10", "celebahq", "toy2d"]
DEFAULT_RESOLUTION = {"digits": 8, "mnist": 32, "cifar10": 32, "celebahq": 64}
CHANNELS = {"digits": 1, "mnist": 1, "cifar10": 3, "celebahq": 3}
DIGITS_TRAIN = 1500  # digits has no official split: the first 1,500 images train, the last 297 test
TOY2D_POINTS = 10_000  # size of the fixed toy2d point set when ``subset`` is None
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")

log = logging.getLogger("kl_repro")


# --- per-item seeds -------------------------------------------------------------------------------

def derive_seed(*parts) -> int:
    """A 63-bit seed from any parts (``derive_seed(seed, step, "noise")``), stable across runs and machines."""
    blob = ":".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.sha256(blob).digest()[:8], "little") >> 1


def generator(*parts, device: str | torch.device = "cpu") -> torch.Generator:
    """A fresh ``torch.Generator`` on ``device`` seeded by :func:`derive_seed` of ``parts``."""
    return torch.Generator(device=device).manual_seed(derive_seed(*parts))


# --- configuration --------------------------------------------------------------------------------

@dataclass(frozen=True)
class DataConfig(Config):
    """Which data set, at which resolution, from where (paper A Sec. 6.1)."""

    name: DatasetName = "digits"  # the embedded set that needs no download
    resolution: int | None = None  # None: digits 8, mnist 32 (paper rescales 28 -> 32), cifar10 32, celebahq 64
    root: str | None = None  # None: $KL_REPRO_DATA, else ./data
    split: Literal["train", "test", "all"] = "train"  # paper A's MNIST is all 70k images (split="all"); default: the training split
    flip: bool = True  # paper: random horizontal flip for every data set, MNIST included
    download: bool = False  # torchvision download when files are missing (needs network)
    subset: int | None = None  # first n items, fixed order (None: all)

    def check(self) -> None:
        if self.name == "toy2d":
            require(self.resolution is None, f"toy2d has no resolution, got resolution={self.resolution}")
        elif self.resolution is not None:
            require(4 <= self.resolution <= 1024, f"resolution must be in [4, 1024], got {self.resolution}")
        require(self.subset is None or self.subset >= 1, f"subset must be None or >= 1, got {self.subset}")
        if self.name == "celebahq":
            require(self.split == "all" or self.split == "train",
                    f"celebahq is one image folder without splits; use split='train' or 'all', got {self.split!r}")

    @property
    def res(self) -> int | None:
        """The resolved resolution (None for toy2d)."""
        return self.resolution if self.resolution is not None else DEFAULT_RESOLUTION.get(self.name)


def data_root(cfg: DataConfig) -> Path:
    """``cfg.root``, else ``$KL_REPRO_DATA``, else ``./data``."""
    return Path(cfg.root or os.environ.get("KL_REPRO_DATA") or "data").expanduser()


def data_shape(cfg: DataConfig) -> tuple[int, ...]:
    """``(C, H, W)`` of the images, or ``(2,)`` for toy2d."""
    if cfg.name == "toy2d":
        return (2,)
    return (CHANNELS[cfg.name], cfg.res, cfg.res)


# --- image loading --------------------------------------------------------------------------------

def _resize_uint8(x: torch.Tensor, res: int) -> torch.Tensor:
    """Bilinear (antialiased) resize of uint8 ``(N, C, H, W)`` to ``res x res``, rounded back to uint8."""
    if x.shape[-1] == res and x.shape[-2] == res:
        return x
    out = []
    for chunk in torch.split(x, 4096):  # bounds the float copy for large sets
        y = torch.nn.functional.interpolate(chunk.float(), size=(res, res), mode="bilinear", antialias=True, align_corners=False)
        out.append(y.round().clamp(0, 255).to(torch.uint8))
    return torch.cat(out)


def _digits(cfg: DataConfig) -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)[:, None]  # pixel values 0..16 -> 0..255
    y = d.target.astype(np.int64)
    sel = {"train": slice(0, DIGITS_TRAIN), "test": slice(DIGITS_TRAIN, None), "all": slice(None)}[cfg.split]
    return torch.from_numpy(x[sel].copy()), torch.from_numpy(y[sel].copy())


def _missing(root: Path, files: list[str], what: str, download_hint: bool = True) -> None:
    absent = [f for f in files if not (root / f).is_file()]
    if absent:
        hint = " or set download=True where the network allows" if download_hint else ""
        raise ConfigError(
            f"{what} not found under data root {str(root)!r}: missing {', '.join(absent)}. "
            f"Put the files there (torchvision layout), point root= or $KL_REPRO_DATA at the folder that holds them{hint}."
        )


def _torchvision_call(fn, what: str):
    try:
        return fn()
    except ConfigError:
        raise
    except Exception as e:  # network failures, corrupt archives
        raise ConfigError(f"could not load or download {what}: {type(e).__name__}: {e}") from None


def _mnist(cfg: DataConfig, root: Path) -> tuple[torch.Tensor, torch.Tensor]:
    import torchvision

    if not cfg.download:
        _missing(root, [f"MNIST/raw/{f}" for f in MNIST_FILES], "MNIST")
    parts = {"train": [True], "test": [False], "all": [True, False]}[cfg.split]
    xs, ys = [], []
    for train in parts:
        ds = _torchvision_call(lambda: torchvision.datasets.MNIST(str(root), train=train, download=cfg.download), "MNIST")
        xs.append(ds.data[:, None].clone())
        ys.append(ds.targets.to(torch.int64).clone())
    return torch.cat(xs), torch.cat(ys)


def _cifar10(cfg: DataConfig, root: Path) -> tuple[torch.Tensor, torch.Tensor]:
    import torchvision

    folder = root / "cifar-10-batches-py"
    train_files = [f"data_batch_{i}" for i in range(1, 6)]
    if cfg.download and not folder.is_dir():
        _torchvision_call(lambda: torchvision.datasets.CIFAR10(str(root), train=True, download=True), "CIFAR-10")
    present = [f for f in train_files if (folder / f).is_file()]
    needed = ["cifar-10-batches-py/batches.meta"]
    if cfg.split in ("test", "all"):
        needed.append("cifar-10-batches-py/test_batch")
    if cfg.split in ("train", "all") and not present:
        needed += [f"cifar-10-batches-py/{f}" for f in train_files]
    _missing(root, needed, "CIFAR-10", download_hint=not cfg.download)
    if cfg.split in ("train", "all") and len(present) < 5:
        log.warning(
            "CIFAR-10: only %d of 5 training batches under %s (%s); using %d training images",
            len(present), folder, ", ".join(present), 10_000 * len(present))

    class _CIFAR10Local(torchvision.datasets.CIFAR10):
        # Pixels and labels equal the official release; the rebuilt pickle bytes do not, so no per-file MD5.
        train_list = [[f, None] for f in present]
        test_list = [["test_batch", None]]
        meta = {"filename": "batches.meta", "key": "label_names", "md5": None}

    parts = {"train": [True], "test": [False], "all": [True, False]}[cfg.split]
    xs, ys = [], []
    for train in parts:
        ds = _torchvision_call(lambda: _CIFAR10Local(str(root), train=train, download=False), "CIFAR-10")
        xs.append(torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous())
        ys.append(torch.tensor(ds.targets, dtype=torch.int64))
    return torch.cat(xs), torch.cat(ys)


def _celebahq(cfg: DataConfig, root: Path) -> tuple[torch.Tensor, torch.Tensor]:
    from PIL import Image, UnidentifiedImageError

    folder = root / "celebahq" if (root / "celebahq").is_dir() else root
    if not folder.is_dir():
        raise ConfigError(f"CelebA-HQ image folder {str(folder)!r} does not exist; put the images in <root>/celebahq/ "
                          "(or point root= / $KL_REPRO_DATA at the folder of images)")
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    if not files:
        raise ConfigError(f"CelebA-HQ image folder {str(folder)!r} holds no files")
    if cfg.subset is not None:
        files = files[: cfg.subset]
    res = cfg.res
    out = np.empty((len(files), 3, res, res), dtype=np.uint8)
    for n, p in enumerate(files):
        if p.suffix.lower() not in IMAGE_SUFFIXES:
            raise ConfigError(f"{p}: not an image file (expected one of {', '.join(IMAGE_SUFFIXES)})")
        if p.stat().st_size == 0:
            raise ConfigError(f"{p}: empty (zero-byte) image file")
        try:
            with Image.open(p) as im:
                im = im.convert("RGB")
                w, h = im.size
                s = min(w, h)  # centre crop to a square, then resize (antialiased)
                im = im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
                im = im.resize((res, res), Image.BILINEAR)
                out[n] = np.asarray(im, dtype=np.uint8).transpose(2, 0, 1)
        except (UnidentifiedImageError, OSError, SyntaxError) as e:
            raise ConfigError(f"{p}: cannot be read as an image ({type(e).__name__}: {e})") from None
    return torch.from_numpy(out), torch.full((len(files),), -1, dtype=torch.int64)


def source_files(cfg: DataConfig) -> list[Path]:
    """The files :func:`load_images` reads for ``cfg`` that exist (none for the embedded ``digits``), in reading order.

    Their sizes and modification times let a cache of statistics of the images be found without decoding
    them (:func:`kl_repro.evaluation.reference.reference_stats`; 30k CelebA-HQ JPEGs take minutes).
    """
    root = data_root(cfg)
    if cfg.name == "mnist":
        files = [root / "MNIST" / "raw" / f for f in MNIST_FILES]
    elif cfg.name == "cifar10":
        files = [root / "cifar-10-batches-py" / f for f in (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta")]
    elif cfg.name == "celebahq":
        folder = root / "celebahq" if (root / "celebahq").is_dir() else root
        files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")) if folder.is_dir() else []
        files = files[: cfg.subset] if cfg.subset is not None else files
    else:
        files = []
    return [f for f in files if f.is_file()]


def load_images(cfg: DataConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Unaugmented images ``(N, C, H, W)`` uint8 and labels ``(N,)`` int64 (-1 where none), fixed order.

    Missing files with ``download=False`` raise a :class:`ConfigError` naming the files and the folder.
    """
    if cfg.name == "toy2d":
        raise ConfigError("toy2d holds 2-D points, not images; use load_dataset() or Toy2D")
    root = data_root(cfg)
    if cfg.name == "digits":
        x, y = _digits(cfg)
    elif cfg.name == "mnist":
        x, y = _mnist(cfg, root)
    elif cfg.name == "cifar10":
        x, y = _cifar10(cfg, root)
    else:
        x, y = _celebahq(cfg, root)
    if cfg.subset is not None:
        x, y = x[: cfg.subset], y[: cfg.subset]
    return _resize_uint8(x, cfg.res).contiguous(), y


class ImageDataset(Dataset):
    """Images in memory; items are float32 ``(C, H, W)`` in [-1, 1], randomly flipped when ``flip``."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, flip: bool):
        self.images, self.labels, self.flip = images, labels, flip

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> torch.Tensor:
        x = to_float(self.images[i])
        if self.flip and torch.rand(()) < 0.5:
            x = x.flip(-1)
        return x

    def batch(self, indices: torch.Tensor, flip_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Float batch ``(B, C, H, W)`` of ``indices``; images with ``flip_mask`` true are mirrored (W axis)."""
        x = to_float(self.images[indices])
        if self.flip and flip_mask is not None:
            x = torch.where(flip_mask[:, None, None, None], x.flip(-1), x)
        return x


class PointDataset(Dataset):
    """2-D points ``(N, 2)`` float32; the flip does not apply."""

    def __init__(self, points: torch.Tensor):
        self.points = points
        self.flip = False

    def __len__(self) -> int:
        return self.points.shape[0]

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.points[i]

    def batch(self, indices: torch.Tensor, flip_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.points[indices]


def load_dataset(cfg: DataConfig) -> Dataset:
    """The data set of ``cfg``: :class:`ImageDataset` in [-1, 1], or :class:`PointDataset` for toy2d.

    toy2d draws a fixed point set from :class:`Toy2D` (``subset`` points, default 10,000; split
    ``train`` and ``all`` use seed 0, ``test`` seed 1).
    """
    if cfg.name == "toy2d":
        n = cfg.subset or TOY2D_POINTS
        g = generator("toy2d", 1 if cfg.split == "test" else 0)
        return PointDataset(Toy2D().sample(n, g))
    x, y = load_images(cfg)
    return ImageDataset(x, y, cfg.flip)


# --- the 2-D mixture ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Toy2D(Config):
    """Isotropic 2-D Gaussian mixture ``p(x) = sum_j w_j N(x; m_j, s_j^2 I)`` with exact log-density and score.

    Defaults: the mixture of paper B's checks with known answers (Methods B.5, T5): means (-2, 0), (2, 0), (0, 2),
    weights (0.5, 0.3, 0.2), std 0.3.  :meth:`perturbed` gives the exact marginal of
    ``x_t = alpha x_0 + sigma eps``, hence exact noisy scores for any VP/VE time.
    """

    means: tuple[tuple[float, float], ...] = ((-2.0, 0.0), (2.0, 0.0), (0.0, 2.0))
    weights: tuple[float, ...] = (0.5, 0.3, 0.2)
    stds: tuple[float, ...] = (0.3, 0.3, 0.3)

    def check(self) -> None:
        require(len(self.means) >= 1, "a mixture needs at least one component")
        require(len(self.weights) == len(self.means) == len(self.stds),
                f"means, weights and stds need one entry per component, got {len(self.means)}, {len(self.weights)}, {len(self.stds)}")
        require(all(w > 0 for w in self.weights), f"weights must be > 0, got {self.weights}")
        require(abs(sum(self.weights) - 1.0) < 1e-9, f"weights must sum to 1, got {sum(self.weights)}")
        require(all(s > 0 for s in self.stds), f"stds must be > 0, got {self.stds}")

    def _params(self, dtype=torch.float64, device=None):
        m = torch.tensor(self.means, dtype=dtype, device=device)  # (K, 2)
        w = torch.tensor(self.weights, dtype=dtype, device=device)  # (K,)
        s = torch.tensor(self.stds, dtype=dtype, device=device)  # (K,)
        return m, w, s

    def _log_components(self, x: torch.Tensor) -> torch.Tensor:
        """``log w_j + log N(x; m_j, s_j^2 I)``, shape ``(N, K)``, float64."""
        m, w, s = self._params(device=x.device)
        x = x.to(torch.float64)
        d2 = ((x[:, None, :] - m[None]) ** 2).sum(-1)
        return torch.log(w) - d2 / (2 * s**2) - 2 * torch.log(s) - math.log(2 * math.pi)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """``log p(x)`` for ``x`` of shape ``(N, 2)``; returns ``(N,)`` in ``x``'s dtype."""
        return torch.logsumexp(self._log_components(x), dim=1).to(x.dtype)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """``grad_x log p(x) = sum_j r_j(x) (m_j - x) / s_j^2`` with responsibilities ``r_j``; ``(N, 2)``."""
        m, _, s = self._params(device=x.device)
        r = torch.softmax(self._log_components(x), dim=1)  # (N, K)
        x64 = x.to(torch.float64)
        return (r[:, :, None] * (m[None] - x64[:, None, :]) / (s**2)[None, :, None]).sum(1).to(x.dtype)

    def sample(self, n: int, generator: torch.Generator | None = None, dtype=torch.float32) -> torch.Tensor:
        """``n`` i.i.d. points ``(n, 2)``: components by weight, then Gaussian noise."""
        if n < 1:
            raise ConfigError(f"n must be >= 1, got {n}")
        m, w, s = self._params()
        j = torch.multinomial(w, n, replacement=True, generator=generator)
        z = torch.randn(n, 2, generator=generator, dtype=torch.float64)
        return (m[j] + s[j, None] * z).to(dtype)

    def perturbed(self, alpha: float, sigma: float) -> "Toy2D":
        """Law of ``alpha x_0 + sigma eps``: means ``alpha m_j``, stds ``sqrt(alpha^2 s_j^2 + sigma^2)``."""
        require(alpha > 0 and sigma >= 0, f"need alpha > 0 and sigma >= 0, got {alpha}, {sigma}")
        return Toy2D(
            means=tuple((alpha * a, alpha * b) for a, b in self.means),
            weights=self.weights,
            stds=tuple(math.sqrt(alpha**2 * s**2 + sigma**2) for s in self.stds),
        )
