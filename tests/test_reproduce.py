"""`make reproduce`: the smoke book is built with its chapters; failures are named and contained."""

import json
import re
import shutil

import nbformat
import pytest

from conftest import REPO, run_cli

pytestmark = pytest.mark.slow


def test_smoke_reproduce_builds_the_book_with_both_chapters(smoke_build):
    proc = smoke_build["proc"]
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    html = smoke_build["html"]
    assert (html / "index.html").exists()
    assert str(html / "index.html") in proc.stdout  # the command says where the book is
    for chapter in ("01_kl_expansion", "02_path_smoothness"):
        page = (html / "executed" / f"{chapter}.html").read_text()
        images = re.findall(r'<img[^>]+src="([^"]+)"', page)
        assert len(images) >= 3, chapter
        for src in images:
            assert (html / "executed" / src).resolve().stat().st_size > 1000
    index = (html / "index.html").read_text() + (html / "intro.html").read_text() if (html / "intro.html").exists() else (html / "index.html").read_text()
    assert "Status of every table and figure" in index


def test_second_run_reuses_everything(smoke_build):
    proc = run_cli("reproduce", "--profile", "smoke", "--build-root", str(smoke_build["build"]),
                   results=smoke_build["results"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert " 0 to execute" in proc.stdout
    assert "executing" not in proc.stdout


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
