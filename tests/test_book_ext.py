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
