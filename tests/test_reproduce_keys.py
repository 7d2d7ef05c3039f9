"""The notebook keys of `make reproduce`: a notebook is re-executed when a library module it
imports (directly or through other modules) changes, and only then."""

import ast
from pathlib import Path

import pytest

from kl_repro.core.profiles import load_profile
from kl_repro.pipeline import notebooks as nbk

PACKAGE = Path(nbk.__file__).resolve().parents[1]
REPO = PACKAGE.parent


def _deps(stem: str) -> set[str]:
    return {p.relative_to(PACKAGE).as_posix() for p in nbk.notebook_dependencies(REPO / "notebooks" / f"{stem}.ipynb")}


def test_the_kl_chapter_does_not_depend_on_paper_b_or_the_pipeline():
    deps = _deps("01_kl_expansion")
    assert "paper_a/kl.py" in deps and "core/config.py" in deps
    assert not any(d.startswith(("paper_b/", "pipeline/")) for d in deps), sorted(deps)


def test_the_operator_sampler_chapter_depends_on_paper_b_not_on_paper_a_training():
    deps = _deps("06_operator_sampler")
    assert any(d.startswith("paper_b/") for d in deps)
    assert not any(d.startswith(("paper_a/training/", "pipeline/")) for d in deps), sorted(deps)


def test_closure_follows_imports_through_modules():
    closure = nbk.module_closure({"kl_repro.pipeline.reproduce"})
    assert {"kl_repro.pipeline.notebooks", "kl_repro.core.store", "kl_repro.core.config", "kl_repro"} <= closure


def test_editing_a_module_changes_exactly_the_keys_of_the_notebooks_that_import_it(monkeypatch):
    profile = load_profile("smoke")
    jobs = {j.stem: j for j in nbk.notebook_jobs(profile, REPO)}
    before = {s: nbk.job_key(j, REPO, profile) for s, j in jobs.items()}
    target = PACKAGE / "paper_b" / "kernels.py"
    monkeypatch.setattr(nbk, "_file_bytes", lambda p: p.read_bytes() + (b"\n# edited\n" if p == target else b""))
    after = {s: nbk.job_key(j, REPO, profile) for s, j in jobs.items()}
    changed = {s for s in jobs if before[s] != after[s]}
    assert "06_operator_sampler" in changed
    assert "01_kl_expansion" not in changed and "02_path_smoothness" not in changed


def _dynamic_imports(tree: ast.AST) -> list[str]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
            if name in ("import_module", "__import__", "find_spec") and node.args:
                arg = node.args[0]
                if not (isinstance(arg, ast.Constant) and not str(arg.value).startswith("kl_repro")):
                    out.append(ast.unparse(node))
    return out


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: p.relative_to(PACKAGE).as_posix())
def test_no_library_module_is_imported_by_name_at_run_time(path):
    """What makes the keying safe: every dependency on the package's own modules is a static import."""
    assert _dynamic_imports(ast.parse(path.read_text())) == []


def test_the_book_digest_ignores_the_build_time_and_follows_every_source(tmp_path):
    """The HTML build is skipped only while its sources are unchanged (``book.sources_digest``)."""
    from kl_repro.pipeline.book import sources_digest

    book = tmp_path / "book"
    (book / "_generated").mkdir(parents=True)
    (book / "_build" / "html").mkdir(parents=True)
    log = book / "_generated" / "reproduction_log.md"
    log.write_text("- **Profile**: `smoke`\n- **Built**: 2026-12-01 10:00 UTC\n- **Git commit**: `abc`\n")
    (book / "intro.md").write_text("# Intro\n")
    first = sources_digest(book)
    log.write_text(log.read_text().replace("10:00", "11:42"))  # only the build time moved
    (book / "_build" / "html" / "index.html").write_text("<html/>")  # the output is not a source
    assert sources_digest(book) == first
    log.write_text(log.read_text().replace("abc", "def"))  # another commit: rebuild
    assert sources_digest(book) != first
    log.write_text(log.read_text().replace("def", "abc"))
    assert sources_digest(book) == first
    (book / "intro.md").write_text("# Intro, edited\n")
    assert sources_digest(book) != first
