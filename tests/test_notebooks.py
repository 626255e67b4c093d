"""The notebooks: each is a canonical jupytext pair with one parameters cell; the book build (its
own pytest run, marker ``book``) executes each once at its default size, with warnings as errors,
and every key the prose pastes was glued; on CIFAR-10 (where the real data is) papermill runs them
with other parameters. Glued numbers are checked finite inside the kernel (``ood_lib.book.glue``
fails the cell), so a build or run that succeeds glued no NaN."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, SHARED_DATA, needs_shared_data

sys.path.insert(0, str(REPO / "tools"))
import run_notebook  # noqa: E402

NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]*_*.py"))
CIFAR = {  # small sizes: the run checks that the chapters work on real data, not their numbers
    "01_gradient_closed_forms": {"N_VERIFY": 2},
    "02_feature_norm_output": {"N_ID": 128, "N_OOD": 64},
    "03_evaluation": {"REAL": "cifar10", "N_ID": 128, "N_OOD": 64, "N_FIT": 200, "N_BOOT": 50},
    # the same live study (features and scores from the kernels' shared cache), read by the other pages
    "03b_mechanism": {"REAL": "cifar10", "N_ID": 128, "N_OOD": 64, "N_FIT": 200, "N_BOOT": 50},
    "03c_depth": {"REAL": "cifar10", "N_ID": 128, "N_OOD": 64, "N_FIT": 200, "N_BOOT": 50},
    "03d_reference": {"REAL": "cifar10", "N_ID": 128, "N_OOD": 64, "N_FIT": 200, "N_BOOT": 50},
}


@pytest.fixture(scope="module", autouse=True)
def cache(tmp_path_factory, embedded_model_cache):
    """One cache for every kernel of this module, holding the CNN the session trained."""
    folder = tmp_path_factory.mktemp("nbcache")
    shutil.copytree(embedded_model_cache / "models", folder / "models")
    mp = pytest.MonkeyPatch()
    mp.setenv("OOD_CACHE_DIR", str(folder))
    mp.delenv("OOD_DATA_ROOT", raising=False)
    yield folder
    mp.undo()


def referenced_keys(text: str, prefix: str) -> set[str]:
    """Glue keys a text pastes (own keys, or another page's via path::key)."""
    keys = set(re.findall(r"\{glue:(?:text|figure|)\}`(?:[^`]*::)?(" + prefix + r"\w+)", text))
    keys |= set(re.findall(r"```\{glue:(?:figure|)\}\s+(" + prefix + r"\w+)", text))
    return keys


def check_glue(nb_path: Path, values: dict) -> None:
    prefix = nb_path.stem.split("_")[0].join(["nb", "_"])  # 03b_mechanism: nb03b_
    used = referenced_keys(nb_path.read_text(), prefix)
    for page in (REPO / "book").glob("*.md"):
        used |= referenced_keys(page.read_text(), prefix)
    missing = used - set(values)
    assert not missing, f"{nb_path.name}: prose pastes keys that were never glued: {sorted(missing)}"


@needs_shared_data("CIFAR10-JPEG", "test")
@needs_shared_data("weights", "resnet20-12fca82f.th")
@pytest.mark.parametrize("name", sorted(CIFAR))
def test_notebook_on_cifar10(name):
    nb = REPO / "notebooks" / f"{name}.py"
    params = {"BENCHMARK": "cifar10", "DATA_ROOT": str(SHARED_DATA), **CIFAR[name]}
    values = run_notebook.glued(run_notebook.execute(nb, parameters=params))
    check_glue(nb, values)
    if name == "03_evaluation":  # the real benchmark computed live, not read from the recorded results
        # one unit: the embedded run beside it is a sanity run, not a unit of evidence
        assert values["nb03_acc_cifar10"] != "—" and int(values["nb03_n_pairs"]) == 1


def test_every_notebook_is_a_canonical_jupytext_pair(tmp_path):
    shutil.copy(REPO / "jupytext.toml", tmp_path / "jupytext.toml")
    for nb in NOTEBOOKS:
        shutil.copy(nb, tmp_path / nb.name)
    jupytext = Path(sys.executable).with_name("jupytext")
    subprocess.run([str(jupytext), "--sync", *[str(tmp_path / nb.name) for nb in NOTEBOOKS]],
                   check=True, capture_output=True)
    for nb in NOTEBOOKS:
        assert (tmp_path / nb.name).read_text() == nb.read_text(), f"{nb.name} changed on jupytext --sync"
        assert (tmp_path / (nb.stem + ".ipynb")).is_file()


def test_notebooks_have_one_parameters_cell_of_literals():
    import jupytext

    for nb in NOTEBOOKS:
        cells = [c for c in jupytext.read(nb).cells if "parameters" in c.metadata.get("tags", [])]
        assert len(cells) == 1, nb.name
        for line in cells[0].source.splitlines():
            name, _, value = line.partition(" = ")
            assert name.isupper(), line
            __import__("ast").literal_eval(value)


def test_notebooks_glue_through_the_checked_glue():
    """ood_lib.book.glue refuses a non-finite number inside the kernel (tests/test_book.py)."""
    for nb in NOTEBOOKS:
        text = nb.read_text()
        assert "from ood_lib.book import glue" in text and "myst_nb" not in text, nb.name


def hidden_share(path: Path) -> float:
    """The share of a py:percent notebook's code lines (not blank, not comments) in cells tagged remove-cell."""
    code = hidden = 0
    kind, head = None, ""
    for line in path.read_text().splitlines():
        m = re.match(r"# %%(.*)$", line)
        if m:
            head = m.group(1)
            kind = "md" if "[markdown]" in head else "code"
            continue
        if kind == "code" and line.strip() and not line.strip().startswith("#"):
            code += 1
            hidden += "remove-cell" in head
    return hidden / code if code else 0.0


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_a_notebook_shows_most_of_its_code(nb):
    """Bookkeeping is hidden, computation is shown: at most 30 % of a chapter's code lines hidden."""
    assert hidden_share(nb) <= 0.30, f"{nb.name}: {hidden_share(nb):.0%} of its code lines are hidden"


def test_no_function_is_defined_in_a_notebook():
    for nb in NOTEBOOKS:
        assert not re.search(r"^\s*(def|class) ", nb.read_text(), re.M), nb.name


@pytest.mark.book
def test_book_builds_without_warnings(built_book):
    r, out = built_book
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    html = out / "_build" / "html"
    for page in ["book/intro", "book/discussion", "notebooks/03_evaluation", "notebooks/03b_mechanism",
                 "notebooks/03c_depth", "notebooks/03d_reference", "book/appendix_environment"]:
        assert (html / f"{page}.html").is_file(), page
    verdicts = (html / "notebooks" / "03_evaluation.html").read_text()
    assert 'id="table-1">Table 1.</span>' in verdicts and 'id="table-2">Table 2.</span>' in verdicts  # citable numbers
    intro = (html / "book" / "intro.html").read_text()
    assert intro.count('class="pasted-text"') >= 8
    assert len(list((html / "_images").glob("*.png"))) >= 6
    for nb in NOTEBOOKS:  # the build executed each notebook at its default size: check what it glued
        glued = json.loads((out / "_build" / "jupyter_execute" / "notebooks" / f"{nb.stem}.glue.json").read_text())
        check_glue(nb, {k: o["data"].get("text/plain", "<figure>") for k, o in glued.items()})
