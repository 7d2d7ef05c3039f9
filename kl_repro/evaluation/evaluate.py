"""Sample quality of generated images: FID (or FD_clf), KID and IS against real statistics (Methods E).

Paper A reports FID on 50k DDIM samples; paper B reports FID and Inception Score against the CIFAR-10
training set.  Both use the 2048-d pool3 features of the TF Inception graph, here torch-fidelity's
``inception-v3-compat`` with offline weights (:mod:`kl_repro.evaluation.inception`).

* Features come from the extractor registry of :mod:`kl_repro.evaluation.features`:
  ``inception-v3-compat`` (FID/KID; IS only with torch-fidelity's own weights), ``clf`` (a small
  classifier trained on the data set itself; its metric is ``FD_clf``, never "FID") and ``tiny``
  (parameter-free, for tests).  Images enter as ``(N, C, H, W)`` floats in [-1, 1] (or uint8).
* Real statistics: :mod:`kl_repro.evaluation.reference`; distances: :mod:`kl_repro.evaluation.distances`.
* Every number carries its metric name, extractor, sample counts and the sampler description
  (:class:`MetricResult`).

:class:`EvalConfig` describes the evaluation of a trained model (how many samples, which seeds and
reference); sampling a model is the papers' business (:mod:`kl_repro.paper_a.evaluate`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch

from kl_repro.core.config import Config, require
from kl_repro.evaluation.distances import KIDConfig, frechet_distance, gaussian_stats, kernel_distance
from kl_repro.evaluation.features import (
    FeatureExtractor,
    build_extractor,
    check_extractor_name,
    extract_features,
    iter_batches,
)
from kl_repro.evaluation.reference import ReferenceConfig, ReferenceStats, reference_stats

__all__ = ["MetricResult", "evaluate_images", "default_extractor", "EvalConfig", "PROXY"]


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


def _inception_score(extractor: FeatureExtractor, out: dict) -> tuple[float | None, float | None, list[str]]:
    """IS mean and std from the logits in ``out`` (10 splits, torch-fidelity's seed), or ``None`` and a note why not."""
    if extractor.has_logits and "logits" in out and len(out["features"]) >= 10:
        from torch_fidelity.metric_isc import isc_features_to_metric  # third-party, slow to import: only when needed

        isc = isc_features_to_metric(torch.from_numpy(out["logits"]), splits=10, shuffle=True, rng_seed=2020)
        return isc["inception_score_mean"], isc["inception_score_std"], []
    if extractor.has_logits:
        return None, None, [f"{extractor.is_name} not computed: it needs at least 10 samples (10 splits)"]
    return None, None, [extractor.is_note] if extractor.is_note else []


def _check_inputs(images, ref, sampler, num_samples, batch_size, kid) -> None:
    """Input checks of :func:`evaluate_images` that need no compute (ConfigError before any work)."""
    require(isinstance(sampler, str) and sampler.strip() != "",
            "sampler must describe how the images were made (e.g. 'DDIM eta=1 S=20'); every number carries it")
    require(isinstance(ref, (ReferenceConfig, ReferenceStats)), f"ref must be a ReferenceConfig or ReferenceStats, got {type(ref).__name__}")
    require(kid is None or isinstance(kid, KIDConfig), f"kid must be a KIDConfig or None, got {type(kid).__name__}")
    iter_batches(images, num_samples, batch_size)  # its input checks, before the reference statistics are computed


def evaluate_images(images, ref: ReferenceConfig | ReferenceStats, sampler: str,
                    extractor: str | FeatureExtractor = "inception-v3-compat", num_samples: int | None = None,
                    batch_size: int = 100, kid: KIDConfig | None = KIDConfig(), device: str = "cpu",
                    progress: bool = False) -> MetricResult:
    """FD (FID for Inception), KID and, when the extractor has logits, IS of ``images`` against ``ref``.

    ``images``: ``(N, C, H, W)`` float in [-1, 1] or uint8, an iterable of such batches, or
    ``fn(start, size) -> batch`` (with ``num_samples``).  ``sampler`` describes how they were made and
    is carried into the result.  ``kid=None`` skips KID.
    """
    _check_inputs(images, ref, sampler, num_samples, batch_size, kid)
    if isinstance(extractor, str):
        check_extractor_name(extractor)
        extractor = build_extractor(extractor, ref if isinstance(ref, ReferenceConfig) else None, device)
    stats = reference_stats(ref, extractor, batch_size, device, progress) if isinstance(ref, ReferenceConfig) else ref
    require(stats.key.get("extractor") == extractor.identity,
            f"reference statistics were computed with {stats.key.get('extractor')}, not {extractor.identity}")
    out = extract_features(extractor, images, num_samples, batch_size, progress, desc="samples")
    feats = out["features"]
    require(len(feats) >= 2, f"need at least 2 generated images, got {len(feats)}")
    fd = frechet_distance(*gaussian_stats(feats), stats.mu, stats.sigma)
    kd = kernel_distance(feats, stats.features, kid) if kid is not None else None
    is_mean, is_std, notes = _inception_score(extractor, out)
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


@dataclass(frozen=True)
class EvalConfig(Config):
    """A sample-quality evaluation of a trained model; defaults are the papers' final numbers.

    Paper A: 50k samples from the run's sampler (DDIM eta = 1, S = 20; Methods A.6); paper B: FID and IS
    against the CIFAR-10 training set.  :data:`PROXY` is the cheap setting for training curves.
    """

    num_samples: int = 50_000  # generated images (paper A Sec. 6.2, paper B Table 1)
    extractor: str | None = None  # None: default_extractor(dataset): clf for digits, inception-v3-compat otherwise
    ref_split: Literal["train", "test", "all"] = "train"  # real statistics from this split (paper B: the training set)
    ref_images: int | None = None  # its first N images in file order (None: all; capped at the split's size)
    seed: int = 0  # image i of block 0 uses sampler seed (seed, i); see sample_block
    batch_size: int = 100  # images per sampler and extractor call
    sample_block: int = 10_000  # images per sampler call (bounds memory); image i is the same for any block size
    every: int | None = None  # hook only: evaluate when step % every == 0 (None: whenever the training loop calls hooks)
    kid: bool = True
    kid_subsets: int = 100  # torch-fidelity default
    kid_subset_size: int = 1000  # torch-fidelity default (capped at the smaller set)
    # extractor (and, for a final evaluation, sampler) device; "auto": CUDA when present, else CPU (resolved_device)
    device: str = "auto"

    def check(self) -> None:
        require(self.num_samples >= 2, f"num_samples must be >= 2, got {self.num_samples}")
        if self.extractor is not None:
            check_extractor_name(self.extractor)
        require(self.ref_images is None or self.ref_images >= 2, f"ref_images must be >= 2, got {self.ref_images}")
        require(self.batch_size >= 1 and self.sample_block >= 1, "batch_size and sample_block must be >= 1")
        require(self.every is None or self.every >= 1, f"every must be None or >= 1, got {self.every}")
        require(self.device in ("auto", "cpu") or self.device.startswith("cuda"),
                f"device must be 'auto', 'cpu' or 'cuda[:i]', got {self.device!r}")
        self.kid_config()

    def resolved_device(self) -> str:
        """``device`` with ``auto`` resolved: ``cuda`` when a GPU is visible, else ``cpu`` (asked at use, not at import)."""
        if self.device != "auto":
            return self.device
        return "cuda" if torch.cuda.is_available() else "cpu"

    def kid_config(self) -> KIDConfig:
        return KIDConfig(subsets=self.kid_subsets, subset_size=self.kid_subset_size)

    def reference(self, data) -> ReferenceConfig:
        """The real images a model trained on ``data`` (:class:`~kl_repro.data.DataConfig`) is compared with.

        Same data set, resolution and folder; the split's first ``ref_images`` images regardless of
        the training ``subset``.
        """
        return ReferenceConfig(dataset=data.name, split=self.ref_split, resolution=data.resolution,
                               num_images=self.ref_images, root=data.root)


# Training curves: 2k samples (10k would be the GPU setting; 2k costs ~6 min of Inception on a 2-core CPU), 10k real images.
PROXY = EvalConfig(num_samples=2000, ref_images=10_000, kid_subsets=10)
