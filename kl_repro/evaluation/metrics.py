"""Sample quality: FID, KID (and IS where possible) with torch-fidelity features; ``FD_clf`` for tiny images.

Paper A reports FID on 50k DDIM samples (spec sec. 4.3); paper B reports FID and Inception Score
against the CIFAR-10 training set.  Both use the 2048-d pool3 features of the TF Inception graph,
here torch-fidelity's ``inception-v3-compat`` with offline weights (:mod:`kl_repro.evaluation.inception`).

* Features come from the extractor registry of :mod:`kl_repro.evaluation.features` (re-exported here):
  ``inception-v3-compat`` (FID/KID; IS only with torch-fidelity's own weights), ``clf`` (a small
  classifier trained on the data set itself; its metric is ``FD_clf``, never "FID") and ``tiny``
  (parameter-free, for tests).  Images enter as ``(N, C, H, W)`` floats in [-1, 1] (or uint8).
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

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Literal

import numpy as np

from kl_repro.core.config import Config, config_hash, require, to_dict
from kl_repro.evaluation.features import (  # noqa: F401  (re-exported: the registry is part of this module's API)
    ClassifierConfig,
    FeatureExtractor,
    build_extractor,
    check_extractor_name,
    extract_features,
    extractor_names,
    iter_batches,
    register_extractor,
    sha256_array,
    sha256_file,
    to_uint8_rgb,
    train_classifier,
)
from kl_repro.evaluation.features import _REGISTRY
from kl_repro.core.store import atomic_write_bytes, atomic_write_json, cache_dir, read_json

__all__ = [
    "to_uint8_rgb",
    "iter_batches",
    "gaussian_stats",
    "frechet_distance",
    "energy_distance",
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
    "EvalConfig",
    "PROXY",
    "describe_sampler",
    "ddim_blocks",
    "evaluate_model",
    "proxy_hook",
    "evaluate_run",
]


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


def energy_distance(x, y) -> float:
    """Energy distance ``2 E|X - Y| - E|X - X'| - E|Y - Y'|`` between two point sets ``(n, D)``, ``(m, D)``.

    Székely and Rizzo's statistic (V-statistic form): zero exactly when the two empirical laws coincide,
    and a metric between distributions (unlike a Fréchet distance of fitted Gaussians, it sees every mode).
    Used for 2-D data (``toy2d``), where Inception-style features do not apply.
    """
    import torch

    x = torch.as_tensor(x, dtype=torch.float64).reshape(len(x), -1)
    y = torch.as_tensor(y, dtype=torch.float64).reshape(len(y), -1)
    require(x.shape[1] == y.shape[1] and len(x) >= 2 and len(y) >= 2,
            f"energy_distance needs two sets of >= 2 points of the same dimension, got {tuple(x.shape)} and {tuple(y.shape)}")
    return float(2 * torch.cdist(x, y).mean() - torch.cdist(x, x).mean() - torch.cdist(y, y).mean())


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


# --- reference statistics ------------------------------------------------------------------

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
        from kl_repro.data import DataConfig

        return DataConfig(name=self.dataset, resolution=self.resolution, root=self.root, split=self.split,
                          flip=False, download=False, subset=self.num_images)


def _load_real(ref: ReferenceConfig):
    """uint8 images ``(N, C, H, W)`` and labels of ``ref``: the first ``num_images`` in file order, unaugmented."""
    from kl_repro.data import load_images

    return load_images(ref.data_config())


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
           "images_sha256": sha256_array(images), "extractor": extractor.identity}
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
    descriptor = {"dataset": ref.dataset, "split": ref.split, "resolution": ref.data_config().res,
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

    @classmethod
    def from_dict(cls, d: dict) -> "MetricResult":
        return cls(**{**d, "notes": tuple(d.get("notes", ()))})

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
    iter_batches(images, num_samples, batch_size)  # its input checks, before the reference statistics are computed
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


# --- runs: proxy curves during training, final numbers after ---------------------------------

@dataclass(frozen=True)
class EvalConfig(Config):
    """A sample-quality evaluation of a trained model; defaults are the papers' final numbers.

    Paper A (spec sec. 4.3): 50k DDIM samples (the run's sampler, eta = 1, S = 20); paper B: FID and IS
    against the CIFAR-10 training set.  :data:`PROXY` is the cheap setting for training curves.
    """

    num_samples: int = 50_000  # generated images (paper A sec. 4.3, paper B Table 1)
    extractor: str | None = None  # None: default_extractor(dataset): clf for digits, inception-v3-compat otherwise
    ref_split: Literal["train", "test", "all"] = "train"  # real statistics from this split (paper B: the training set)
    ref_images: int | None = None  # its first N images in file order (None: all; capped at the split's size)
    seed: int = 0  # image i of block 0 uses DDIM seed (seed, i); see sample_block
    batch_size: int = 100  # images per sampler and extractor call
    sample_block: int = 10_000  # images per ddim_sample call (bounds memory); image i is the same for any block size
    every: int | None = None  # hook only: evaluate when step % every == 0 (None: whenever the training loop calls hooks)
    kid: bool = True
    kid_subsets: int = 100  # torch-fidelity default
    kid_subset_size: int = 1000  # torch-fidelity default (capped at the smaller set)
    device: str = "cpu"  # extractor device for evaluate_run ("cuda" on a GPU machine); the hook uses the model's device

    def check(self) -> None:
        require(self.num_samples >= 2, f"num_samples must be >= 2, got {self.num_samples}")
        require(self.extractor is None or self.extractor in _REGISTRY,
                f"unknown feature extractor {self.extractor!r}; registered: {', '.join(_REGISTRY)}")
        require(self.ref_images is None or self.ref_images >= 2, f"ref_images must be >= 2, got {self.ref_images}")
        require(self.batch_size >= 1 and self.sample_block >= 1, "batch_size and sample_block must be >= 1")
        require(self.every is None or self.every >= 1, f"every must be None or >= 1, got {self.every}")
        require(self.device == "cpu" or self.device.startswith("cuda"), f"device must be 'cpu' or 'cuda[:i]', got {self.device!r}")
        self.kid_config()

    def kid_config(self) -> KIDConfig:
        return KIDConfig(subsets=self.kid_subsets, subset_size=self.kid_subset_size)

    def reference(self, data) -> ReferenceConfig:
        """The real images a model trained on ``data`` (:class:`~kl_repro.data.DataConfig`) is compared with.

        Same data set, resolution and folder; the split's first ``ref_images`` images regardless of
        the training ``subset``.
        """
        return ReferenceConfig(dataset=data.name, split=self.ref_split, resolution=data.resolution,
                               num_images=self.ref_images, root=data.root)


# Training curves: 2k samples (spec sec. 4.3 proposes 10k on a GPU; ~6 min of Inception on this CPU), 10k real images.
PROXY = EvalConfig(num_samples=2000, ref_images=10_000, kid_subsets=10)


def describe_sampler(ddim_cfg, seed: int | None = None) -> str:
    """``"DDIM eta=1 S=20"`` plus deviations (no x0 clipping, initial noise) and the seed."""
    s = f"DDIM eta={ddim_cfg.eta:g} S={ddim_cfg.S}"
    if not ddim_cfg.clip_x0:
        s += " no-clip"
    if ddim_cfg.init_noise != "unit":
        s += f" init={ddim_cfg.init_noise}"
    return s if seed is None else f"{s}, seed {seed}"


def ddim_blocks(net, run_cfg, num_samples: int, seed: int, batch_size: int = 100, block: int = 10_000,
                device="cpu", progress: bool = False) -> Iterator:
    """DDIM samples of ``net`` under ``run_cfg`` (a RunConfig) in blocks of ``block`` images, float ``(n, C, H, W)``.

    Image ``i`` of the sample is image ``i`` of ``ddim_sample(..., seed)`` whatever the block size
    (blocks pass ``first_index``), so a 50k evaluation starts with the images of a 10k one.
    """
    from kl_repro.data import data_shape
    from kl_repro.paper_a.ddim import ddim_sample

    shape = data_shape(run_cfg.data)
    for start in range(0, num_samples, block):
        n = min(block, num_samples - start)
        yield ddim_sample(net, run_cfg.diffusion, run_cfg.sampler, n, seed, min(batch_size, n), shape,
                          device=device, progress=progress, first_index=start)


def evaluate_model(net, run_cfg, cfg: EvalConfig = EvalConfig(), device=None, progress: bool = False) -> MetricResult:
    """Sample ``cfg.num_samples`` images from ``net`` with the run's DDIM sampler and evaluate them.

    ``run_cfg`` is the model's :class:`~kl_repro.paper_a.training.run.RunConfig`; the extractor defaults to
    :func:`default_extractor` of its data set.  Sampling runs on the model's device.
    """
    ref = cfg.reference(run_cfg.data)  # ConfigError (toy2d, bad split) before any compute
    name = cfg.extractor or default_extractor(run_cfg.data.name)
    ext = build_extractor(name, ref, cfg.device)
    stats = reference_stats(ref, ext, cfg.batch_size, cfg.device, progress)
    if device is None:
        device = next(net.parameters()).device
    blocks = ddim_blocks(net, run_cfg, cfg.num_samples, cfg.seed, cfg.batch_size, cfg.sample_block, device, progress)
    return evaluate_images(blocks, stats, describe_sampler(run_cfg.sampler, cfg.seed), ext, cfg.num_samples,
                           cfg.batch_size, cfg.kid_config() if cfg.kid else None, cfg.device, progress)


def proxy_hook(cfg: EvalConfig = PROXY, data=None) -> Callable:
    """A training hook ``hook(step, model_ema, run) -> dict`` logging a proxy FID / FD_clf (fixed samples and seeds).

    Called by :func:`kl_repro.paper_a.training.loop.train` every ``eval_every`` steps (and at the end); ``cfg.every``
    thins that further.  Pass the run's ``data`` (DataConfig) to validate data set and extractor now,
    before training starts.  The dict holds the metric under its own name (``FID``, ``FD_clf``...), the
    kernel distance, and the sample count, extractor, sampler and reference it was measured with.
    """
    require(isinstance(cfg, EvalConfig), f"cfg must be an EvalConfig, got {type(cfg).__name__}")
    if data is not None:
        cfg.reference(data)
        default_extractor(data.name)

    def sample_quality(step: int, model_ema, run) -> dict | None:
        if cfg.every is not None and step % cfg.every:
            return None
        r = evaluate_model(model_ema, run.config, cfg)
        out = {r.metric: r.value, "num_samples": r.num_samples, "extractor": r.extractor, "sampler": r.sampler,
               "reference": r.reference}
        if r.kid_mean is not None:
            out[r.kid_metric] = r.kid_mean
        if r.is_mean is not None:
            out[r.is_metric] = r.is_mean
        return out

    return sample_quality


def evaluate_run(run_dir, num_samples: int | None = None, extractor: str | None = None,
                 cfg: EvalConfig = EvalConfig(), progress: bool = True, force: bool = False) -> MetricResult:
    """Final sample quality of the EMA model of the run in ``run_dir`` (newest good checkpoint).

    ``num_samples``/``extractor`` override ``cfg``.  The result is stored in
    ``<run_dir>/eval/<metric>-n<N>-step<step>-<key>.json``, keyed by the checkpoint's SHA-256, the
    evaluation settings and the extractor identity, and reused unless ``force``.
    """
    from kl_repro.paper_a.training.run import Run

    changes = {k: v for k, v in (("num_samples", num_samples), ("extractor", extractor)) if v is not None}
    cfg = cfg.replace(**changes) if changes else cfg
    run = Run.open(run_dir)
    ref = cfg.reference(run.config.data)  # bad data set / split: ConfigError before loading anything
    name = cfg.extractor or default_extractor(run.config.data.name)
    path, payload = run.latest_checkpoint()
    require(path is not None, f"{run.dir} has no usable checkpoint to evaluate")
    ext = build_extractor(name, ref, cfg.device)
    key = {"checkpoint_sha256": sha256_file(path), "step": int(payload["step"]), "eval": to_dict(cfg.replace(extractor=name)),
           "extractor": ext.identity}
    out = run.dir / "eval" / f"{ext.fd_name}-n{cfg.num_samples}-step{payload['step']}-{config_hash(key)}.json"
    if out.is_file() and not force:
        stored = read_json(out)
        if stored.get("key") == key:
            return MetricResult.from_dict(stored["result"])
    del payload
    net = run.load_model(ema=True).to(cfg.device)
    result = evaluate_model(net, run.config, cfg.replace(extractor=name), progress=progress)
    atomic_write_json(out, {"key": key, "run": run.name, "step": key["step"], "result": result.as_dict()})
    return result

