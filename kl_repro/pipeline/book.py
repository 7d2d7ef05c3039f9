"""The book's build: generated pages (front page, runs list, reproduction log, API reference), the table of
contents, and the executed notebooks as the book shows them.

The front page (:mod:`kl_repro.pipeline.front_page`) gives each paper's headline verdicts, the claim-by-claim
tables and the status table, each linked to the section that shows the artefact.  The table of contents
follows the reading order: paper A's chapters, paper B's, the reference pages, then an appendix with one
page per training run, in the order of the runs list.  Copying an executed notebook into the book
(:func:`prepare_notebook`) drops the parameter cells (the printed configuration shows the values once),
labels the sections that show artefacts, and gives each run page a unique title.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import platform
import re
import subprocess
import shutil
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Iterable

import nbformat

from kl_repro.core import store
from kl_repro.core.config import ConfigError
from kl_repro.core.profiles import Profile
from kl_repro.core.registry import artefact_registry
from kl_repro.paper_a.matrix import planned_runs, run_log_rows
from kl_repro.pipeline import front_page
from kl_repro.pipeline.front_page import status_markdown, status_rows
from kl_repro.pipeline.notebooks import CHAPTERS, NotebookJob, notebook_jobs, out_dir, repo_root

__all__ = [
    "build_book",
    "sources_digest",
    "status_rows",
    "status_markdown",
    "reproduction_log_markdown",
    "api_markdown",
    "write_book_pages",
    "prepare_notebook",
    "run_titles",
    "LAYERS",
]

#: Layers in import order (see CONTRIBUTING.md), for the API reference.
LAYERS = ("core", "data", "nets", "schedule", "evaluation", "paper_a", "paper_b", "chapters", "pipeline")
PACKAGE = Path(__file__).resolve().parents[1]


def _git_commit(root: Path) -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True).stdout.strip()
        return sha + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("kl-repro", "torch", "torchvision", "numpy", "scipy", "denoising-diffusion-pytorch", "accelerate",
                "ema-pytorch", "torch-fidelity", "papermill", "jupyter-book", "matplotlib", "seaborn"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def _hardware() -> dict[str, str]:
    info = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu cores": str(os.cpu_count())}
    try:
        import torch

        info["torch threads"] = str(torch.get_num_threads())
        info["GPU"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    except Exception:  # pragma: no cover - torch is a hard dependency
        pass
    return info


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _wall_clock_lines(profile: Profile, records: list[dict], runs: list[dict]) -> list[str]:
    """The last reproduce's wall-clock beside the compute the book stands on (runs and notebooks it reused)."""
    train_s = sum(float(r["seconds"]) for r in runs if r["seconds"] not in ("-", None))
    nb_s = sum(float(r.get("seconds", 0)) for r in records)
    lines = []
    pipeline = store.profile_dir(profile) / "pipeline.json"
    if pipeline.exists():
        last = store.read_json(pipeline)
        lines.append(f"- **Last `make reproduce` that trained or executed anything** (finished {last.get('finished', '?')}): {last['seconds'] / 60:.1f} min "
                     "of wall-clock; it trains and executes only what is not stored yet, so a rerun that reuses "
                     "everything takes about a minute.")
    lines.append(f"- **Compute this book stands on**: {train_s / 60:.1f} min of optimisation time over "
                 f"{sum(r['seconds'] not in ('-', None) for r in runs)} finished training runs, and {nb_s / 60:.1f} min "
                 f"over {len(records)} notebook executions (each timed when it ran; see the tables below).")
    return lines + [""]


def reproduction_log_markdown(profile: Profile, root: Path) -> str:
    """Profile, hardware, library versions, git commit, and wall-clock of every notebook and run."""
    nb_dir = store.profile_dir(profile) / "notebooks"
    records = [store.read_json(p) for p in sorted(nb_dir.rglob("*.json"))] if nb_dir.is_dir() else []
    runs = run_log_rows(profile)
    lines = [f"- **Profile**: `{profile.name}`",
             f"- **Built**: {_dt.datetime.now(_dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
             f"- **Git commit**: `{_git_commit(root)}`"]
    lines += _wall_clock_lines(profile, records, runs)
    lines += ["## Hardware", "", "| | |", "|---|---|"] + [f"| {k} | {_cell(v)} |" for k, v in _hardware().items()]
    lines += ["", "## Library versions", "", "| package | version |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in _versions().items()]
    lines += ["", "## Notebooks", "", "| notebook | status | wall-clock (s) | finished |", "|---|---|---|---|"]
    lines += [f"| {r.get('name')} | {r.get('status')} | {r.get('seconds', 0):.1f} | {r.get('finished', '')} |" for r in records]
    if runs:
        lines += ["", "## Training runs", "", "| run | steps | optimisation time (s) | status |", "|---|---|---|---|"]
        lines += [f"| {_cell(r['name'])} | {r['steps']} | {r['seconds']} | {r['status']} |" for r in runs]
    return "\n".join(lines) + "\n"


def library_modules() -> list[str]:
    """Every module of the package, layer by layer (packages' ``__init__`` excluded)."""
    names = []
    for layer in LAYERS:
        base = PACKAGE / layer
        files = sorted(base.rglob("*.py")) if base.is_dir() else [base.with_suffix(".py")]
        for f in files:
            if f.name != "__init__.py" and "__pycache__" not in f.parts:
                names.append("kl_repro." + ".".join(f.relative_to(PACKAGE).with_suffix("").parts))
    return names


def api_markdown() -> str:
    """Sphinx autodoc directives for every library module, layer by layer."""
    out = []
    for name in library_modules():
        out += [f"## `{name}`", "", "```{eval-rst}", f".. automodule:: {name}", "```", ""]
    return "\n".join(out)


def run_titles(profile: Profile) -> dict[str, str]:
    """``{run page name: title}``: label, data set, seed and steps, unique (the run's id is added where two agree)."""
    try:
        plan = planned_runs(profile)
    except ConfigError:  # a profile without a valid matrix has no run pages
        return {}
    titles = {p.run_dir.name: f"{p.spec.label} ({p.spec.data}, seed {p.seed}, {p.steps} steps)" for p in plan}
    counts = {t: list(titles.values()).count(t) for t in titles.values()}
    ids = {p.run_dir.name: p.spec.id for p in plan}
    return {name: (t if counts[t] == 1 else f"{t[:-1]}, {ids[name]})") for name, t in titles.items()}


def _toc(jobs_present) -> str:
    """Reading order: paper A's chapters, paper B's, the reference pages, then the training-run pages (appendix)."""
    outputs = {j.output for j in jobs_present}
    runs = [j.output for j in jobs_present if j.output.startswith("runs/")]  # the runs list's order
    lines = ["# Generated by kl_repro.pipeline.book at build time", "format: jb-book", "root: intro", "parts:"]
    for part, caption in (("A", "Part I: truncated-KL diffusion (paper A)"),
                          ("B", "Part II: the Fokker-Planck eigenfunction sampler (paper B)")):
        stems = [s for s, p in CHAPTERS if p == part and s in outputs]
        if stems:
            lines += [f"  - caption: \"{caption}\"", "    chapters:"] + [f"      - file: executed/{s}" for s in stems]
    lines += ["  - caption: Reference", "    chapters:", "      - file: methods", "      - file: deviations",
              "      - file: reproduction_log", "      - file: api"]
    lines += ["  - caption: \"Appendix: training runs\"", "    chapters:", "      - file: training_runs"]
    if runs:
        lines += ["        sections:"] + [f"          - file: executed/{r}" for r in runs]
    return "\n".join(lines) + "\n"


def _runs_markdown(profile: Profile, jobs_present) -> str:
    """The runs list: one row per training-run page, in the order of the matrix (and of the sidebar)."""
    runs = [j for j in jobs_present if j.output.startswith("runs/")]
    if not runs:
        return "No training runs were executed for this profile.\n"
    plan = {p.run_dir.name: p for p in planned_runs(profile)}
    out = ["| run | data | seed | steps | B | used by |", "|---|---|---|---|---|---|"]
    for j in runs:
        p = plan.get(j.output.split("/", 1)[1])
        if p is None:
            continue
        out.append(f"| {{doc}}`{_cell(p.spec.label)} </executed/{j.output}>` | {p.spec.data} | {p.seed} | {p.steps} | "
                   f"{p.params.get('B', '')} | {', '.join(p.spec.artefacts)} |")
    return "\n".join(out) + "\n"


def write_book_pages(profile: Profile, book: Path, jobs_present, sections: dict | None = None) -> None:
    """Write ``_toc.yml`` and ``_generated/*.md`` of the book for ``profile``.

    ``sections``: ``{artefact id: heading}`` of the labelled sections (:func:`prepare_notebook`); the front
    page links there.
    """
    sections = sections or {}
    gen = book / "_generated"
    gen.mkdir(parents=True, exist_ok=True)
    chapters = {j.output for j in jobs_present}
    store.atomic_write_text(gen / "headlines.md", front_page.headlines_markdown(profile, sections))
    store.atomic_write_text(gen / "words.md", front_page.words_markdown())
    store.atomic_write_text(gen / "claims.md", front_page.claims_markdown(profile, sections))
    store.atomic_write_text(gen / "status.md", status_markdown(profile, sections, chapters))
    store.atomic_write_text(gen / "runs.md", _runs_markdown(profile, jobs_present))
    store.atomic_write_text(gen / "api.md", api_markdown())
    store.atomic_write_text(gen / "reproduction_log.md", reproduction_log_markdown(profile, repo_root()))
    store.atomic_write_text(book / "_toc.yml", _toc(jobs_present))


#: In ``_build/``: the digest of the sources the HTML was built from (:func:`sources_digest`).
STAMP = ".kl_repro_sources.sha256"
_BUILT_LINE = re.compile(rb"^- \*\*Built\*\*:.*$", flags=re.M)


def sources_digest(book: Path) -> str:
    """SHA-256 of what the HTML is built from: the assembled book folder (``_build`` left out, and the build
    time in the reproduction log) and the library's Python files (the API reference renders their docstrings)."""
    h = hashlib.sha256()
    parts = [("book", book, p) for p in book.rglob("*") if "_build" not in p.relative_to(book).parts]
    parts += [("kl_repro", PACKAGE, p) for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts]
    for tag, base, path in sorted(parts, key=lambda t: (t[0], str(t[2]))):
        if not path.is_file():
            continue
        data = path.read_bytes()
        if path.name == "reproduction_log.md":
            data = _BUILT_LINE.sub(b"", data)
        h.update(f"{tag}/{path.relative_to(base).as_posix()}\0{len(data)}\0".encode())
        h.update(data)
    return h.hexdigest()


def build_book(profile: Profile, build_root: Path, root: Path | None = None, log=print, force: bool = False) -> Path:
    """Assemble ``<build_root>/book`` from the repository's ``book/`` and the executed notebooks, then build HTML.

    The HTML build (minutes) is skipped when the assembled sources equal those of the existing build
    (:func:`sources_digest`), unless ``force``.  Returns the path of ``index.html``.
    """
    root = root or repo_root()
    book = build_root / "book"
    if book.resolve() != (root / "book").resolve():
        shutil.copytree(root / "book", book, dirs_exist_ok=True, ignore=shutil.ignore_patterns("_build", "executed", "_generated"))
    write_book_pages(profile, book, *_copy_executed(profile, book / "executed", root))
    index, stamp = book / "_build" / "html" / "index.html", book / "_build" / STAMP
    digest = sources_digest(book)
    if not force and index.exists() and stamp.exists() and stamp.read_text().strip() == digest:
        log("book: sources unchanged since the last build; HTML kept (`kl-repro book --force` rebuilds it)")
        return index
    stamp.unlink(missing_ok=True)
    cmd = [str(Path(sys.executable).with_name("jupyter-book")), "build", str(book), "--quiet"]
    if not Path(cmd[0]).exists():
        cmd[0] = shutil.which("jupyter-book") or "jupyter-book"
    log(f"building the book: {' '.join(cmd)}")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0 or not index.exists():
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-25:])
        raise RuntimeError(f"jupyter-book build failed (exit {proc.returncode}):\n{tail}")
    store.atomic_write_text(stamp, digest + "\n")
    return index


_HIDDEN_TAGS = {"parameters", "injected-parameters"}


def prepare_notebook(nb, job: NotebookJob, art_ids: list[str], title: str | None = None) -> dict[str, str]:
    """An executed notebook as the book shows it, in place; returns ``{artefact id: heading}`` of its labelled sections.

    The parameters cell (the notebook's defaults) and papermill's injected-parameters cell are removed from
    the page, and the configuration cell after them shows only its output: the values are printed once.
    A run page's first heading becomes ``title``.
    """
    after_params = False
    for cell in nb.cells:
        tags = cell.metadata.setdefault("tags", [])
        if cell.cell_type != "code":
            continue
        if _HIDDEN_TAGS & set(tags):
            tags.append("remove-cell")
            after_params = True
        elif after_params:
            tags.append("hide-input")
            after_params = False
    if title:
        for cell in nb.cells:
            if cell.cell_type == "markdown" and cell.source.lstrip().startswith("# "):
                lines = cell.source.lstrip().splitlines()
                cell.source = "\n".join([f"# {title}"] + lines[1:])
                break
    return front_page.label_sections(nb, art_ids)


def _copy_executed(profile: Profile, executed: Path, root: Path) -> tuple[list[NotebookJob], dict[str, str]]:
    """Copy the stored executions into the book (:func:`prepare_notebook`).

    Returns the jobs whose execution exists and ``{artefact id: heading}`` of the sections that show artefacts.
    """
    shutil.rmtree(executed, ignore_errors=True)
    present, sections = [], {}
    titles = run_titles(profile)
    by_chapter: dict[str, list[str]] = {}
    for entry in artefact_registry():
        by_chapter.setdefault(entry["chapter"], []).append(entry["id"])
    for job in notebook_jobs(profile, root):
        src = out_dir(profile) / f"{job.output}.ipynb"
        if src.exists():
            dst = executed / f"{job.output}.ipynb"
            dst.parent.mkdir(parents=True, exist_ok=True)
            nb = nbformat.read(src, as_version=4)
            title = titles.get(job.output.split("/", 1)[1]) if job.output.startswith("runs/") else None
            sections.update(prepare_notebook(nb, job, by_chapter.get(job.stem, []), title))
            nbformat.write(nb, dst)
            present.append(job)
    return present, sections
