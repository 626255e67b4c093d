"""The runner on the embedded benchmark: completeness, groups, n/a rows, no leakage into fitting,
reproducibility, the score cache's device key, one run configuration."""

import argparse
import json
import re
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

import ood_lib.run.evaluate as ev
from ood_lib import OODInputError
from ood_lib.data.benchmarks import get_benchmark
from ood_lib.run.config import RunConfig
from ood_lib.detectors import KNN, FitData, Mahalanobis, ReAct, create
from ood_lib.run.features import extract
from ood_lib.run.results import method_rows

SMALL = dict(n_id=200, n_ood=100, n_fit=400, progress=False)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def test_every_method_every_set(cache, tmp_path):
    out = tmp_path / "r.csv"
    df = ev.run_benchmark("embedded", cache_dir=cache, out=out, **SMALL)
    methods = set(ev.available_methods()) - set(ev.ON_REQUEST)
    assert set(df.method) == methods
    sets = {"sklearn_digits", "font_letters", "textures", "photos", "noise"}
    assert set(df.ood) == sets | {"near", "far", "covariate", "mean"}
    assert np.isfinite(df[["auroc", "fpr95", "aupr_in", "aupr_out", "seconds"]].to_numpy()).all()
    assert (df.note.fillna("") == "").all() and not df.from_cache.any()
    groups = {k: s.group for k, s in get_benchmark("embedded").splits(None, n_id=200, n_ood=100).items()}
    per_set = df[df.ood.isin(sets)]
    assert (per_set.group == per_set.ood.map(groups)).all() and set(per_set.group) == {"near", "far", "covariate"}
    for (method, group), rows in per_set.groupby(["method", "group"]):
        g = df[(df.method == method) & (df.ood == group)].iloc[0]
        assert g.auroc == pytest.approx(rows.auroc.mean(), abs=1e-12) and g.n_ood == rows.n_ood.sum()
    assert (df[df.method == "gradnorm_autograd"].canonical == "l1*pu_l1").all()
    assert 90 < df.id_accuracy.iloc[0] <= 100
    g = df[df.method.isin(["gradnorm", "gradnorm_autograd"])].pivot(index="ood", columns="method", values="auroc")
    # the same scores up to float rounding: at most one near-tie among the pairs may swap (20,000
    # ID × OOD pairs here: one swap moves the AUROC by 0.005 points)
    assert (g.gradnorm - g.gradnorm_autograd).abs().max() <= 0.01
    meta = json.loads(out.with_suffix(".csv.json").read_text())
    assert meta["seed"] == 0 and meta["versions"]["torch"] and meta["sets"]["id_test"]["n"] == 200
    assert meta["device"] == "cpu" and len(meta["sets"]["noise"]["data_fingerprint"]) == 64
    assert pd.read_csv(out).shape == df.shape


def test_fitted_baselines_only_ever_see_the_id_training_split(tmp_path, monkeypatch):
    cache = tmp_path  # a fresh cache: cached scores would skip the fits being watched
    seen = []
    for cls in (Mahalanobis, ReAct, KNN):

        def recording_fit(self, train, logits=None, labels=None, real=cls.fit):
            t = FitData.of(train, logits, labels)
            seen.append((self.name, np.array(t.features), np.array(t.labels)))
            return real(self, train, logits, labels)

        monkeypatch.setattr(cls, "fit", recording_fit)
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
    assert r.returncode == 2 and re.search("valid: cifar10, .*embedded", r.stderr)


def test_default_methods_skip_c_pass_autograd_only_for_many_classes():
    assert "exgrad_autograd" in ev.default_methods("embedded")
    big = ev.default_methods("imagenet")
    assert "exgrad_autograd" not in big and "gradnorm_autograd" in big and "exgrad" in big


def test_not_applicable_methods_get_rows_and_a_reason(cache, tmp_path):
    out = tmp_path / "na.csv"
    df = ev.run_benchmark("embedded", cache_dir=cache, out=out, methods=["msp", "mahalanobis", "knn"],
                          **dict(SMALL, n_fit=15, knn_k=50))
    na = df[df.method.isin(["mahalanobis", "knn"])]
    assert len(na) == 2 * len(df[df.method == "msp"]) and na.auroc.isna().all()
    assert na[na.method == "knn"].note.str.startswith("n/a: k = 50 exceeds the 15 ID training samples").all()
    assert na[na.method == "mahalanobis"].note.str.contains("n/a: .*(fewer than 2|rank at most)").all()
    notes = json.loads(out.with_suffix(".csv.json").read_text())["notes"]
    assert notes["knn"].startswith("n/a:") and notes["mahalanobis"].startswith("n/a:")
    assert np.isfinite(df[df.method == "msp"].auroc).all()


def test_group_rows_only_for_groups_present():
    prep = SimpleNamespace(name="b", ood_keys=["a", "b"], id_accuracy=90.0,
                           splits={"a": SimpleNamespace(group="far"), "b": SimpleNamespace(group="far")})
    det = create("msp")
    s = {"id_test": np.arange(10.0), "a": np.arange(10.0) - 3, "b": np.arange(10.0) - 5}
    rows = method_rows(prep, det, s, seconds=0.0, from_cache=False, config=RunConfig())
    assert [r["ood"] for r in rows] == ["a", "b", "far", "mean"]
    assert rows[2]["auroc"] == rows[3]["auroc"] == (rows[0]["auroc"] + rows[1]["auroc"]) / 2


def test_the_mean_row_leaves_covariate_sets_out():
    """One definition of ``mean`` (results.in_mean): the runner's row and the chapters' table agree."""
    from ood_lib.findings.analysis import metric_table

    groups = {"a": "near", "b": "far", "c": "covariate"}
    prep = SimpleNamespace(name="b", ood_keys=list(groups), id_accuracy=90.0,
                           splits={k: SimpleNamespace(group=g) for k, g in groups.items()})
    s = {"id_test": np.arange(10.0), "a": np.arange(10.0) - 3, "b": np.arange(10.0) - 5, "c": np.arange(10.0)}
    rows = {r["ood"]: r for r in method_rows(prep, create("msp"), s, seconds=0.0, from_cache=False, config=RunConfig())}
    assert list(rows) == ["a", "b", "c", "near", "far", "covariate", "mean"]
    assert rows["mean"]["auroc"] == (rows["a"]["auroc"] + rows["b"]["auroc"]) / 2 != rows["c"]["auroc"]
    assert rows["mean"]["n_ood"] == 20
    t = metric_table({k: {"msp": v} for k, v in s.items()}, groups=groups)
    assert t.loc["mean", "msp"] == rows["mean"]["auroc"] and t.loc["covariate", "msp"] == rows["c"]["auroc"]
    only_cov = SimpleNamespace(name="b", ood_keys=["c"], id_accuracy=90.0, splits={"c": SimpleNamespace(group="covariate")})
    assert "mean" not in [r["ood"] for r in method_rows(only_cov, create("msp"), s, seconds=0.0, from_cache=False,
                                                        config=RunConfig())]


def test_score_cache_is_keyed_by_device(cache, monkeypatch):
    kw = dict(SMALL, cache_dir=cache, methods=["l1*msp", "knn"])
    first = ev.run_benchmark("embedded", **kw)
    again = ev.run_benchmark("embedded", **kw)
    assert again.from_cache.all() and (again.seconds.to_numpy() == first.seconds.to_numpy()).all()
    monkeypatch.setattr(ev, "device_label", lambda dev: "cuda:0 (Fake GPU)")
    other = ev.run_benchmark("embedded", **kw)
    assert not other.from_cache.any() and other.attrs["meta"]["device"] == "cuda:0 (Fake GPU)"
    assert (other.seconds.to_numpy() != first.seconds.to_numpy()).any()  # measured anew, not the CPU's
    pd.testing.assert_frame_equal(other.drop(columns=["seconds", "from_cache"]),
                                  first.drop(columns=["seconds", "from_cache"]))
    assert ev.run_benchmark("embedded", **kw).from_cache.all()


def test_one_run_configuration_for_api_and_command_line(cache):
    cfg = RunConfig(cache_dir=cache, methods=["msp"], **SMALL)
    a = ev.run_benchmark("embedded", cfg)
    b = ev.run_benchmark("embedded", cache_dir=cache, methods=["msp"], **SMALL)
    pd.testing.assert_frame_equal(a.drop(columns="seconds"), b.drop(columns="seconds"))
    assert ev.prepare("embedded", cfg, with_train=False).config == cfg
    with pytest.raises(OODInputError, match="unknown run option 'n_test'; valid: .*n_id"):
        ev.run_benchmark("embedded", cfg, n_test=3)
    p = argparse.ArgumentParser()
    RunConfig.add_arguments(p)
    args = p.parse_args(["--n-id", "5", "--methods", "msp", "knn", "--quiet", "--knn-k", "7"])
    got = RunConfig.from_args(args)
    assert got == RunConfig(n_id=5, methods=("msp", "knn"), progress=False, knn_k=7)
    assert got.params_for("knn") == {"k": 7} and got.params_for("msp") == {}


def test_the_benchmark_is_resolved_once_per_run(cache, monkeypatch):
    """A run looks its benchmark up by name once and carries the object (``Prepared.benchmark``)."""
    import ood_lib.data.benchmarks as B
    from ood_lib.findings.study import run_study

    lookups = []

    class Counting(dict):
        def __getitem__(self, name):
            lookups.append(name)
            return super().__getitem__(name)

    monkeypatch.setattr(B, "BENCHMARKS", Counting(B.BENCHMARKS))
    prep = ev.prepare("embedded", RunConfig(cache_dir=cache, **SMALL), with_train=False)
    assert lookups == ["embedded"] and prep.benchmark is B.BENCHMARKS["embedded"] and prep.name == "embedded"
    lookups.clear()
    ev.run_benchmark("embedded", cache_dir=cache, methods=["msp", "odin"], **SMALL)
    assert lookups == ["embedded"]
    lookups.clear()
    run_study("embedded", RunConfig(cache_dir=cache, **SMALL), n_boot=100)
    assert lookups == ["embedded"]


def test_analysis_scores_through_the_runners_dispatch(cache):
    from ood_lib.findings import analysis

    methods = ["msp", "gradnorm", "gradnorm_autograd", "knn"]
    prep = ev.prepare("embedded", cache_dir=cache, **SMALL)
    s = analysis.set_scores(prep, methods)
    df = ev.run_benchmark("embedded", cache_dir=cache, methods=methods, **SMALL)
    table = analysis.metric_table(s, "auroc", {k: prep.splits[k].group for k in prep.ood_keys})
    for m in methods:
        ours = df[(df.method == m) & (df.ood == "mean")].auroc.iloc[0]
        assert table.loc["mean", m] == pytest.approx(ours, abs=1e-12), m
    with pytest.raises(OODInputError, match="no hyper-parameter 'temperature'"):
        analysis.set_scores(prep, ["knn"], temperature=2.0)
