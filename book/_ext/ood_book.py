"""Sphinx extension for the book's furniture (loaded from ``_config.yml``, ``sphinx.local_extensions``).

* **Author–year reference list.** The text cites author–year ("Huang et al., 2021"); the list of
  references gets the same labels: pybtex formatting style ``author_year`` is ``plain`` (entries
  sorted by author, year, title) with the label style below, chosen by ``bibtex_default_style``.
* **``.ipynb`` download.** A chapter is a jupytext ``.py`` file; the theme offers ``.ipynb`` only
  for Markdown notebooks. For every page MyST-NB executed, the executed notebook is copied next to
  the page's source and offered in the download menu.
* **Each script once.** Two reading passes register sphinx-togglebutton's and sphinx-thebe's inline
  scripts twice; a repeated ``const`` is a JavaScript error on every page. Repeats are dropped,
  and so is sphinx-thebe's loader (with its CDN address) unless live code cells are switched on
  (``launch_buttons.thebe``).
"""

from __future__ import annotations

import re
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

from pybtex.plugin import register_plugin
from pybtex.style.formatting.plain import Style as PlainStyle
from pybtex.style.labels import BaseLabelStyle
from sphinx.application import Sphinx

EXECUTED = "jupyter_execute"  # MyST-NB's folder of executed notebooks, beside the HTML folder


def _last_name(person: Any) -> str:
    """A person's last name(s) as plain text, BibTeX braces and accents' markup removed."""
    return re.sub(r"[{}\\]", "", " ".join(person.prelast_names + person.last_names))


def author_year_label(entry: Any) -> str:
    """"Hendrycks and Gimpel, 2017", "Huang et al., 2021": the in-text author–year citation."""
    persons = entry.persons.get("author") or entry.persons.get("editor") or []
    names = [_last_name(p) for p in persons]
    if not names:
        who = entry.fields.get("title", entry.key)
    elif len(names) == 1:
        who = names[0]
    elif len(names) == 2:
        who = f"{names[0]} and {names[1]}"
    else:
        who = f"{names[0]} et al."
    return f"{who}, {entry.fields.get('year', 'n.d.')}"


class AuthorYearLabelStyle(BaseLabelStyle):
    """Author–year labels; equal labels get a, b, … after the year, in list order."""

    def format_labels(self, sorted_entries):
        entries = list(sorted_entries)
        labels = [author_year_label(e) for e in entries]
        repeated = {lab for lab, n in Counter(labels).items() if n > 1}
        seen: Counter = Counter()
        for lab in labels:
            if lab in repeated:
                seen[lab] += 1
                yield lab + "abcdefghijklmnopqrstuvwxyz"[seen[lab] - 1]
            else:
                yield lab


class AuthorYearStyle(PlainStyle):
    """pybtex's ``plain`` entries with author–year labels."""

    default_label_style = "author_year"


def offer_executed_notebook(app: Sphinx, pagename: str, templatename: str, context: dict, doctree) -> None:
    """Copy ``jupyter_execute/<page>.ipynb`` into ``_sources`` and name it in the page context,
    where the theme's download menu (a later handler) looks for it."""
    if Path(app.env.doc2path(pagename)).suffix != ".py":
        return
    executed = Path(app.outdir).parent / EXECUTED / f"{pagename}.ipynb"
    if not executed.is_file():
        return
    target = Path(app.outdir) / "_sources" / f"{pagename}.ipynb"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(executed, target)
    context["ipynb_source"] = f"{pagename}.ipynb"


def tidy_scripts(app: Sphinx, pagename: str, templatename: str, context: dict, doctree) -> None:
    """Each script of the page once; sphinx-thebe's scripts only where thebe is switched on."""
    thebe = bool(app.config.html_theme_options.get("launch_buttons", {}).get("thebe"))
    seen, kept = set(), []
    for js in context.get("script_files", []):
        attributes = getattr(js, "attributes", {})
        key = (str(getattr(js, "filename", js)), tuple(sorted(attributes.items())))
        is_thebe = "sphinx-thebe" in key[0] or "THEBE_JS_URL" in attributes.get("body", "")
        if key not in seen and (thebe or not is_thebe):
            kept.append(js)
        seen.add(key)
    context["script_files"] = kept


def setup(app: Sphinx) -> dict:
    register_plugin("pybtex.style.labels", "author_year", AuthorYearLabelStyle)
    register_plugin("pybtex.style.formatting", "author_year", AuthorYearStyle)
    app.connect("html-page-context", offer_executed_notebook)  # default priority 500: before the theme's 501
    app.connect("html-page-context", tidy_scripts, priority=900)  # after every handler that adds scripts
    return {"parallel_read_safe": True, "parallel_write_safe": True}
