"""The runner on the embedded benchmark: completeness, no leakage into fitting, reproducibility."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import ood_lib.evaluate as ev
from ood_lib import OODInputError
from ood_lib.features import extract
from ood_lib.benchmarks import get_benchmark

SMALL = dict(n_id=200, n_ood=100, n_fit=400, progress=False)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def test_every_method_every_set(cache, tmp_path):
    out = tmp_path / "r.csv"
    df = ev.run_benchmark("embedded", cache_dir=cache, out=out, **SMALL)
    methods = set(ev.available_methods())
    assert set(df.method) == methods
    assert set(df.ood) == {"sklearn_digits", "font_letters", "textures", "photos", "noise", "mean"}
    assert np.isfinite(df[["auroc", "fpr95", "aupr_in", "aupr_out", "seconds"]].to_numpy()).all()
    assert 90 < df.id_accuracy.iloc[0] <= 100
    g = df[df.method.isin(["gradnorm", "gradnorm_autograd"])].pivot(index="ood", columns="method", values="auroc")
    assert (g.gradnorm == g.gradnorm_autograd).all()
    meta = json.loads(out.with_suffix(".csv.json").read_text())
    assert meta["seed"] == 0 and meta["versions"]["torch"] and meta["sets"]["id_test"]["n"] == 200
    assert meta["device"] == "cpu" and len(meta["sets"]["noise"]["data_fingerprint"]) == 64
    assert pd.read_csv(out).shape == df.shape


def test_fitted_baselines_only_ever_see_the_id_training_split(tmp_path, monkeypatch):
    cache = tmp_path  # a fresh cache: cached scores would skip the fits being watched
    seen = []
    real = ev._make_fitted

    def spy(name, head, k):
        det = real(name, head, k)
        fit = det.fit

        def recording_fit(h, logits, labels):
            seen.append((name, np.array(h), np.array(labels)))
            return fit(h, logits, labels)

        det.fit = recording_fit
        return det

    monkeypatch.setattr(ev, "_make_fitted", spy)
    ev.run_benchmark("embedded", cache_dir=cache, methods=["mahalanobis", "react", "knn"], **SMALL)
    bench = get_benchmark("embedded")
    sp = bench.splits(None, n_id=200, n_ood=100, n_fit=400)
    model = bench.load_model(cache_dir=cache)
    train = extract(model, sp["id_train"].dataset, cache_dir=cache, progress=False)
    others = [extract(model, sp[k].dataset, cache_dir=cache, progress=False).h for k in sp if k != "id_train"]
    assert sorted(n for n, _, _ in seen) == ["knn", "mahalanobis", "react"]
    for _, h, labels in seen:
        np.testing.assert_array_equal(h, train.h)
        np.testing.assert_array_equal(labels, train.labels)
        for o in others:  # no test or OOD row appears among the fitting rows
            assert not (h[:, None, :] == o[None, :, :]).all(-1).any()


def test_same_seed_gives_identical_results(tmp_path):
    kw = dict(SMALL, methods=["msp", "l1*msp", "gradnorm", "exgrad_autograd", "mahalanobis", "knn", "odin"])
    a = ev.run_benchmark("embedded", cache_dir=tmp_path / "a", out=tmp_path / "a.csv", **kw)
    b = ev.run_benchmark("embedded", cache_dir=tmp_path / "b", out=tmp_path / "b.csv", **kw)
    ta = pd.read_csv(tmp_path / "a.csv").drop(columns="seconds")
    tb = pd.read_csv(tmp_path / "b.csv").drop(columns="seconds")
    pd.testing.assert_frame_equal(ta, tb, check_exact=True)
    assert a.attrs["meta"]["model_fingerprint"] == b.attrs["meta"]["model_fingerprint"]


def test_unknown_method_lists_valid_ones(cache):
    with pytest.raises(OODInputError, match="unknown method 'gradnrom'; valid:.*gradnorm"):
        ev.run_benchmark("embedded", cache_dir=cache, methods=["gradnrom"], **SMALL)


def test_cli_evaluate(cache, tmp_path):
    out = tmp_path / "cli.csv"
    r = subprocess.run(
        [sys.executable, "-m", "ood_lib", "evaluate", "--benchmark", "embedded", "--quiet", "--out", str(out),
         "--cache-dir", str(cache), "--n-id", "200", "--n-ood", "100", "--n-fit", "400",
         "--methods", "msp", "gradnorm", "knn"],
        capture_output=True, text=True,
    )
    assert r.returncode == 0, r.stderr
    assert "gradnorm" in r.stdout and out.is_file()
    r = subprocess.run([sys.executable, "-m", "ood_lib", "evaluate", "--benchmark", "nope"], capture_output=True, text=True)
    assert r.returncode == 2 and "valid: cifar10, embedded" in r.stderr


def test_default_methods_skip_c_pass_autograd_only_for_many_classes():
    assert "exgrad_autograd" in ev.default_methods("embedded")
    big = ev.default_methods("imagenet")
    assert "exgrad_autograd" not in big and "gradnorm_autograd" in big and "exgrad" in big
