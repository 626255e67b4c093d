"""Write ``results/reliability.csv`` and ``results/reliability.md``: the reliability matrix — every bad
input and injected fault the tests try, and what the user gets — that the appendix *Run it on your
own model and data* shows as its table *What bad input gets*.

    python tools/reliability_table.py        # from the repository root, with the test environment

It collects every test that records a matrix row (the ``record`` fixture of ``tests/conftest.py``),
in any test file, runs exactly those, and writes their rows afresh; ``tests/test_trust_cache.py``
fails when the committed table lacks a test that records rows, or holds one that no longer exists.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CSV = REPO / "results" / "reliability.csv"
PYTEST = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q"]


def matrix_tests() -> list[str]:
    """The ids of every collected test that records reliability-matrix rows."""
    with tempfile.TemporaryDirectory() as d:
        ids = Path(d) / "ids.txt"
        subprocess.run([*PYTEST, "--collect-only", "--reliability-ids", str(ids), "tests"], cwd=REPO, check=True,
                       capture_output=True)
        return ids.read_text().splitlines()


def main() -> int:
    tests = matrix_tests()
    CSV.unlink(missing_ok=True)  # rows of tests that no longer exist go too
    return subprocess.run([*PYTEST, "--reliability-csv", str(CSV), *tests], cwd=REPO).returncode


if __name__ == "__main__":
    sys.exit(main())
