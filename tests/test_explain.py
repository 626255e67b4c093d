"""The feature-norm explanation: its AUROCs are the metrics module's, its counts are exact on a
constructed table, its histograms keep every sample on shared edges, bad input is named, and its
figures are drawn from the tables alone."""

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from ood_lib import OODInputError
from ood_lib.findings.explain import distribution_figure, factor_table, histograms, norm_effect
from ood_lib.stats.metrics import auroc


def synthetic(seed: int = 0) -> tuple[dict, dict]:
    """ID and two OOD sets with the same output-term shift: on "low_norm" the OOD features are
    smaller (U separates the ID-larger way, so U·V should beat V); on "high_norm" they are larger
    (U points the wrong way, so U·V should lose to V)."""
    rng = np.random.default_rng(seed)

    def draw(n: int, log_u_mean: float, v_mean: float) -> dict:
        u = np.exp(rng.normal(log_u_mean, 0.3, n))
        v = 1 / (1 + np.exp(-rng.normal(v_mean, 1.0, n)))  # in (0, 1), larger = ID
        return {"u": u, "v": v}

    s = {"id_test": draw(2000, 1.0, 2.0), "low_norm": draw(800, 0.4, 1.0), "high_norm": draw(700, 1.6, 1.0)}
    return s, {"low_norm": "far", "high_norm": "near"}


def test_factor_table_aurocs_are_the_metric_and_show_help_and_harm():
    s, groups = synthetic()
    t = factor_table(s, groups, "u", "v").set_index("ood")
    idd = s["id_test"]
    for key in ("low_norm", "high_norm"):
        o, r = s[key], t.loc[key]
        assert r["auroc_u"] == auroc(idd["u"], o["u"])
        assert r["auroc_v"] == auroc(idd["v"], o["v"])
        assert r["auroc_uv"] == auroc(idd["u"] * idd["v"], o["u"] * o["v"])
        assert r["uv_minus_v"] == pytest.approx(r["auroc_uv"] - r["auroc_v"])
        assert r["uv_minus_u"] == pytest.approx(r["auroc_uv"] - r["auroc_u"])
        assert r["median_u_ood"] == np.median(o["u"]) and r["median_u_id"] == np.median(idd["u"])
        assert r["median_u_ratio"] == pytest.approx(np.median(o["u"]) / np.median(idd["u"]))
        assert r["spearman_ood"] == pytest.approx(stats.spearmanr(np.log(o["u"]), np.log(o["v"])).statistic)
        assert r["n_ood"] == len(o["u"]) and r["group"] == groups[key]
    assert t.loc["low_norm", "auroc_u"] > 50 and t.loc["low_norm", "uv_minus_v"] > 1    # U helps
    assert t.loc["high_norm", "auroc_u"] < 50 and t.loc["high_norm", "uv_minus_v"] < -1  # U hurts
    assert norm_effect(t.reset_index())["n_agree"] == 2


def test_factor_table_uses_given_product_values():
    s, groups = synthetic()
    for per in s.values():
        per["gn"] = per["u"] * per["v"] ** 2
    t = factor_table(s, groups, "u", "v", uv="gn").set_index("ood")
    assert t.loc["low_norm", "auroc_uv"] == auroc(s["id_test"]["gn"], s["low_norm"]["gn"])


def constructed() -> pd.DataFrame:
    return pd.DataFrame({"ood": list("abcd"), "group": ["far"] * 4, "auroc_u": [70.0, 40, 60, 45],
                         "auroc_v": [80.0] * 4, "auroc_uv": [85.0, 75, 78, 70]})


def test_norm_effect_counts_on_a_constructed_table():
    t = constructed()
    t["uv_minus_v"] = t.auroc_uv - t.auroc_v  # y = 5, -5, -2, -10
    r = norm_effect(t)  # x = 20, -10, 10, -5: signs agree on a, b, d
    assert (r["n_sets"], r["n_helps"], r["n_predicted"], r["n_agree"]) == (4, 1, 2, 3)
    assert r["spearman"] == pytest.approx(0.8) and r["reason"] is None  # ranks 4132 vs 4231
    r = norm_effect(t, against="v")  # x = -10, -40, -20, -35: all negative
    assert (r["n_predicted"], r["n_agree"]) == (0, 3)
    assert r["spearman"] == pytest.approx(1 - 6 * 2 / (4 * 15))  # ranks 4132 vs 4231
    short = norm_effect(t.iloc[:2])
    assert short["spearman"] is None and "at least 3" in short["reason"]
    flat = t.assign(auroc_u=60.0)
    assert norm_effect(flat)["spearman"] is None and "same on every set" in norm_effect(flat)["reason"]


def test_histograms_keep_every_sample_on_shared_edges():
    s, _ = synthetic()
    for log in (False, True):
        h = histograms({k: p["u"] for k, p in s.items()}, "u", bins=25, log=log)
        for key, g in h.groupby("set"):
            assert g["count"].sum() == len(s[key]["u"])
            w = np.diff(np.log10(np.r_[g.left, g.right.iloc[-1]])) if log else (g.right - g.left).to_numpy()
            assert (g["density"] * w).sum() == pytest.approx(1.0)
        edges = {k: tuple(g.left) + (g.right.iloc[-1],) for k, g in h.groupby("set")}
        assert len(set(edges.values())) == 1 and len(next(iter(edges.values()))) == 26
        e = np.array(next(iter(edges.values())))
        steps = np.diff(np.log10(e)) if log else np.diff(e)
        assert np.allclose(steps, steps[0])


@pytest.mark.parametrize("mutate,match", [
    (lambda s: s.pop("id_test"), "need 'id_test' and at least one OOD set"),
    (lambda s: s["low_norm"].update(v=s["low_norm"]["v"][:-1]), "different lengths"),
    (lambda s: s["high_norm"]["u"].__setitem__(3, np.nan), "high_norm/u: contains 1 non-finite"),
    (lambda s: s["low_norm"].pop("v"), "set 'low_norm': no values named 'v'"),
    (lambda s: s["id_test"]["u"].__setitem__(0, -1.0), "'u' has 1 negative"),
])
def test_factor_table_bad_input(mutate, match):
    s, groups = synthetic()
    mutate(s)
    with pytest.raises(OODInputError, match=match):
        factor_table(s, groups, "u", "v")


def test_other_bad_input_is_named():
    s, groups = synthetic()
    with pytest.raises(OODInputError, match="'high_norm' needs one of"):
        factor_table(s, {"low_norm": "far"}, "u", "v")
    with pytest.raises(OODInputError, match=r"ood/x: 1 value\(s\) <= 0 .*log scale"):
        histograms({"id": np.ones(5), "x": np.r_[1.0, 0.0]}, "ood", log=True)
    with pytest.raises(OODInputError, match="non-finite"):
        histograms({"id": np.r_[1.0, np.inf]}, "u")
    with pytest.raises(OODInputError, match="bins must be a positive integer"):
        histograms({"a": np.ones(3)}, "u", bins=0)
    with pytest.raises(OODInputError, match="missing column"):
        norm_effect(pd.DataFrame({"auroc_u": [60.0]}))
    with pytest.raises(OODInputError, match="against"):
        norm_effect(constructed(), against="u")


@pytest.fixture
def tables():
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s, groups = synthetic()
    u = {k: p["u"] for k, p in s.items()}
    yield histograms(u, "u", log=True)
    plt.close("all")


def test_figures_have_the_expected_axes(tables):
    hu = tables
    fig = distribution_figure(hu, "u", "‖h‖₁", names={"low_norm": "Low norm"})
    assert len(fig.axes) == 1 and fig.dpi >= 150 and fig.axes[0].get_xscale() == "log"
    assert len(fig.axes[0].lines) == 2 and len(fig.axes[0].collections) == 1  # OOD lines, ID fill
    assert "Low norm" in [x.get_text() for x in fig.legends[0].get_texts()]
    with pytest.raises(OODInputError, match="no rows for quantity 'v'"):
        distribution_figure(hu, "v", "V")


def test_import_does_not_load_pyplot():
    code = "import sys, ood_lib.findings.explain; assert 'matplotlib.pyplot' not in sys.modules, 'pyplot loaded'"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
