"""Shared fixtures and the rules of every test session. Tests import the *installed* ood_lib
(see test_package.py).

* Offline: every Python process of the run (this one, CLI subprocesses, notebook kernels, worker
  processes) may open AF_UNIX sockets and talk to loopback addresses only (``tests/offline``); any
  other attempt raises there and fails the session here, even if the code under test caught it.
* Real data: tests marked with :func:`needs_shared_data` skip where the data is absent — and fail
  instead when ``OOD_REQUIRE_DATA=1`` (CI), so a missing data root cannot pass silently.
* Trained models: each small CNN is trained once per session (:func:`_train_once`); a test that
  asks for ``real_training`` trains for real.
* The reliability matrix: each row printed with its test's outcome, failures counted; with
  ``--reliability-csv PATH`` its rows are also written (for the book's appendix, see
  ``tools/reliability_table.py``), and ``--reliability-ids PATH`` lists the tests that record rows.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import csv
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from torch import nn

from ood_lib.models import FeatureModel

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("OOD_TEST_DATA", REPO.parent / "shared" / "data"))
RESNET20 = SHARED_DATA / "weights" / "resnet20-12fca82f.th"
REQUIRE_DATA_ENV = "OOD_REQUIRE_DATA"
OFFLINE_DIR = Path(__file__).resolve().parent / "offline"
OFFLINE_LOG_ENV = "OOD_OFFLINE_LOG"
# pytest-xdist (`make test` runs two workers): the worker's name ("gw0", …), None in a plain run.
# The workers share with the controller the offline log, a folder for the reliability rows, the
# trained CNN and the built book (built by the first worker that needs it, read by the others).
WORKER = os.environ.get("PYTEST_XDIST_WORKER")
RELIABILITY_DIR_ENV = "OOD_RELIABILITY_DIR"


def pytest_configure(config):
    config.addinivalue_line("markers", "shared_data(path): needs this path under the real test data folder")
    config.addinivalue_line("markers", "book: builds the whole book (first in `make test`, on one worker)")
    config.addinivalue_line("markers", "reproduce: recomputes a recorded result in full (`make reproduce`, not `make test`)")
    # offline for this process and, via sitecustomize on PYTHONPATH, for every Python child; an
    # xdist worker writes to its controller's log, which fails the run as its own attempts would
    if WORKER and Path(os.environ.get(OFFLINE_LOG_ENV, "/nonexistent")).is_file():
        config.stash[_LOG] = Path(os.environ[OFFLINE_LOG_ENV])
        return
    log = Path(tempfile.mkdtemp(prefix="ood-offline-")) / "attempts.log"
    log.touch()
    os.environ[OFFLINE_LOG_ENV] = str(log)
    os.environ[RELIABILITY_DIR_ENV] = tempfile.mkdtemp(prefix="ood-reliability-")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(OFFLINE_DIR), os.environ.get("PYTHONPATH")]))
    spec = importlib.util.spec_from_file_location("ood_offline_guard", OFFLINE_DIR / "sitecustomize.py")
    guard = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(guard)  # installs the guard: the environment variable is set
    config.stash[_LOG] = log


_LOG = pytest.StashKey[Path]()


def _attempts(config) -> list[str]:
    log = config.stash.get(_LOG, None)
    return log.read_text().splitlines() if log is not None and log.is_file() else []


def pytest_unconfigure(config):
    log = config.stash.get(_LOG, None)
    if log is not None and not WORKER:
        log.unlink(missing_ok=True)
        log.parent.rmdir()
        shutil.rmtree(os.environ.get(RELIABILITY_DIR_ENV, ""), ignore_errors=True)


def pytest_sessionfinish(session, exitstatus):
    if WORKER and os.environ.get(RELIABILITY_DIR_ENV):  # this worker's matrix rows, for the controller
        (Path(os.environ[RELIABILITY_DIR_ENV]) / f"{WORKER}.json").write_text(
            json.dumps({"rows": RELIABILITY, "skipped": SKIPPED}))
    if _attempts(session.config) and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


# --- real data -----------------------------------------------------------------------------
def needs_shared_data(*parts: str):
    """Mark a test as reading ``SHARED_DATA/<parts>``: skipped where absent, failed with OOD_REQUIRE_DATA=1."""
    return pytest.mark.shared_data(SHARED_DATA.joinpath(*parts))


def data_required() -> bool:
    return os.environ.get(REQUIRE_DATA_ENV, "") not in ("", "0")


def pytest_runtest_setup(item):
    for mark in item.iter_markers("shared_data"):
        path = Path(mark.args[0])
        if path.exists():
            continue
        msg = f"real test data not found at {path} (set OOD_TEST_DATA to a folder laid out like shared/data)"
        if data_required():
            pytest.fail(f"{msg}; {REQUIRE_DATA_ENV}=1 forbids skipping", pytrace=False)
        pytest.skip(msg)


# --- models ----------------------------------------------------------------------------------
def _state_hash(model: nn.Module) -> str:
    d = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        d.update(name.encode() + t.detach().cpu().contiguous().numpy().tobytes())
    return d.hexdigest()


_TRAINED: dict[tuple, dict] = {}


def _train_once_per_session(real):
    """``real`` (ood_lib.models.train.train_classifier) run once per (architecture, initial weights,
    training data, settings); later calls load the weights that run produced. Training is
    deterministic (a test with ``real_training`` retrains and compares), so this changes time,
    not results."""

    def once(model, dataset, **kw):
        fp = getattr(dataset, "fingerprint", None)
        if fp is None:
            return real(model, dataset, **kw)
        settings = tuple(sorted((k, v) for k, v in kw.items() if k not in ("progress", "desc")))
        key = (type(model).__qualname__, _state_hash(model), fp(), settings)
        if key not in _TRAINED:
            _TRAINED[key] = copy.deepcopy(real(model, dataset, **kw).state_dict())
        model.load_state_dict(_TRAINED[key])
        return model.eval()

    once.__wrapped__ = real
    return once


@pytest.fixture(autouse=True)
def _train_once(monkeypatch):
    import ood_lib.models.train as T

    monkeypatch.setattr(T, "train_classifier", _train_once_per_session(T.train_classifier))


@pytest.fixture
def real_training(monkeypatch, _train_once):
    """From here on, this test trains for real."""
    import ood_lib.models.train as T

    monkeypatch.setattr(T, "train_classifier", T.train_classifier.__wrapped__)


def _run_dir(tmp_path_factory) -> Path:
    """A folder of this run that every xdist worker sees (the base temporary folder's parent is
    the run's, shared by the workers); in a plain run, the session's own."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if WORKER else base


@contextmanager
def _one_at_a_time(path: Path):
    """Held by one process of the run at a time (a lock file beside ``path``)."""
    from filelock import FileLock

    with FileLock(f"{path}.lock"):
        yield


@pytest.fixture(scope="session")
def embedded_model_cache(tmp_path_factory):
    """A cache folder holding the embedded benchmark's trained CNN (trained once per session). With
    ``$OOD_TEST_CACHE`` (``make test`` sets one folder for its workers) the folder is that one: the
    first worker to need the CNN trains it, the others (and the book build) read it (a
    self-checking cache entry)."""
    import ood_lib.models.train as T
    from ood_lib.data.benchmarks import get_benchmark

    shared = os.environ.get("OOD_TEST_CACHE")
    folder = Path(shared) if shared else _run_dir(tmp_path_factory) / "models-cache"
    folder.mkdir(parents=True, exist_ok=True)
    with _one_at_a_time(folder / "train"), pytest.MonkeyPatch.context() as mp:  # xdist: one worker trains
        mp.setattr(T, "train_classifier", _train_once_per_session(T.train_classifier))
        get_benchmark("embedded").load_model(cache_dir=folder)
    return folder


class TinyNet(FeatureModel):
    """A random conv net whose features may be negative (no final ReLU) — the general case."""

    head_name = "head_layer"

    def __init__(self, classes: int = 5, dim: int = 7, relu_features: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.body = nn.Linear(4 * 4 * 4, dim)
        self.head_layer = nn.Linear(dim, classes)
        self.relu_features = relu_features

    def features(self, x: torch.Tensor) -> torch.Tensor:
        h = self.body(torch.tanh(self.conv(x)).flatten(1))
        return torch.relu(h) if self.relu_features else h


@pytest.fixture
def tiny_model():
    def make(classes: int = 5, dim: int = 7, seed: int = 0, relu_features: bool = False):
        torch.manual_seed(seed)
        return TinyNet(classes, dim, relu_features).double().eval()

    return make


@pytest.fixture
def tiny_images():
    def make(n: int = 6, seed: int = 1):
        g = torch.Generator().manual_seed(seed)
        return torch.randn(n, 2, 4, 4, generator=g, dtype=torch.float64)

    return make


@pytest.fixture
def cache_dir(tmp_path):
    return tmp_path / "cache"


# --- the reliability matrix: every bad input tried and fault injected, with its outcome ---
RELIABILITY: dict[str, dict] = {}  # test id -> {"rows": [(kind, case, outcome)], "outcome": ...}


@pytest.fixture
def record(request):
    """record(kind, case, outcome): one row of the reliability matrix printed after the run."""
    entry = RELIABILITY.setdefault(request.node.nodeid, {"rows": [], "outcome": "not run"})

    def add(kind: str, case: str, outcome: str) -> None:
        entry["rows"].append((kind, case, outcome))

    return add


SKIPPED: dict[str, str] = {}  # test id -> why, for matrix tests skipped before recording a row


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    rep = yield
    if rep.skipped and "record" in getattr(item, "fixturenames", ()) and item.nodeid not in RELIABILITY:
        longrepr = rep.longrepr
        SKIPPED[item.nodeid] = str(longrepr[2] if isinstance(longrepr, tuple) else longrepr).removeprefix("Skipped: ")
    entry = RELIABILITY.get(item.nodeid)
    if entry is not None:
        if rep.failed:
            entry["outcome"] = "failed"
        elif rep.skipped:
            entry["outcome"] = "skipped"
        elif rep.when == "call" and entry["outcome"] == "not run":
            entry["outcome"] = "passed"
    return rep


def reliability_lines(entries: dict[str, dict]) -> list[str]:
    """The matrix: one line per row with its test's outcome, then the counts. A test that failed
    before recording its row still gets one (named by its test id)."""
    rows = []
    for nodeid, e in entries.items():
        for kind, case, outcome in e["rows"] or [("?", nodeid.split("::")[-1], "(no row recorded)")]:
            rows.append((kind, case, outcome, e["outcome"]))
    if not rows:
        return []
    width = max(len(c) for _, c, _, _ in rows)
    lines = [f"{'ok' if st == 'passed' else st.upper():8s} {kind:10s} {case:{width}s}  {out}"
             for kind, case, out, st in rows]
    kinds = sorted({k for k, _, _, _ in rows})
    counts = ", ".join(f"{sum(1 for k, *_ in rows if k == kind)} {kind}" for kind in kinds)
    bad = sum(1 for *_, st in rows if st != "passed")
    lines.append(f"{counts}: " + ("all handled (each row above is a passing test)" if bad == 0 else
                                  f"{bad} of {len(rows)} NOT handled (failed or not run)"))
    return lines


# --- the matrix as a file: the appendix's table ------------------------------------------------
RELIABILITY_FIELDS = ("test", "kind", "case", "outcome", "status")
_TMP = re.compile(r"/tmp/pytest-of-[^/\s']+/pytest-\d+/[^/\s']+")  # run-specific folders: not content


def pytest_addoption(parser):
    parser.addoption("--reliability-csv", metavar="PATH", default=None,
                     help="write the reliability matrix's rows into this CSV (rows of tests not run are kept) "
                          "and the Markdown table beside it (.md)")
    parser.addoption("--reliability-ids", metavar="PATH", default=None,
                     help="write the ids of the collected tests that record matrix rows to this file")


def pytest_collection_modifyitems(config, items):
    # the book build (minutes) first: under xdist one worker builds it while the other runs the rest
    items.sort(key=lambda i: i.get_closest_marker("book") is None)
    path = config.getoption("--reliability-ids")
    if path:
        Path(path).write_text("".join(f"{i.nodeid}\n" for i in items if "record" in getattr(i, "fixturenames", ())))


def _clean(text: str) -> str:
    return _TMP.sub("<tmp>", str(text)).replace(str(REPO) + "/", "")


def session_rows() -> list[dict[str, str]]:
    """The matrix rows of this session, one dict per row (fields :data:`RELIABILITY_FIELDS`)."""
    rows = []
    for nodeid, e in RELIABILITY.items():
        for kind, case, outcome in e["rows"] or [("?", nodeid.split("::")[-1], "(no row recorded)")]:
            rows.append({"test": nodeid, "kind": kind, "case": _clean(case), "outcome": _clean(outcome),
                         "status": e["outcome"]})
    rows += [{"test": t, "kind": "skipped", "case": t.split("::")[-1], "outcome": _clean(why), "status": "skipped"}
             for t, why in SKIPPED.items()]
    return rows


def read_reliability(path: Path) -> list[dict[str, str]]:
    """The rows of a reliability CSV (none if the file is absent)."""
    return list(csv.DictReader(io.StringIO(path.read_text()))) if path.is_file() else []


def reliability_markdown(rows: list[dict[str, str]]) -> str:
    """The appendix's table: what each bad input or fault gets the user (passing and skipped rows)."""
    def cell(text: str) -> str:
        return re.sub(r"([\\`*_|<>\[\]$])", r"\\\1", text)

    lines = ["| Kind | Case | What the user gets |", "|---|---|---|"]
    lines += [f"| {cell(r['kind'])} | {cell(r['case'])} | {cell(r['outcome'])} |" for r in rows]
    return "\n".join(lines) + "\n"


def write_reliability(path: Path, rows: list[dict[str, str]]) -> None:
    """Merge ``rows`` into the CSV at ``path`` (a test's old rows are replaced by its new ones; other
    tests' rows are kept), ordered by test file, and write the Markdown table beside it."""
    ran = {r["test"] for r in rows}
    merged = [r for r in read_reliability(path) if r["test"] not in ran] + rows
    merged.sort(key=lambda r: r["test"].split("::")[0])  # stable: a file's rows keep their order
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=RELIABILITY_FIELDS, lineterminator="\n")
    w.writeheader()
    w.writerows(merged)
    path.write_text(buf.getvalue())
    path.with_suffix(".md").write_text(reliability_markdown(merged))


def _workers_rows() -> None:
    """Under xdist, the controller's matrix is the workers' rows (each wrote its own at its end)."""
    folder = os.environ.get(RELIABILITY_DIR_ENV)
    for f in sorted(Path(folder).glob("gw*.json")) if folder and not WORKER else []:
        got = json.loads(f.read_text())
        RELIABILITY.update({k: {"rows": [tuple(r) for r in v["rows"]], "outcome": v["outcome"]}
                            for k, v in got["rows"].items()})
        SKIPPED.update(got["skipped"])


def pytest_terminal_summary(terminalreporter, config):
    _workers_rows()
    out = config.getoption("--reliability-csv", None)
    if out and (RELIABILITY or SKIPPED):
        write_reliability(Path(out), session_rows())
    tr = terminalreporter
    lines = reliability_lines(RELIABILITY)
    if lines:
        tr.section("reliability matrix")
        for line in lines:
            tr.write_line(line)
    attempts = _attempts(config)
    if attempts:
        tr.section("network access attempted (blocked; the run fails)", red=True)
        for line in attempts:
            tr.write_line(line)


@pytest.fixture(scope="session")
def built_book(tmp_path_factory, embedded_model_cache):
    """The book built once per session as `make book` builds it (embedded default, no data root,
    warnings as errors): ``(completed process, output folder)``; the book tests read it."""
    out = _run_dir(tmp_path_factory) / "book"
    done = out / "build.json"  # the build's outcome, for the workers that did not run it
    with _one_at_a_time(out):
        if not done.is_file():
            cache = out / "cache"
            shutil.copytree(embedded_model_cache / "models", cache / "models")  # the CNN trained once for all tests
            env = {k: v for k, v in os.environ.items() if k != "OOD_DATA_ROOT"} | {"OOD_CACHE_DIR": str(cache)}
            jb = Path(sys.executable).with_name("jupyter-book")
            r = subprocess.run([str(jb), "build", "-W", "-n", "--keep-going", "--path-output", str(out), str(REPO)],
                               capture_output=True, text=True, env=env)
            done.write_text(json.dumps({"args": r.args, "returncode": r.returncode, "stdout": r.stdout,
                                        "stderr": r.stderr}))
    r = json.loads(done.read_text())
    return subprocess.CompletedProcess(r["args"], r["returncode"], r["stdout"], r["stderr"]), out
