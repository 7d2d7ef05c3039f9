"""Results on disk: where they live, atomic writes, artefacts keyed by profile, and a folder lock.

Everything a run or a notebook produces goes under the results root
(``$KL_REPRO_RESULTS``, default ``./results``), per profile::

    results/<profile>/runs/<run-name>/        training runs (config, checkpoints, metrics, samples)
    results/<profile>/artefacts/<id>.json     one file per paper table/figure: our numbers, the paper's, a verdict
    results/<profile>/artefacts/<id>.png      its figure, when it has one
    results/<profile>/notebooks/              executed notebooks (papermill) and their input keys
    results/cache/                            content-keyed caches shared by profiles (FID statistics, weights)

Writes are atomic (temporary file in the same folder, ``fsync``, then ``os.replace``), so an
interruption never leaves a half-written file under its final name.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

from kl_repro.core.config import ConfigError
from kl_repro.core.profiles import Profile, as_profile

__all__ = [
    "results_root",
    "profile_dir",
    "cache_dir",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_json",
    "atomic_torch_save",
    "read_json",
    "save_artefact",
    "load_artefact",
    "artefact_path",
    "FolderLock",
    "LockBusy",
]


def results_root() -> Path:
    """The results root: ``$KL_REPRO_RESULTS`` or ``./results``."""
    return Path(os.environ.get("KL_REPRO_RESULTS", "results")).absolute()


def profile_dir(profile: Profile | str) -> Path:
    """``<results>/<profile>``, created on demand."""
    p = results_root() / as_profile(profile).name
    p.mkdir(parents=True, exist_ok=True)
    return p


def cache_dir(name: str) -> Path:
    """``<results>/cache/<name>`` for content-keyed caches shared across profiles."""
    p = results_root() / "cache" / name
    p.mkdir(parents=True, exist_ok=True)
    return p


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Atomic text write (UTF-8)."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Atomic JSON write (sorted keys, indented; numpy scalars and arrays converted)."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` through a temporary file and rename, so a crash never leaves a partial checkpoint."""
    import io

    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return atomic_write_bytes(path, buf.getvalue())


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file."""
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def artefact_path(profile: str, artefact_id: str, suffix: str = ".json") -> Path:
    """Path of artefact ``artefact_id`` (e.g. ``"A.table1"``) of ``profile``."""
    return profile_dir(profile) / "artefacts" / f"{artefact_id}{suffix}"


def save_artefact(profile: str, artefact_id: str, data: dict, figure=None, dpi: int = 110) -> Path:
    """Store one table/figure's data (and its matplotlib ``figure`` as PNG) for ``profile``.

    ``data`` should carry ``ours`` (our numbers with profile, sample counts, seeds, sampler),
    ``paper`` (the paper's values with their source) and ``verdict``; the status table of the
    book reads these files.
    """
    path = artefact_path(profile, artefact_id)
    payload = dict(data)
    payload.setdefault("id", artefact_id)
    payload.setdefault("profile", profile)
    if figure is not None:
        import io

        buf = io.BytesIO()
        figure.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
        png = artefact_path(profile, artefact_id, ".png")
        atomic_write_bytes(png, buf.getvalue())
        payload["figure"] = png.name
    atomic_write_json(path, payload)
    return path


def load_artefact(profile: str, artefact_id: str) -> dict | None:
    """The stored artefact, or ``None`` if it was not produced."""
    path = artefact_path(profile, artefact_id)
    return read_json(path) if path.exists() else None


class LockBusy(RuntimeError):
    """Another process holds the folder lock."""


class FolderLock:
    """An exclusive advisory lock on a folder (``fcntl.flock`` on ``<folder>/.lock``).

    Released automatically when the process dies, so a killed run never leaves a stale lock.
    ``wait=False`` refuses at once with :class:`LockBusy` naming the holder's PID.
    """

    def __init__(self, folder: str | os.PathLike, wait: bool = False):
        self.folder = Path(folder)
        self.wait = wait
        self._fd: int | None = None

    def __enter__(self) -> "FolderLock":
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / ".lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if self.wait else fcntl.LOCK_NB))
        except OSError as e:
            holder = ""
            with contextlib.suppress(Exception):
                holder = os.pread(fd, 64, 0).decode().strip()
            os.close(fd)
            if e.errno in (errno.EAGAIN, errno.EACCES):
                raise LockBusy(
                    f"{self.folder} is in use by another process (pid {holder or '?'}); "
                    "wait for it to finish or stop it first"
                ) from None
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None






def die_with_parent() -> None:
    """Ask Linux to send SIGTERM to this process when its parent dies (worker-pool initialiser).

    Without it, killing ``make reproduce`` (even with ``kill -9``) would leave its training workers
    running as orphans, writing to run folders no-one watches.  A no-op where ``prctl`` is missing.
    """
    import ctypes
    import signal

    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


@contextlib.contextmanager
def worker_pool(workers: int, initializer=None, initargs: tuple = (), mp_context=None):
    """A spawn-context process pool whose workers die with this process and with an interruption.

    On any exception (``KeyboardInterrupt`` and ``SystemExit`` included) the workers are terminated and
    queued tasks cancelled before the exception goes on, so Ctrl-C or a kill of ``make reproduce`` never
    waits for a training run to finish; on normal exit the pool is shut down after its tasks.
    ``initializer`` defaults to :func:`die_with_parent` (a custom one should call it).
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    pool = ProcessPoolExecutor(max_workers=workers, mp_context=mp_context or multiprocessing.get_context("spawn"),
                               initializer=initializer or die_with_parent, initargs=initargs)
    try:
        yield pool
    except BaseException:
        for proc in list(getattr(pool, "_processes", {}).values()):
            proc.terminate()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def file_signature(files) -> list | None:
    """``[[path, size, mtime_ns], ...]`` of ``files`` (None for none): a cache key that changes with any file,
    read without opening them."""
    return [[str(f.resolve()), st.st_size, st.st_mtime_ns] for f in files for st in [f.stat()]] if files else None
