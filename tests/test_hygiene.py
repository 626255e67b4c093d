"""The rules of the test session hold: nothing reaches the network, importing ood_lib has no side
effects, a missing data root fails CI, and the reliability matrix counts failures."""

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest

import conftest
from conftest import OFFLINE_LOG_ENV, REPO


@pytest.fixture
def probe_log(tmp_path, monkeypatch):
    """Blocked attempts of a probe go to their own log, not to the session's (which fails the run)."""
    log = tmp_path / "probe.log"
    monkeypatch.setenv(OFFLINE_LOG_ENV, str(log))
    return log


def test_network_is_blocked_in_this_process(probe_log):
    with pytest.raises(OSError, match="network access blocked"):
        socket.create_connection(("192.0.2.1", 80), timeout=1)  # TEST-NET-1: never routed
    with pytest.raises(OSError, match="network access blocked"):
        socket.getaddrinfo("pypi.org", 443)
    with pytest.raises(OSError, match="network access blocked"):
        socket.gethostbyaddr("192.0.2.1")
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as udp, pytest.raises(OSError, match="blocked"):
        udp.sendto(b"x", ("2001:db8::1", 53))
    assert len(probe_log.read_text().splitlines()) == 4


def test_loopback_and_unix_sockets_still_work(probe_log):
    """torch.distributed (gloo on 127.0.0.1) and the notebook kernels need these."""
    with socket.create_server(("127.0.0.1", 0)) as srv:
        with socket.create_connection(("127.0.0.1", srv.getsockname()[1]), timeout=5) as c:
            conn, _ = srv.accept()
            c.sendall(b"ok")
            assert conn.recv(2) == b"ok"
            conn.close()
    a, b = socket.socketpair(socket.AF_UNIX)
    a.sendall(b"x")
    assert b.recv(1) == b"x"
    a.close(), b.close()
    assert not probe_log.exists()


def test_network_is_blocked_in_child_processes(probe_log):
    code = "import urllib.request; urllib.request.urlopen('http://pypi.org/simple/', timeout=2)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "network access blocked" in r.stderr, r.stderr[-2000:]
    assert "name lookup 'pypi.org'" in probe_log.read_text()


INNER = '''
import socket
import pytest
from conftest import needs_shared_data

def test_swallows_a_blocked_connection():
    try:
        socket.create_connection(("192.0.2.1", 80), timeout=1)
    except OSError:
        pass

def test_row_that_passes(record):
    record("fault", "a handled case", "detected")

def test_row_that_fails(record):
    assert False
    record("fault", "an unhandled case", "never recorded")

@needs_shared_data("no", "such", "folder")
def test_needs_data():
    pass
'''


def test_session_rules_fail_the_run(tmp_path):
    """A caught network attempt, a failing reliability row and missing data under
    OOD_REQUIRE_DATA=1 each make the run fail, and say so."""
    (tmp_path / "test_inner.py").write_text(INNER)
    env = {**os.environ, "OOD_REQUIRE_DATA": "1", "PYTHONPATH": os.pathsep.join([str(REPO / "tests"),
                                                                                 os.environ.get("PYTHONPATH", "")])}
    env.pop(OFFLINE_LOG_ENV)
    r = subprocess.run([sys.executable, "-m", "pytest", "-p", "conftest", "-p", "no:cacheprovider", "-q",
                        "--rootdir", str(tmp_path), "-c", os.devnull, str(tmp_path / "test_inner.py")],
                       capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    out = r.stdout
    assert r.returncode == 1, out
    assert "network access attempted" in out and "connect ('192.0.2.1', 80)" in out
    assert "FAILED   ?" in out and "1 of 2 NOT handled" in out and "all handled" not in out
    assert "OOD_REQUIRE_DATA=1 forbids skipping" in out
    assert "1 failed, 2 passed, 1 error" in out, out[-1500:]


def test_missing_data_skips_by_default(monkeypatch, tmp_path):
    item = SimpleNamespace(iter_markers=lambda name: [conftest.needs_shared_data("no-such-folder").mark])
    monkeypatch.delenv(conftest.REQUIRE_DATA_ENV, raising=False)
    with pytest.raises(pytest.skip.Exception, match="real test data not found"):
        conftest.pytest_runtest_setup(item)
    monkeypatch.setenv(conftest.REQUIRE_DATA_ENV, "1")
    with pytest.raises(pytest.fail.Exception, match="forbids skipping"):
        conftest.pytest_runtest_setup(item)


IMPORT_ALL = textwrap.dedent('''
    import ast, hashlib, importlib, importlib.util, json, os, pathlib, pkgutil, random, sys, threading, warnings

    # First every third-party module that ood_lib imports at module level (what those do on import
    # is theirs), then the state; then every ood_lib module, then the state again.
    pkg = pathlib.Path(importlib.util.find_spec("ood_lib").submodule_search_locations[0])
    third = set()
    def walk(body):
        for node in body:
            if isinstance(node, ast.Import):
                third.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                third.update([node.module] + [f"{node.module}.{a.name}" for a in node.names])
            elif isinstance(node, (ast.If, ast.Try)):
                walk(node.body + getattr(node, "orelse", []) + getattr(node, "finalbody", [])
                     + [n for h in getattr(node, "handlers", []) for n in h.body])
    for f in pkg.rglob("*.py"):
        walk(ast.parse(f.read_text()).body)
    for name in sorted(m for m in third if m.split(".")[0] not in ("ood_lib", "__future__")):
        try:
            importlib.import_module(name)
        except ModuleNotFoundError:
            pass  # a name imported from a module, not a module
    import numpy as np, torch, matplotlib

    def files():
        out = []
        for top in (os.getcwd(), os.environ["HOME"]):
            for d, _, names in os.walk(top):
                out += [os.path.join(d, n) for n in names]
        return sorted(out)

    def state():
        return {
            "files": files(),
            "threads": sorted(t.name for t in threading.enumerate()),
            "torch rng": hashlib.sha256(torch.random.get_rng_state().numpy().tobytes()).hexdigest(),
            "numpy rng": hashlib.sha256(np.random.get_state()[1].tobytes()).hexdigest(),
            "python rng": hash(random.getstate()),
            "warnings filters": repr(warnings.filters),
            "pyplot backend": str(matplotlib.rcParams._get_backend_or_none()),
            "rcParams": hashlib.sha256(repr([(k, matplotlib.rcParams[k]) for k in sorted(dict.keys(matplotlib.rcParams))
                                             if k != "backend"]).encode()).hexdigest(),  # reading it resolves it
            "torch threads": torch.get_num_threads(),
            "torch determinism": torch.are_deterministic_algorithms_enabled(),
            "torch dtype": str(torch.get_default_dtype()),
            "numpy print/err": repr((np.get_printoptions(), np.geterr())),
            "environment": sorted(os.environ.items()),
        }

    before = state()
    import ood_lib
    names = sorted(m.name for m in pkgutil.walk_packages(ood_lib.__path__, "ood_lib.") if m.name != "ood_lib.__main__")
    for n in names:
        importlib.import_module(n)
    after = state()
    print(json.dumps({"modules": names, "third_party": len(third), "changed": {
        k: [str(before[k])[:300], str(after[k])[:300]] for k in before if before[k] != after[k]}}))
''')


def test_importing_every_module_has_no_side_effects(tmp_path):
    """In a fresh process: no pyplot backend or style set, no files written (working folder,
    home, caches), no threads started, no RNG seeded, no warnings filter or setting changed by
    ood_lib's own code (its third-party imports are made first, as the baseline)."""
    (tmp_path / "cwd").mkdir()
    (tmp_path / "home").mkdir()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("XDG_", "MPL", "TORCH_HOME", "OOD_")) and k not in ("HOME",)}
    env["HOME"] = str(tmp_path / "home")
    r = subprocess.run([sys.executable, "-c", IMPORT_ALL], capture_output=True, text=True, env=env,
                       cwd=tmp_path / "cwd", timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert {"ood_lib.scores", "ood_lib.run.features", "ood_lib.data", "ood_lib.run.evaluate", "ood_lib.book"} <= set(got["modules"])
    assert got["third_party"] > 10
    assert got["changed"] == {}, got["changed"]


def test_the_guard_is_installed_for_this_session():
    assert getattr(socket, "_ood_offline", False) and os.environ.get(OFFLINE_LOG_ENV)
    assert str(Path(conftest.OFFLINE_DIR)) in os.environ["PYTHONPATH"].split(os.pathsep)


def test_the_session_trains_each_cnn_once(embedded_model_cache):
    """The trained CNN came through the session's memo (so later requests reuse it)."""
    assert any(key[0] == "MnistCNN" for key in conftest._TRAINED), list(conftest._TRAINED)
    assert sorted(p.suffix for p in (embedded_model_cache / "models").iterdir()) == [".pt"]
