"""Shared fixtures: the `smoke` book, built once per test session in a temporary folder.

The build is deliberately interrupted once (Ctrl-C after a few training runs finished) and then run
again, so the same session checks that an interrupted ``make reproduce`` resumes without redoing
finished runs (issue 7) and that the resumed build is complete.
"""

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from xdist.scheduler import LoadScopeScheduling

from kl_repro.core.profiles import load_profile
from kl_repro.paper_a.matrix import planned_runs

REPO = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def _single_thread():
    """One torch and one BLAS thread: small problems run fastest so on a shared 2-core machine (speed only)."""
    from threadpoolctl import threadpool_limits

    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1):
            yield
    finally:
        torch.set_num_threads(old)


@pytest.fixture
def one_thread():
    """One torch and one BLAS thread for the test."""
    with _single_thread():
        yield


@pytest.fixture(scope="module")
def one_thread_module():
    """One torch and one BLAS thread for the whole module."""
    with _single_thread():
        yield


def _env(results: Path, env_extra: dict | None = None) -> dict:
    env = dict(os.environ, KL_REPRO_RESULTS=str(results), PYTHONUNBUFFERED="1")
    env.update(env_extra or {})
    return env


def run_cli(*args, results: Path, env_extra: dict | None = None, timeout: int = 900) -> subprocess.CompletedProcess:
    """Run ``kl-repro`` in a subprocess with its own results root."""
    return subprocess.run([sys.executable, "-m", "kl_repro.pipeline.cli", *args], capture_output=True, text=True,
                          env=_env(results, env_extra), timeout=timeout, cwd=REPO)


def _finished_runs(results: Path) -> dict[str, float]:
    """The smoke matrix's finished training runs (not the small runs chapter 02 trains in the same folder while
    the matrix trains) and their ``finished.json`` times."""
    names = {p.run_dir.name for p in planned_runs(load_profile("smoke"))}
    return {p.parent.name: p.stat().st_mtime for p in (results / "smoke" / "runs").glob("*/finished.json")
            if p.parent.name in names}


@pytest.fixture(scope="session")
def smoke_build(tmp_path_factory):
    """``kl-repro reproduce --profile smoke``, interrupted after 3 finished runs, then run to the end."""
    reuse = os.environ.get("KL_REPRO_TEST_BUILD")  # developer shortcut: reuse an existing smoke build
    if reuse:
        b = Path(reuse)
        return {"proc": None, "results": Path(os.environ.get("KL_REPRO_RESULTS", "results")), "build": b,
                "html": b / "book" / "_build" / "html", "interrupted": None, "before": {}, "evaluated": set()}
    base = tmp_path_factory.mktemp("smoke")
    results, build = base / "results", base / "build"
    cmd = [sys.executable, "-m", "kl_repro.pipeline.cli", "reproduce", "--profile", "smoke", "--build-root", str(build)]
    # A shell's background job (`make test &`) ignores SIGINT, and its children inherit that: give the
    # command Ctrl-C's default back, so the interruption below works however the tests were started.
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             env=_env(results), cwd=REPO,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 600
    while time.time() < deadline and first.poll() is None and len(_finished_runs(results)) < 3:
        time.sleep(0.5)
    first.send_signal(signal.SIGINT)  # Ctrl-C in the middle of the training stage
    out_first, _ = first.communicate(timeout=120)
    before = {k: v for k, v in _finished_runs(results).items()}
    evaluated = {k for k in before if (results / "smoke" / "runs" / k / "final.json").exists()}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(results), timeout=900, cwd=REPO)
    return {"proc": proc, "results": results, "build": build, "html": build / "book" / "_build" / "html",
            "interrupted": (first.returncode, out_first), "before": before, "evaluated": evaluated}


def _smoke_book_tests() -> set[str]:
    """``file::name`` of every test that takes the smoke book (``smoke_build``, or ``browser_page`` built on it)."""
    found = set()
    for f in Path(__file__).parent.glob("test_*.py"):
        for m in re.finditer(r"^def (test_\w+)\(([^)]*)\)", f.read_text(), flags=re.M):
            if "smoke_build" in m.group(2) or "browser_page" in m.group(2):
                found.add(f"{f.name}::{m.group(1)}")
    return found


def pytest_collection_modifyitems(config, items):
    """Put the smoke book's tests first (a stable sort): its build is the longest single piece of work, so under
    ``-n 2`` it starts at once on one worker while the other takes every other file."""
    smoke = _smoke_book_tests()
    items.sort(key=lambda item: f"{item.path.name}::{item.originalname}" not in smoke)


def pytest_xdist_make_scheduler(config, log):
    """Under pytest-xdist (``make test`` runs ``-n 2``): every test of the smoke book runs on one worker, so the
    book is built once per session; every other file runs whole on one worker, so its module-scoped fixtures
    (the dry paper matrix, the gpu-check run) are set up once.  (xdist's own ``loadgroup`` did not group here.)"""
    smoke = _smoke_book_tests()
    config.option.loadscopereorder = False  # keep the collection order (smoke book first), not xdist's largest-scope-first

    class SmokeBookScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path, _, rest = nodeid.partition("::")
            return "smoke_book" if f"{Path(path).name}::{rest.split('[')[0]}" in smoke else path

    return SmokeBookScheduling(config, log)
