"""Tables and pages of the book: the status table, the reproduction log, the API reference.

The status table has one row per entry of ``paper_values/artefacts.toml`` (every table and figure
of both papers, then our own checks). Each row shows the paper's value, ours at the profile the
book was built with, and the verdict, read from the artefact files notebooks stored with
:func:`kl_repro.core.store.save_artefact`. An artefact may give short ``paper_summary`` and
``ours_summary`` strings for this table; otherwise the row points to its chapter.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import subprocess
import shutil
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Iterable

from kl_repro.core import store
from kl_repro.core.profiles import Profile
from kl_repro.core.registry import artefact_registry
from kl_repro.paper_a.matrix import run_log_rows
from kl_repro.pipeline.notebooks import CHAPTERS, NotebookJob, notebook_jobs, out_dir, repo_root

__all__ = [
    "build_book",
    "status_rows",
    "status_markdown",
    "reproduction_log_markdown",
    "api_markdown",
    "write_book_pages",
    "LAYERS",
]

#: Layers in import order (see CONTRIBUTING.md), for the API reference.
LAYERS = ("core", "data", "nets", "schedule", "evaluation", "paper_a", "paper_b", "chapters", "pipeline")
PACKAGE = Path(__file__).resolve().parents[1]


def _summary(value, limit: int = 160) -> str:
    if value is None:
        return ""
    if isinstance(value, (int, float)):
        return f"{value:.4g}"
    if isinstance(value, str):
        text = value
    elif isinstance(value, dict):
        text = "; ".join(f"{k}: {_summary(v, 40)}" for k, v in value.items() if not isinstance(v, (list, dict)))
    else:
        text = json.dumps(value, default=str)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def status_rows(profile: Profile) -> list[dict]:
    """One row per registry entry: id, title, chapter, in_paper, produced, paper, ours, verdict."""
    rows = []
    for entry in artefact_registry():
        art = store.load_artefact(profile, entry["id"])
        row = dict(entry, produced=art is not None, paper="", ours="", verdict="not produced at this profile")
        if art is not None:
            row["paper"] = art.get("paper_summary") or _summary(art.get("paper"))
            row["ours"] = art.get("ours_summary") or _summary(art.get("ours"))
            row["verdict"] = art.get("verdict", "")
            row["figure"] = art.get("figure")
        rows.append(row)
    return rows


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def status_markdown(profile: Profile, chapters_present: Iterable[str]) -> str:
    """The front page's status tables (paper items, then our checks) as MyST markdown."""
    present = set(chapters_present)
    rows = status_rows(profile)
    produced = sum(r["produced"] for r in rows if r["in_paper"])
    total = sum(r["in_paper"] for r in rows)
    out = [f"**Built with profile `{profile.name}`**: {produced} of {total} tables and figures of the papers produced.", ""]
    for in_paper, heading in ((True, "Status of every table and figure"), (False, "Checks this project adds")):
        out += [f"### {heading}", "", "| item | paper | ours | verdict | shown in |", "|---|---|---|---|---|"]
        for r in (r for r in rows if r["in_paper"] == in_paper):
            where = f"{{doc}}`/executed/{r['chapter']}`" if r["chapter"] in present else "(chapter not built)"
            out.append(f"| **{r['id']}** {_cell(r['title'])} | {_cell(r['paper'])} | {_cell(r['ours'])} | "
                       f"{_cell(r['verdict'])} | {where} |")
        out.append("")
    return "\n".join(out)


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


def reproduction_log_markdown(profile: Profile, root: Path) -> str:
    """Profile, hardware, library versions, git commit, and wall-clock of every notebook and run."""
    lines = [f"- **Profile**: `{profile.name}`",
             f"- **Built**: {_dt.datetime.now(_dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
             f"- **Git commit**: `{_git_commit(root)}`", ""]
    pipeline = store.profile_dir(profile) / "pipeline.json"
    if pipeline.exists():
        lines.append(f"- **Pipeline wall-clock** (last `make reproduce`): {store.read_json(pipeline)['seconds'] / 60:.1f} min")
        lines.append("")
    lines += ["## Hardware", "", "| | |", "|---|---|"] + [f"| {k} | {_cell(v)} |" for k, v in _hardware().items()]
    lines += ["", "## Library versions", "", "| package | version |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in _versions().items()]
    lines += ["", "## Notebooks", "", "| notebook | status | wall-clock (s) | finished |", "|---|---|---|---|"]
    nb_dir = store.profile_dir(profile) / "notebooks"
    for rec_path in sorted(nb_dir.rglob("*.json")):
        rec = store.read_json(rec_path)
        lines.append(f"| {rec.get('name')} | {rec.get('status')} | {rec.get('seconds', 0):.1f} | {rec.get('finished', '')} |")
    runs = run_log_rows(profile)
    if runs:
        lines += ["", "## Training runs", "", "| run | steps | optimisation time (s) | status |", "|---|---|---|---|"]
        lines += [f"| {r['name']} | {r['steps']} | {r['seconds']} | {r['status']} |" for r in runs]
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


def _toc(jobs_present) -> str:
    outputs = {j.output for j in jobs_present}
    runs = sorted(o for o in outputs if o.startswith("runs/"))

    def has(stem):
        return stem in outputs

    lines = ["# Generated by kl_repro.pipeline.book at build time", "format: jb-book", "root: intro", "parts:"]
    part1 = [s for s, part in CHAPTERS[:2] if has(s)]
    lines += ["  - caption: \"Part I: truncated-KL diffusion (paper A)\"", "    chapters:"]
    lines += [f"      - file: executed/{s}" for s in part1]
    lines += ["      - file: training_runs"]
    if runs:
        lines += ["        sections:"] + [f"          - file: executed/{r}" for r in runs]
    if has("04_paper_a_results"):
        lines += ["      - file: executed/04_paper_a_results"]
    part2 = [s for s, part in CHAPTERS if part == "B" and has(s)]
    if part2:
        lines += ["  - caption: \"Part II: the Fokker-Planck eigenfunction sampler (paper B)\"", "    chapters:"]
        lines += [f"      - file: executed/{s}" for s in part2]
    lines += ["  - caption: Reference", "    chapters:", "      - file: methods", "      - file: deviations", "      - file: reproduction_log",
              "      - file: api"]
    return "\n".join(lines) + "\n"


def _runs_markdown(jobs_present) -> str:
    runs = [j for j in jobs_present if j.output.startswith("runs/")]
    if not runs:
        return "No training runs were executed for this profile.\n"
    return "\n".join(f"- {{doc}}`/executed/{j.output}`" for j in runs) + "\n"


def write_book_pages(profile: Profile, book: Path, jobs_present) -> None:
    """Write ``_toc.yml`` and ``_generated/*.md`` of the book for ``profile``."""
    gen = book / "_generated"
    gen.mkdir(parents=True, exist_ok=True)
    chapters = {j.output for j in jobs_present}
    store.atomic_write_text(gen / "status.md", status_markdown(profile, chapters))
    store.atomic_write_text(gen / "runs.md", _runs_markdown(jobs_present))
    store.atomic_write_text(gen / "api.md", api_markdown())
    store.atomic_write_text(gen / "reproduction_log.md", reproduction_log_markdown(profile, repo_root()))
    store.atomic_write_text(book / "_toc.yml", _toc(jobs_present))


def build_book(profile: Profile, build_root: Path, root: Path | None = None, log=print) -> Path:
    """Assemble ``<build_root>/book`` from the repository's ``book/`` and the executed notebooks, then build HTML.

    Returns the path of ``index.html``.
    """
    root = root or repo_root()
    book = build_root / "book"
    if book.resolve() != (root / "book").resolve():
        shutil.copytree(root / "book", book, dirs_exist_ok=True, ignore=shutil.ignore_patterns("_build", "executed", "_generated"))
    write_book_pages(profile, book, _copy_executed(profile, book / "executed", root))
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


def _copy_executed(profile: Profile, executed: Path, root: Path) -> list[NotebookJob]:
    """Copy the stored executions into the book; returns the jobs whose execution exists."""
    shutil.rmtree(executed, ignore_errors=True)
    present = []
    for job in notebook_jobs(profile, root):
        src = out_dir(profile) / f"{job.output}.ipynb"
        if src.exists():
            dst = executed / f"{job.output}.ipynb"
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
            present.append(job)
    return present
