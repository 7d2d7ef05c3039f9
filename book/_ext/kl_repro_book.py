"""Small Sphinx fixes for this book (loaded through `local_extensions` in _config.yml).

pydata-sphinx-theme's layout reads a `default_mode` template variable that nothing sets here, so
every page logged "Got invalid theme mode" in the console; it is set to "light" for each page.
(Setting `html_context` in the configuration instead stops MathJax from being added to pages.)

With this Sphinx / theme combination some inline configuration scripts (sphinx-thebe's, the toggle
button's) are emitted twice in every page's <head>, and the browser then throws "Identifier
'THEBE_JS_URL' has already been declared". The book never executes code, so after the build each
page keeps only the first copy of any repeated <script> line of its <head>.
"""

from pathlib import Path


def _dedupe_head_scripts(html: str) -> str:
    head_end = html.find("</head>")
    if head_end < 0:
        return html
    seen, out = set(), []
    for line in html[:head_end].splitlines(keepends=True):
        key = line.strip()
        if key.startswith("<script") and key.endswith("</script>"):
            if key in seen:
                continue
            seen.add(key)
        out.append(line)
    return "".join(out) + html[head_end:]


def _fix_pages(app, exception):
    if exception is not None or app.builder.format != "html":
        return
    for page in Path(app.outdir).rglob("*.html"):
        text = page.read_text(encoding="utf-8")
        fixed = _dedupe_head_scripts(text)
        if fixed != text:
            page.write_text(fixed, encoding="utf-8")


def _default_mode(app, pagename, templatename, context, doctree):
    context.setdefault("default_mode", "light")  # returns None: later handlers (MathJax) still run


def setup(app):
    app.connect("html-page-context", _default_mode, priority=100)
    app.connect("build-finished", _fix_pages)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
