"""Nothing on disk or on the command line is trusted: cache entries are checked against their
checksums, cached models against their fingerprints, feature keys against the model's code, and
every option before any work starts. Each case is a row of the reliability matrix."""

import errno
import importlib.util
import os
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from ood_lib import OODInputError
from ood_lib.data.benchmarks import get_benchmark, mnist_array_transform
from ood_lib.cache import atomic_write_bytes, read_arrays, write_arrays
from ood_lib.run.config import RunConfig
from ood_lib.data import ArrayImages
from ood_lib.run.evaluate import run_benchmark
from ood_lib.run.features import extract
from ood_lib.stats.metrics import evaluate_scores
from ood_lib.models import FeatureModel, MnistCNN, build_model, load_state_strict

SMALL = dict(n_id=50, n_ood=30, n_fit=100, progress=False)
SMALL_ARGS = ["--n-id", "50", "--n-ood", "30", "--n-fit", "100", "--quiet"]


def _imgs(n: int = 16) -> ArrayImages:
    a = np.random.default_rng(0).integers(0, 256, (n, 28, 28)).astype(np.uint8)
    return ArrayImages(a, np.zeros(n, int), mnist_array_transform())


def _rewrite(path, change) -> None:
    """Rewrite a cache entry with ``change`` applied to its arrays and its metadata kept: a valid
    zip file whose key and format version are right (what a hand edit or a planted file looks like)."""
    with np.load(path) as z:
        d = {k: z[k] for k in z.files}
    change(d)
    with open(path, "wb") as fh:
        np.savez(fh, **d)


def _flip_bit(d: dict) -> None:
    h = d["h"].copy()
    h.view(np.uint8)[5] ^= 0x10
    d["h"] = h


# --- cache entries ---------------------------------------------------------------------------
FEATURE_DAMAGE = {
    "edited by hand": lambda d: d.update(h=d["h"] * 0.5),
    "one bit flipped": _flip_bit,
    "planted (another model's arrays under this key)": lambda d: d.update(
        h=np.random.default_rng(1).normal(size=d["h"].shape).astype(np.float32)),
}


@pytest.mark.parametrize("damage", list(FEATURE_DAMAGE))
def test_tampered_feature_entry_is_a_miss(damage, tmp_path, record):
    torch.manual_seed(0)
    model, ds = MnistCNN().eval(), _imgs()
    good = extract(model, ds, cache_dir=tmp_path, progress=False)
    path = tmp_path / "features" / f"{good.key}.npz"
    _rewrite(path, FEATURE_DAMAGE[damage])
    with pytest.warns(UserWarning, match="checksum of h does not match"):
        again = extract(model, ds, cache_dir=tmp_path, progress=False)
    assert not again.from_cache
    np.testing.assert_array_equal(again.h, good.h)
    record("fault", f"feature cache entry {damage}", "miss, recomputed; warning: the checksum of h does not match")


def test_hand_edited_score_entry_is_a_miss(tmp_path, record, embedded_model_cache):
    shutil.copytree(embedded_model_cache / "models", tmp_path / "models")
    kw = dict(SMALL, cache_dir=tmp_path, methods=["msp"])
    a = run_benchmark("embedded", **kw)
    for p in (tmp_path / "scores").glob("*.npz"):
        _rewrite(p, lambda d: d.update(id_test=np.zeros_like(d["id_test"]) - 1e9))  # MSP AUROC → 0
    with pytest.warns(UserWarning, match="checksum of id_test does not match"):
        b = run_benchmark("embedded", **kw)
    assert not b.from_cache.any()
    cols = ["method", "ood", "auroc", "fpr95"]
    assert a[cols].equals(b[cols])
    record("fault", "score cache entry edited by hand", "miss, recomputed, same table (not AUROC 0)")


def test_entry_without_checksums_is_a_miss(tmp_path, record):
    path = tmp_path / "e.npz"
    write_arrays(path, "k", {"h": np.ones(3)})
    with np.load(path) as z:
        d = {k: z[k] for k in z.files}
    d["meta"] = np.array('{"key": "k", "version": "features-v1"}')
    with open(path, "wb") as fh:
        np.savez(fh, **d)
    with pytest.warns(UserWarning, match="without checksums"):
        assert read_arrays(path, "k", ("h",)) is None
    record("fault", "cache entry without checksums (older, or planted)", "miss, rebuilt")


@pytest.mark.parametrize("swap", ["other weights", "edited weights"])
def test_swapped_cached_model_is_retrained(swap, tmp_path, record):
    bench = get_benchmark("embedded")
    m1 = bench.load_model(cache_dir=tmp_path)
    (path,) = (tmp_path / "models").glob("*.pt")
    if swap == "other weights":
        torch.manual_seed(123)
        torch.save(MnistCNN().state_dict(), path)
    else:  # the file's own key and fingerprint kept, one weight changed
        ck = torch.load(path, weights_only=True)
        state = ck["state_dict"] if isinstance(ck, dict) and "state_dict" in ck else ck
        name = next(k for k, v in state.items() if v.is_floating_point())
        state[name] = state[name] + 1.0
        torch.save(ck, path)
    with pytest.warns(UserWarning, match="retraining"):
        m2 = bench.load_model(cache_dir=tmp_path)
    for a, b in zip(m1.state_dict().values(), m2.state_dict().values()):
        assert torch.equal(a, b)
    record("fault", f"cached trained model: {swap}", "fingerprint differs: retrained, same weights")


# --- the model's code is part of the feature key -------------------------------------------
class Probe(FeatureModel):
    head_name = "fc"

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(28 * 28, 6)
        self.fc = nn.Linear(6, 3)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x.flatten(1))


@pytest.mark.parametrize("method", ["features", "forward_features"])
def test_changed_model_code_invalidates_cached_features(method, tmp_path, monkeypatch, record):
    torch.manual_seed(0)
    model, ds = Probe().eval(), _imgs()
    first = extract(model, ds, cache_dir=tmp_path, progress=False)
    old = getattr(Probe, method)
    if method == "features":
        monkeypatch.setattr(Probe, "features", lambda self, x: 2 * old(self, x))
    else:
        monkeypatch.setattr(Probe, "forward_features", lambda self, x: tuple(2 * t for t in old(self, x)))
    again = extract(model, ds, cache_dir=tmp_path, progress=False)
    assert not again.from_cache and again.key != first.key
    np.testing.assert_allclose(again.h, 2 * first.h, rtol=1e-6)
    record("fault", f"model's {method}() changed, same weights", "new feature key: recomputed")


SOURCE = '''
import torch
from torch import nn
from ood_lib.models import FeatureModel


class Edited(FeatureModel):
    head_name = "fc"

    def __init__(self):
        super().__init__()
        self.body = nn.Linear(28 * 28, 6)
        self.fc = nn.Linear(6, 3)

    def features(self, x):
        return self.body(x.flatten(1)){extra}
'''


def _load_module(path, monkeypatch):
    """Import ``path`` as the module ``edited_model`` (again: the edited file under the same name)."""
    spec = importlib.util.spec_from_file_location("edited_model", path)
    mod = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "edited_model", mod)
    spec.loader.exec_module(mod)
    return mod


def test_edited_model_source_invalidates_cached_features(tmp_path, monkeypatch, record):
    src = tmp_path / "edited_model.py"
    src.write_text(SOURCE.format(extra=""))
    torch.manual_seed(0)
    a = _load_module(src, monkeypatch).Edited().eval()
    ds = _imgs()
    first = extract(a, ds, cache_dir=tmp_path / "cache", progress=False)
    src.write_text(SOURCE.format(extra=".relu()"))
    b = _load_module(src, monkeypatch).Edited().eval()
    b.load_state_dict(a.state_dict())
    again = extract(b, ds, cache_dir=tmp_path / "cache", progress=False)
    assert not again.from_cache
    np.testing.assert_allclose(again.h, np.maximum(first.h, 0), rtol=1e-6)
    record("fault", "model's source file edited, same weights", "new feature key: recomputed")


# --- checkpoints ---------------------------------------------------------------------------
def _mnist_state():
    torch.manual_seed(0)
    return MnistCNN().state_dict()


def _renamed(n_missing: int):
    state = _mnist_state()
    keys = list(state)[:n_missing]
    return {("x." + k if k in keys else k): v for k, v in state.items()}


def test_checkpoint_mismatch_names_and_counts_keys(record):
    state = _renamed(2)
    with pytest.raises(OODInputError) as err:
        load_state_strict(MnistCNN(), state, "ck.pt")
    msg = str(err.value)
    missing = [k for k in _mnist_state()][:2]
    assert "2 missing keys" in msg and "2 unexpected keys" in msg, msg
    assert all(k in msg for k in missing) and all("x." + k in msg for k in missing), msg
    record("bad input", "checkpoint with 2 renamed keys", msg.split("— ", 1)[-1][:70])


def test_checkpoint_shape_mismatch_is_named(record):
    state = _mnist_state()
    name = next(k for k in state if k.endswith("weight"))
    state[name] = torch.zeros(*[s + 1 for s in state[name].shape])
    with pytest.raises(OODInputError, match=rf"1 shape mismatch: {name} \(file") as err:
        load_state_strict(MnistCNN(), state, "ck.pt")
    record("bad input", "checkpoint with a tensor of another shape", str(err.value).split("— ", 1)[-1][:70])


def test_many_missing_keys_are_listed_then_counted(record):
    model = build_model("resnet20")
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("layer")}
    n = sum(1 for k in model.state_dict() if k not in state and not k.endswith("num_batches_tracked"))  # BN fills those
    with pytest.raises(OODInputError, match=rf"{n} missing keys: .*and {n - 10} more") as err:
        load_state_strict(build_model("resnet20"), state, "ck.pt")
    record("bad input", f"checkpoint missing {n} keys", str(err.value).split("— ", 1)[-1][:70])


def test_integer_tensor_for_a_float_parameter_is_refused(record):
    state = _mnist_state()
    name = next(k for k, v in state.items() if v.is_floating_point())
    state[name] = (state[name] * 100).to(torch.int64)
    with pytest.raises(OODInputError, match=f"integer tensor for a float parameter: {name}") as err:
        load_state_strict(MnistCNN(), state, "ck.pt")
    model = build_model("resnet20")  # BatchNorm's num_batches_tracked is an integer legitimately
    load_state_strict(build_model("resnet20"), model.state_dict(), "own.pt")
    record("bad input", "checkpoint with an int64 tensor for float weights", str(err.value).split("— ", 1)[-1][:70])


# --- scores ----------------------------------------------------------------------------------
def test_integer_scores_are_not_rounded(record):
    m = evaluate_scores([2**24 + 1], [2**24])
    assert m["auroc"] == 100.0
    assert evaluate_scores(torch.tensor([2**24 + 1]), torch.tensor([2**24]))["auroc"] == 100.0
    with pytest.raises(OODInputError, match="beyond 2\\*\\*53"):
        evaluate_scores(np.array([2**60]), np.array([2**60 + 1]))
    record("bad input", "integer scores 2**24 + 1 vs 2**24", "AUROC 100 (exact; beyond 2**53 refused)")


# --- options -------------------------------------------------------------------------------
OPTIONS = {
    "seed -1": (dict(seed=-1), "seed must be an integer >= 0"),
    "device 'meta'": (dict(device="meta"), "unknown device 'meta'"),
    "device 'mps'": (dict(device="mps"), "unknown device 'mps'"),
    "batch size 0": (dict(batch_size=0), "batch size must be an integer >= 1"),
    "batch size -4": (dict(batch_size=-4), "batch size must be an integer >= 1"),
    "bootstrap 1": (dict(bootstrap=1), "bootstrap must be 0 .* or >= 100"),
    "unknown ci_methods name": (dict(ci_methods=["nope"]), "unknown ci_methods name 'nope'; valid: "),
    "unknown name among methods": (dict(methods=["msp", "nope"]), "unknown method 'nope'; valid: "),
}


@pytest.mark.parametrize("case", list(OPTIONS))
def test_run_option_refused(case, record):
    kw, match = OPTIONS[case]
    with pytest.raises(OODInputError, match=match) as err:
        RunConfig(**kw)
    record("bad input", f"RunConfig: {case}", f"OODInputError: {str(err.value)[:70]}")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_option_without_cuda(record):
    with pytest.raises(OODInputError, match="no CUDA device") as err:
        RunConfig(device="cuda:1")
    record("bad input", "RunConfig: device 'cuda:1', no CUDA", f"OODInputError: {str(err.value)[:70]}")


def test_repeated_methods_count_once(record):
    assert RunConfig(methods=["msp", "energy", "msp"]).methods == ("msp", "energy")
    record("bad input", "methods msp energy msp", "deduplicated, order kept: msp, energy")


def test_verdicts_withheld_below_the_preregistered_resamples(record):
    import pandas as pd

    from ood_lib.findings.claims import N_BOOT
    from ood_lib.cli import withhold_verdicts

    v = pd.DataFrame({"verdict": ["supported", "refuted", "not run"], "lo": [float("nan"), 0.1, float("nan")]})
    got = withhold_verdicts(v, N_BOOT - 1)
    assert list(got.verdict) == ["supported", f"not decided ({N_BOOT - 1} < {N_BOOT} resamples)", "not run"]
    assert withhold_verdicts(v, N_BOOT).equals(v)
    record("bad input", f"study with {N_BOOT - 1} resamples", "bootstrap verdicts 'not decided'; identities kept")


# --- writes --------------------------------------------------------------------------------
def test_failed_write_names_the_entry_not_the_temporary(tmp_path, monkeypatch, record):
    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    path = tmp_path / "features" / "k.npz"
    with pytest.raises(OSError, match="No space left") as err:
        atomic_write_bytes(b"x", path)
    assert str(path) in str(err.value) and ".tmp" not in str(err.value)
    assert list(path.parent.iterdir()) == []
    record("fault", "disk full during a cache write", f"OSError naming the entry: {path.name}, no temporary left")


# --- the command line --------------------------------------------------------------------------
def _cli(*args, cache=None, code=None):
    env = {**os.environ, "OOD_DATA_ROOT": ""}
    if cache is not None:
        env["OOD_CACHE_DIR"] = str(cache)
    cmd = [sys.executable, "-c", code, *args] if code else [sys.executable, "-m", "ood_lib", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env)


CLI_BAD = {
    "evaluate --seed -1": (["evaluate", "--seed", "-1"], "seed must be an integer >= 0"),
    "evaluate --device meta": (["evaluate", "--device", "meta"], "unknown device 'meta'"),
    "evaluate --device mps": (["evaluate", "--device", "mps"], "unknown device 'mps'"),
    "evaluate --batch-size 0": (["evaluate", "--batch-size", "0"], "batch size must be an integer >= 1"),
    "evaluate --batch-size -4": (["evaluate", "--batch-size", "-4"], "batch size must be an integer >= 1"),
    "evaluate --bootstrap 1": (["evaluate", "--bootstrap", "1"], "bootstrap must be 0"),
    "evaluate --ci-methods nope": (["evaluate", "--ci-methods", "nope"], "unknown ci_methods name 'nope'"),
    "extract --seed -1": (["extract", "--seed", "-1"], "seed must be an integer >= 0"),
    "study --n-boot 1": (["study", "--n-boot", "1"], "--n-boot must be >= 100"),
    "study --seeds -2": (["study", "--seeds", "-2"], "--seeds is the number of training seeds"),
    "verify --tol nan": (["verify", "--tol", "nan"], "--tol must be a finite number >= 0"),
    "verify --tol -1": (["verify", "--tol", "-1"], "--tol must be a finite number >= 0"),
    "verify --device meta": (["verify", "--device", "meta"], "unknown device 'meta'"),
}


@pytest.mark.parametrize("case", list(CLI_BAD))
def test_cli_option_refused_before_work(case, tmp_path, record, embedded_model_cache):
    shutil.copytree(embedded_model_cache / "models", tmp_path / "models")
    args, match = CLI_BAD[case]
    small = ["--n", "4", "--no-loop", "--quiet"] if args[0] == "verify" else SMALL_ARGS  # quick, were it to run
    r = _cli(*args, *small, *([] if args[0] in ("verify", "extract") else ["--methods", "msp"]), cache=tmp_path)
    assert r.returncode == 2 and match in r.stderr, (r.returncode, r.stderr[-2000:])
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "features").exists(), "work started before the options were checked"
    record("bad input", f"CLI: {case}", "exit 2: " + r.stderr.strip().splitlines()[-1][:70])


def test_cli_out_is_a_folder(tmp_path, record):
    r = _cli("evaluate", "--out", str(tmp_path), *SMALL_ARGS, "--methods", "msp", cache=tmp_path / "cache")
    assert r.returncode == 2 and "is a folder" in r.stderr and str(tmp_path) in r.stderr, r.stderr[-2000:]
    assert "Traceback" not in r.stderr and not (tmp_path / "cache" / "features").exists()
    record("bad input", "CLI: evaluate --out DIR (a folder)", "exit 2: --out DIR is a folder; give the name of a file")


@pytest.mark.parametrize("where", ["--out", "--cache-dir"])
def test_cli_unwritable_path_fails_before_work(where, tmp_path, record):
    blocker = tmp_path / "a-file"
    blocker.write_text("")  # a folder cannot be made under a file, even by root
    bad = blocker / ("r.csv" if where == "--out" else "cache")
    cache = ["--cache-dir", str(tmp_path / "cache")] if where == "--out" else []
    r = _cli("evaluate", where, str(bad), *cache, *SMALL_ARGS, "--methods", "msp")
    assert r.returncode == 1 and str(blocker) in r.stderr, (r.returncode, r.stderr[-2000:])
    assert "Traceback" not in r.stderr and not (tmp_path / "cache" / "features").exists()
    record("fault", f"CLI: {where} not writable", f"exit 1 before any work: {where} … is not writable (path named)")


FULL_DISK = (
    "import errno, os, sys\n"
    "def full(fd): raise OSError(errno.ENOSPC, 'No space left on device')\n"
    "os.fsync = full\n"
    "from ood_lib.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


def test_cli_full_disk_names_the_path(tmp_path, record, embedded_model_cache):
    shutil.copytree(embedded_model_cache / "models", tmp_path / "models")
    r = _cli("evaluate", *SMALL_ARGS, "--methods", "msp", cache=tmp_path, code=FULL_DISK)
    assert r.returncode == 1 and "No space left" in r.stderr, (r.returncode, r.stderr[-2000:])
    assert "Traceback" not in r.stderr and ".tmp" not in r.stderr and str(tmp_path) in r.stderr
    record("fault", "CLI: disk full mid-run", "exit 1: cannot write <the cache entry's path>: No space left")


def test_cli_repeated_method_is_one_row(tmp_path, record, embedded_model_cache):
    shutil.copytree(embedded_model_cache / "models", tmp_path / "models")
    out = tmp_path / "r.csv"
    r = _cli("evaluate", "--methods", "msp", "msp", "--out", str(out), *SMALL_ARGS, cache=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    import pandas as pd

    df = pd.read_csv(out)
    assert not df.duplicated(["method", "ood"]).any() and set(df.method) == {"msp"}
    record("bad input", "CLI: --methods msp msp", "one row per set (names deduplicated)")


def test_no_warning_for_a_clean_cache(tmp_path):
    """A good entry is read back silently: the checks cost no false alarm."""
    torch.manual_seed(0)
    model, ds = MnistCNN().eval(), _imgs()
    extract(model, ds, cache_dir=tmp_path, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert extract(model, ds, cache_dir=tmp_path, progress=False).from_cache


# --- the appendix's table --------------------------------------------------------------------
def test_committed_reliability_table_has_every_case(tmp_path):
    """results/reliability.csv (the appendix's table) holds a row for every test that records one,
    in every test file, and no row of a test that is gone; regenerate it with
    ``python tools/reliability_table.py``."""
    from conftest import REPO, read_reliability, reliability_markdown

    ids = tmp_path / "ids.txt"
    r = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--collect-only",
                        "--reliability-ids", str(ids), "tests"], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-2000:]
    want = set(ids.read_text().splitlines())
    path = REPO / "results" / "reliability.csv"
    rows = read_reliability(path)
    have = {row["test"] for row in rows}
    regenerate = "; regenerate it with: python tools/reliability_table.py"
    assert not want - have, f"{path} lacks {sorted(want - have)}{regenerate}"
    assert not have - want, f"{path} holds rows of tests that are gone: {sorted(have - want)}{regenerate}"
    assert all(row["status"] in ("passed", "skipped") for row in rows), f"failing rows in {path}{regenerate}"
    assert path.with_suffix(".md").read_text() == reliability_markdown(rows), f"reliability.md is stale{regenerate}"
