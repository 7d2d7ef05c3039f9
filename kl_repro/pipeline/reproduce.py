"""``make reproduce``: train every run of the profile, execute every notebook, build the book.

The pipeline is idempotent and resumable:

* training runs are keyed by their config (``kl_repro.paper_a.training``); a finished run is
  reused, an interrupted one resumes from its newest checkpoint;
* an executed notebook is keyed by its inputs (:mod:`kl_repro.pipeline.notebooks`); it is written
  to ``results/<profile>/notebooks/`` only when its execution succeeded, and reused while its key
  is unchanged;
* a failing notebook is named with its error and the partial notebook's path, the others still
  run, and the command exits non-zero;
* one reproduce per results folder and profile at a time (a lock file; a second one waits or exits 3).
"""

from __future__ import annotations

import functools
import os
import time
from concurrent.futures import as_completed
from pathlib import Path

from kl_repro.core import store
from kl_repro.core.profiles import Profile
from kl_repro.paper_a.matrix import planned_runs
from kl_repro.pipeline.book import build_book
from kl_repro.pipeline.notebooks import (TRAINING_FREE, NotebookJob, execute_batch, execute_notebook, last_seconds, plan,
                                         repo_root)
from kl_repro.pipeline.scheduler import SideTask, run_matrix

__all__ = ["reproduce", "execute_all"]


def reproduce(profile: Profile, build_root: Path | None = None, train: bool = True, log=print) -> int:
    """The whole pipeline for ``profile``; returns the process exit status (0 when everything succeeded)."""
    root = repo_root()
    build_root = Path(build_root) if build_root else root
    t_start = time.time()
    with store.FolderLock(store.profile_dir(profile)):
        n_train = sum(p.status() != "finished" for p in planned_runs(profile)) if train else 0
        steps = plan(profile, root)
        n_exec = sum(1 for _, what in steps if what == "execute")
        log(f"notebooks for profile '{profile.name}': {len(steps) - n_exec} reused, {n_exec} to execute")
        for job, what in steps:
            log(f"  {'reuse  ' if what == 'reuse' else 'execute'} {job.output}")
        todo = [job for job, what in steps if what == "execute"]
        early = [job for job in todo if job.stem in TRAINING_FREE] if n_train else []
        if early:  # chapters that read no run execute in the training pool's slots, longest first
            log(f"  {', '.join(j.output for j in early)}: executed beside the training runs (they read none)")
        failures: list[str] = run_matrix(profile, log=log, side=_side_tasks(early, profile, root)) if train else []
        failures += execute_all([job for job in todo if job not in early], profile, root, log)
        if n_train or n_exec:  # the log times the reproduce that did the work (a rerun that reuses all keeps it)
            _write_pipeline_log(profile, time.time() - t_start)
        try:
            log(f"book: {build_book(profile, build_root, root, log)}")
        except RuntimeError as e:
            failures.append(f"book build ({e})")
    if failures:
        log("reproduce finished with failures:\n  - " + "\n  - ".join(failures))
        return 1
    log(f"reproduce finished in {time.time() - t_start:.0f} s")
    return 0


def _side_tasks(jobs: list[NotebookJob], profile: Profile, root: Path) -> list[SideTask]:
    """Notebook executions as tasks of the training pool, each with the seconds of its last execution if known."""
    return [SideTask(f"notebook {j.output}", functools.partial(execute_notebook, j, profile, root, print),
                     last_seconds(profile, j)) for j in jobs]


def _notebook_workers() -> int:
    """Notebooks executed at once: ``$KL_REPRO_NB_WORKERS``, default the CPU count capped at 2."""
    return max(1, int(os.environ.get("KL_REPRO_NB_WORKERS", min(2, os.cpu_count() or 1))))


def execute_all(jobs: list[NotebookJob], profile: Profile, root: Path, log=print) -> list[str]:
    """Execute ``jobs`` (independent of each other) in a small process pool; returns failure descriptions."""
    if not jobs:
        return []
    os.environ["KL_REPRO_RESULTS"] = str(store.results_root())
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    failures, n = [], 0
    with store.worker_pool(min(_notebook_workers(), len(jobs))) as pool:
        # the per-run pages share one kernel (execute_batch); every other notebook gets its own
        pages = [j for j in jobs if j.stem == "03_train"]
        tasks = [(tuple(pages), pool.submit(execute_batch, pages, profile, root, print))] if pages else []
        tasks += [((j,), pool.submit(execute_notebook, j, profile, root, print)) for j in jobs if j.stem != "03_train"]
        groups = {f: g for g, f in tasks}
        for fut in as_completed(groups):
            for job, rec in zip(groups[fut], _records(fut, len(groups[fut]))):
                n += 1
                if rec["status"] != "ok":
                    failures.append(f"notebook {job.output} ({rec['error']})")
                    log(f"[{n}/{len(jobs)}] FAILED {job.output}")
                else:
                    log(f"[{n}/{len(jobs)}] {job.output} done in {rec['seconds']:.0f} s")
    return failures


def _records(fut, n: int) -> list[dict]:
    try:
        recs = fut.result()
        return recs if isinstance(recs, list) else [recs]
    except Exception as e:  # the worker died
        return [{"status": "failed", "error": f"{type(e).__name__}: {e}", "seconds": 0.0} for _ in range(n)]


def _write_pipeline_log(profile: Profile, seconds: float) -> None:
    path = store.profile_dir(profile) / "pipeline.json"
    store.atomic_write_json(path, {"profile": profile.name, "seconds": seconds,
                                   "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
