"""Reports render in a real browser: headless Chromium opens index.html and every step report.

Checks per page: no console error, no uncaught script error, no request leaving the
machine, every ``<img>`` decoded (``naturalWidth > 0``), every relative link resolves to
an existing page (navigated to; executed notebooks are checked on disk, a browser would
download them). The run folders under test are session fixtures listed in
``RUN_FOLDERS``; add the real demo run there (e.g. ``"demo_run"``) once it exists.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

pytestmark = pytest.mark.browser

#: Session fixtures returning a run folder (index.html + html/).
RUN_FOLDERS = ["fake_run_ok", "fake_run_failed", "demo_run"]

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


def _chromium() -> str | None:
    if Path("/usr/bin/chromium").exists():
        return "/usr/bin/chromium"
    return shutil.which("chromium")


@pytest.fixture(scope="module")
def browser():
    exe = _chromium()
    if exe is None:
        pytest.skip("Chromium absent (/usr/bin/chromium introuvable) : test de rendu des rapports ignoré ; "
                    "installez le paquet Debian chromium (.ci/run le fait)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="paquet Python playwright absent")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def _check_page(context, url: str) -> tuple[list[str], list[str]]:
    """Open ``url``; return (problems, relative links found)."""
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"erreur de script : {e}"))
    page.on("requestfailed", lambda r: problems.append(f"requête échouée : {r.url}"))
    page.on("request", lambda r: problems.append(f"requête externe : {r.url}")
            if not r.url.startswith(("file:", "data:", "about:")) else None)
    response = page.goto(url, wait_until="load")
    if response is not None and not response.ok:
        problems.append(f"statut {response.status}")
    images = page.eval_on_selector_all("img", "els => els.map(e => [e.complete, e.naturalWidth, e.src.slice(0, 40)])")
    problems += [f"image non chargée : {src}" for complete, width, src in images if not complete or width == 0]
    hrefs = page.eval_on_selector_all("a[href]", "els => els.map(e => [e.getAttribute('href'), e.href])")
    title = page.title()
    if not title.strip():
        problems.append("page sans titre")
    page.close()
    links = [absolute for raw, absolute in hrefs if not raw.startswith(("#", "http:", "https:", "mailto:"))]
    return problems, links


@pytest.mark.parametrize(
    "run_fixture",
    [pytest.param(name, marks=pytest.mark.xdist_group(name)) if name == "demo_run" else name for name in RUN_FOLDERS],
)
def test_reports_render_in_chromium(browser, request, run_fixture):
    run_dir: Path = request.getfixturevalue(run_fixture)
    pages = [run_dir / "index.html", *sorted((run_dir / "html").glob("*.html"))]
    assert len(pages) >= 2
    context = browser.new_context(offline=True)
    try:
        seen: set[str] = set()
        todo = [p.resolve().as_uri() for p in pages]
        problems: dict[str, list[str]] = {}
        n_links = 0
        while todo:
            url = todo.pop(0).split("#")[0]
            if url in seen:
                continue
            seen.add(url)
            found, links = _check_page(context, url)
            if found:
                problems[url] = found
            for link in links:
                n_links += 1
                target = Path(unquote(urlparse(link).path))
                if not target.exists():
                    problems.setdefault(url, []).append(f"lien cassé : {link}")
                elif target.suffix == ".html":
                    todo.append(link)  # navigate to it too
        assert problems == {}
        assert n_links >= len(pages)  # every page links at least back to the index
        assert {str(p.resolve().as_uri()) for p in pages} <= seen
    finally:
        context.close()


def test_checker_catches_broken_pages(browser, tmp_path):
    page = tmp_path / "index.html"
    page.write_text(
        '<!DOCTYPE html><html lang="fr"><head><meta charset="utf-8"><title>cassée</title>'
        '<script src="https://cdn.example.org/require.js"></script></head><body>'
        '<img src="absente.png"><script>console.error("boum")</script>'
        '<a href="html/absente.html">lien</a></body></html>',
        encoding="utf-8",
    )
    context = browser.new_context(offline=True)
    try:
        problems, links = _check_page(context, page.as_uri())
    finally:
        context.close()
    assert any(p.startswith("requête externe : https://cdn.example.org/require.js") for p in problems)
    assert "console error: boum" in problems
    assert any(p.startswith("image non chargée") for p in problems)
    assert links == [(tmp_path / "html" / "absente.html").as_uri()]
