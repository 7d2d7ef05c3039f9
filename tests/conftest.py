"""Shared fixtures: the `smoke` book, built once per test session in a temporary folder."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args, results: Path, env_extra: dict | None = None, timeout: int = 900) -> subprocess.CompletedProcess:
    """Run ``kl-repro`` in a subprocess with its own results root."""
    env = dict(os.environ, KL_REPRO_RESULTS=str(results), PYTHONUNBUFFERED="1")
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "kl_repro.cli", *args], capture_output=True, text=True,
                          env=env, timeout=timeout, cwd=REPO)


@pytest.fixture(scope="session")
def smoke_build(tmp_path_factory):
    """``kl-repro reproduce --profile smoke`` into a temporary results root and build folder."""
    reuse = os.environ.get("KL_REPRO_TEST_BUILD")  # developer shortcut: reuse an existing smoke build
    if reuse:
        b = Path(reuse)
        return {"proc": None, "results": Path(os.environ.get("KL_REPRO_RESULTS", "results")), "build": b,
                "html": b / "book" / "_build" / "html"}
    base = tmp_path_factory.mktemp("smoke")
    results, build = base / "results", base / "build"
    proc = run_cli("reproduce", "--profile", "smoke", "--build-root", str(build), results=results)
    return {"proc": proc, "results": results, "build": build, "html": build / "book" / "_build" / "html"}
