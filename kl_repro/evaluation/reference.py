"""Real-image statistics for Fréchet distances and KID, from a fixed split and cached by content (Methods E).

Real statistics come from a fixed, unaugmented split: the **first N images, in file order, of the
training split** by default.  Paper A's code (lucidrains' trainer) drew 50k *augmented* images from the
training loader; we use this fixed set instead (see the Deviations page, "FID protocol").  Paper B
compares with the CIFAR-10 training set.  Statistics are cached by content: data set, split,
resolution, number of images, subset rule, a SHA-256 of the uint8 images and the extractor's identity
(name + weights checksum); a change to any of them recomputes.  So that a 50k-image reference is not
decoded again at every evaluation (30k CelebA-HQ JPEGs take minutes), a small index file maps the source
files' names, sizes and modification times (:func:`kl_repro.data.source_files`) to the cached statistics,
and a process keeps the statistics it has read.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kl_repro.core.config import Config, config_hash, require
from kl_repro.core.store import atomic_write_bytes, cache_dir, file_signature
from kl_repro.data import DataConfig, load_images, source_files
from kl_repro.evaluation.distances import gaussian_stats
from kl_repro.evaluation.features import FeatureExtractor, build_extractor, extract_features, sha256_array

__all__ = ["ReferenceConfig", "ReferenceStats", "reference_stats", "reference_stats_from_images"]

_STATS_FORMAT = 1
_READ: dict[str, ReferenceStats] = {}  # index file -> statistics this process has read or computed


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

    def data_config(self) -> DataConfig:
        """The :class:`kl_repro.data.DataConfig` of these images (no flips, no download)."""
        return DataConfig(name=self.dataset, resolution=self.resolution, root=self.root, split=self.split,
                          flip=False, download=False, subset=self.num_images)


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


def _cached_stats(path: Path, key: dict) -> ReferenceStats | None:
    """The statistics stored at ``path`` if the file is readable and its stored key equals ``key``."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            if json.loads(str(z["key"])) == key:
                return ReferenceStats(z["mu"], z["sigma"], z["features"], key, path)
    except (OSError, ValueError, KeyError):
        pass  # unreadable or foreign file: the caller recomputes
    return None


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
    cached = _cached_stats(path, key)
    if cached is not None:
        return cached
    feats = extract_features(extractor, images, batch_size=batch_size, progress=progress, desc="reference")["features"]
    mu, sigma = gaussian_stats(feats)
    buf = io.BytesIO()
    np.savez(buf, mu=mu, sigma=sigma, features=feats, key=np.array(json.dumps(key, sort_keys=True)))
    atomic_write_bytes(path, buf.getvalue())
    return ReferenceStats(mu, sigma, feats, key, path)


def _index_path(ref: ReferenceConfig, ext: FeatureExtractor) -> Path | None:
    """The index file of ``ref`` under ``ext`` keyed by its source files' names, sizes and times (None: no files)."""
    sources = file_signature(source_files(ref.data_config()))
    if sources is None:
        return None
    key = {"format": _STATS_FORMAT, "ref": ref.__dict__, "res": ref.data_config().res, "extractor": ext.identity,
           "sources": sources}
    return cache_dir("fid_refs") / f"index-{ref.dataset}-{config_hash(json.loads(json.dumps(key, default=str)), 16)}.json"


def _indexed(index: Path | None) -> ReferenceStats | None:
    """The statistics an index file points to, if both are readable and agree (else None: recompute)."""
    if index is None or not index.is_file():
        return None
    if index.as_posix() in _READ and _READ[index.as_posix()].path.is_file():
        return _READ[index.as_posix()]
    try:
        entry = json.loads(index.read_text())
        return _cached_stats(index.parent / entry["stats"], entry["key"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def reference_stats(ref: ReferenceConfig, extractor: str | FeatureExtractor = "inception-v3-compat",
                    batch_size: int = 100, device: str = "cpu", progress: bool = False) -> ReferenceStats:
    """Cached statistics of the real images ``ref`` (see :class:`ReferenceConfig` for which images).

    Found through the index of the source files without decoding the images when they are unchanged;
    otherwise the images are loaded and the content-keyed cache decides (:func:`reference_stats_from_images`).
    """
    ext = build_extractor(extractor, ref, device) if isinstance(extractor, str) else extractor
    index = _index_path(ref, ext)
    stats = _indexed(index)
    if stats is None:
        images, _ = load_images(ref.data_config())  # uint8 (N, C, H, W), first num_images in file order
        descriptor = {"dataset": ref.dataset, "split": ref.split, "resolution": ref.data_config().res,
                      "subset": "first num_images in file order, unaugmented"}
        stats = reference_stats_from_images(images, descriptor, ext, batch_size, progress)
        if index is not None:
            atomic_write_bytes(index, json.dumps({"stats": stats.path.name, "key": stats.key}, sort_keys=True).encode())
    if index is not None:
        _READ[index.as_posix()] = stats
    return stats
