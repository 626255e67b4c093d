"""The thinned ROC curves: exact at the grid points (against a brute-force count over thresholds
and against scikit-learn's curve), their area the AUROC, a group pooling its sets with equal
weight, bad input named, and the figure drawn from the table alone."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.text import Text  # noqa: E402

from ood_lib import OODInputError  # noqa: E402
from ood_lib.findings.labels import method_label  # noqa: E402
from ood_lib.stats.metrics import auroc  # noqa: E402
from ood_lib.book.roc_plot import roc_figure  # noqa: E402
from ood_lib.findings.roc import FPR_GRID, KEYS, check_roc_table, roc_points, roc_table  # noqa: E402


def roc_auroc(roc: pd.DataFrame, ood: str, method: str) -> float:
    """Area (percent, trapezoid rule) under one thinned curve of a roc table."""
    check_roc_table(roc, [method])
    d = roc[roc["ood"] == ood]
    assert not d.empty, ood
    return float(100.0 * np.trapezoid(d[method].to_numpy(float), d["fpr"].to_numpy(float)))


def scores(seed: int = 0) -> tuple[dict, dict]:
    """Three methods on ID and three OOD sets of different sizes; "ties" has heavy ties."""
    rng = np.random.default_rng(seed)
    out = {}
    for m, shift in (("msp", 1.0), ("gradnorm", 0.5), ("l1*msp", 1.5)):
        out[m] = {"id_test": rng.normal(shift, 1, 400), "a": rng.normal(0, 1, 200), "b": rng.normal(-1, 1, 600),
                  "c": rng.normal(0.2, 1.3, 200)}
    out["ties"] = {k: np.round(v, 0) for k, v in out["msp"].items()}
    return out, {"a": "near", "b": "far", "c": "far"}


def brute_tpr(pos, neg, f):
    """The best TPR over thresholds t with FPR(t) <= f (a grid point that is a corner of the curve)."""
    t = np.r_[np.inf, np.unique(np.r_[pos, neg])]
    fpr = (neg[None, :] >= t[:, None]).mean(1)
    tpr = (pos[None, :] >= t[:, None]).mean(1)
    return tpr[fpr <= f + 1e-12].max()


def test_grid_points_are_the_exact_curve():
    s, _ = scores()
    pos, neg = s["msp"]["id_test"], s["msp"]["a"]  # no ties, 200 OOD: every k/200 is a corner
    got = roc_points(pos, [neg])
    want = [brute_tpr(pos, neg, f) for f in FPR_GRID]
    np.testing.assert_allclose(got, want, atol=1e-12)
    assert got[0] == pytest.approx(brute_tpr(pos, neg, 0.0)) and got[0] > 0 and got[-1] == pytest.approx(1.0)
    off = np.linspace(0.0013, 0.9987, 57)  # between corners: no ties, so the staircase is flat there
    np.testing.assert_allclose(roc_points(pos, [neg], off), [brute_tpr(pos, neg, f) for f in off], atol=1e-12)


def test_the_full_curve_is_scikit_learns():
    """With ties the curve has diagonal steps: at each of scikit-learn's FPRs the top of the step,
    half-way between two of them the mid-point of the segment joining them."""
    from sklearn.metrics import roc_curve

    s, _ = scores()
    pos, neg = s["ties"]["id_test"], s["ties"]["b"]
    fpr, tpr, _ = roc_curve(np.r_[np.ones(len(pos)), np.zeros(len(neg))], np.r_[pos, neg], drop_intermediate=False)
    xs = np.unique(fpr)
    top = np.array([tpr[fpr == x].max() for x in xs])
    bottom = np.array([tpr[fpr == x].min() for x in xs])
    assert len(xs) > 5 and (top > bottom).any()  # some vertical steps
    np.testing.assert_allclose(roc_points(pos, [neg], xs), top, atol=1e-12)
    np.testing.assert_allclose(roc_points(pos, [neg], (xs[:-1] + xs[1:]) / 2), (top[:-1] + bottom[1:]) / 2, atol=1e-12)


@pytest.mark.parametrize("method", ["msp", "gradnorm", "l1*msp", "ties"])
def test_area_of_the_thinned_curve_is_the_auroc(method):
    s, groups = scores()
    t = roc_table(s, groups)
    for k in groups:
        assert abs(roc_auroc(t, k, method) - auroc(s[method]["id_test"], s[method][k])) < 0.5
    full = roc_points(s[method]["id_test"], [s[method]["a"]], np.linspace(0, 1, 20001))  # exact up to rounding
    assert 100 * np.trapezoid(full, np.linspace(0, 1, 20001)) == pytest.approx(auroc(s[method]["id_test"], s[method]["a"]),
                                                                              abs=1e-2)


def test_a_group_weighs_its_sets_equally():
    s, groups = scores()
    t = roc_table(s, groups, ["msp", "ties"])
    assert list(t.columns) == [*KEYS, "msp", "ties"]
    assert list(dict.fromkeys(t.ood)) == ["a", "b", "c", "near", "far"] and len(t) == 5 * len(FPR_GRID)
    near = t[t.ood == "near"].reset_index(drop=True)
    assert (near.msp == t[t.ood == "a"].msp.to_numpy()).all()  # one set: its own curve
    far_auroc = np.mean([auroc(s["msp"]["id_test"], s["msp"][k]) for k in ("b", "c")])
    assert abs(roc_auroc(t, "far", "msp") - far_auroc) < 0.5
    m = s["msp"]
    bigger_c = roc_points(m["id_test"], [m["b"], np.repeat(m["c"], 3)])  # c three times as large: same curve
    np.testing.assert_allclose(bigger_c, t[t.ood == "far"].msp.to_numpy(), atol=1e-6)
    concatenated = roc_points(m["id_test"], [np.r_[m["b"], m["c"]]])  # b (600) would outweigh c (200)
    assert np.abs(concatenated - bigger_c).max() > 0.01


def test_bad_input_is_named():
    s, groups = scores()
    with pytest.raises(OODInputError, match="'energy'"):
        roc_table(s, groups, ["msp", "energy"])
    with pytest.raises(OODInputError, match="'d'"):
        roc_table(s, {**groups, "d": "far"})
    with pytest.raises(OODInputError, match="group_of"):
        roc_table(s, {"a": "middle"})
    with pytest.raises(OODInputError, match="fpr_grid"):
        roc_points(s["msp"]["id_test"], [s["msp"]["a"]], [0.5, 0.2])
    with pytest.raises(OODInputError, match="non-finite"):
        roc_points(np.r_[s["msp"]["id_test"], np.nan], [s["msp"]["a"]])


def test_figure_draws_the_groups_and_marks_the_two_compared():
    s, groups = scores()
    t = roc_table(s, groups, ["msp", "gradnorm", "l1*msp"])
    fig = roc_figure(t)
    assert fig.dpi >= 150 and len(fig.axes) == 2
    fig.canvas.draw()
    drawn, (w, h) = fig.get_tightbbox(fig.canvas.get_renderer()), fig.get_size_inches()
    assert drawn.y1 <= h + 0.01 and drawn.x1 <= w + 0.01 and min(drawn.x0, drawn.y0) >= -0.01  # nothing cut
    texts = [x.get_text() for x in fig.findobj(Text)]
    assert "near OOD: 1 set" in texts and "far OOD: 2 sets pooled, equal weight" in texts
    assert {"MSP", "GradNorm", method_label("l1*msp") + " (pre-registered)"} <= set(texts)
    assert not [x for x in texts if "*" in x or "gradnorm" in x]  # display names only
    assert any("%" in x for x in texts if "FPR" in x) and any("%" in x for x in texts if "TPR" in x)
    lines = {ln.get_label(): ln for ln in fig.axes[0].get_lines()}
    assert lines["GradNorm"].get_linewidth() > lines["MSP"].get_linewidth()
    assert lines[method_label("l1*msp") + " (pre-registered)"].get_linestyle() == "--"
    np.testing.assert_allclose(lines["chance"].get_xydata(), [[0, 0], [100, 100]])
    np.testing.assert_allclose(lines["MSP"].get_ydata(), 100 * t[t.ood == "near"].msp)
    plt.close(fig)
    fig = roc_figure(t, groups=("far", "covariate"), methods=["gradnorm"])
    assert len(fig.axes) == 1 and {ln.get_label() for ln in fig.axes[0].get_lines()} == {"chance", "TPR = 95 % (FPR95)",
                                                                                         "GradNorm"}
    plt.close(fig)


def test_figure_refuses_a_table_it_cannot_draw():
    s, groups = scores()
    t = roc_table(s, groups, ["msp", "gradnorm"])
    with pytest.raises(OODInputError, match="'fpr'.*'energy'"):
        roc_figure(t.drop(columns=["fpr"]), methods=["msp", "energy"])
    with pytest.raises(OODInputError, match="'covariate'"):
        roc_figure(t, groups=("covariate",))
    with pytest.raises(OODInputError, match="no method column"):
        roc_figure(pd.DataFrame(columns=list(KEYS)))
