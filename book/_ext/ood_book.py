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
* **A numbered figure from another page.** MyST-NB pastes another page's output with
  ``{glue:} key`` and ``:doc:``, but its ``glue:figure`` (numbered, captioned, citable) reads only the
  page's own outputs. ``glue:figure`` is given the same ``:doc:`` option: the output stays a pending
  reference that MyST-NB resolves after every page ran, inside a figure numbered like any other;
  the image file is written (the other page may never show it) and ``:alt:`` set on it. Two keys
  (``{glue:figure} wide_key narrow_key``) give one figure two drawings, the first shown on wide
  screens, the second on narrow ones (classes ``ood-wide-only`` / ``ood-narrow-only``, in
  ``_static/ood-book.css``).
* **Citable table numbers.** The tables the notebooks print (pandas, with a caption) are numbered
  page by page in reading order, in the caption's text ("Table 3.") with an anchor (``#table-3``),
  so that a number can be quoted and linked; the prose cites one with ``[Table 3](#table-3)``.
* **No unmarked build of uncommitted code.** A book built from a working tree whose tracked files
  (outside ``results/``) differ from its commit says so at the top of every page; with
  ``OOD_PUBLISH=1`` (the publishing workflow) such a build stops instead. The footer names the
  commit the book was built from.
* **Where it lives.** With ``OOD_REPOSITORY_URL`` (and ``OOD_REPOSITORY_BRANCH``, default ``main``)
  set, as the publishing workflow sets them, the header gets the repository and issue buttons, every
  chapter a Binder launch button (the chapters are jupytext ``.py`` notebooks, which Binder's
  JupyterLab opens with jupytext from the lock; Colab opens only ``.ipynb`` files from a repository,
  so it gets none), and the footer a link to the repository. A local build has no address to point to.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from binascii import a2b_base64
from collections import Counter
from pathlib import Path
from typing import Any

from pybtex.plugin import register_plugin
from pybtex.style.formatting.plain import Style as PlainStyle
from pybtex.style.labels import BaseLabelStyle
from docutils import nodes
from docutils.parsers.rst import directives as spec
from myst_nb.ext.glue.directives import PasteFigureDirective
from myst_nb.ext.glue.utils import PendingGlueReferenceError, create_pending_glue_ref, glue_warning
from sphinx.application import Sphinx
from sphinx.errors import ExtensionError
from sphinx.transforms.post_transforms import SphinxPostTransform

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


class PasteFigureFromDoc(PasteFigureDirective):
    """``glue:figure`` that also takes ``:doc:`` (the page that glued the output)."""

    option_spec = {**PasteFigureDirective.option_spec, "doc": spec.unchanged}

    def run(self) -> list:
        if "doc" not in self.options:
            return super().run()
        keys = self.arguments[0].split()
        if len(keys) > 2:
            return [glue_warning("glue:figure takes one key, or two (wide and narrow screens)", self.document, self.line)]
        try:
            refs = [create_pending_glue_ref(self.document, self.source, self.line, self.options["doc"], k) for k in keys]
        except PendingGlueReferenceError as exc:
            return [glue_warning(str(exc), self.document, self.line)]
        if len(refs) == 2:
            refs = [nodes.container("", r, classes=[c]) for r, c in zip(refs, ("ood-wide-only", "ood-narrow-only"))]
        figure = nodes.figure("", *refs)
        self.set_source_info(figure)
        if "figwidth" in self.options:
            figure["width"] = self.options["figwidth"]
        figure["classes"] += self.options.get("figclass", [])
        if "align" in self.options:
            figure["align"] = self.options["align"]
        if "alt" in self.options:
            figure["ood_alt"] = self.options["alt"]
        self.add_name(figure)
        if self.content:
            parsed = nodes.Element()
            self.state.nested_parse(self.content, self.content_offset, parsed)
            first = parsed[0]
            if not isinstance(first, nodes.paragraph):
                return [figure, glue_warning("Figure caption must be a paragraph.", self.document, self.lineno)]
            caption = nodes.caption(first.rawsource, "", *first.children)
            caption.source, caption.line = first.source, first.line
            figure += caption
            if len(parsed) > 1:
                figure += nodes.legend("", *parsed[1:])
        return [figure]


class WritePastedImages(SphinxPostTransform):
    """The image file of every figure output pasted from another page, before MyST-NB turns the
    pending reference into an image node pointing at it (priority 5): MyST-NB writes an output's
    image only where its own page shows it."""

    default_priority = 4
    formats = ("html",)

    def apply(self, **kwargs: Any) -> None:
        from myst_nb.ext.glue.crossref import read_glue_cache
        from myst_nb.ext.glue.utils import PendingGlueReference

        folder = self.env.mystnb_config.output_folder
        images = Path(self.app.builder.outdir) / self.app.builder.imagedir
        for ref in self.document.findall(PendingGlueReference):
            if ref.get("inline") or not any(isinstance(a, nodes.figure) for a in _ancestors(ref)):
                continue
            png = read_glue_cache(folder, ref.refdoc).get(ref.key, {}).get("data", {}).get("image/png")
            if png:
                raw = a2b_base64(png)
                target = images / f"{hashlib.sha256(raw).hexdigest()}.png"  # MyST-NB's name for it
                if not target.is_file():
                    images.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(raw)


class NumberOutputTables(SphinxPostTransform):
    """"Table N." and the anchor ``table-N`` at the head of every captioned table a cell printed,
    in reading order (after MyST-NB pasted the glued ones, priority 5)."""

    default_priority = 900
    formats = ("html",)

    def apply(self, **kwargs: Any) -> None:
        count = 0

        def number(match: re.Match) -> str:
            nonlocal count
            count += 1
            return f'{match.group(0)}<span class="ood-table-number" id="table-{count}">Table {count}.</span> '

        for node in list(self.document.findall(nodes.raw)):
            if node.get("format") != "html" or "<caption" not in node.astext():
                continue
            text = re.sub(r"<caption\b[^>]*>", number, node.astext())
            node.replace_self(nodes.raw("", text, format="html", classes=list(node.get("classes", []))))


def _ancestors(node: nodes.Node):
    while node.parent is not None:
        node = node.parent
        yield node


class AltOfPastedFigures(SphinxPostTransform):
    """The ``:alt:`` of a ``glue:figure`` with ``:doc:`` set on its image, after MyST-NB pasted it (priority 5)."""

    default_priority = 6

    def apply(self, **kwargs: Any) -> None:
        for figure in self.document.findall(nodes.figure):
            if "ood_alt" in figure:
                for image in figure.findall(nodes.image):
                    image["alt"] = figure["ood_alt"]


PUBLISH_ENV = "OOD_PUBLISH"


def flag_uncommitted(app: Sphinx, config: Any) -> None:
    from ood_lib.findings.study import git_state  # the studies' own record of the tree they ran from

    state = git_state(app.srcdir)
    options = dict(config.html_theme_options or {})
    if state["commit"] != "unknown":
        commit, dirty = state["commit"][:7], state["dirty"]
        if dirty and os.environ.get(PUBLISH_ENV):
            raise ExtensionError(f"refusing to build a book to publish from a working tree with uncommitted changes "
                                 f"(on {commit}): commit them first (or unset {PUBLISH_ENV})")
        if dirty:
            options["announcement"] = (f"Built from commit {commit} with uncommitted changes: its numbers belong to "
                                       "no published version of this book.")
        options["extra_footer"] = options.get("extra_footer", "") + (
            f"<p>Built from commit <code>{commit}</code>{' with uncommitted changes' if dirty else ''}.</p>")
    config.html_theme_options = options


REPOSITORY_ENV, BRANCH_ENV = "OOD_REPOSITORY_URL", "OOD_REPOSITORY_BRANCH"
BINDER = "https://mybinder.org"


def point_at_repository(app: Sphinx, config: Any) -> None:
    url = os.environ.get(REPOSITORY_ENV, "").strip().rstrip("/")
    if not url:
        return
    options = dict(config.html_theme_options or {})
    options.update(repository_url=url, repository_branch=os.environ.get(BRANCH_ENV) or "main", path_to_docs="",
                   use_repository_button=True, use_issues_button=True,
                   launch_buttons={"binderhub_url": BINDER, "notebook_interface": "jupyterlab"})
    options["extra_footer"] = options.get("extra_footer", "") + f'<p>Source, issues and history: <a href="{url}">{url}</a>.</p>'
    config.html_theme_options = options


def setup(app: Sphinx) -> dict:
    app.connect("config-inited", flag_uncommitted)
    app.connect("config-inited", point_at_repository)
    app.add_directive_to_domain("glue", "figure", PasteFigureFromDoc, override=True)  # MyST-NB's glue domain
    app.add_post_transform(WritePastedImages)
    app.add_post_transform(AltOfPastedFigures)
    app.add_post_transform(NumberOutputTables)
    register_plugin("pybtex.style.labels", "author_year", AuthorYearLabelStyle)
    register_plugin("pybtex.style.formatting", "author_year", AuthorYearStyle)
    app.connect("html-page-context", offer_executed_notebook)  # default priority 500: before the theme's 501
    app.connect("html-page-context", tidy_scripts, priority=900)  # after every handler that adds scripts
    return {"parallel_read_safe": True, "parallel_write_safe": True}
