"""Checkpoint files of a training run: atomic writes with a SHA-256 sidecar, verified loads, RNG states.

``checkpoints/step-NNNNNNNN.pt`` holds the model, EMA, optimiser and AMP-scaler states, the step, the
RNG states and the hash of the run's config; ``step-NNNNNNNN.pt.sha256`` (written first) its size,
checksum, step and config hash.  Loads use ``weights_only=True``.  A truncated, altered or foreign
file raises :class:`CheckpointError` naming the path and what is wrong; :func:`quarantine` moves it aside.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kl_repro.core import store

__all__ = ["CKPT_FORMAT", "CheckpointError", "sidecar", "save_checkpoint", "verify_checkpoint", "quarantine",
           "seed_global_rngs", "rng_state", "set_rng_state"]

CKPT_FORMAT = 1


class CheckpointError(RuntimeError):
    """A checkpoint file is truncated, altered, incomplete or belongs to another configuration."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def sidecar(path: Path) -> Path:
    """The checksum file ``<checkpoint>.sha256`` of a checkpoint."""
    return path.with_name(path.name + ".sha256")


def save_checkpoint(path: Path, payload: dict[str, Any]) -> Path:
    """Write the SHA-256 sidecar, then the checkpoint, each atomically: every ``*.pt`` on disk has its sidecar."""
    buf = io.BytesIO()
    torch.save(payload, buf)
    data = buf.getvalue()
    info = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data), "step": payload["step"],
            "config_hash": payload["config_hash"]}
    store.atomic_write_json(sidecar(path), info)
    store.atomic_write_bytes(path, data)
    return path


def verify_checkpoint(path: Path, cfg_hash: str) -> dict[str, Any]:
    """Load a checkpoint after checking size, SHA-256 and config hash; :class:`CheckpointError` says what is wrong."""
    side = sidecar(path)
    if not side.exists():
        raise CheckpointError(f"{path}: no checksum file {side.name} (the write did not complete)")
    try:
        info = store.read_json(side)
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: unreadable checksum file ({e})") from None
    if info.get("config_hash") != cfg_hash:
        raise CheckpointError(f"{path}: written for config {info.get('config_hash')}, this run is {cfg_hash}")
    size = path.stat().st_size
    if size != info.get("bytes"):
        raise CheckpointError(f"{path}: {size} bytes, expected {info.get('bytes')} (truncated?)")
    if _sha256(path) != info.get("sha256"):
        raise CheckpointError(f"{path}: SHA-256 mismatch (file altered or corrupt)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{path}: cannot be loaded ({type(e).__name__}: {e})") from None
    if payload.get("config_hash") != cfg_hash or payload.get("format") != CKPT_FORMAT:
        raise CheckpointError(f"{path}: belongs to config {payload.get('config_hash')} (format {payload.get('format')})")
    return payload


def quarantine(path: Path) -> Path:
    """Move a bad checkpoint (and its sidecar) aside to ``*.bad``, kept for inspection and never overwritten."""
    bad = path.with_name(path.name + ".bad")
    path.replace(bad)
    if sidecar(path).exists():
        sidecar(path).replace(bad.with_name(bad.name + ".sha256"))
    return bad


def seed_global_rngs(seed: int) -> None:
    """Seed every global generator (torch CPU and CUDA, numpy, Python's ``random``) from one 63-bit ``seed``.

    The training loop calls it before each micro-batch with a seed derived from ``(run seed, step,
    micro-batch)``, so the global states are a function of the step: equal in a resumed and an
    uninterrupted run, and equal whichever process of a data-parallel launch draws the micro-batch.
    """
    torch.manual_seed(seed)  # seeds every CUDA device too
    np.random.seed(seed % 2**32)
    random.seed(seed)


def rng_state() -> dict[str, Any]:
    """The torch, CUDA, numpy and Python global RNG states, as types ``torch.load(weights_only=True)`` accepts.

    Training draws from no global generator but torch's (dropout), and :func:`seed_global_rngs` reseeds
    them all before every micro-batch, so the state stored at step ``n`` is the same in every run of the
    config, interrupted or not.  It is restored on resume (:func:`set_rng_state`, exactly: numpy's 624
    MT19937 words round-trip through int64), so a resumed process holds the states an uninterrupted
    one held after that step.
    """
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": random.getstate(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the states saved by :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    v, internal, gauss = state["python"]
    random.setstate((v, tuple(internal), gauss))
