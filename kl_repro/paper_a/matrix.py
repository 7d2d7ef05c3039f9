"""Paper A's run matrices per profile, and executing them.

A profile's ``[paper_a]`` section (``kl_repro/profiles/<name>.toml``) lists, as data, which training
runs make each table and figure of paper A (``kl_paper_spec.md`` sections 4.4 and 5)::

    [paper_a.defaults.digits]            # notebook-03 parameters shared by every run on that data set
    [paper_a.eval.digits]                # its sample-quality metric: proxy curve and final evaluation
    [[paper_a.run]]                      # one row per run: id, label, data, parameters, seeds, artefacts
    [paper_a.absent]                     # artefacts this profile cannot make, with the reason

Every run is a set of parameters of ``notebooks/03_train.ipynb`` (:class:`~kl_repro.paper_a.training.loop.TrainNotebookConfig`),
so its book page and :func:`run_matrix` resolve to the same run folder (keyed by the config) and a
finished run is never retrained.  :func:`run_matrix` trains the runs in worker processes (one thread
each; dependencies such as fine-tuning from a baseline respected), with a plan printed first, one
progress line across runs, a log per run, and a non-zero status naming the failures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal

from kl_repro.core import store
from kl_repro.core.config import Config, ConfigError, require
from kl_repro.core.profiles import check_profile_name, load_profile

__all__ = [
    "EvalSpec",
    "RunSpec",
    "PlannedRun",
    "Matrix",
    "load_matrix",
    "planned_runs",
    "eval_hooks",
    "step0_evaluation",
    "final_evaluation",
    "run_matrix",
    "training_pages",
    "plan_table",
    "run_log_rows",
    "curves",
    "gradient_conflict",
    "gradient_conflict_study",
    "gradient_conflict_verdict",
]


@dataclass(frozen=True)
class EvalSpec(Config):
    """How the runs on one data set are scored (``[paper_a.eval.<data>]``).

    ``metric``: ``FD_clf`` (Fréchet distance in a small classifier's features; digits/MNIST), ``FID``
    (Inception, torch-fidelity ``inception-v3-compat``) or ``energy`` (energy distance to exact samples; toy2d).
    """

    metric: Literal["FD_clf", "FID", "energy"] = "FID"
    proxy_samples: int = 10_000  # per curve point (spec ambiguity 13: curves with 10k samples)
    final_samples: int = 50_000  # final number (paper A: 50k)
    ref_images: int | None = None  # real images for the reference statistics (None: the whole split)
    final_metric: Literal["FD_clf", "FID", "energy"] | None = None  # a second metric for the final number (e.g. FID)
    final_metric_samples: int | None = None
    seed: int = 0

    def check(self) -> None:
        require(self.proxy_samples >= 2 and self.final_samples >= 2, "proxy_samples and final_samples must be >= 2")
        require(self.ref_images is None or self.ref_images >= 2, "ref_images must be None or >= 2")


@dataclass(frozen=True)
class RunSpec(Config):
    """One row of a run matrix: a named run (over one or more seeds) and the artefacts it feeds."""

    id: str  # unique key within the profile, e.g. "digits/kl8-b16"
    label: str  # the paper's name, e.g. "KL-8d-b16"
    data: str  # key of [paper_a.defaults.<data>] and [paper_a.eval.<data>]
    params: dict = field(default_factory=dict)  # TrainNotebookConfig fields (model, d, d_prime, T, B, steps, ...)
    seeds: tuple[int, ...] = (0,)
    artefacts: tuple[str, ...] = ()
    init_from: str | None = None  # id of a baseline run of this matrix to fine-tune from (same seed)
    evaluate: bool = True  # attach the proxy-metric hook (False for pure cost runs)
    step0_eval: bool = False  # also score the initial model (fine-tuning: Table 3's step-0 FID)
    est_s_per_step: float | None = None  # measured seconds per step on a 2-core CPU, for the plan's estimate

    def check(self) -> None:
        require(bool(self.id) and bool(self.label), "a run needs an id and a label")
        require(len(self.seeds) >= 1, f"run {self.id}: seeds must not be empty")
        require("seed" not in self.params and "profile" not in self.params and "init_from" not in self.params,
                f"run {self.id}: give seeds, init_from and the profile as their own keys, not in params")


@dataclass(frozen=True)
class PlannedRun:
    """One (run, seed) of the matrix, resolved to notebook parameters and a run folder."""

    spec: RunSpec
    seed: int
    params: dict  # complete TrainNotebookConfig parameters (profile included)
    depends_on: str | None  # key of the run it fine-tunes from

    @property
    def key(self) -> str:
        return f"{self.spec.id}@s{self.seed}"

    def notebook_config(self):
        from kl_repro.paper_a.training.loop import TrainNotebookConfig

        return TrainNotebookConfig(**self.params)

    def run_config(self):
        return self.notebook_config().run_config()

    @property
    def run_dir(self) -> Path:
        from kl_repro.paper_a.training.loop import run_name, runs_dir

        return runs_dir(self.params["profile"]) / run_name(self.run_config())


@dataclass
class Matrix:
    """A profile's paper-A matrix: runs, evaluation specs per data set, defaults and absent artefacts."""

    profile: str
    runs: list[RunSpec]
    evals: dict[str, EvalSpec]
    defaults: dict[str, dict]
    absent: dict[str, str]
    workers: int

    def spec(self, run_id: str) -> RunSpec:
        for r in self.runs:
            if r.id == run_id:
                return r
        raise ConfigError(f"profile {self.profile}: no run {run_id!r} in the paper-A matrix")

    def runs_for(self, artefact: str) -> list[RunSpec]:
        return [r for r in self.runs if artefact in r.artefacts]

    def artefacts(self) -> set[str]:
        return {a for r in self.runs for a in r.artefacts} | set(self.absent)


def load_matrix(profile: str) -> Matrix:
    """The validated ``[paper_a]`` matrix of ``profile`` (empty when the profile has none)."""
    check_profile_name(profile)
    sec = load_profile(profile).get("paper_a", {})
    defaults = {k: dict(v) for k, v in sec.get("defaults", {}).items()}
    evals = {k: EvalSpec(**v) for k, v in sec.get("eval", {}).items()}
    runs = []
    for row in sec.get("run", []):
        row = dict(row)
        unknown = set(row) - {"id", "label", "data", "params", "seeds", "artefacts", "init_from", "evaluate", "step0_eval",
                              "est_s_per_step"}
        require(not unknown, f"profile {profile}: run {row.get('id')!r} has unknown key(s) {sorted(unknown)}")
        runs.append(RunSpec(**row))
    ids = [r.id for r in runs]
    require(len(ids) == len(set(ids)), f"profile {profile}: duplicate run ids in the paper-A matrix")
    for r in runs:
        require(r.data in defaults, f"profile {profile}: run {r.id} uses data {r.data!r} with no [paper_a.defaults.{r.data}]")
        require(not r.evaluate or r.data in evals, f"profile {profile}: run {r.id} needs [paper_a.eval.{r.data}]")
        if r.init_from is not None:
            base = next((b for b in runs if b.id == r.init_from), None)
            require(base is not None, f"profile {profile}: run {r.id} fine-tunes from unknown run {r.init_from!r}")
            require(set(r.seeds) <= set(base.seeds), f"profile {profile}: run {r.id} needs seeds {r.seeds} of {r.init_from}")
    from kl_repro.pipeline.book import artefact_registry

    known = {a["id"] for a in artefact_registry()}
    used = {a for r in runs for a in r.artefacts} | set(sec.get("absent", {}))
    require(used <= known, f"profile {profile}: unknown artefact id(s) {sorted(used - known)} in the paper-A matrix")
    return Matrix(profile, runs, evals, defaults, dict(sec.get("absent", {})), int(sec.get("workers", 1)))


def planned_runs(profile: str, matrix: Matrix | None = None) -> list[PlannedRun]:
    """Every (run, seed) of the matrix in dependency order, validated (bad parameters fail here, before any work)."""
    m = matrix or load_matrix(profile)
    out: list[PlannedRun] = []
    for spec in m.runs:
        for seed in spec.seeds:
            params = {**m.defaults[spec.data], **spec.params, "seed": seed, "profile": profile}
            dep = None
            if spec.init_from is not None:
                base = next(p for p in out if p.spec.id == spec.init_from and p.seed == seed)
                params["init_from"] = base.run_dir.name
                dep = base.key
            p = PlannedRun(spec, seed, params, dep)
            try:
                p.run_config()
            except ConfigError as e:
                raise ConfigError(f"profile {profile}, run {p.key}: {e}") from None
            out.append(p)
    return out


# --- evaluation -----------------------------------------------------------------------------------

def _toy_reference(n: int, seed: int):
    from kl_repro.data import Toy2D, generator

    return Toy2D().sample(n, generator("toy2d-reference", seed))


def energy_hook(n: int, seed: int = 0):
    """Training hook: energy distance between ``n`` DDIM samples (fixed seeds) and ``n`` exact toy2d samples."""
    ref = _toy_reference(n, seed)

    def energy(step, model_ema, run) -> dict:
        from kl_repro.evaluation.metrics import describe_sampler, energy_distance
        from kl_repro.paper_a.ddim import ddim_sample

        cfg = run.config
        x = ddim_sample(model_ema, cfg.diffusion, cfg.sampler, n, seed, min(n, 1000), (2,),
                        device=next(model_ema.parameters()).device)
        return {"energy": energy_distance(x.cpu(), ref), "num_samples": n,
                "sampler": describe_sampler(cfg.sampler, seed), "reference": f"{n} exact toy2d samples"}

    return energy


def _metric_cfg(ev: EvalSpec, metric: str, n: int):
    from kl_repro.evaluation.metrics import EvalConfig

    extractor = {"FD_clf": "clf", "FID": "inception-v3-compat"}[metric]
    return EvalConfig(num_samples=n, extractor=extractor, ref_images=ev.ref_images, seed=ev.seed, kid=False,
                      batch_size=100)


def eval_hooks(p: PlannedRun, ev: EvalSpec) -> list:
    """The proxy-metric hook of a planned run (empty for cost-only runs)."""
    if not p.spec.evaluate:
        return []
    if ev.metric == "energy":
        return [energy_hook(ev.proxy_samples, ev.seed)]
    from kl_repro.evaluation.metrics import proxy_hook

    return [proxy_hook(_metric_cfg(ev, ev.metric, ev.proxy_samples), data=p.run_config().data)]


def step0_evaluation(p: PlannedRun, ev: EvalSpec) -> None:
    """Score the initial (fine-tuned-from-baseline) model and log it as the run's step-0 evaluation."""
    from kl_repro.paper_a.training.run import Run, build_model, init_from_baseline

    cfg = p.run_config()
    run = Run.create(cfg, p.run_dir.parent)
    if any(r.get("step") == 0 for r in run.metrics("eval")) or run.latest_checkpoint()[0] is not None:
        return
    import torch

    from kl_repro.data import derive_seed

    torch.manual_seed(derive_seed(cfg.train.seed, "init"))
    model = build_model(cfg)
    if cfg.init_from is not None:
        init_from_baseline(model, cfg)
    model.eval()
    for hook in eval_hooks(p, ev):
        out = hook(0, model, run)
        if out:
            with open(run.metrics_path, "a", encoding="utf-8") as f:
                f.write(json.dumps({"kind": "eval", "step": 0, "hook": getattr(hook, "__name__", "hook"), **out},
                                   sort_keys=True) + "\n")


def final_evaluation(p: PlannedRun, ev: EvalSpec, progress: bool = False) -> dict:
    """The run's final numbers (EMA model, newest checkpoint), stored in ``<run>/final.json`` and reused."""
    from kl_repro.paper_a.training.run import Run

    run = Run.open(p.run_dir)
    path = run.dir / "final.json"
    key = {"eval": ev.__dict__, "steps": run.config.train.steps}
    if path.exists():
        stored = store.read_json(path)
        if stored.get("key") == json.loads(json.dumps(key)):
            return stored["result"]
    result: dict[str, Any] = {"step": run.config.train.steps}
    if ev.metric == "energy":
        net = run.load_model(ema=True)
        result.update(energy_hook(ev.final_samples, ev.seed)(run.config.train.steps, net, run))
        result["metric"] = "energy"
        result["value"] = result["energy"]
    else:
        from kl_repro.evaluation.metrics import evaluate_run

        r = evaluate_run(run.dir, cfg=_metric_cfg(ev, ev.metric, ev.final_samples), progress=progress)
        result.update(metric=r.metric, value=r.value, num_samples=r.num_samples, extractor=r.extractor,
                      sampler=r.sampler, reference=r.reference)
        if ev.final_metric is not None:
            r2 = evaluate_run(run.dir, cfg=_metric_cfg(ev, ev.final_metric, ev.final_metric_samples or ev.final_samples),
                              progress=progress)
            result["second"] = {"metric": r2.metric, "value": r2.value, "num_samples": r2.num_samples,
                                "extractor": r2.extractor, "sampler": r2.sampler}
    store.atomic_write_json(path, {"key": key, "result": result})
    return result


# --- executing the matrix -------------------------------------------------------------------------

def _status(p: PlannedRun) -> str:
    from kl_repro.paper_a.training.run import Run

    d = p.run_dir
    if (d / "finished.json").exists():
        return "finished" if (d / "final.json").exists() or not p.spec.evaluate else "evaluate"
    if (d / "config.json").exists() and Run.open(d).checkpoints():
        return "resume"
    return "train"


def _progress_step(p: PlannedRun) -> int:
    """The newest trained step of a run (read from the tail of its metrics.jsonl)."""
    path = p.run_dir / "metrics.jsonl"
    if not path.exists():
        return 0
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - 4096))
        lines = f.read().decode("utf-8", "replace").splitlines()
    for line in reversed(lines):
        try:
            return int(json.loads(line).get("step", 0))
        except (json.JSONDecodeError, ValueError, TypeError):
            continue
    return 0


def _estimate_s(p: PlannedRun) -> float | None:
    """Seconds left for a run from its own measured step time, or the matrix's ``est_s_per_step``."""
    rows_path = p.run_dir / "metrics.jsonl"
    steps = p.params["steps"]
    done = _progress_step(p)
    per_step = p.spec.est_s_per_step
    if rows_path.exists() and done:
        from kl_repro.paper_a.training.run import Run

        rows = [r for r in Run.open(p.run_dir).metrics("train")[-50:]]
        if rows:
            per_step = sum(r["step_time_s"] for r in rows) / len(rows)
    return None if per_step is None else per_step * (steps - done)


def _fmt_s(s: float | None) -> str:
    if s is None:
        return "?"
    return f"{s / 60:.1f} min" if s >= 60 else f"{s:.0f} s"


def _init_worker(counter, n_gpus: int) -> None:
    """Pool initialiser: die with the parent; with ``KL_REPRO_GPUS=N``, pin worker ``i`` to GPU ``i mod N``.

    So ``KL_REPRO_WORKERS=8 KL_REPRO_GPUS=8 make reproduce PROFILE=paper`` trains eight runs at once,
    one per GPU (set before the worker imports torch).
    """
    store.die_with_parent()
    with counter.get_lock():
        index = counter.value
        counter.value += 1
    if n_gpus > 0:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(index % n_gpus)


def _worker_task(profile: str, key: str, log_path: str) -> int:
    """Run :func:`worker` in a pool process with its output going to the run's log file."""
    import traceback

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


def run_matrix(profile: str, log=print, workers: int | None = None) -> list[str]:
    """Train (or reuse) every run of the profile's matrix and compute final numbers; returns failures.

    Prints the plan first (train, resume or reuse for each run, with time estimates where known), then
    one progress line across runs; each run logs to ``<run>/train.log``.  Runs go to a pool of worker
    processes (``[paper_a] workers``, or ``$KL_REPRO_WORKERS``), one thread each, a fine-tuning run
    after the run it starts from.  Interrupting (Ctrl-C, kill) loses at most the steps since each
    run's newest checkpoint; running again resumes.
    """
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, wait

    m = load_matrix(profile)
    plan = planned_runs(profile, m)
    if not plan:
        return []
    workers = max(1, workers or int(os.environ.get("KL_REPRO_WORKERS", m.workers)))
    status = {p.key: _status(p) for p in plan}
    todo = [p for p in plan if status[p.key] != "finished"]
    est = [_estimate_s(p) for p in todo if status[p.key] in ("train", "resume")]
    known = [e for e in est if e is not None]
    log(f"paper A runs for profile '{profile}': {len(plan) - len(todo)} reused, {len(todo)} to train or evaluate "
        f"with {workers} worker{'s' if workers > 1 else ''}; training estimate {_fmt_s(sum(known) / workers) if known else '?'}"
        f"{' (some runs unknown)' if len(known) < len(est) else ''}")
    for p in plan:
        what = status[p.key]
        log(f"  {what:8s} {p.key:34s} {p.spec.label:18s} {'est. ' + _fmt_s(_estimate_s(p)) if what in ('train', 'resume') else ''}")
    if not todo:
        return []
    failures: list[str] = []
    failed: set[str] = set()
    done = {p.key for p in plan if status[p.key] == "finished"}
    pending = list(todo)
    total_steps = sum(p.params["steps"] for p in todo) or 1
    os.environ["KL_REPRO_RESULTS"] = str(store.results_root())  # inherited by the pool's processes
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    ctx = multiprocessing.get_context("spawn")
    t_start, last_report = time.time(), time.time()
    running: dict[Any, tuple[PlannedRun, float]] = {}
    n_gpus = int(os.environ.get("KL_REPRO_GPUS", "0"))
    with store.worker_pool(workers, _init_worker, (ctx.Value("i", 0), n_gpus), ctx) as pool:
        while pending or running:
            for p in list(pending):
                if len(running) >= workers:
                    break
                if p.depends_on in failed:
                    pending.remove(p)
                    failed.add(p.key)
                    failures.append(f"run {p.key} (not started: {p.depends_on} failed)")
                    continue
                if p.depends_on is not None and p.depends_on not in done:
                    continue
                pending.remove(p)
                p.run_dir.mkdir(parents=True, exist_ok=True)
                fut = pool.submit(_worker_task, profile, p.key, str(p.run_dir / "train.log"))
                running[fut] = (p, time.time())
                log(f"  start    {p.key} ({p.spec.label})")
            if not running:
                break
            finished, _ = wait(list(running), timeout=2.0, return_when=FIRST_COMPLETED)
            for fut in finished:
                p, t0 = running.pop(fut)
                try:
                    code = fut.result()
                except Exception as e:  # the worker process died (killed, out of memory)
                    code = f"{type(e).__name__}: {e}"
                if code == 0:
                    done.add(p.key)
                    log(f"  done     {p.key} in {_fmt_s(time.time() - t0)}")
                else:
                    failed.add(p.key)
                    failures.append(f"run {p.key} ({code}; log: {p.run_dir / 'train.log'})")
                    log(f"  FAILED   {p.key}; see {p.run_dir / 'train.log'}")
            if running and time.time() - last_report > (5 if sys.stdout.isatty() else 60):
                last_report = time.time()
                trained = sum(min(_progress_step(p), p.params["steps"]) for p in todo)
                names = ", ".join(f"{p.key} {_progress_step(p)}/{p.params['steps']}" for p, _ in running.values())
                log(f"  progress {100 * trained / total_steps:5.1f}% of steps, {_fmt_s(time.time() - t_start)} "
                    f"elapsed; running: {names}")
    return failures


def worker(profile: str, key: str) -> int:
    """Train one planned run with its hooks, then its final evaluation (the body of a worker process)."""
    m = load_matrix(profile)
    p = next((q for q in planned_runs(profile, m) if q.key == key), None)
    require(p is not None, f"profile {profile}: no planned run {key!r}")
    from kl_repro.paper_a.training.loop import train

    from accelerate import PartialState

    ev = m.evals.get(p.spec.data)
    cfg = p.run_config()
    main = PartialState(cpu=cfg.train.device == "cpu").is_main_process  # under `accelerate launch`: rank 0 evaluates
    if p.spec.step0_eval and ev is not None and main:
        step0_evaluation(p, ev)
    run = train(cfg, p.run_dir.parent, hooks=eval_hooks(p, ev) if ev else [], progress=True)
    if p.spec.evaluate and ev is not None and main:
        result = final_evaluation(p, ev)
        print(f"final {result.get('metric')}: {result.get('value')}", flush=True)
    print(f"finished {run.dir}", flush=True)
    return 0


# --- what the book and the results notebook read -------------------------------------------------

def training_pages(profile: str) -> list[tuple[str, str, dict]]:
    """``(page name, title, notebook-03 parameters)`` for every run of the matrix (one book page each)."""
    try:
        plan = planned_runs(profile)
    except ConfigError:
        return []
    return [(p.run_dir.name, f"{p.spec.label} ({p.spec.data}, seed {p.seed})", p.params) for p in plan]


def plan_table(profile: str) -> tuple[list[dict], dict[str, float]]:
    """Every planned run with its status and estimated hours left, and the hours each artefact needs.

    Estimates come from a run's own measured steps when it has some, else from the matrix's
    ``est_s_per_step`` (for the paper profile: the paper's Table 2 timings on one RTX 3090, scaled
    by network batch and image area).
    """
    rows, per_artefact = [], {}
    for p in planned_runs(profile):
        est = _estimate_s(p)
        hours = None if est is None else est / 3600
        rows.append({"run": p.key, "label": p.spec.label, "status": _status(p), "steps": p.params["steps"],
                     "hours_left": hours, "artefacts": ", ".join(p.spec.artefacts)})
        for a in p.spec.artefacts:
            per_artefact[a] = per_artefact.get(a, 0.0) + (hours or 0.0)
    return rows, per_artefact


def run_log_rows(profile: str) -> list[dict]:
    """Name, steps, optimisation time and status of every run of the matrix (for the reproduction log)."""
    rows = []
    for p in planned_runs(profile):
        fin = p.run_dir / "finished.json"
        info = store.read_json(fin) if fin.exists() else {}
        rows.append({"name": f"{p.spec.label} ({p.key})", "steps": p.params["steps"],
                     "seconds": f"{info.get('opt_time_s', 0):.0f}" if info else "-",
                     "status": "finished" if info else _status(p)})
    return rows


def curves(profile: str, run_id: str) -> list[dict]:
    """Evaluation rows ``{seed, step, metric, value, opt_time_s}`` of a matrix run, all seeds."""
    from kl_repro.paper_a.training.run import Run

    out = []
    m = load_matrix(profile)
    metric_key = {"FD_clf": "FD_clf", "FID": "FID", "energy": "energy"}
    for p in planned_runs(profile, m):
        if p.spec.id != run_id or not (p.run_dir / "config.json").exists():
            continue
        run = Run.open(p.run_dir)
        train_rows = run.metrics("train")
        opt_time = {r["step"]: r["opt_time_s"] for r in train_rows}
        name = metric_key[m.evals[p.spec.data].metric]
        for r in run.metrics("eval"):
            if name in r:
                out.append({"seed": p.seed, "step": r["step"], "metric": name, "value": r[name],
                            "opt_time_s": opt_time.get(r["step"], 0.0), "num_samples": r.get("num_samples")})
    return out


# --- gradient conflict (spec section 6) -----------------------------------------------------------

def gradient_conflict(net, diff_cfg, x0, seed: int = 0, n_times: int = 20, share_noise: bool | None = None) -> dict:
    """Cosine similarity of loss gradients across noise levels (Hang et al.'s "conflicting directions").

    For ``n_times`` levels ``t_i`` spread over the training grid, the gradient of the loss on the same
    images ``x0`` is taken at the single level ``t_i``; returns the ``(n_times, n_times)`` cosine matrix,
    the levels, and the mean off-diagonal and neighbour cosines.  Baseline (7): fresh noise per level,
    as in training.  KL (19): the coefficients ``Z`` drawn once per image and shared by every level,
    as along a KL path.  ``share_noise`` overrides that choice (a baseline with one ``eps`` shared by
    every level separates the effect of the KL noise from that of reusing the noise).  Kept small on
    purpose: a diagnostic the specification proposes and the paper never measured.
    """
    import numpy as np
    import torch

    from kl_repro.data import generator
    from kl_repro.paper_a.losses import build_loss

    loss_fn = build_loss(diff_cfg)
    T = diff_cfg.T
    idx = np.unique((T * np.arange(1, n_times + 1) / n_times).round().astype(int) - 1)  # t_i = i / n_times
    params = [q for q in net.parameters() if q.requires_grad]
    grads = []
    for j, i in enumerate(idx):
        # KL: the same generator for every level, so the coefficients Z are shared along the path
        shared = diff_cfg.is_kl if share_noise is None else share_noise
        g = generator("gradient-conflict", seed) if shared else generator("gradient-conflict", seed, j)
        net.zero_grad(set_to_none=True)
        loss, _ = loss_fn(net, x0, g, t_index=int(i))
        gr = torch.autograd.grad(loss, params)
        grads.append(torch.cat([x.reshape(-1) for x in gr]).double())
    G = torch.stack(grads)
    G = G / G.norm(dim=1, keepdim=True)
    C = (G @ G.T).numpy()
    off = C[~np.eye(len(idx), dtype=bool)]
    neigh = np.diag(C, 1)
    return {"t": (idx + 1) / T, "cosine": C, "mean_offdiag": float(off.mean()), "mean_neighbour": float(neigh.mean()),
            "model": diff_cfg.model, "shared_noise": bool(shared)}


def gradient_conflict_study(profile: str, steps: int, seed: int = 0, n_images: int = 64) -> dict:
    """Train a small baseline and a small KL-8d model on digits for ``steps`` steps, then measure both.

    Returns ``{"baseline": ..., "kl": ...}`` from :func:`gradient_conflict` on the same ``n_images``
    training digits, at the 20 levels ``t_i = i/20`` (the baseline at its matching indices ``50 i - 1``).
    The two runs are ordinary runs of the profile (reused when they exist).
    """
    import torch

    from kl_repro.data import DataConfig, load_dataset
    from kl_repro.paper_a.training.loop import run_from_notebook_params

    require(steps >= 1, f"the gradient-conflict runs need steps >= 1, got {steps}")
    base = dict(dataset="digits", dim=16, dim_mults=(1, 2), attn_heads=1, attn_dim_head=16, threads=1, lr=1e-3,
                B=16, steps=steps, seed=seed, checkpoint_every=steps, sample_every=0, eval_every=steps,
                n_grid_samples=0, profile=profile, label="gradient-conflict")
    data = load_dataset(DataConfig(name="digits", flip=False))
    x0 = torch.stack([data[i] for i in range(n_images)])
    out = {}
    for model, extra in (("baseline", {}), ("kl", {"d": 8})):
        run = run_from_notebook_params(progress=False, model=model, **extra, **base)
        net = run.load_model(ema=True)
        out[model] = gradient_conflict(net, run.config.diffusion, x0, seed)
        out[model]["run"] = run.name
        if model == "baseline":
            out["baseline_shared"] = gradient_conflict(net, run.config.diffusion, x0, seed, share_noise=True)
            out["baseline_shared"]["run"] = run.name
    out["steps"], out["n_images"], out["seed"] = steps, n_images, seed
    return out


def gradient_conflict_verdict(base: float, base_shared: float, kl_: float) -> str:
    """A sentence on the mean off-diagonal gradient cosines of the three settings of :func:`gradient_conflict_study`."""
    text = (f"At this scale the KL loss's gradients are {'more' if kl_ > base else 'less'} aligned across noise levels "
            f"than the baseline's (mean cosine {kl_:.2f} against {base:.2f}).")
    if abs(kl_ - base) > 1e-9:
        share = (base_shared - base) / (kl_ - base)
        text += (f" Reusing one noise for every level moves the baseline to {base_shared:.2f}, "
                 f"{100 * share:.0f} % of the way to KL.")
    return text + " One seed and one small network: a diagnostic, not a proof."


def main(argv: Iterable[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m kl_repro.paper_a.matrix", description="paper-A run matrices")
    sub = ap.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("worker", help="train one planned run (used by run_matrix)")
    w.add_argument("--profile", required=True)
    w.add_argument("--run", required=True)
    pl = sub.add_parser("plan", help="print the planned runs of a profile")
    pl.add_argument("--profile", required=True)
    args = ap.parse_args(list(argv) if argv is not None else None)
    try:
        if args.cmd == "worker":
            return worker(args.profile, args.run)
        for p in planned_runs(args.profile):
            print(f"{_status(p):8s} {p.key:34s} {p.spec.label:16s} {p.run_dir}")
        return 0
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
