"""Training every run of a profile's paper-A matrix in a pool of worker processes.

:func:`run_matrix` prints the plan (train, resume or reuse for each run, with time estimates where
known), then trains the runs in worker processes (one thread each; a fine-tuning run after the run it
starts from) with one progress line across runs and a log per run (``<run>/train.log``), and returns
the failures.  :func:`worker` is the body of one worker: train one planned run with its hooks, then
its final evaluation; ``kl-repro worker --profile P --key KEY`` runs it directly (e.g. under
``accelerate launch`` on several GPUs).

More than one machine: :func:`worker_commands` and :func:`slurm_script` (``kl-repro plan --format
commands|slurm``) give one self-contained command per pending run, for any scheduler, or a SLURM
job-array script.  Every worker writes into one shared results folder; a worker holds its run folder's
lock while it trains and evaluates, so a second worker on the same run (another machine, or ``make
reproduce``) waits and then finds the run finished: no run trains twice.  Afterwards ``make reproduce``
finds every run finished and evaluated, and only renders.
"""

from __future__ import annotations

import fnmatch
import multiprocessing
import os
import shlex
import sys
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, Future, wait
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from kl_repro.core import store
from kl_repro.core.config import require
from kl_repro.core.store import LockBusy
from kl_repro.core.profiles import Profile
from kl_repro.data import DataConfig, data_root
from kl_repro.paper_a.matrix import PlannedRun, load_matrix, planned_runs
from kl_repro.paper_a.run_hooks import eval_hooks, final_evaluation, step0_evaluation
from kl_repro.paper_a.training.loop import process_state, train
from kl_repro.pipeline.plan import plan_rows, plan_totals

__all__ = ["SideTask", "run_matrix", "worker", "pending_runs", "waves", "worker_commands", "slurm_script"]

Log = Callable[[str], None]


def _fmt_s(s: float | None) -> str:
    if s is None:
        return "?"
    return f"{s / 60:.1f} min" if s >= 60 else f"{s:.0f} s"


def _hold_run_lock(stack: ExitStack, p: PlannedRun) -> None:
    """Enter the run folder's lock on ``stack``: at once if free, else once the process holding it has let go."""
    try:
        stack.enter_context(store.FolderLock(p.run_dir))
    except LockBusy as e:
        print(f"run {p.key}: {e}; this worker waits for it", flush=True)
        stack.enter_context(store.FolderLock(p.run_dir, wait=True))


def worker(profile: Profile, key: str) -> int:
    """Train one planned run (``key``: ``<run id>@s<seed>``) with its hooks, then its final evaluation; returns 0.

    Rank 0 holds the run folder's lock throughout (a second worker on the run waits, then finds it finished).
    """
    m = load_matrix(profile)
    p = next((q for q in planned_runs(profile) if q.key == key), None)
    require(p is not None, f"profile {profile.name}: no planned run {key!r}")
    ev = m.evals.get(p.spec.data)
    state = process_state(p.config.train)
    main = state.is_main_process  # under `accelerate launch`: rank 0 holds the lock and evaluates
    with ExitStack() as stack:
        if main and p.status() != "finished":
            _hold_run_lock(stack, p)
        state.wait_for_everyone()  # every rank reads the status once rank 0 holds the lock
        if p.status() == "finished":
            print(f"finished {p.run_dir} (already; nothing to do)", flush=True)
            return 0
        if p.spec.step0_eval and ev is not None and main:
            step0_evaluation(p, ev)
        run = train(p.config, p.run_dir.parent, hooks=eval_hooks(p, ev) if ev else [], progress=True, lock=False)
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
    """The plan: how many runs are reused, the estimate of training and evaluation left (``pipeline.plan``), one line per run."""
    todo = [p for p in plan if status[p.key] != "finished"]
    rows = {r["run"]: r for r in plan_rows(profile)}
    tot = plan_totals(profile, list(rows.values()))
    known = tot["train_h"] + tot["eval_h"] + tot["reference_h"]
    log(f"paper A runs for profile '{profile.name}': {len(plan) - len(todo)} reused, {len(todo)} to train or evaluate "
        f"with {workers} worker{'s' if workers > 1 else ''}; estimate {_fmt_s(known * 3600 / workers) if known else '?'}"
        f"{' (some runs unknown)' if tot['unknown'] else ''} (`kl-repro plan --profile {profile.name}`: sources)")
    for p in plan:
        what, r = status[p.key], rows[p.key]
        est = None if r["train_h"] is None else 3600 * (r["train_h"] + (r["eval_h"] or 0.0))
        log(f"  {what:8s} {p.key:34s} {p.spec.label:18s} {'est. ' + _fmt_s(est) + ' (' + r['source'] + ')' if what in ('train', 'resume') else ''}")


@dataclass(frozen=True)
class SideTask:
    """Work that needs no training run (a notebook), done in a slot of the training pool while runs train.

    ``fn()`` runs in a pool process and returns a record with ``status`` ("ok" or not) and ``error``;
    ``est_s``: its expected seconds (None: unknown), for the longest-first order.
    """

    label: str
    fn: Callable[[], dict]
    est_s: float | None = None


def _run_seconds(p: PlannedRun, rows: dict[str, dict]) -> float:
    r = rows.get(p.key) or {}
    return 3600 * ((r.get("train_h") or 0.0) + (r.get("eval_h") or 0.0))


def longest_first(runs: Sequence[PlannedRun], side: Sequence[SideTask], rows: dict[str, dict]) -> list:
    """The start order: the side tasks and the runs by expected time, longest first (unknown counts as longest),
    so that no long piece of work starts last and runs alone; a fine-tuning run still waits for its base run."""
    items = [(t.est_s if t.est_s is not None else float("inf"), t) for t in side]
    items += [(_run_seconds(p, rows), p) for p in runs]
    return [x for _, x in sorted(items, key=lambda e: -e[0])]


@dataclass
class _Queue:
    """The runs (and side tasks) still to do, those running, and what became of the others."""

    profile: Profile
    todo: list[PlannedRun]
    done: set[str]
    log: Log
    pending: list = field(default_factory=list)
    running: dict[Future, tuple[PlannedRun | SideTask, float]] = field(default_factory=dict)
    failed: set[str] = field(default_factory=set)
    failures: list[str] = field(default_factory=list)

    def _submit_side(self, pool, t: SideTask) -> None:
        self.pending.remove(t)
        self.running[pool.submit(t.fn)] = (t, time.time())
        self.log(f"  start    {t.label}")

    def submit_ready(self, pool, workers: int) -> None:
        """Start pending work whose base run is done, up to ``workers`` at once; drop runs whose base failed."""
        for p in list(self.pending):
            if len(self.running) >= workers:
                break
            if isinstance(p, SideTask):
                self._submit_side(pool, p)
                continue
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

    def _collect_side(self, t: SideTask, fut: Future, t0: float) -> None:
        try:
            rec = fut.result()
        except Exception as e:  # the worker process died
            rec = {"status": "failed", "error": f"{type(e).__name__}: {e}"}
        if rec.get("status") == "ok":
            self.log(f"  done     {t.label} in {_fmt_s(time.time() - t0)}")
        else:
            self.failures.append(f"{t.label} ({rec.get('error')})")
            self.log(f"  FAILED   {t.label}")

    def collect(self, finished) -> None:
        """Record the outcome of the finished futures."""
        for fut in finished:
            p, t0 = self.running.pop(fut)
            if isinstance(p, SideTask):
                self._collect_side(p, fut, t0)
                continue
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
        """One progress line: the share of the training trained (steps weighted by each run's estimated seconds
        per step, so a KL step counts more than a baseline step), the time elapsed, each running run's step."""
        known = [p.spec.est_s_per_step for p in self.todo if p.spec.est_s_per_step]
        default = sum(known) / len(known) if known else 1.0

        def weight(p) -> float:
            return p.spec.est_s_per_step or default

        total_steps = sum(weight(p) * p.steps for p in self.todo) or 1
        trained = sum(weight(p) * min(p.progress_step(), p.steps) for p in self.todo)
        names = ", ".join(p.label if isinstance(p, SideTask) else f"{p.key} {p.progress_step()}/{p.steps}"
                          for p, _ in self.running.values())
        self.log(f"  progress {100 * trained / total_steps:5.1f}% of the training, {_fmt_s(time.time() - t_start)} "
                 f"elapsed; running: {names}")


def run_matrix(profile: Profile, log: Log = print, workers: int | None = None, side: Sequence[SideTask] = ()) -> list[str]:
    """Train (or reuse) every run of the profile's matrix and compute final numbers; returns failures.

    Runs go to a pool of worker processes (``[paper_a] workers``, or ``$KL_REPRO_WORKERS``, or
    ``workers``), one thread each, longest first (:func:`longest_first`); ``side`` tasks (notebooks that
    need no run) take slots of the same pool.  Interrupting (Ctrl-C, kill) loses at most the steps since
    each run's newest checkpoint; running again resumes.
    """
    m = load_matrix(profile)
    plan = planned_runs(profile)
    if not plan and not side:
        return []
    workers = max(1, workers or int(os.environ.get("KL_REPRO_WORKERS", m.workers)))
    status = {p.key: p.status() for p in plan}
    if plan:
        _log_plan(profile, plan, status, workers, log)
    todo = [p for p in plan if status[p.key] != "finished"]
    if not todo and not side:
        return []
    rows = {r["run"]: r for r in plan_rows(profile)} if todo else {}
    q = _Queue(profile, todo, {p.key for p in plan if status[p.key] == "finished"}, log,
               pending=longest_first(todo, side, rows))
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


# --- more than one machine: one command per pending run, or a SLURM job array ---------------------

def pending_runs(profile: Profile, only: Sequence[str] = ()) -> list[PlannedRun]:
    """The matrix's runs not finished (to train, resume or evaluate), in dependency order; ``only``: glob patterns on keys."""
    runs = [p for p in planned_runs(profile) if p.status() != "finished"]
    if only:
        runs = [p for p in runs if any(fnmatch.fnmatchcase(p.key, pat) for pat in only)]
    return runs


def waves(runs: Sequence[PlannedRun]) -> list[list[PlannedRun]]:
    """``runs`` in waves: a fine-tuning run goes one wave after its base run when that is among ``runs``.

    A base run that is neither finished nor among ``runs`` is refused: the fine-tuning run could not start.
    """
    wave_of: dict[str, int] = {}
    for p in runs:  # dependency order: a base run comes before the runs that start from it
        base = p.depends_on
        if base is not None and base not in wave_of:
            require((Path(p.config.init_from) / "finished.json").exists(),
                    f"run {p.key} fine-tunes from {base}, which is neither finished nor among the selected runs")
        wave_of[p.key] = wave_of[base] + 1 if base in wave_of else 0
    out: list[list[PlannedRun]] = [[] for _ in range(max(wave_of.values(), default=-1) + 1)]
    for p in runs:
        out[wave_of[p.key]].append(p)
    return out


def _launcher() -> list[str]:
    """This environment's ``kl-repro`` by absolute path (a shared file system shows it to every node)."""
    exe = Path(sys.executable).with_name("kl-repro")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "kl_repro.pipeline.cli"]


def _worker_env() -> dict[str, str]:
    """The environment a worker needs, as absolute paths: the shared results folder and the data folder."""
    return {"KL_REPRO_RESULTS": str(store.results_root().resolve()), "KL_REPRO_DATA": str(data_root(DataConfig()).resolve())}


def _command(profile: Profile, key: str, launcher: Sequence[str]) -> str:
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in _worker_env().items())
    return f"{env} {shlex.join([*launcher, 'worker', '--profile', profile.name, '--key', key])}"


def worker_commands(profile: Profile, runs: Sequence[PlannedRun], launcher: Sequence[str] | None = None) -> str:
    """One self-contained shell command per run (``kl-repro worker``), grouped in waves (:func:`waves`), with comments."""
    launcher = list(launcher or _launcher())
    lines = [f"# {len(runs)} pending paper-A runs of profile '{profile.name}': one command each, for any machine that",
             f"# sees the shared results folder {_worker_env()['KL_REPRO_RESULTS']} (flock must work across machines).",
             "# Within a wave, run them in any order and anywhere; start a wave once the one before it succeeded.",
             f"# Afterwards `make reproduce PROFILE={profile.name}` finds the runs finished and only renders."]
    for i, wave in enumerate(waves(runs), 1):
        what = "runs that start from scratch or from finished runs" if i == 1 else "fine-tuning runs of the wave before"
        lines.append(f"# wave {i}: {len(wave)} {what}")
        lines += [_command(profile, p.key, launcher) for p in wave]
    return "\n".join(lines) + "\n"


_TASK = """#!/bin/bash
# One array task: the run on line SLURM_ARRAY_TASK_ID + 1 of the run list given as $1.
set -euo pipefail
KEY=$(sed -n "$((SLURM_ARRAY_TASK_ID + 1))p" "$1")
exec env {env} {launcher} worker --profile {profile} --key "$KEY"
"""

_SLURM_HEAD = """#!/bin/bash
# SLURM job arrays for the {n} pending paper-A runs of profile '{profile}' (kl-repro plan --format slurm).
# Submit from a login node:  SBATCH_OPTS="--partition=... --gres=gpu:1 --time=24:00:00" bash <this file>
# Each array task runs `kl-repro worker` for one run, read from a run list by $SLURM_ARRAY_TASK_ID.  Every task
# writes into ONE shared results folder, {results}, which every node must see on a file system whose
# flock works across nodes (NFSv4, Lustre mounted with -o flock, GPFS): the run folder's lock makes a second task on
# the same run wait, then find it finished.  Array k+1 (fine-tuning runs, which start from a baseline run of array k)
# starts once every task of array k succeeded (--dependency=afterok); if a task fails, rerun this script: finished
# runs are left out.  Afterwards `make reproduce PROFILE={profile}` only evaluates and renders.
set -euo pipefail
SBATCH_OPTS=${{SBATCH_OPTS:-}}
DIR={dir}
mkdir -p "$DIR"
cat > "$DIR/task.sh" <<'KL_REPRO_TASK'
{task}KL_REPRO_TASK
chmod +x "$DIR/task.sh"
"""

_SLURM_WAVE = """cat > "$DIR/wave{i}.txt" <<'KL_REPRO_RUNS'
{keys}
KL_REPRO_RUNS
job{i}=$(sbatch --parsable $SBATCH_OPTS {dep}--job-name=kl-repro-{profile}-{i} --array=0-{last} \\
  --output="$DIR/%x-%A-%a.out" "$DIR/task.sh" "$DIR/wave{i}.txt")
job{i}=${{job{i}%%;*}}
echo "array {i}: {count} run(s), job $job{i}"
"""


def slurm_script(profile: Profile, runs: Sequence[PlannedRun], launcher: Sequence[str] | None = None) -> str:
    """A bash script that submits one SLURM job array per wave of ``runs`` (:func:`waves`), each after the one before."""
    env = _worker_env()
    task = _TASK.format(env=" ".join(f"{k}={shlex.quote(v)}" for k, v in env.items()),
                        launcher=shlex.join(list(launcher or _launcher())), profile=shlex.quote(profile.name))
    folder = Path(env["KL_REPRO_RESULTS"]) / profile.name / "slurm"  # the run lists and the tasks' logs
    out = _SLURM_HEAD.format(n=len(runs), profile=profile.name, results=env["KL_REPRO_RESULTS"],
                             dir=shlex.quote(str(folder)), task=task)
    for i, wave in enumerate(waves(runs), 1):
        out += _SLURM_WAVE.format(i=i, keys="\n".join(p.key for p in wave), dep=f"--dependency=afterok:$job{i - 1} " if i > 1 else "",
                                  profile=profile.name, last=len(wave) - 1, count=len(wave))
    return out if runs else out + f'echo "nothing to submit: no pending run of profile {profile.name} selected"\n'
