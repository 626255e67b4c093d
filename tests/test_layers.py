"""The package's layers: each top-level entry of ``ood_lib`` is one layer, and imports only go down.

A newcomer reads the tree from the bottom: ``_checks`` and ``cache`` (validation, the on-disk
cache), ``scores`` (closed forms), ``stats`` (metrics, bootstrap), ``models``, ``gradients``
(autograd), ``data`` (files, sources, benchmarks), ``detectors``, ``run`` (features, the runner),
``findings`` (claims, verdicts, the study), ``book`` (tables, figures, glue), ``cli``. The order
is the one the package docstring draws; these tests fail on the first import that climbs.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "ood_lib"
LAYERS = ("_version", "_checks", "cache", "scores", "stats", "models", "gradients", "data", "detectors", "run", "findings",
          "book", "cli", "__main__", "__init__")


def _modules() -> dict[str, Path]:
    out = {}
    for f in sorted(PKG.rglob("*.py")):
        parts = f.relative_to(PKG).with_suffix("").parts
        out[".".join(parts)] = f
    return out


def _imports(name: str, path: Path) -> set[str]:
    """Every ood_lib module ``name`` imports, at module level or inside a function."""
    parts = name.split(".")
    pkg = parts[:-1]  # the package a relative import starts from (a package's __init__ included)
    found = set()
    for n in ast.walk(ast.parse(path.read_text())):
        if isinstance(n, ast.ImportFrom):
            if n.level:
                base = pkg[: len(pkg) - (n.level - 1)]
                mod = [*base, *(n.module.split(".") if n.module else [])]
            elif n.module and n.module.split(".")[0] == "ood_lib":
                mod = n.module.split(".")[1:]
            else:
                continue
            subs = {".".join([*mod, a.name]) for a in n.names}
            if not (n.module is None and all(x in _modules() or x + ".__init__" in _modules() for x in subs)):  # `from . import fused` needs fused alone
                found.add(".".join(mod) or "__init__")
            found.update(subs)
        elif isinstance(n, ast.Import):
            found.update(".".join(a.name.split(".")[1:]) for a in n.names if a.name.split(".")[0] == "ood_lib")
    mods = _modules()
    resolved = set()
    for m in found:
        if m in mods:
            resolved.add(m)
        elif m + ".__init__" in mods:
            resolved.add(m + ".__init__")
    return resolved - {name}


def _layer(module: str) -> int:
    return LAYERS.index(module.split(".")[0])


GRAPH = {m: _imports(m, p) for m, p in _modules().items()}


def test_every_top_level_entry_is_a_layer():
    entries = sorted(p.stem if p.suffix == ".py" else p.name for p in PKG.iterdir()
                     if p.name != "__pycache__" and not p.name.startswith("."))
    assert len(entries) <= 15
    assert set(entries) <= set(LAYERS), set(entries) - set(LAYERS)


def test_imports_only_go_down():
    climbs = [f"{m} imports {d}" for m, ds in GRAPH.items() for d in sorted(ds)
              if not m.startswith(("__init__", "__main__")) and _layer(d) > _layer(m)]
    assert climbs == []


def test_no_import_cycle():
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for d in sorted(GRAPH[m]):
            if state.get(d) == 1:
                return stack[stack.index(d):] + [d]
            if d not in state and (c := visit(d)):
                return c
        state[m] = 2
        stack.pop()
        return None

    for m in sorted(GRAPH):
        if m not in state and not m.endswith("__init__"):
            assert (c := visit(m)) is None, " -> ".join(c)


@pytest.mark.parametrize("module", sorted(_modules()))
def test_modules_and_functions_stay_small(module):
    path = _modules()[module]
    src = path.read_text()
    assert len(src.splitlines()) <= 400, f"{module}: {len(src.splitlines())} lines"
    long = [f"{n.name}: {n.end_lineno - n.lineno + 1} lines" for n in ast.walk(ast.parse(src))
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno - n.lineno + 1 > 60]
    assert long == [], f"{module}: {long}"


def test_the_package_docstring_draws_these_layers():
    import ood_lib

    drawing = [line.split()[0].rstrip("/") for line in ood_lib.__doc__.splitlines() if line.startswith("    ")]
    assert drawing == [layer for layer in reversed(LAYERS[1:13])]  # _checks (with _version) .. cli
    assert len(drawing) <= 20
