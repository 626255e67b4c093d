"""The book's Sphinx extension (book/_ext/ood_book.py): reference labels, notebook downloads, scripts."""

import sys
from pathlib import Path
from types import SimpleNamespace

from pybtex.database import Entry, Person
from sphinx.builders.html._assets import _JavaScript

from conftest import REPO

sys.path.insert(0, str(REPO / "book" / "_ext"))
import ood_book  # noqa: E402


def entry(key, *authors, year="2021"):
    e = Entry("article", fields={"title": "T", "year": year})
    e.persons["author"] = [Person(a) for a in authors]
    e.key = key
    return e


def test_labels_read_as_the_author_year_citations():
    assert ood_book.author_year_label(entry("a", "Hendrycks, Dan", "Gimpel, Kevin", year="2017")) == \
        "Hendrycks and Gimpel, 2017"
    assert ood_book.author_year_label(entry("b", "Huang, Rui", "Geng, Andrew", "Li, Yixuan")) == "Huang et al., 2021"
    assert ood_book.author_year_label(entry("c", "Srikant, R.")) == "Srikant, 2021"
    assert ood_book.author_year_label(entry("d", "van der Maaten, Laurens", year="2008")) == "van der Maaten, 2008"
    assert ood_book.author_year_label(entry("e", "{Google Research}")) == "Google Research, 2021"


def test_equal_labels_get_a_letter():
    entries = [entry("x", "Sun, Y.", "Guo, C.", "Li, Y."), entry("y", "Sun, Y.", "Ming, Y.", "Li, Y."),
               entry("z", "Sun, Y.", year="2022")]
    assert list(ood_book.AuthorYearLabelStyle().format_labels(entries)) == [
        "Sun et al., 2021a", "Sun et al., 2021b", "Sun, 2022"]


def test_each_script_once_and_no_thebe_loader_when_thebe_is_off():
    app = SimpleNamespace(config=SimpleNamespace(html_theme_options={}))
    body = 'const THEBE_JS_URL = "https://unpkg.com/thebe"'
    scripts = [_JavaScript("_static/a.js"), _JavaScript(None, body="var x = 1"), _JavaScript(None, body=body),
               _JavaScript("_static/sphinx-thebe.js"), _JavaScript(None, body="var x = 1", priority=400)]
    ctx = {"script_files": scripts}
    ood_book.tidy_scripts(app, "p", "page.html", ctx, None)
    assert ctx["script_files"] == scripts[:2]
    app.config.html_theme_options = {"launch_buttons": {"thebe": True}}
    ctx = {"script_files": scripts}
    ood_book.tidy_scripts(app, "p", "page.html", ctx, None)
    assert ctx["script_files"] == scripts[:4]


def test_a_chapter_offers_its_executed_notebook(tmp_path):
    out = tmp_path / "_build" / "html"
    executed = tmp_path / "_build" / "jupyter_execute" / "notebooks" / "01_x.ipynb"
    executed.parent.mkdir(parents=True)
    executed.write_text("{}")
    app = SimpleNamespace(outdir=str(out), env=SimpleNamespace(doc2path=lambda name: Path(f"/src/{name}.py")))
    ctx = {}
    ood_book.offer_executed_notebook(app, "notebooks/01_x", "page.html", ctx, None)
    assert ctx == {"ipynb_source": "notebooks/01_x.ipynb"}
    assert (out / "_sources" / "notebooks" / "01_x.ipynb").read_text() == "{}"
    app.env.doc2path = lambda name: Path(f"/src/{name}.md")  # a prose page: no notebook
    ctx = {}
    ood_book.offer_executed_notebook(app, "book/intro", "page.html", ctx, None)
    assert ctx == {}


def _clone(tmp_path, dirty: bool) -> Path:
    import subprocess

    repo = tmp_path / "book"
    repo.mkdir(parents=True)
    run = lambda *a: subprocess.run(["git", *a], cwd=repo, check=True, capture_output=True)  # noqa: E731
    run("init", "-q")
    (repo / "page.md").write_text("# a page\n")
    run("add", "page.md")
    run("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    if dirty:
        (repo / "page.md").write_text("# a changed page\n")
    return repo


def test_a_build_of_uncommitted_changes_says_so_and_refuses_to_be_published(tmp_path, monkeypatch):
    import pytest
    from sphinx.errors import ExtensionError

    monkeypatch.delenv(ood_book.PUBLISH_ENV, raising=False)
    for dirty in (False, True):
        app = SimpleNamespace(srcdir=str(_clone(tmp_path / str(dirty), dirty)))
        config = SimpleNamespace(html_theme_options={"extra_footer": "<p>licence</p>"})
        ood_book.flag_uncommitted(app, config)
        options = config.html_theme_options
        assert ("announcement" in options) == dirty and "uncommitted" in options.get("announcement", "uncommitted")
        assert options["extra_footer"].startswith("<p>licence</p><p>Built from commit <code>")
    monkeypatch.setenv(ood_book.PUBLISH_ENV, "1")
    ood_book.flag_uncommitted(SimpleNamespace(srcdir=str(tmp_path / "False" / "book")),
                              SimpleNamespace(html_theme_options={}))  # clean: published
    with pytest.raises(ExtensionError, match="uncommitted changes"):
        ood_book.flag_uncommitted(SimpleNamespace(srcdir=str(tmp_path / "True" / "book")),
                                  SimpleNamespace(html_theme_options={}))


def test_the_repository_buttons_and_binder_only_with_an_address(monkeypatch):
    monkeypatch.delenv(ood_book.REPOSITORY_ENV, raising=False)
    config = SimpleNamespace(html_theme_options={})
    ood_book.point_at_repository(SimpleNamespace(), config)
    assert config.html_theme_options == {}  # a local build: nothing points anywhere
    monkeypatch.setenv(ood_book.REPOSITORY_ENV, "https://github.com/someone/ood-gradients/")
    monkeypatch.setenv(ood_book.BRANCH_ENV, "trunk")
    ood_book.point_at_repository(SimpleNamespace(), config)
    o = config.html_theme_options
    assert o["repository_url"] == "https://github.com/someone/ood-gradients" and o["repository_branch"] == "trunk"
    assert o["use_repository_button"] and o["launch_buttons"]["binderhub_url"] == ood_book.BINDER
    assert 'href="https://github.com/someone/ood-gradients"' in o["extra_footer"]
