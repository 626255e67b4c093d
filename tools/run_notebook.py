"""Execute a jupytext notebook (``notebooks/NN_name.py``) with papermill and list what it glued.

    python tools/run_notebook.py notebooks/02_feature_norm_output.py -p BENCHMARK cifar10 -p DATA_ROOT /data
    python tools/run_notebook.py notebooks/03_evaluation.py -p REAL cifar10 -p DATA_ROOT /data
    python tools/run_notebook.py notebooks/01_gradient_closed_forms.py -o out.ipynb --check-glue

papermill cannot read the ``py:percent`` form directly, so the notebook goes through
``jupytext.read`` first. The notebooks glue through ``ood_lib.book.glue``, which fails the cell on a
non-finite number; ``--check-glue`` also fails when nothing was glued.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path


def _value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    if text in ("True", "False"):
        return text == "True"
    if text == "None":
        return None
    return text


def execute(path: str | Path, out: str | Path | None = None, parameters: dict | None = None,
            timeout: int = 1800):
    """Run the notebook with papermill in its own folder; returns the executed notebook."""
    import jupytext
    import nbformat
    import papermill as pm

    path = Path(path).resolve()
    nb = jupytext.read(path)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / (path.stem + ".ipynb")
        nbformat.write(nb, src)
        dst = Path(out) if out else Path(tmp) / (path.stem + ".out.ipynb")
        pm.execute_notebook(str(src), str(dst), parameters=parameters or {}, cwd=str(path.parent),
                            kernel_name="python3", progress_bar=False, execution_timeout=timeout)
        return nbformat.read(dst, as_version=4)


def glued(nb) -> dict[str, object]:
    """Every key glued with myst_nb.glue, mapped to its plain-text value."""
    out = {}
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            meta = o.get("metadata", {}).get("scrapbook", {})
            if meta.get("name"):
                prefix = meta.get("mime_prefix", "")
                data = {k.removeprefix(prefix): v for k, v in o.get("data", {}).items()}
                out[meta["name"]] = "<figure>" if "image/png" in data else data.get("text/plain")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("notebook")
    p.add_argument("-o", "--out", help="write the executed .ipynb here")
    p.add_argument("-p", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"))
    p.add_argument("--check-glue", action="store_true")
    a = p.parse_args(argv)
    nb = execute(a.notebook, a.out, {k: _value(v) for k, v in a.p})
    values = glued(nb)
    print(json.dumps(values, indent=1))
    if a.check_glue and not values:
        print("nothing was glued", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
