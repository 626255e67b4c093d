"""The book as a reader sees it: every page in headless Chromium, offline (tools/browser_check.py).

The checker is first shown to find each kind of problem on small hand-made pages (so a pass on
the book means something), then run on the book built as `make book` builds it (marker ``book``).
Without Chromium these tests skip — and fail under ``OOD_REQUIRE_DATA=1`` (CI), where ``.ci/run``
installs it."""

import base64
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, REQUIRE_DATA_ENV, data_required

sys.path.insert(0, str(REPO / "tools"))
import browser_check  # noqa: E402

PNG_1PX = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")


@pytest.fixture(scope="module")
def chromium():
    binary = browser_check.find_browser()
    if binary is None:
        msg = (f"no Chromium found ({', '.join(browser_check.BROWSERS)} on PATH, or ${browser_check.BROWSER_ENV}); "
               "`apt-get install chromium` (.ci/run does)")
        if data_required():
            pytest.fail(f"{msg}; {REQUIRE_DATA_ENV}=1 forbids skipping", pytrace=False)
        pytest.skip(msg)
    return binary


def page(body: str, head: str = "") -> str:
    return (f"<!doctype html><html><head><meta charset='utf-8'>{head}</head><body>"
            f"<main><article class='bd-article' style='width:600px'>{body}</article></main></body></html>")


@pytest.fixture
def site(tmp_path):
    """A tiny built "book": write pages with ``site(name, body, head)``; returns the folder."""
    html = tmp_path / "html"
    (html / "sub").mkdir(parents=True)
    (html / "dot.png").write_bytes(PNG_1PX)
    (html / "index.html").write_text(page("<p id='top'>Home, <a href='sub/other.html#sec'>other</a></p>"))
    (html / "sub" / "other.html").write_text(page(
        "<h1 id='sec'>Other</h1><p>Prose with <img src='../dot.png' alt='a dot'> and "
        "<a href='../index.html#top'>a link back</a>.</p><pre>code may say \\( or $$</pre>"))

    def write(name: str, body: str, head: str = "") -> Path:
        (html / name).write_text(page(body, head))
        return html

    write.root = html
    return write


def test_a_clean_book_passes_and_each_page_is_photographed(chromium, site, tmp_path):
    shots = tmp_path / "shots"
    assert browser_check.check_book(site.root, screenshots=shots, browser=chromium) == []
    assert sorted(p.name for p in shots.iterdir()) == ["index.png", "sub__other.png"]
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in shots.iterdir())


PROBLEMS = [
    ("raw-tex", "<p>The score \\(U(h)\\) is a norm.</p>", ""),
    ("raw-tex", "<p>$$\\sum_k p_k$$</p>", ""),
    ("js-error", "<p>x</p><script>const A = 1;</script><script>const A = 2;</script>", ""),
    ("js-error", "<p>x</p><script>console.error('broken')</script>", ""),
    ("network", "<p>x</p>", "<script src='https://cdn.example.org/mathjax.js'></script>"),
    ("resource", "<p>x</p>", "<link rel='stylesheet' href='missing.css'>"),
    ("too-wide", "<table style='width:900px'><tr><td>a wide table</td></tr></table>", ""),
    ("scrolls", "<pre style='overflow-x:auto'>" + "x" * 300 + "</pre>", ""),
    ("image", "<img src='missing.png' alt='gone'>", ""),
    ("link", "<a href='nowhere.html'>a missing page</a>", ""),
    ("link", "<a href='sub/other.html#no-such-anchor'>a missing anchor</a>", ""),
    ("too-long", f"<div style='height: {(browser_check.MAX_SCREENS + 1) * 900}px'>a page longer than the limit</div>", ""),
    ("not-cited", "<figure id='fig-lonely'><img src='dot.png' alt='a dot'><figcaption><span class='caption-number'>"
                  "Fig. 1 </span>A figure no link points to <a class='headerlink' href='#fig-lonely'>#</a></figcaption>"
                  "</figure>", ""),
    ("alt", "<figure><img src='dot.png' alt='x.png'></figure>", ""),
    ("not-cited", "<p>Some prose.</p><div class='cell'><table><caption><span class='ood-table-number' id='table-1'>"
                  "Table 1.</span> A table nothing introduces</caption><tr><td>1</td></tr></table></div>", ""),
]


def test_each_kind_of_problem_is_found(chromium, site):
    """One page per kind of problem, all in one browser run: each page shows exactly its own problem."""
    for i, (_kind, body, head) in enumerate(PROBLEMS):
        site(f"bad{i:02d}.html", body, head)
    problems = browser_check.check_book(site.root, browser=chromium)
    got = sorted((p.page, p.kind) for p in problems)
    assert got == [(f"bad{i:02d}.html", kind) for i, (kind, _b, _h) in enumerate(PROBLEMS)], problems


def test_the_bundled_mathjax_typesets_offline(chromium, site):
    """The renderer the book ships (sphinx-mathjax-offline's MathJax 3) leaves no TeX behind."""
    spec = importlib.util.find_spec("sphinx-mathjax-offline")
    assert spec is not None, "sphinx-mathjax-offline is not installed (it is in requirements.txt)"
    shutil.copytree(Path(spec.origin).parent / "static" / "mathjax", site.root / "mathjax")
    html = site("math.html", "<p>Inline \\(\\lVert h\\rVert_1 \\max_k p_k\\)</p><p>\\[\\sum_k p_k = 1\\]</p>",
                "<script defer src='mathjax/tex-chtml.js'></script>")
    assert browser_check.check_book(html, browser=chromium) == []


def test_a_missing_book_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="make book"):
        browser_check.check_book(tmp_path)


@pytest.mark.book
def test_the_built_book_reads_well_offline(chromium, built_book):
    """Every page: math typeset, no JavaScript error, nothing from the network, nothing wider than
    the column at 1,280 px, every image and local link resolves. Screenshots: _build/screenshots/."""
    r, out = built_book
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    built_book = out / "_build" / "html"
    shots = REPO / "_build" / "screenshots"
    problems = browser_check.check_book(built_book, screenshots=shots, browser=chromium)
    shown = [p for p in browser_check.pages(built_book) if browser_check.redirect_target(p) is None]
    assert len(list(shots.glob("*.png"))) >= len(shown)  # a redirect stub (index.html) is followed, not shown
    assert not problems, f"{len(problems)} problems a reader would see:\n" + browser_check.summary(problems)


def test_a_redirect_stub_is_followed_not_loaded(chromium, site):
    site("target.html", "<p>the page</p>", "")
    (site.root / "index.html").write_text('<meta http-equiv="Refresh" content="0; url=target.html" />')
    assert browser_check.check_book(site.root, browser=chromium) == []
    (site.root / "index.html").write_text('<meta http-equiv="Refresh" content="0; url=gone.html" />')
    assert [(p.page, p.kind) for p in browser_check.check_book(site.root, browser=chromium)] == [("index.html", "link")]
