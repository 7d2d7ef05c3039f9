"""The built `smoke` book in a real browser (headless Chromium), as a reader meets it: pages load without
console errors, images load, math renders with no network; the front page gives a verdict word for every
claim, its verdict cells are sentences (never a dict), its links land on existing anchors; no page shows
a local path, a Python warning or a ``PosixPath`` repr; no table is wider than its column; a screenshot of the
front page and of every chapter page is kept (``<build>/screenshots``, or ``$KL_REPRO_SCREENSHOTS``).

Needs Debian's `chromium` (`.ci/run` installs it); skipped with the reason printed where it is absent.
"""

import functools
import html as html_lib
import http.server
import os
import re
import shutil
import threading
from pathlib import Path
from urllib.parse import urlparse

import pytest

from kl_repro.core.verdict import WORDS

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Flags for a closed network: without the background-networking ones Chromium retries Google hosts.
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SKIP_PAGES = {"genindex.html", "search.html", "py-modindex.html"}


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def _serve(folder: Path):
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def browser_page(smoke_build):
    if CHROMIUM is None:
        print("SKIPPED browser test: no chromium on PATH (install Debian's `chromium` package)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as e:  # pragma: no cover - playwright is a test dependency
        pytest.skip(f"playwright is not importable: {e}")
    html = smoke_build["html"]
    assert (html / "index.html").exists(), "the smoke book was not built"
    server = _serve(html)
    base = f"http://127.0.0.1:{server.server_address[1]}/"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(120_000)  # a page of the book loads in seconds; a loaded CI worker may take longer
        external = []

        def route(r):
            if r.request.url.startswith(base) or r.request.url.startswith("data:"):
                return r.continue_()
            external.append(r.request.url)
            return r.abort()

        page.route("**/*", route)
        yield page, base, html, external
        browser.close()
    server.shutdown()


def _visit(page, url):
    errors = []
    on_console = lambda m: errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None
    on_error = lambda e: errors.append(f"page error: {e}")
    page.on("console", on_console)
    page.on("pageerror", on_error)
    page.goto(url, wait_until="load")
    page.wait_for_load_state("networkidle")
    page.remove_listener("console", on_console)
    page.remove_listener("pageerror", on_error)
    return errors


def test_every_page_loads_without_console_errors(browser_page):
    page, base, html, external = browser_page
    pages = sorted(p.relative_to(html).as_posix() for p in html.rglob("*.html")
                   if "_static" not in p.parts and p.name not in SKIP_PAGES)
    assert len(pages) >= 5
    problems = {}
    for rel in pages:
        errs = _visit(page, base + rel)
        if errs:
            problems[rel] = errs
    assert not problems, problems
    assert not external, f"the book tried to reach the network: {external[:5]}"


def test_images_on_chapter_pages_load(browser_page):
    page, base, html, _ = browser_page
    chapters = sorted(p.relative_to(html).as_posix() for p in (html / "executed").rglob("*.html"))
    assert chapters
    for rel in chapters:
        _visit(page, base + rel)
        images = page.evaluate("Array.from(document.images).map(i => [i.getAttribute('src'), i.naturalWidth])")
        broken = [src for src, width in images if width == 0]
        assert not broken, (rel, broken)
        if rel.endswith(("01_kl_expansion.html", "02_path_smoothness.html", "04_paper_a_results.html",
                         "06_operator_sampler.html")):
            assert len(images) >= 3, rel


def test_math_renders_offline_and_screenshots_are_saved(browser_page, smoke_build):
    page, base, html, external = browser_page
    _visit(page, base + "executed/01_kl_expansion.html")
    page.wait_for_selector("mjx-container", state="attached", timeout=20_000)
    assert page.locator("mjx-container").count() >= 5
    unrendered = page.evaluate(
        "Array.from(document.querySelectorAll('span.math, div.math')).filter(e => !e.querySelector('mjx-container')).length")
    assert unrendered == 0  # every math element was typeset, from the book's own MathJax copy
    shots = smoke_build["build"] / "screenshots"
    shots.mkdir(exist_ok=True)
    _visit(page, base + "index.html")
    page.screenshot(path=str(shots / "front_page.png"), full_page=True)
    results = "executed/04_paper_a_results.html" if (html / "executed/04_paper_a_results.html").exists() \
        else "executed/02_path_smoothness.html"
    _visit(page, base + results)
    page.screenshot(path=str(shots / "results_page.png"), full_page=True)
    for name in ("front_page.png", "results_page.png"):
        assert (shots / name).stat().st_size > 10_000
    assert not external


# --- the book as a reader meets it (issue 15) ---------------------------------------------------

DICT_LIKE = re.compile(r"\{\s*['\"]|['\"]\s*:\s*[\[{'\"]|\}\s*$")
LOCAL_OR_WARNING = re.compile(r"(?<![\w.~])/(?:home|root|tmp|work|Users|private/var)/|site-packages|PosixPath\(|WindowsPath\("
                              r"|\b[A-Z]\w*Warning:")


def _front_tables(page):
    """Every table of the front page as ``{"head": [...], "rows": [[cell text, ...], ...]}``."""
    return page.evaluate("""Array.from(document.querySelectorAll('main table')).map(t => ({
        head: Array.from(t.querySelectorAll('thead th')).map(th => th.innerText.trim()),
        rows: Array.from(t.querySelectorAll('tbody tr')).map(tr => Array.from(tr.querySelectorAll('td')).map(td => td.innerText.trim()))
    }))""")


def test_front_page_gives_a_verdict_word_for_every_claim_in_sentences(browser_page):
    page, base, html, _ = browser_page
    _visit(page, base + "intro.html")
    headlines = page.evaluate("""(() => { const h = document.querySelector('#headline-verdicts');
        return h ? Array.from(h.querySelectorAll('li')).filter(li => !li.closest('.admonition')).map(li => [li.innerText.trim(),
            Array.from(li.querySelectorAll('strong')).map(s => s.innerText.trim())]) : []; })()""")
    assert len(headlines) >= 4, "the front page lists no headline claims"
    for item, bold in headlines:  # "**<claim>** (<source>). **<Word>** ...: <numbers> see the section"
        assert len(bold) >= 2 and bold[1] in WORDS, f"headline without a verdict word: {item[:200]}"
        assert "see the section" in item, item[:200]
    tables = _front_tables(page)
    claims = [t for t in tables if "our verdict" in t["head"]]
    assert len(claims) == 2, [t["head"] for t in tables]  # paper A's and paper B's claim-by-claim tables
    for t in claims:
        col = t["head"].index("our verdict")
        assert len(t["rows"]) >= 5
        for row in t["rows"]:
            assert row[col].startswith(WORDS), f"claim without a verdict word: {row[0][:80]} -> {row[col][:160]}"
    status = [t for t in tables if "verdict" in t["head"]]
    assert len(status) >= 2
    for t in status + claims:
        col = t["head"].index("verdict" if "verdict" in t["head"] else "our verdict")
        for row in t["rows"]:
            for cell in row:
                assert not DICT_LIKE.search(cell), f"dict-like text in a front-page cell: {cell[:200]}"
            assert len(row[col]) <= 400, f"a verdict cell holds more than a sentence: {row[col][:120]}..."


def _ids(html: Path, rel: str, cache: dict) -> set[str]:
    if rel not in cache:
        path = html / rel
        cache[rel] = set(re.findall(r'\sid="([^"]+)"', path.read_text(encoding="utf-8"))) if path.exists() else None
    return cache[rel]


def test_every_front_page_link_lands_on_an_existing_anchor(browser_page):
    page, base, html, _ = browser_page
    _visit(page, base + "intro.html")
    links = page.evaluate("Array.from(document.querySelectorAll('main a[href]')).map(a => a.href)")
    internal = [u for u in links if u.startswith(base)]
    assert len(internal) >= 40
    sections = [u for u in internal if "#" in u and "/executed/" in u]
    assert len(sections) >= 10, "the front page links to few sections of the chapters"
    cache, broken = {}, []
    for url in internal:
        parts = urlparse(url)
        rel = parts.path[len(urlparse(base).path):] or "index.html"
        ids = _ids(html, rel, cache)
        if ids is None or (parts.fragment and parts.fragment not in ids):
            broken.append(url[len(base):])
    assert not broken, f"front-page links to missing pages or anchors: {sorted(set(broken))[:10]}"


TABLE_FITS = """(() => {
    const col = document.querySelector('main article') || document.querySelector('main');
    const right = col.getBoundingClientRect().right + 2;
    const wide = [];
    for (const t of col.querySelectorAll('table')) {
        let box = t;  // the nearest box that scrolls sideways holds the table's overflow
        for (let e = t; e && e !== col; e = e.parentElement) {
            if (['auto', 'scroll'].includes(getComputedStyle(e).overflowX)) { box = e; break; }
        }
        if (box.getBoundingClientRect().right > right) wide.push((t.innerText || '').slice(0, 60));
    }
    return wide;
})()"""


def _page_text(path: Path) -> str:
    """A page's visible text: its HTML without scripts, styles and tags, entities decoded."""
    text = re.sub(r"<(script|style)\b.*?</\1>", " ", path.read_text(encoding="utf-8"), flags=re.S)
    return html_lib.unescape(re.sub(r"<[^>]+>", " ", text))


def test_no_page_shows_a_local_path_a_warning_or_an_object_repr(smoke_build):
    """Every page of the book (chapters, run pages, reference pages), from its HTML: no local path, no Python
    warning (TqdmWarning, UserWarning, ...), no ``PosixPath(...)``."""
    html = smoke_build["html"]
    pages = sorted(p for p in html.rglob("*.html") if "_static" not in p.parts and p.name not in SKIP_PAGES)
    assert len(pages) >= 10
    dirty = {p.relative_to(html).as_posix(): sorted({m.group(0) for m in LOCAL_OR_WARNING.finditer(_page_text(p))})
             for p in pages}
    dirty = {k: v for k, v in dirty.items() if v}
    assert not dirty, f"local paths or Python warnings in page text: {dirty}"


def test_tables_fit_their_column_and_chapter_screenshots_are_kept(browser_page, smoke_build):
    """The front page and every chapter page: no table wider than the text column (a wide one scrolls inside
    its own box); each page is kept as a full-page screenshot."""
    page, base, html, _ = browser_page
    shots = Path(os.environ.get("KL_REPRO_SCREENSHOTS") or smoke_build["build"] / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    pages = ["intro.html"] + sorted(p.relative_to(html).as_posix() for p in (html / "executed").glob("*.html"))
    wide = {}
    for rel in pages:
        _visit(page, base + rel)
        if w := page.evaluate(TABLE_FITS):
            wide[rel] = w
        page.screenshot(path=str(shots / (Path(rel).stem + ".png")), full_page=True)
    assert not wide, f"tables wider than their column: {wide}"
    kept = sorted(p.name for p in shots.glob("*.png"))
    assert {"intro.png", "01_kl_expansion.png"} <= set(kept) and len(kept) >= len(pages), kept
    print(f"screenshots of {len(pages)} pages in {shots}")
