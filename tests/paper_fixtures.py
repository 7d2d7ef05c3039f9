"""Tiny random data sets in the real on-disk layouts the `paper` profile reads from ``$KL_REPRO_DATA``.

* ``MNIST/raw/``: torchvision's raw idx files (``train-images-idx3-ubyte``, ... ; big-endian headers,
  magic 2051 for images and 2049 for labels), 28x28 grey;
* ``cifar-10-batches-py/``: the CIFAR-10 "python version" (``data_batch_1`` .. ``data_batch_5``,
  ``test_batch``, ``batches.meta``), pickled dicts with ``data`` ``(N, 3072)`` uint8 in CHW row order
  and ``labels``;
* ``celebahq/``: a flat folder of JPEG files named ``00000.jpg``, ``00001.jpg``, ... as CelebA-HQ is
  distributed, larger than 128 pixels and not square, so the loader's centre crop and resize both run.

Every image is random (seeded), so nothing here needs the real data sets.
"""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np
from PIL import Image

CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _idx(path: Path, magic: int, array: np.ndarray) -> None:
    """One idx file: magic, then each dimension as a big-endian int32, then the uint8 payload."""
    path.write_bytes(struct.pack(f">{1 + array.ndim}i", magic, *array.shape) + array.astype(np.uint8).tobytes())


def write_mnist(root: Path, n_train: int, n_test: int, rng: np.random.Generator) -> None:
    """``root/MNIST/raw/`` with ``n_train`` training and ``n_test`` test digits (28x28, labels 0..9)."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        _idx(raw / f"{prefix}-images-idx3-ubyte", 2051, rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        _idx(raw / f"{prefix}-labels-idx1-ubyte", 2049, np.arange(n, dtype=np.uint8) % 10)


def _pickle(path: Path, obj: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def write_cifar10(root: Path, per_batch: int, rng: np.random.Generator) -> None:
    """``root/cifar-10-batches-py/``: five training batches and a test batch of ``per_batch`` images each."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for b, name in enumerate(names):
        labels = [int(v) for v in (np.arange(per_batch) + b) % 10]
        _pickle(folder / name, {
            "batch_label": f"{'testing' if name == 'test_batch' else 'training'} batch {b + 1} of 5",
            "labels": labels,
            "data": rng.integers(0, 256, (per_batch, 3 * 32 * 32), dtype=np.uint8),
            "filenames": [f"{CIFAR_CLASSES[c]}_{b:02d}{i:04d}.png" for i, c in enumerate(labels)],
        })
    _pickle(folder / "batches.meta", {"num_cases_per_batch": per_batch, "label_names": CIFAR_CLASSES, "num_vis": 3072})


def write_celebahq(root: Path, n: int, rng: np.random.Generator, size: tuple[int, int] = (176, 160)) -> None:
    """``root/celebahq/`` with ``n`` random RGB JPEGs of ``size`` (width, height)."""
    folder = root / "celebahq"
    folder.mkdir(parents=True, exist_ok=True)
    w, h = size
    for i in range(n):
        # Smooth random images (upsampled noise): JPEG keeps them close to what was written.
        small = rng.integers(0, 256, (h // 16, w // 16, 3), dtype=np.uint8)
        Image.fromarray(small).resize((w, h), Image.BILINEAR).save(folder / f"{i:05d}.jpg", quality=95)


def write_all(root: Path, seed: int = 0, mnist: tuple[int, int] = (24, 8), cifar_per_batch: int = 6,
              celebahq: int = 24) -> Path:
    """All three data sets under ``root`` (the folder ``$KL_REPRO_DATA`` points at); returns ``root``."""
    rng = np.random.default_rng(seed)
    write_mnist(root, *mnist, rng)
    write_cifar10(root, cifar_per_batch, rng)
    write_celebahq(root, celebahq, rng)
    return root
