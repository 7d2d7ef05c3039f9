"""`make reproduce`: the smoke book is built with its chapters; failures are named and contained."""

import json
import re
import shutil

import nbformat
import pytest

from conftest import REPO, run_cli
from kl_repro.core.profiles import load_profile
from kl_repro.core.registry import artefact_registry
from kl_repro.paper_a.matrix import load_matrix, planned_runs

pytestmark = pytest.mark.slow


def test_smoke_reproduce_builds_the_book_with_both_chapters(smoke_build):
    proc = smoke_build["proc"]
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    html = smoke_build["html"]
    assert (html / "index.html").exists()
    assert str(html / "index.html") in proc.stdout  # the command says where the book is
    for chapter in ("01_kl_expansion", "02_path_smoothness", "04_paper_a_results", "05_eigen_spectra",
                    "06_operator_sampler"):
        page = (html / "executed" / f"{chapter}.html").read_text()
        images = re.findall(r'<img[^>]+src="([^"]+)"', page)
        assert len(images) >= 3, chapter
        for src in images:
            assert (html / "executed" / src).resolve().stat().st_size > 1000
    pages = list((html / "executed" / "runs").glob("*.html"))
    assert len(pages) == len(planned_runs(load_profile("smoke")))  # one page per training run
    assert "Status of every table and figure" in (html / "intro.html").read_text()


def test_an_interrupted_reproduce_resumes_without_redoing_finished_runs(smoke_build):
    if smoke_build["interrupted"] is None:
        pytest.skip("reusing a developer build")
    code, out = smoke_build["interrupted"]
    assert code == 130, out[-2000:]  # Ctrl-C: stopped, status says interrupted
    before = smoke_build["before"]
    assert len(before) >= 3
    second = smoke_build["proc"].stdout
    runs = smoke_build["results"] / "smoke" / "runs"
    for name, mtime in before.items():
        assert (runs / name / "finished.json").stat().st_mtime == mtime  # not retrained
    reused = int(re.search(r"paper A runs for profile 'smoke': (\d+) reused", second).group(1))
    # a run stopped during its final evaluation (one per worker at most) is evaluated, not retrained
    assert reused >= len(smoke_build["evaluated"]) >= len(before) - 2


def test_every_artefact_of_the_profile_exists_and_is_not_empty(smoke_build):

    arts = smoke_build["results"] / "smoke" / "artefacts"
    wanted = {a["id"] for a in artefact_registry()} | load_matrix(load_profile("smoke")).artefacts()
    for art in sorted(wanted):
        path = arts / f"{art}.json"
        assert path.exists(), art
        data = json.loads(path.read_text())
        assert data.get("verdict"), art
        if data.get("figure"):
            assert (arts / data["figure"]).stat().st_size > 2000, art


def test_status_table_has_a_row_for_every_table_and_figure(smoke_build):

    page = (smoke_build["html"] / "intro.html").read_text()
    in_paper = [a["id"] for a in artefact_registry() if a["in_paper"]]
    assert len([a for a in in_paper if a.startswith("B.")]) == 5  # paper B: Tables 1-3, Figs. 1-2
    for art in set(in_paper) | load_matrix(load_profile("smoke")).artefacts():
        assert f"<strong>{art}</strong>" in page, art


def test_second_run_reuses_everything(smoke_build):
    index = smoke_build["html"] / "index.html"
    built = index.stat().st_mtime
    proc = run_cli("reproduce", "--profile", "smoke", "--build-root", str(smoke_build["build"]),
                   results=smoke_build["results"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert " 0 to execute" in proc.stdout
    assert "executing" not in proc.stdout
    assert "sources unchanged since the last build" in proc.stdout  # and the HTML build (minutes) is skipped
    assert index.stat().st_mtime == built


def _mini_repo(tmp_path, failing: str):
    """A copy of the repository's book and two notebooks, one of which raises."""
    repo = tmp_path / "repo"
    (repo / "notebooks").mkdir(parents=True)
    shutil.copytree(REPO / "book", repo / "book", ignore=shutil.ignore_patterns("_build", "executed", "_generated"))
    shutil.copy(REPO / "notebooks" / "01_kl_expansion.ipynb", repo / "notebooks")
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('profile = "cpu"')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell("raise RuntimeError('deliberate failure for the test')")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, repo / "notebooks" / f"{failing}.ipynb")
    return repo


def test_a_failing_notebook_is_named_and_the_others_are_kept(tmp_path):
    repo = _mini_repo(tmp_path, "02_path_smoothness")
    results = tmp_path / "results"
    proc = run_cli("reproduce", "--profile", "smoke", "--no-train", "--build-root", str(tmp_path / "build"),
                   results=results, env_extra={"KL_REPRO_REPO": str(repo)})
    assert proc.returncode == 1
    out = proc.stdout + proc.stderr
    assert "notebook 02_path_smoothness" in out and "deliberate failure" in out
    nb_dir = results / "smoke" / "notebooks"
    assert (nb_dir / "01_kl_expansion.ipynb").exists()
    assert json.loads((nb_dir / "01_kl_expansion.json").read_text())["status"] == "ok"
    assert not (nb_dir / "02_path_smoothness.ipynb").exists()
    assert (nb_dir / "02_path_smoothness.failed.ipynb").exists()
    # the book is still built from what succeeded
    assert (tmp_path / "build" / "book" / "_build" / "html" / "executed" / "01_kl_expansion.html").exists()


def test_results_tables_record_the_fast_paths_of_each_run(smoke_build):
    """Issue 8: every results table names the fast paths its runs trained with (smoke: fp32, one thread)."""
    arts = smoke_build["results"] / "smoke" / "artefacts"
    for art in ("A.table1", "A.table2", "A.table3"):
        rows = json.loads((arts / f"{art}.json").read_text())["ours"]["rows"]
        assert rows, art
        assert all(r["fast paths"] == "fp32, 1 thread(s)" for r in rows), (art, [r["fast paths"] for r in rows])
