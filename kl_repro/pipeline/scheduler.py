"""Training every run of a profile's paper-A matrix in a pool of worker processes.

:func:`run_matrix` prints the plan (train, resume or reuse for each run, with time estimates where
known), then trains the runs in worker processes (one thread each; a fine-tuning run after the run it
starts from) with one progress line across runs and a log per run (``<run>/train.log``), and returns
the failures.  :func:`worker` is the body of one worker: train one planned run with its hooks, then
its final evaluation; ``kl-repro worker --profile P --run KEY`` runs it directly (e.g. under
``accelerate launch`` on several GPUs).
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from typing import Callable

from accelerate import PartialState

from kl_repro.core import store
from kl_repro.core.config import require
from kl_repro.core.profiles import Profile
from kl_repro.paper_a.matrix import PlannedRun, load_matrix, planned_runs
from kl_repro.paper_a.run_hooks import eval_hooks, final_evaluation, step0_evaluation
from kl_repro.paper_a.training.loop import train

__all__ = ["run_matrix", "worker"]

Log = Callable[[str], None]


def _fmt_s(s: float | None) -> str:
    if s is None:
        return "?"
    return f"{s / 60:.1f} min" if s >= 60 else f"{s:.0f} s"


def worker(profile: Profile, key: str) -> int:
    """Train one planned run (``key``: ``<run id>@s<seed>``) with its hooks, then its final evaluation; returns 0."""
    m = load_matrix(profile)
    p = next((q for q in planned_runs(profile) if q.key == key), None)
    require(p is not None, f"profile {profile.name}: no planned run {key!r}")
    ev = m.evals.get(p.spec.data)
    main = PartialState(cpu=p.config.train.device == "cpu").is_main_process  # under `accelerate launch`: rank 0 evaluates
    if p.spec.step0_eval and ev is not None and main:
        step0_evaluation(p, ev)
    run = train(p.config, p.run_dir.parent, hooks=eval_hooks(p, ev) if ev else [], progress=True)
    if p.spec.evaluate and ev is not None and main:
        result = final_evaluation(p, ev)
        print(f"final {result.get('metric')}: {result.get('value')}", flush=True)
    print(f"finished {run.dir}", flush=True)
    return 0


def _init_worker(counter, n_gpus: int) -> None:
    """Pool initialiser: die with the parent; with ``KL_REPRO_GPUS=N``, pin worker ``i`` to GPU ``i mod N``.

    So ``KL_REPRO_WORKERS=8 KL_REPRO_GPUS=8 make reproduce PROFILE=paper`` trains eight runs at once,
    one per GPU (set before the worker's first CUDA call, which reads it).
    """
    store.die_with_parent()
    with counter.get_lock():
        index = counter.value
        counter.value += 1
    if n_gpus > 0:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(index % n_gpus)


def _worker_task(profile: Profile, key: str, log_path: str) -> int:
    """Run :func:`worker` in a pool process with its output going to the run's log file."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log_path, "a", encoding="utf-8") as f:
        f.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} worker {os.getpid()} for {key}\n")
        f.flush()
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
        try:
            return worker(profile, key)
        except BaseException:
            traceback.print_exc()
            return 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def _log_plan(profile: Profile, plan: tuple[PlannedRun, ...], status: dict[str, str], workers: int, log: Log) -> None:
    """The plan: how many runs are reused, the training estimate, and one line per run."""
    todo = [p for p in plan if status[p.key] != "finished"]
    est = [p.estimate_s() for p in todo if status[p.key] in ("train", "resume")]
    known = [e for e in est if e is not None]
    log(f"paper A runs for profile '{profile.name}': {len(plan) - len(todo)} reused, {len(todo)} to train or evaluate "
        f"with {workers} worker{'s' if workers > 1 else ''}; training estimate {_fmt_s(sum(known) / workers) if known else '?'}"
        f"{' (some runs unknown)' if len(known) < len(est) else ''}")
    for p in plan:
        what = status[p.key]
        log(f"  {what:8s} {p.key:34s} {p.spec.label:18s} {'est. ' + _fmt_s(p.estimate_s()) if what in ('train', 'resume') else ''}")


@dataclass
class _Queue:
    """The runs still to train, those running, and what became of the others."""

    profile: Profile
    todo: list[PlannedRun]
    done: set[str]
    log: Log
    pending: list[PlannedRun] = field(default_factory=list)
    running: dict[Future, tuple[PlannedRun, float]] = field(default_factory=dict)
    failed: set[str] = field(default_factory=set)
    failures: list[str] = field(default_factory=list)

    def submit_ready(self, pool, workers: int) -> None:
        """Start pending runs whose base run is done, up to ``workers`` at once; drop those whose base failed."""
        for p in list(self.pending):
            if len(self.running) >= workers:
                break
            if p.depends_on in self.failed:
                self.pending.remove(p)
                self.failed.add(p.key)
                self.failures.append(f"run {p.key} (not started: {p.depends_on} failed)")
                continue
            if p.depends_on is not None and p.depends_on not in self.done:
                continue
            self.pending.remove(p)
            p.run_dir.mkdir(parents=True, exist_ok=True)
            fut = pool.submit(_worker_task, self.profile, p.key, str(p.run_dir / "train.log"))
            self.running[fut] = (p, time.time())
            self.log(f"  start    {p.key} ({p.spec.label})")

    def collect(self, finished) -> None:
        """Record the outcome of the finished futures."""
        for fut in finished:
            p, t0 = self.running.pop(fut)
            try:
                code = fut.result()
            except Exception as e:  # the worker process died (killed, out of memory)
                code = f"{type(e).__name__}: {e}"
            if code == 0:
                self.done.add(p.key)
                self.log(f"  done     {p.key} in {_fmt_s(time.time() - t0)}")
            else:
                self.failed.add(p.key)
                self.failures.append(f"run {p.key} ({code}; log: {p.run_dir / 'train.log'})")
                self.log(f"  FAILED   {p.key}; see {p.run_dir / 'train.log'}")

    def report(self, t_start: float) -> None:
        """One progress line: the share of all steps trained, the time elapsed, each running run's step."""
        total_steps = sum(p.steps for p in self.todo) or 1
        trained = sum(min(p.progress_step(), p.steps) for p in self.todo)
        names = ", ".join(f"{p.key} {p.progress_step()}/{p.steps}" for p, _ in self.running.values())
        self.log(f"  progress {100 * trained / total_steps:5.1f}% of steps, {_fmt_s(time.time() - t_start)} "
                 f"elapsed; running: {names}")


def run_matrix(profile: Profile, log: Log = print, workers: int | None = None) -> list[str]:
    """Train (or reuse) every run of the profile's matrix and compute final numbers; returns failures.

    Runs go to a pool of worker processes (``[paper_a] workers``, or ``$KL_REPRO_WORKERS``, or
    ``workers``), one thread each.  Interrupting (Ctrl-C, kill) loses at most the steps since each
    run's newest checkpoint; running again resumes.
    """
    m = load_matrix(profile)
    plan = planned_runs(profile)
    if not plan:
        return []
    workers = max(1, workers or int(os.environ.get("KL_REPRO_WORKERS", m.workers)))
    status = {p.key: p.status() for p in plan}
    _log_plan(profile, plan, status, workers, log)
    todo = [p for p in plan if status[p.key] != "finished"]
    if not todo:
        return []
    q = _Queue(profile, todo, {p.key for p in plan if status[p.key] == "finished"}, log, pending=list(todo))
    os.environ["KL_REPRO_RESULTS"] = str(store.results_root())  # inherited by the pool's processes
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    ctx = multiprocessing.get_context("spawn")
    t_start, last_report = time.time(), time.time()
    n_gpus = int(os.environ.get("KL_REPRO_GPUS", "0"))
    with store.worker_pool(workers, _init_worker, (ctx.Value("i", 0), n_gpus), ctx) as pool:
        while q.pending or q.running:
            q.submit_ready(pool, workers)
            if not q.running:
                break
            finished, _ = wait(list(q.running), timeout=2.0, return_when=FIRST_COMPLETED)
            q.collect(finished)
            if q.running and time.time() - last_report > (5 if sys.stdout.isatty() else 60):
                last_report = time.time()
                q.report(t_start)
    return q.failures
