"""Paper A's run matrix of a profile: which training runs make each table and figure, and what the book reads of them.

A profile's ``[paper_a]`` section (``kl_repro/profiles/<name>.toml``) lists, as data, the training runs
behind paper A's tables and figures (Sec. 6, Tables 1-3, Figs. 1-7)::

    [paper_a.defaults.digits]            # notebook-03 parameters shared by every run on that data set
    [paper_a.eval.digits]                # its sample-quality metric: proxy curve and final evaluation
    [[paper_a.run]]                      # one row per run: id, label, data, parameters, seeds, artefacts
    [paper_a.absent]                     # artefacts this profile cannot make, with the reason

Every run is a set of flat parameters of ``notebooks/03_train.ipynb``
(:class:`~kl_repro.paper_a.training.config.TrainParams`), so its book page and the scheduler
(:mod:`kl_repro.pipeline.scheduler`) resolve to the same run folder (keyed by the config) and a
finished run is never retrained.  :func:`planned_runs` resolves and validates the whole matrix once per
profile; :func:`training_pages`, :func:`plan_table`, :func:`run_log_rows` and :func:`curves` are what
the book reads.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Literal

from kl_repro.core import store
from kl_repro.core.config import Config, ConfigError, require
from kl_repro.core.profiles import Profile
from kl_repro.core.registry import artefact_registry
from kl_repro.paper_a.training.config import RunConfig, run_config_from_params, run_name
from kl_repro.paper_a.training.run import Run, runs_dir

__all__ = [
    "EvalSpec",
    "RunSpec",
    "PlannedRun",
    "Matrix",
    "load_matrix",
    "planned_runs",
    "training_pages",
    "plan_table",
    "run_log_rows",
    "curves",
]

_ROW_KEYS = {"id", "label", "data", "params", "seeds", "artefacts", "init_from", "evaluate", "step0_eval", "est_s_per_step"}


@dataclass(frozen=True)
class EvalSpec(Config):
    """How the runs on one data set are scored (``[paper_a.eval.<data>]``).

    ``metric``: ``FD_clf`` (Fréchet distance in a small classifier's features; digits/MNIST), ``FID``
    (Inception, torch-fidelity ``inception-v3-compat``) or ``energy`` (energy distance to exact samples; toy2d).
    """

    metric: Literal["FD_clf", "FID", "energy"] = "FID"
    proxy_samples: int = 10_000  # per curve point (the paper does not say how its curves were scored; see the Deviations page)
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
    params: dict = field(default_factory=dict)  # TrainParams fields (model, d, d_prime, T, B, steps, ...)
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
    """One (run, seed) of the matrix, resolved to notebook parameters, a :class:`RunConfig` and a run folder."""

    spec: RunSpec
    seed: int
    params: dict  # complete notebook-03 parameters (profile included)
    depends_on: str | None  # key of the run it fine-tunes from
    config: RunConfig
    run_dir: Path

    @property
    def key(self) -> str:
        return f"{self.spec.id}@s{self.seed}"

    @property
    def steps(self) -> int:
        return self.config.train.steps

    def run_config(self) -> RunConfig:
        return self.config

    def status(self) -> str:
        """``finished``, ``evaluate`` (trained, final numbers missing), ``resume`` (has checkpoints) or ``train``."""
        d = self.run_dir
        if (d / "finished.json").exists():
            return "finished" if (d / "final.json").exists() or not self.spec.evaluate else "evaluate"
        if (d / "config.json").exists() and Run.open(d).checkpoints():
            return "resume"
        return "train"

    def progress_step(self) -> int:
        """The newest trained step (read from the tail of the run's ``metrics.jsonl``; 0 before any)."""
        path = self.run_dir / "metrics.jsonl"
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

    def estimate_s(self) -> float | None:
        """Seconds of training left, from the run's own mean step time (last 50 steps) or the matrix's ``est_s_per_step``."""
        done = self.progress_step()
        per_step = self.spec.est_s_per_step
        if done and (self.run_dir / "metrics.jsonl").exists():
            rows = Run.open(self.run_dir).metrics("train")[-50:]
            if rows:
                per_step = sum(r["step_time_s"] for r in rows) / len(rows)
        return None if per_step is None else per_step * (self.steps - done)


@dataclass(frozen=True)
class Matrix:
    """A profile's paper-A matrix: runs, evaluation specs per data set, defaults and absent artefacts."""

    profile: Profile
    runs: tuple[RunSpec, ...]
    evals: dict[str, EvalSpec]
    defaults: dict[str, dict]
    absent: dict[str, str]
    workers: int

    def spec(self, run_id: str) -> RunSpec:
        for r in self.runs:
            if r.id == run_id:
                return r
        raise ConfigError(f"profile {self.profile.name}: no run {run_id!r} in the paper-A matrix")

    def runs_for(self, artefact: str) -> list[RunSpec]:
        return [r for r in self.runs if artefact in r.artefacts]

    def artefacts(self) -> set[str]:
        return {a for r in self.runs for a in r.artefacts} | set(self.absent)


def _run_specs(name: str, rows: list[dict]) -> tuple[RunSpec, ...]:
    """The ``[[paper_a.run]]`` rows as :class:`RunSpec` (unknown keys refused)."""
    runs = []
    for row in rows:
        unknown = set(row) - _ROW_KEYS
        require(not unknown, f"profile {name}: run {row.get('id')!r} has unknown key(s) {sorted(unknown)}")
        runs.append(RunSpec(**row))
    return tuple(runs)


def _check_matrix(name: str, runs: tuple[RunSpec, ...], defaults: dict, evals: dict, absent: dict) -> None:
    """Ids unique, data sets and evaluations declared, fine-tuning bases present, artefact ids known."""
    ids = [r.id for r in runs]
    require(len(ids) == len(set(ids)), f"profile {name}: duplicate run ids in the paper-A matrix")
    for r in runs:
        require(r.data in defaults, f"profile {name}: run {r.id} uses data {r.data!r} with no [paper_a.defaults.{r.data}]")
        require(not r.evaluate or r.data in evals, f"profile {name}: run {r.id} needs [paper_a.eval.{r.data}]")
        if r.init_from is not None:
            base = next((b for b in runs if b.id == r.init_from), None)
            require(base is not None, f"profile {name}: run {r.id} fine-tunes from unknown run {r.init_from!r}")
            require(set(r.seeds) <= set(base.seeds), f"profile {name}: run {r.id} needs seeds {r.seeds} of {r.init_from}")
    known = {a["id"] for a in artefact_registry()}
    used = {a for r in runs for a in r.artefacts} | set(absent)
    require(used <= known, f"profile {name}: unknown artefact id(s) {sorted(used - known)} in the paper-A matrix")


@lru_cache(maxsize=None)
def load_matrix(profile: Profile) -> Matrix:
    """The validated ``[paper_a]`` matrix of ``profile`` (empty when the profile has none); read once per profile."""
    sec = profile.get("paper_a", {})
    defaults = {k: dict(v) for k, v in sec.get("defaults", {}).items()}
    evals = {k: EvalSpec(**v) for k, v in sec.get("eval", {}).items()}
    runs = _run_specs(profile.name, sec.get("run", []))
    absent = dict(sec.get("absent", {}))
    _check_matrix(profile.name, runs, defaults, evals, absent)
    return Matrix(profile, runs, evals, defaults, absent, int(sec.get("workers", 1)))


def _plan(m: Matrix, row: RunSpec, seed: int, planned: list[PlannedRun]) -> PlannedRun:
    """The planned run of ``row`` with ``seed``: its data set's defaults, its own parameters, its base run."""
    profile = m.profile
    params = {**m.defaults[row.data], **row.params, "seed": seed, "profile": profile.name}
    dep = None
    if row.init_from is not None:
        base = next(p for p in planned if p.spec.id == row.init_from and p.seed == seed)
        params["init_from"] = base.run_dir.name
        dep = base.key
    folder = runs_dir(profile)
    try:
        cfg = run_config_from_params({k: v for k, v in params.items() if k != "profile"}, folder)
    except ConfigError as e:
        raise ConfigError(f"profile {profile.name}, run {row.id}@s{seed}: {e}") from None
    return PlannedRun(row, seed, params, dep, cfg, folder / run_name(cfg))


@lru_cache(maxsize=None)
def _planned_runs(profile: Profile, results_root: Path) -> tuple[PlannedRun, ...]:
    m = load_matrix(profile)
    out: list[PlannedRun] = []
    for row in m.runs:
        for seed in row.seeds:
            out.append(_plan(m, row, seed, out))
    return tuple(out)


def planned_runs(profile: Profile) -> tuple[PlannedRun, ...]:
    """Every (run, seed) of the matrix in dependency order, validated (bad parameters fail here, before any work).

    Computed once per profile and results folder (``$KL_REPRO_RESULTS``), which the run folders lie under.
    """
    return _planned_runs(profile, store.results_root())


# --- what the book and the results notebook read -------------------------------------------------

def training_pages(profile: Profile) -> list[tuple[str, str, dict]]:
    """``(page name, title, notebook-03 parameters)`` for every run of the matrix (one book page each)."""
    try:
        plan = planned_runs(profile)
    except ConfigError:
        return []
    return [(p.run_dir.name, f"{p.spec.label} ({p.spec.data}, seed {p.seed})", dict(p.params)) for p in plan]


def plan_table(profile: Profile) -> tuple[list[dict], dict[str, float]]:
    """Every planned run with its status and estimated hours left, and the hours each artefact needs.

    Estimates come from a run's own measured steps when it has some, else from the matrix's
    ``est_s_per_step`` (for the paper profile: the paper's Table 2 timings on one RTX 3090, scaled
    by network batch and image area).
    """
    rows, per_artefact = [], {}
    for p in planned_runs(profile):
        est = p.estimate_s()
        hours = None if est is None else est / 3600
        rows.append({"run": p.key, "label": p.spec.label, "status": p.status(), "steps": p.steps,
                     "hours_left": hours, "artefacts": ", ".join(p.spec.artefacts)})
        for a in p.spec.artefacts:
            per_artefact[a] = per_artefact.get(a, 0.0) + (hours or 0.0)
    return rows, per_artefact


def run_log_rows(profile: Profile) -> list[dict]:
    """Name, steps, optimisation time and status of every run of the matrix (for the reproduction log)."""
    rows = []
    for p in planned_runs(profile):
        fin = p.run_dir / "finished.json"
        info = store.read_json(fin) if fin.exists() else {}
        rows.append({"name": f"{p.spec.label} ({p.key})", "steps": p.steps,
                     "seconds": f"{info.get('opt_time_s', 0):.0f}" if info else "-",
                     "status": "finished" if info else p.status()})
    return rows


def curves(profile: Profile, run_id: str) -> list[dict]:
    """Evaluation rows ``{seed, step, metric, value, opt_time_s, num_samples}`` of a matrix run, all seeds."""
    m = load_matrix(profile)
    out = []
    for p in planned_runs(profile):
        if p.spec.id != run_id or not (p.run_dir / "config.json").exists():
            continue
        run = Run.open(p.run_dir)
        opt_time = {r["step"]: r["opt_time_s"] for r in run.metrics("train")}
        name = m.evals[p.spec.data].metric  # the hook logs the value under the metric's own name
        for r in run.metrics("eval"):
            if name in r:
                out.append({"seed": p.seed, "step": r["step"], "metric": name, "value": r[name],
                            "opt_time_s": opt_time.get(r["step"], 0.0), "num_samples": r.get("num_samples")})
    return out
