"""``make reproduce``: train the profile's runs, execute every notebook with papermill, build the book.

The pipeline is idempotent and resumable:

* training runs are keyed by their config (``kl_repro.paper_a.training.run``); a finished run is reused, an
  interrupted one resumes from its newest checkpoint;
* an executed notebook is keyed by its inputs (notebook file, parameters, library source, profile
  file); it is written to ``results/<profile>/notebooks/`` only when its execution succeeded, and
  reused as long as its key matches;
* a failing notebook does not stop the others: the book is still built from what succeeded, and
  the command exits non-zero naming the failures.

A lock on ``results/<profile>`` refuses a second ``make reproduce`` on the same folder.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from kl_repro.core import store
from kl_repro.core.config import ConfigError
from kl_repro.core.profiles import check_profile_name, load_profile, notebook_parameters

__all__ = ["NotebookJob", "repo_root", "notebook_jobs", "plan", "execute_notebook", "build_book", "reproduce"]

#: Chapters in book order; ``03_train`` is executed once per training run (see :func:`notebook_jobs`).
CHAPTERS = ("01_kl_expansion", "02_path_smoothness", "04_paper_a_results", "05_eigen_spectra", "06_operator_sampler")


def repo_root() -> Path:
    """The repository holding ``notebooks/`` and ``book/`` (``$KL_REPRO_REPO`` or the package's parent)."""
    root = Path(os.environ.get("KL_REPRO_REPO", Path(__file__).resolve().parents[1]))
    if not (root / "notebooks").is_dir() or not (root / "book").is_dir():
        raise ConfigError(
            f"{root} has no notebooks/ and book/ folders: run from a clone of the repository "
            "(pip install -e .) or set KL_REPRO_REPO to it"
        )
    return root


@dataclasses.dataclass(frozen=True)
class NotebookJob:
    """One notebook execution: source stem, output name (``runs/<run>`` for training pages), parameters."""

    stem: str
    output: str
    parameters: dict[str, Any]
    title: str = ""

    def source(self, root: Path) -> Path:
        return root / "notebooks" / f"{self.stem}.ipynb"


def _library_digest() -> str:
    """SHA-256 over the library's source and data files: a change re-executes the notebooks."""
    h = hashlib.sha256()
    pkg = Path(__file__).resolve().parent
    for p in sorted(pkg.rglob("*")):
        if p.suffix in (".py", ".toml") and "__pycache__" not in p.parts:
            h.update(p.relative_to(pkg).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def job_key(job: NotebookJob, root: Path, profile: str) -> str:
    """Content key of a notebook execution's inputs."""
    h = hashlib.sha256()
    h.update(job.source(root).read_bytes())
    h.update(json.dumps(job.parameters, sort_keys=True, default=str).encode())
    h.update(_library_digest().encode())
    h.update(json.dumps(load_profile(profile), sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def notebook_jobs(profile: str, root: Path | None = None) -> list[NotebookJob]:
    """Every notebook execution of ``profile`` in book order (chapters whose notebook exists)."""
    root = root or repo_root()
    jobs: list[NotebookJob] = []
    for stem in CHAPTERS[:2]:
        jobs.append(NotebookJob(stem, stem, notebook_parameters(profile, stem)))
    jobs.extend(_training_jobs(profile))
    for stem in CHAPTERS[2:]:
        jobs.append(NotebookJob(stem, stem, notebook_parameters(profile, stem)))
    return [j for j in jobs if j.source(root).exists()]


def _training_jobs(profile: str) -> list[NotebookJob]:
    """One ``03_train`` execution per run of the profile's paper-A matrix (when the matrix exists)."""
    if importlib.util.find_spec("kl_repro.paper_a.matrix") is None:
        return []
    from kl_repro.paper_a import matrix as experiments

    return [NotebookJob("03_train", f"runs/{name}", params, title) for name, title, params in experiments.training_pages(profile)]


def _out_dir(profile: str) -> Path:
    return store.profile_dir(profile) / "notebooks"


def _record_path(profile: str, job: NotebookJob) -> Path:
    return _out_dir(profile) / f"{job.output}.json"


def is_current(profile: str, job: NotebookJob, root: Path) -> bool:
    """Whether a successful execution with the same input key is stored."""
    rec = _record_path(profile, job)
    out = _out_dir(profile) / f"{job.output}.ipynb"
    if not (rec.exists() and out.exists()):
        return False
    try:
        return store.read_json(rec).get("key") == job_key(job, root, profile)
    except (OSError, json.JSONDecodeError):
        return False


def plan(profile: str, root: Path | None = None) -> list[tuple[NotebookJob, str]]:
    """``[(job, "reuse" | "execute")]`` for every notebook of the profile."""
    root = root or repo_root()
    return [(j, "reuse" if is_current(profile, j, root) else "execute") for j in notebook_jobs(profile, root)]


def _header_cell(job: NotebookJob, profile: str, seconds: float):
    import nbformat

    params = ", ".join(f"`{k} = {v!r}`" for k, v in job.parameters.items())
    # a colon fence: a backtick fence's info string may not contain backticks (CommonMark)
    text = (
        f":::{{admonition}} Executed for profile {profile}\n:class: note\n"
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {seconds:.0f} s. Parameters: {params}.\n:::"
    )
    cell = nbformat.v4.new_markdown_cell(text)
    cell.metadata["tags"] = ["kl-repro-header"]
    return cell


def _papermill(job: NotebookJob, root: Path, out: Path) -> None:
    import papermill as pm

    pm.execute_notebook(str(job.source(root)), str(out), parameters=job.parameters, cwd=str(root),
                        kernel_name="python3", progress_bar=False, log_output=False)


def execute_notebook(job: NotebookJob, profile: str, root: Path, log=print, runner=None) -> dict:
    """Execute one notebook (papermill, or ``runner(job, root, out)``); store it and its record only when it succeeds.

    Returns the record ``{"name", "status", "seconds", "key", "error"?}``.
    """
    import nbformat

    out_dir = _out_dir(profile)
    final = out_dir / f"{job.output}.ipynb"
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".partial.{final.name}")
    key = job_key(job, root, profile)
    env_results = str(store.results_root())
    os.environ["KL_REPRO_RESULTS"] = env_results  # the kernel inherits it
    t0 = time.time()
    record: dict[str, Any] = {"name": job.output, "notebook": job.stem, "key": key, "parameters": job.parameters}
    try:
        (runner or _papermill)(job, root, tmp)
    except Exception as e:  # papermill wraps the cell error; keep the partial notebook for debugging
        seconds = time.time() - t0
        failed = final.with_name(f"{Path(job.output).name}.failed.ipynb")
        if tmp.exists():
            os.replace(tmp, failed)
        record.update(status="failed", seconds=seconds, error=_short_error(e), failed_notebook=str(failed))
        store.atomic_write_json(_record_path(profile, job).with_suffix(".failed.json"), record)
        log(f"  FAILED {job.output} after {seconds:.0f} s: {record['error']}\n  (partial notebook: {failed})")
        return record
    seconds = time.time() - t0
    nb = nbformat.read(tmp, as_version=4)
    # the header goes right after the page's title (its first heading), so the title stays the page's first line
    first_md = next((i for i, c in enumerate(nb.cells) if c.cell_type == "markdown" and c.source.lstrip().startswith("#")), None)
    if job.title and first_md is not None:  # a per-run page: the run's name replaces the notebook's title
        lines = nb.cells[first_md].source.lstrip().splitlines()
        nb.cells[first_md].source = "\n".join([f"# {job.title}"] + lines[1:])
    elif job.title:
        nb.cells.insert(0, nbformat.v4.new_markdown_cell(f"# {job.title}"))
        first_md = 0
    nb.cells.insert(0 if first_md is None else first_md + 1, _header_cell(job, profile, seconds))
    nbformat.write(nb, tmp)
    os.replace(tmp, final)
    record.update(status="ok", seconds=seconds, finished=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    store.atomic_write_json(_record_path(profile, job), record)
    _record_path(profile, job).with_suffix(".failed.json").unlink(missing_ok=True)
    return record


def execute_batch(jobs: list[NotebookJob], profile: str, root: Path, log=print) -> list[dict]:
    """Execute notebooks one after another in ONE kernel (papermill's parameter injection, nbclient's execution).

    For the per-run pages of ``03_train``: a fresh kernel per page would spend most of its time
    importing torch.  Each page redefines every variable it uses (its parameters cell plus the
    injected one), so sharing the kernel does not change what a page shows.
    """
    import nbformat
    from jupyter_client.manager import start_new_kernel
    from nbclient import NotebookClient
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    if not jobs:
        return []
    os.environ["KL_REPRO_RESULTS"] = str(store.results_root())
    km, kc = start_new_kernel(kernel_name="python3", cwd=str(root))

    def runner(job: NotebookJob, root: Path, out: Path) -> None:
        nb = parameterize_notebook(load_notebook_node(str(job.source(root))), job.parameters,
                                   kernel_name="python3", language="python")
        client = NotebookClient(nb, km=km, timeout=None, kernel_name="python3",
                                resources={"metadata": {"path": str(root)}})
        client.kc = kc
        try:
            client.execute()
        finally:
            nbformat.write(nb, out)

    try:
        return [execute_notebook(job, profile, root, log, runner=runner) for job in jobs]
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def _short_error(e: Exception) -> str:
    text = str(e).strip().splitlines()
    tail = [line for line in text if line.strip()][-1:] if text else [type(e).__name__]
    return f"{type(e).__name__}: {tail[0][:300]}" if tail else type(e).__name__


def build_book(profile: str, build_root: Path, root: Path | None = None, log=print) -> Path:
    """Assemble ``<build_root>/book`` from the repository's ``book/`` and the executed notebooks, then build HTML.

    Returns the path of ``index.html``.
    """
    from kl_repro.pipeline import book as reporting

    root = root or repo_root()
    book = build_root / "book"
    if book.resolve() != (root / "book").resolve():
        shutil.copytree(root / "book", book, dirs_exist_ok=True, ignore=shutil.ignore_patterns("_build", "executed", "_generated"))
    executed = book / "executed"
    shutil.rmtree(executed, ignore_errors=True)
    jobs = notebook_jobs(profile, root)
    present = []
    for job in jobs:
        src = _out_dir(profile) / f"{job.output}.ipynb"
        if src.exists():
            dst = executed / f"{job.output}.ipynb"
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
            present.append(job)
    reporting.write_book_pages(profile, book, present)
    cmd = [str(Path(sys.executable).with_name("jupyter-book")), "build", str(book), "--quiet"]
    if not Path(cmd[0]).exists():
        cmd[0] = shutil.which("jupyter-book") or "jupyter-book"
    log(f"building the book: {' '.join(cmd)}")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    index = book / "_build" / "html" / "index.html"
    if proc.returncode != 0 or not index.exists():
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-25:])
        raise RuntimeError(f"jupyter-book build failed (exit {proc.returncode}):\n{tail}")
    return index


def reproduce(profile: str, build_root: Path | None = None, train: bool = True, log=print) -> int:
    """The whole pipeline for ``profile``; returns the process exit status (0 when everything succeeded)."""
    check_profile_name(profile)
    root = repo_root()
    build_root = Path(build_root) if build_root else root
    t_start = time.time()
    with store.FolderLock(store.profile_dir(profile)):
        failures: list[str] = []
        if train:
            failures += _train_stage(profile, log)
        steps = plan(profile, root)
        n_exec = sum(1 for _, what in steps if what == "execute")
        log(f"notebooks for profile '{profile}': {len(steps) - n_exec} reused, {n_exec} to execute")
        for job, what in steps:
            log(f"  {'reuse  ' if what == 'reuse' else 'execute'} {job.output}")
        failures += _execute_all([job for job, what in steps if what == "execute"], profile, root, log)
        _write_pipeline_log(profile, time.time() - t_start)
        try:
            index = build_book(profile, build_root, root, log)
            log(f"book: {index}")
        except RuntimeError as e:
            failures.append(f"book build ({e})")
    if failures:
        log("reproduce finished with failures:\n  - " + "\n  - ".join(failures))
        return 1
    log(f"reproduce finished in {time.time() - t_start:.0f} s")
    return 0


def _notebook_workers() -> int:
    """Notebooks executed at once: ``$KL_REPRO_NB_WORKERS``, default the CPU count capped at 2."""
    return max(1, int(os.environ.get("KL_REPRO_NB_WORKERS", min(2, os.cpu_count() or 1))))


def _execute_all(jobs: list[NotebookJob], profile: str, root: Path, log) -> list[str]:
    """Execute ``jobs`` (independent of each other) in a small process pool; returns failure descriptions."""
    from concurrent.futures import as_completed

    if not jobs:
        return []
    failures = []
    os.environ["KL_REPRO_RESULTS"] = str(store.results_root())
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    workers = min(_notebook_workers(), len(jobs))
    n = 0
    with store.worker_pool(workers) as pool:
        # the per-run pages share one kernel (execute_batch); every other notebook gets its own
        pages = [j for j in jobs if j.stem == "03_train"]
        tasks = [(tuple(pages), pool.submit(execute_batch, pages, profile, root, print))] if pages else []
        tasks += [((j,), pool.submit(execute_notebook, j, profile, root, print)) for j in jobs if j.stem != "03_train"]
        done_futs = {f: g for g, f in tasks}
        for fut in as_completed(done_futs):
            group = done_futs[fut]
            try:
                recs = fut.result()
                recs = recs if isinstance(recs, list) else [recs]
            except Exception as e:  # the worker died
                recs = [{"status": "failed", "error": f"{type(e).__name__}: {e}", "seconds": 0.0} for _ in group]
            for job, rec in zip(group, recs):
                n += 1
                if rec["status"] != "ok":
                    failures.append(f"notebook {job.output} ({rec['error']})")
                    log(f"[{n}/{len(jobs)}] FAILED {job.output}")
                else:
                    log(f"[{n}/{len(jobs)}] {job.output} done in {rec['seconds']:.0f} s")
    return failures


def _train_stage(profile: str, log) -> list[str]:
    """Train (or reuse) every run of the profile's matrices; returns failure descriptions."""
    if importlib.util.find_spec("kl_repro.paper_a.matrix") is None:
        return []
    from kl_repro.paper_a import matrix as experiments

    return experiments.run_matrix(profile, log=log)


def _write_pipeline_log(profile: str, seconds: float) -> None:
    path = store.profile_dir(profile) / "pipeline.json"
    store.atomic_write_json(path, {"profile": profile, "seconds": seconds,
                                   "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
