"""Bad input at every entry point and faults injected into the caches: each is detected and named.

Every case adds a row to the reliability matrix printed at the end of the test run.
"""

import multiprocessing as mp
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest
import torch

from conftest import REPO
from ood_lib import OODInputError
from ood_lib.findings.analysis import log_variance_shares, rank_agreement
from ood_lib.data.benchmarks import get_benchmark, mnist_array_transform
from ood_lib.book import check_glue_value
from ood_lib.cache import read_arrays, write_arrays
from ood_lib.data import ArrayImages, DataNotFoundError, ImageFiles, data_root, image_folder
from ood_lib.detectors import KNN, Mahalanobis
from ood_lib.run.evaluate import run_benchmark
from ood_lib.run.features import cache_key, extract, resolve_device
from ood_lib.models import FeatureModel, MnistCNN, build_model

SMALL = dict(n_id=50, n_ood=30, n_fit=100, progress=False)


class NaNNet(FeatureModel):
    head_name = "fc"

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 3)

    def features(self, x):
        return torch.full((len(x), 4), float("nan"))


def _imgs(n=8, seed=None):
    a = np.zeros((n, 28, 28), np.uint8) if seed is None else np.random.default_rng(seed).integers(0, 256, (n, 28, 28))
    return ArrayImages(a.astype(np.uint8), np.zeros(n, int), mnist_array_transform())


BAD = {
    "unknown benchmark": (lambda tmp: run_benchmark("svhn", **SMALL), OODInputError, "valid: cifar10.*embedded"),
    "unknown method": (lambda tmp: run_benchmark("embedded", methods=["gradnrom"], **SMALL), OODInputError, "valid:"),
    "no methods": (lambda tmp: run_benchmark("embedded", methods=[], **SMALL), OODInputError, "no methods"),
    "unknown model": (lambda tmp: build_model("vit"), OODInputError, "valid:.*resnet20"),
    "unknown device": (lambda tmp: resolve_device("tpu0"), OODInputError, "unknown device"),
    "empty OOD subset": (lambda tmp: run_benchmark("embedded", cache_dir=tmp, n_ood=0, progress=False),
                         OODInputError, "subset size must be positive"),
    "model emits NaN": (lambda tmp: extract(NaNNet(), _imgs(), cache_dir=False, progress=False),
                        OODInputError, "non-finite features"),
    "data root is not a folder": (lambda tmp: data_root(tmp / "nowhere"), DataNotFoundError, "nowhere"),
    "image folder without images": (lambda tmp: (tmp / "empty" / "cls").mkdir(parents=True) or image_folder(tmp / "empty"),
                                     DataNotFoundError, "no images"),
    "no image paths": (lambda tmp: ImageFiles([], None, lambda x: x, (1,)), OODInputError, "no image paths"),
    "array images of wrong rank": (lambda tmp: ArrayImages(np.zeros((3, 4)), None, lambda x: x),
                                   OODInputError, "expected"),
    "labels do not match images": (lambda tmp: ArrayImages(np.zeros((3, 4, 4)), np.zeros(2), lambda x: x),
                                   OODInputError, "3 images but 2 labels"),
    "Mahalanobis without labels": (lambda tmp: Mahalanobis().fit(np.ones((4, 2)), None, -np.ones(4)),
                                   OODInputError, "needs class labels"),
    "KNN with k > n": (lambda tmp: KNN(k=10).fit(np.ones((4, 2))), OODInputError, "exceeds"),
    "detector used before fit": (lambda tmp: KNN().score(np.ones((4, 2))), OODInputError, "not fitted"),
    "shares of mismatched arrays": (lambda tmp: log_variance_shares([1.0, 2.0], [1.0]), OODInputError, "lengths"),
    "shares of a constant": (lambda tmp: log_variance_shares([1.0, 1.0], [2.0, 2.0]), OODInputError, "constant"),
    "ranks of mismatched arrays": (lambda tmp: rank_agreement([1.0, 2.0], [1.0]), OODInputError, "lengths"),
    "NaN glued into the book": (lambda tmp: check_glue_value("nb03_auc", float("nan")), OODInputError,
                                "'nb03_auc': non-finite"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input(case, tmp_path, record):
    call, exc, match = BAD[case]
    with pytest.raises(exc, match=match) as err:
        call(tmp_path)
    record("bad input", case, f"{type(err.value).__name__}: {str(err.value).splitlines()[0][:70]}")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the positive case runs instead")
def test_cuda_asked_none_present(record):
    with pytest.raises(OODInputError, match="no CUDA device") as err:
        resolve_device("cuda")
    record("bad input", "CUDA asked, none present", f"OODInputError: {str(err.value)[:70]}")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_asked_and_present(record):
    assert resolve_device("cuda").type == "cuda" and resolve_device("auto").type == "cuda"
    torch.manual_seed(0)
    model, ds = MnistCNN().eval(), _imgs(64, seed=0)
    cpu = extract(model, ds, device="cpu", cache_dir=False, progress=False)
    gpu = extract(model, ds, device="cuda", cache_dir=False, progress=False)
    np.testing.assert_array_equal(gpu.labels, cpu.labels)
    for a, b in ((gpu.h, cpu.h), (gpu.logits, cpu.logits)):  # TF32 convolutions: ~1e-3 relative
        assert np.abs(a - b).max() <= 3e-3 * np.abs(b).max(), np.abs(a - b).max()
    assert (gpu.logits.argmax(1) == cpu.logits.argmax(1)).mean() >= 0.95
    record("device", "CUDA asked and present", "features on cuda = features on CPU (0.3 % of max)")


def _cli(*args, **env):
    return subprocess.run([sys.executable, "-m", "ood_lib", *args], capture_output=True, text=True,
                          env={**os.environ, **env})


@pytest.mark.parametrize("args,match", [
    (["verify", "--temperature", "0"], "temperature must be finite and > 0"),
    (["evaluate", "--benchmark", "mnist"], "benchmark 'mnist' needs a data root"),
    (["evaluate", "--benchmark", "cifar10", "--data-root", "/no/such/dir"], "/no/such/dir"),
    (["evaluate", "--methods", "nope", "--quiet"], "unknown method 'nope'"),
], ids=["CLI: T = 0", "CLI: mnist without a data root", "CLI: missing data root", "CLI: unknown method"])
def test_cli_bad_input(args, match, tmp_path, record, request, embedded_model_cache):
    shutil.copytree(embedded_model_cache / "models", tmp_path / "models")  # the session's trained CNN
    r = _cli(*args, OOD_CACHE_DIR=str(tmp_path), OOD_DATA_ROOT="")
    assert r.returncode == 2 and match in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    record("bad input", request.node.callspec.id, "exit 2: " + r.stderr.strip().splitlines()[0][:70])


def test_notebook_parameter_names_the_valid_benchmarks(tmp_path, record, monkeypatch):
    sys.path.insert(0, str(REPO / "tools"))
    import papermill
    import run_notebook

    monkeypatch.setenv("OOD_CACHE_DIR", str(tmp_path))
    with pytest.raises(papermill.PapermillExecutionError, match="unknown benchmark 'imagenet1k'; valid: cifar10"):
        run_notebook.execute(REPO / "notebooks" / "02_feature_norm_output.py", parameters={"BENCHMARK": "imagenet1k"})
    record("bad input", "notebook: BENCHMARK='imagenet1k'", "cell error: unknown benchmark …; valid: …")


# --- faults ---------------------------------------------------------------------------------
@pytest.fixture
def entry(tmp_path):
    torch.manual_seed(0)
    model, ds = MnistCNN().eval(), _imgs(16)
    return model, ds, tmp_path


def _writer(path, key, seed, n):
    a = np.random.default_rng(seed).normal(size=(n, 64)).astype(np.float32)
    for _ in range(5):
        write_arrays(path, key, {"h": a, "logits": a[:, :10], "labels": np.arange(n)}, n=n, n_skipped=0)


def test_concurrent_writers_leave_a_whole_file(tmp_path, record):
    path = tmp_path / "features" / "k.npz"
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, "k", s, 20000)) for s in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    got = read_arrays(path, "k", ("h", "logits", "labels"))
    assert got is not None and got[0]["h"].shape == (20000, 64)
    assert [p.name for p in path.parent.iterdir()] == ["k.npz"]
    record("fault", "3 processes write one cache entry at once", "one whole entry, no temporaries")


def test_killed_writer_leaves_nothing_that_looks_complete(tmp_path, record):
    """SIGKILL while the entry is being written: after the temporary file exists, before the rename.
    The writer's fsync never returns, so the kill cannot land after the rename, however fast the disk."""
    path = tmp_path / "features" / "big.npz"
    code = (
        "import os, time, numpy as np\n"
        "from pathlib import Path\n"
        "from ood_lib.cache import write_arrays\n"
        "os.fsync = lambda fd: time.sleep(600)\n"
        "a = np.ones((2000, 8000), np.float32)\n"
        f"write_arrays(Path({str(path)!r}), 'k', {{'h': a}}, n=2000)\n"
    )
    p = subprocess.Popen([sys.executable, "-c", code])
    pattern, deadline, tmps = f".{path.name}.*.tmp", time.monotonic() + 120, []
    try:
        while not tmps:
            assert p.poll() is None, "the writer ended before it could be killed mid-write"
            assert time.monotonic() < deadline, "the writer never created its temporary file"
            time.sleep(0.001)
            tmps = sorted(path.parent.glob(pattern)) if path.parent.is_dir() else []
        assert not path.exists()  # the state at the kill: temporary file present, entry absent
        p.send_signal(signal.SIGKILL)
    finally:
        p.kill()
        p.wait()
    assert p.returncode == -signal.SIGKILL
    assert not path.exists(), "a killed writer must not leave a complete-looking entry"
    assert sorted(path.parent.glob(pattern)) == tmps  # killed mid-write: only its temporary is left
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_arrays(path, "k", ("h",)) is None
    record("fault", "writer killed (SIGKILL) mid-write", "temporary left, no entry; next run rebuilds")


def test_interrupted_write_cleans_up(tmp_path, record, monkeypatch):
    path = tmp_path / "features" / "x.npz"

    def interrupt(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupt)
    with pytest.raises(KeyboardInterrupt):
        write_arrays(path, "k", {"h": np.ones(3)})
    assert list(path.parent.iterdir()) == []
    record("fault", "Ctrl-C during a cache write", "no entry, no temporary file")


def test_cache_from_another_format_version_is_rebuilt(entry, record):
    model, ds, cache = entry
    extract(model, ds, cache_dir=cache, progress=False)
    path = cache / "features" / f"{cache_key(model, ds)}.npz"
    with np.load(path) as z:
        d = {k: z[k] for k in z.files}
    d["meta"] = np.array(str(d["meta"]).replace("features-v1", "features-v0"))
    with open(path, "wb") as fh:
        np.savez(fh, **d)
    with pytest.warns(UserWarning, match="unusable"):
        assert not extract(model, ds, cache_dir=cache, progress=False).from_cache
    record("fault", "cache entry from another format version", "detected, rebuilt")


@pytest.mark.parametrize("damage", ["truncated", "garbage", "other model"])
def test_damaged_feature_cache(entry, damage, record):
    model, ds, cache = entry
    good = extract(model, ds, cache_dir=cache, progress=False)
    path = cache / "features" / f"{good.key}.npz"
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:100])
    elif damage == "garbage":
        path.write_bytes(b"\x00" * 1000)
    else:  # an entry written for another model, under this key's file name
        other = MnistCNN().eval()
        extract(other, ds, cache_dir=cache, progress=False)
        os.replace(cache / "features" / f"{cache_key(other, ds)}.npz", path)
    with pytest.warns(UserWarning, match="unusable"):
        again = extract(model, ds, cache_dir=cache, progress=False)
    np.testing.assert_array_equal(again.h, good.h)
    record("fault", f"feature cache: {damage}", "detected, rebuilt, same features")


def test_corrupt_cached_model_is_retrained(tmp_path, record, request):
    import dataclasses

    base = get_benchmark("embedded")  # its CNN, trained for one epoch: the retraining below is real
    bench = dataclasses.replace(base, model=dataclasses.replace(base.model, train_epochs=1))
    m1 = bench.load_model(cache_dir=tmp_path)
    (path,) = (tmp_path / "models").glob("*.pt")
    path.write_bytes(b"corrupt")
    request.getfixturevalue("real_training")  # the retraining below is real
    with pytest.warns(UserWarning, match="retraining"):
        m2 = bench.load_model(cache_dir=tmp_path)
    for a, b in zip(m1.state_dict().values(), m2.state_dict().values()):
        assert torch.equal(a, b)
    record("fault", "cached trained model corrupted", "detected, retrained to the same weights")


def test_corrupt_score_cache_is_recomputed(tmp_path, record):
    kw = dict(SMALL, cache_dir=tmp_path, methods=["msp", "knn"])
    a = run_benchmark("embedded", **kw)
    for p in (tmp_path / "scores").glob("*.npz"):
        p.write_bytes(p.read_bytes()[:50])
    with pytest.warns(UserWarning, match="unusable"):
        b = run_benchmark("embedded", **kw)
    cols = ["method", "ood", "auroc", "fpr95", "aupr_in", "aupr_out"]
    assert a[cols].equals(b[cols])
    record("fault", "score cache truncated", "detected, recomputed, same table")


def test_results_file_is_replaced_whole(tmp_path, record, monkeypatch):
    out = tmp_path / "r.csv"
    df = run_benchmark("embedded", cache_dir=tmp_path, out=out, methods=["msp"], **{k: v for k, v in SMALL.items()})
    before = out.read_bytes()

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", boom)
    from ood_lib.run.results import write_results

    with pytest.raises(KeyboardInterrupt):
        write_results(df.assign(auroc=0.0), out)
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix in (".csv", ".json", ".tmp")) == ["r.csv", "r.csv.json"]
    record("fault", "interrupted while writing results", "previous results intact, no partial file")
