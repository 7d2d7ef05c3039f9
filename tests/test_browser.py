"""The built `smoke` book in a real browser (headless Chromium): pages load without console errors,
images load, math renders with no network, and screenshots are saved.

Needs Debian's `chromium` (`.ci/run` installs it); skipped with the reason printed where it is absent.
"""

import functools
import http.server
import shutil
import threading
from pathlib import Path

import pytest

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
