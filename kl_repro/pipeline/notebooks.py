"""Executing the notebooks: which ones a profile runs, when a stored execution is still current,
and running them (papermill for a chapter; one shared kernel for the per-run pages).

An executed notebook is keyed by its inputs: the notebook file, its parameters, the profile, and
the source of exactly the library modules it depends on, found by following the ``import``
statements from the notebook's code cells through the package (every module of ``kl_repro``
imports its own modules at the top, statically; ``tests/test_reproduce_keys.py`` checks that none
is imported by name at run time, which is what makes this keying safe).  So an edit of paper B's
sampler re-executes chapters 05 and 06, not chapter 01.
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import json
import os
import time
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import nbformat

from kl_repro.core import store
from kl_repro.core.config import ConfigError
from kl_repro.core.profiles import Profile
from kl_repro.paper_a.matrix import training_pages

__all__ = ["CHAPTERS", "TRAINING_FREE", "NotebookJob", "last_seconds", "repo_root", "notebook_jobs", "job_key", "notebook_dependencies",
           "plan", "execute_notebook", "execute_batch", "out_dir"]

PACKAGE = Path(__file__).resolve().parents[1]

#: Chapters in book order: (notebook stem, part).  ``03_train`` is executed once per training run
#: of the profile's paper-A matrix, right after the chapters of part A that come before it.
CHAPTERS: tuple[tuple[str, str], ...] = (
    ("01_kl_expansion", "A"), ("02_path_smoothness", "A"), ("04_paper_a_results", "A"),
    ("05_eigen_spectra", "B"), ("06_operator_sampler", "B"),
)
#: The chapters that read no training run: ``make reproduce`` executes them beside the training runs.
TRAINING_FREE = frozenset({"01_kl_expansion", "02_path_smoothness", "05_eigen_spectra", "06_operator_sampler"})


def repo_root() -> Path:
    """The repository holding ``notebooks/`` and ``book/`` (``$KL_REPRO_REPO`` or the package's parent)."""
    root = Path(os.environ.get("KL_REPRO_REPO", PACKAGE.parent))
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


# --- what a notebook depends on ------------------------------------------------------------------

def _module_file(name: str) -> Path | None:
    """The file of module ``kl_repro.x.y`` (a module or a package's ``__init__``), or None."""
    parts = name.split(".")[1:]
    if not parts:
        return PACKAGE / "__init__.py"
    rel = Path(*parts)
    for cand in (PACKAGE / rel.with_suffix(".py"), PACKAGE / rel / "__init__.py"):
        if cand.is_file():
            return cand
    return None


def imported_modules(source: str, package: str = "") -> set[str]:
    """Names of the ``kl_repro`` modules that ``source`` imports (``package``: for relative imports)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "kl_repro")
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            if base.split(".")[0] == "kl_repro":
                found.add(base)
                found.update(f"{base}.{a.name}" for a in node.names if _module_file(f"{base}.{a.name}"))
    return {m for m in found if _module_file(m)}


@lru_cache(maxsize=None)
def _direct_deps(name: str) -> frozenset[str]:
    path = _module_file(name)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    deps = imported_modules(path.read_text(), package)
    parts = name.split(".")
    deps.update(".".join(parts[:i]) for i in range(1, len(parts)))  # importing a.b.c runs a and a.b
    return frozenset(deps - {name})


def module_closure(roots: set[str]) -> set[str]:
    """Every ``kl_repro`` module that importing ``roots`` executes."""
    seen, todo = set(), list(roots)
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo.extend(_direct_deps(m))
    return seen


def _notebook_code(path: Path) -> str:
    nb = json.loads(path.read_text())
    cells = ("".join(c.get("source", [])) for c in nb.get("cells", []) if c.get("cell_type") == "code")
    return "\n".join(line for cell in cells for line in cell.splitlines() if not line.lstrip().startswith(("%", "!")))


def notebook_dependencies(path: Path) -> list[Path]:
    """The library files whose content the execution of notebook ``path`` depends on, sorted."""
    modules = module_closure(imported_modules(_notebook_code(path)))
    files = {_module_file(m) for m in modules}
    if "kl_repro.core.registry" in modules:  # the registry reads the papers' values as data
        files.update((PACKAGE / "paper_values").glob("*.toml"))
    return sorted(files)


def _file_bytes(path: Path) -> bytes:
    return path.read_bytes()


def job_key(job: NotebookJob, root: Path, profile: Profile) -> str:
    """Content key of a notebook execution's inputs (see the module docstring)."""
    h = hashlib.sha256()
    h.update(job.source(root).read_bytes())
    h.update(json.dumps(job.parameters, sort_keys=True, default=str).encode())
    for dep in notebook_dependencies(job.source(root)):
        h.update(dep.relative_to(PACKAGE).as_posix().encode())
        h.update(_file_bytes(dep))
    h.update(profile.fingerprint().encode())
    return h.hexdigest()[:16]


# --- which notebooks a profile executes ----------------------------------------------------------

def notebook_jobs(profile: Profile, root: Path | None = None) -> list[NotebookJob]:
    """Every notebook execution of ``profile`` in book order (chapters whose notebook exists)."""
    root = root or repo_root()
    chapters = [NotebookJob(stem, stem, profile.notebook_parameters(stem)) for stem, _ in CHAPTERS]
    runs = [NotebookJob("03_train", f"runs/{name}", params, title) for name, title, params in training_pages(profile)]
    jobs = chapters[:2] + runs + chapters[2:]
    return [j for j in jobs if j.source(root).exists()]


def out_dir(profile: Profile) -> Path:
    """Where the executed notebooks of ``profile`` and their records are stored."""
    return store.profile_dir(profile) / "notebooks"


def _record_path(profile: Profile, job: NotebookJob) -> Path:
    return out_dir(profile) / f"{job.output}.json"


def last_seconds(profile: Profile, job: NotebookJob) -> float | None:
    """Seconds of the job's last stored execution (any key), or None."""
    rec = _record_path(profile, job)
    try:
        return float(store.read_json(rec)["seconds"]) if rec.exists() else None
    except (OSError, KeyError, ValueError, json.JSONDecodeError):
        return None


def is_current(profile: Profile, job: NotebookJob, root: Path) -> bool:
    """Whether a successful execution with the same input key is stored."""
    rec = _record_path(profile, job)
    if not (rec.exists() and (out_dir(profile) / f"{job.output}.ipynb").exists()):
        return False
    try:
        return store.read_json(rec).get("key") == job_key(job, root, profile)
    except (OSError, json.JSONDecodeError):
        return False


def plan(profile: Profile, root: Path | None = None) -> list[tuple[NotebookJob, str]]:
    """``[(job, "reuse" | "execute")]`` for every notebook of the profile."""
    root = root or repo_root()
    return [(j, "reuse" if is_current(profile, j, root) else "execute") for j in notebook_jobs(profile, root)]


# --- executing -----------------------------------------------------------------------------------

def _header_cell(job: NotebookJob, profile: Profile, seconds: float):
    # a colon fence: a backtick fence's info string may not contain backticks (CommonMark)
    text = (
        f":::{{admonition}} Executed for profile {profile.name}\n:class: note\n"
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {seconds:.0f} s. The parameters are shown in the "
        "first code cell below.\n:::"
    )
    cell = nbformat.v4.new_markdown_cell(text)
    cell.metadata["tags"] = ["kl-repro-header"]
    return cell


def _papermill(job: NotebookJob, root: Path, out: Path) -> None:
    import papermill as pm  # heavy; only the process that executes notebooks needs it

    pm.execute_notebook(str(job.source(root)), str(out), parameters=job.parameters, cwd=str(root),
                        kernel_name="python3", progress_bar=False, log_output=False)


def _short_error(e: Exception) -> str:
    text = [line for line in str(e).strip().splitlines() if line.strip()]
    return f"{type(e).__name__}: {text[-1][:300]}" if text else type(e).__name__


def _titled(nb, job: NotebookJob, profile: Profile, seconds: float) -> None:
    """Put the run's name in the page title (per-run pages) and the execution header right after it."""
    first_md = next((i for i, c in enumerate(nb.cells)
                     if c.cell_type == "markdown" and c.source.lstrip().startswith("#")), None)
    if job.title and first_md is not None:
        lines = nb.cells[first_md].source.lstrip().splitlines()
        nb.cells[first_md].source = "\n".join([f"# {job.title}"] + lines[1:])
    elif job.title:
        nb.cells.insert(0, nbformat.v4.new_markdown_cell(f"# {job.title}"))
        first_md = 0
    nb.cells.insert(0 if first_md is None else first_md + 1, _header_cell(job, profile, seconds))


def _failed(job: NotebookJob, profile: Profile, record: dict, e: Exception, seconds: float, tmp: Path, log) -> dict:
    final = out_dir(profile) / f"{job.output}.ipynb"
    failed = final.with_name(f"{Path(job.output).name}.failed.ipynb")
    if tmp.exists():
        os.replace(tmp, failed)
    record.update(status="failed", seconds=seconds, error=_short_error(e), failed_notebook=str(failed))
    store.atomic_write_json(_record_path(profile, job).with_suffix(".failed.json"), record)
    log(f"  FAILED {job.output} after {seconds:.0f} s: {record['error']}\n  (partial notebook: {failed})")
    return record


def execute_notebook(job: NotebookJob, profile: Profile, root: Path, log=print,
                     runner: Callable[[NotebookJob, Path, Path], None] | None = None) -> dict:
    """Execute one notebook (papermill, or ``runner(job, root, out)``); store it and its record only when it succeeds.

    Returns the record ``{"name", "status", "seconds", "key", "error"?}``.
    """
    final = out_dir(profile) / f"{job.output}.ipynb"
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".partial.{final.name}")
    os.environ["KL_REPRO_RESULTS"] = str(store.results_root())  # the kernel inherits it
    record: dict[str, Any] = {"name": job.output, "notebook": job.stem, "key": job_key(job, root, profile),
                              "parameters": job.parameters}
    t0 = time.time()
    try:
        (runner or _papermill)(job, root, tmp)
    except Exception as e:  # papermill wraps the cell error; keep the partial notebook for debugging
        return _failed(job, profile, record, e, time.time() - t0, tmp, log)
    seconds = time.time() - t0
    nb = nbformat.read(tmp, as_version=4)
    _titled(nb, job, profile, seconds)
    nbformat.write(nb, tmp)
    os.replace(tmp, final)
    record.update(status="ok", seconds=seconds, finished=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    store.atomic_write_json(_record_path(profile, job), record)
    _record_path(profile, job).with_suffix(".failed.json").unlink(missing_ok=True)
    return record


def execute_batch(jobs: list[NotebookJob], profile: Profile, root: Path, log=print) -> list[dict]:
    """Execute notebooks one after another in ONE kernel (papermill's parameter injection, nbclient's execution).

    For the per-run pages of ``03_train``: a fresh kernel per page would spend most of its time
    importing torch.  Each page redefines every variable it uses (its parameters cell plus the
    injected one), so sharing the kernel does not change what a page shows.
    """
    from jupyter_client.manager import start_new_kernel  # heavy; only the executing process needs them
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
