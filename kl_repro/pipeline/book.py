"""Tables and pages of the book: the status table, the reproduction log, the API reference.

The status table has one row per entry of ``paper_values/artefacts.toml`` (every table and figure
of both papers, then our own checks). Each row shows the paper's value, ours at the profile the
book was built with, and the verdict, read from the artefact files notebooks stored with
:func:`kl_repro.core.store.save_artefact`. An artefact may give short ``paper_summary`` and
``ours_summary`` strings for this table; otherwise the row points to its chapter.
"""

from __future__ import annotations

import datetime as _dt
import importlib
import importlib.util
import json
import os
import platform
import subprocess
import tomllib
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Iterable

from kl_repro.core import store

__all__ = [
    "artefact_registry",
    "paper_values",
    "status_rows",
    "status_markdown",
    "reproduction_log_markdown",
    "api_markdown",
    "write_book_pages",
    "MODULES",
]

#: Library modules in floor order (see CONTRIBUTING.md), for the API reference.
MODULES = (
    "config", "store", "profiles", "plotting", "rng",
    "kl", "schedules", "nets", "data", "kernels", "gedmd", "inception",
    "losses", "sde", "paths", "features",
    "samplers", "fpsampler",
    "runs", "train", "metrics",
    "experiments", "fp_experiments",
    "paper_a", "fp_report", "reporting",
    "reproduce", "cli",
)


@lru_cache(maxsize=None)
def _toml(name: str) -> dict:
    return tomllib.loads(resources.files("kl_repro").joinpath("paper_values", name).read_text())


def artefact_registry() -> list[dict]:
    """Every table/figure of both papers and our added checks, in book order."""
    return [dict(a) for a in _toml("artefacts.toml")["artefact"]]


def paper_values(paper: str) -> dict:
    """The papers' reported numbers as data (``paper_values/paper_<a|b>.toml``), each with its source."""
    return json.loads(json.dumps(_toml(f"paper_{paper.lower()}.toml")))


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


def status_rows(profile: str) -> list[dict]:
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


def status_markdown(profile: str, chapters_present: Iterable[str]) -> str:
    """The front page's status tables (paper items, then our checks) as MyST markdown."""
    present = set(chapters_present)
    rows = status_rows(profile)
    produced = sum(r["produced"] for r in rows if r["in_paper"])
    total = sum(r["in_paper"] for r in rows)
    out = [f"**Built with profile `{profile}`**: {produced} of {total} tables and figures of the papers produced.", ""]
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
    from importlib.metadata import PackageNotFoundError, version

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


def reproduction_log_markdown(profile: str, root: Path) -> str:
    """Profile, hardware, library versions, git commit, and wall-clock of every notebook and run."""
    lines = [f"- **Profile**: `{profile}`",
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
    runs = _run_rows(profile)
    if runs:
        lines += ["", "## Training runs", "", "| run | steps | optimisation time (s) | status |", "|---|---|---|---|"]
        lines += [f"| {r['name']} | {r['steps']} | {r['seconds']} | {r['status']} |" for r in runs]
    return "\n".join(lines) + "\n"


def _run_rows(profile: str) -> list[dict]:
    if importlib.util.find_spec("kl_repro.paper_a.matrix") is None:
        return []
    from kl_repro.paper_a import matrix as experiments

    return experiments.run_log_rows(profile)


def api_markdown() -> str:
    """Sphinx autodoc directives for every library module that exists, in floor order."""
    out = []
    for name in MODULES:
        if importlib.util.find_spec(f"kl_repro.{name}") is None:
            continue
        out += [f"## `kl_repro.{name}`", "", "```{eval-rst}", f".. automodule:: kl_repro.{name}", "```", ""]
    return "\n".join(out)


def _toc(jobs_present) -> str:
    outputs = {j.output for j in jobs_present}
    runs = sorted(o for o in outputs if o.startswith("runs/"))

    def has(stem):
        return stem in outputs

    lines = ["# Generated by kl_repro.pipeline.book at build time", "format: jb-book", "root: intro", "parts:"]
    part1 = [s for s in ("01_kl_expansion", "02_path_smoothness") if has(s)]
    lines += ["  - caption: \"Part I: truncated-KL diffusion (paper A)\"", "    chapters:"]
    lines += [f"      - file: executed/{s}" for s in part1]
    lines += ["      - file: training_runs"]
    if runs:
        lines += ["        sections:"] + [f"          - file: executed/{r}" for r in runs]
    if has("04_paper_a_results"):
        lines += ["      - file: executed/04_paper_a_results"]
    part2 = [s for s in ("05_eigen_spectra", "06_operator_sampler") if has(s)]
    if part2:
        lines += ["  - caption: \"Part II: the Fokker-Planck eigenfunction sampler (paper B)\"", "    chapters:"]
        lines += [f"      - file: executed/{s}" for s in part2]
    lines += ["  - caption: Reference", "    chapters:", "      - file: deviations", "      - file: reproduction_log",
              "      - file: api"]
    return "\n".join(lines) + "\n"


def _runs_markdown(jobs_present) -> str:
    runs = [j for j in jobs_present if j.output.startswith("runs/")]
    if not runs:
        return "No training runs were executed for this profile.\n"
    return "\n".join(f"- {{doc}}`/executed/{j.output}`" for j in runs) + "\n"


def write_book_pages(profile: str, book: Path, jobs_present) -> None:
    """Write ``_toc.yml`` and ``_generated/*.md`` of the book for ``profile``."""
    from kl_repro.pipeline.reproduce import repo_root

    gen = book / "_generated"
    gen.mkdir(parents=True, exist_ok=True)
    chapters = {j.output for j in jobs_present}
    store.atomic_write_text(gen / "status.md", status_markdown(profile, chapters))
    store.atomic_write_text(gen / "runs.md", _runs_markdown(jobs_present))
    store.atomic_write_text(gen / "api.md", api_markdown())
    store.atomic_write_text(gen / "reproduction_log.md", reproduction_log_markdown(profile, repo_root()))
    store.atomic_write_text(book / "_toc.yml", _toc(jobs_present))
