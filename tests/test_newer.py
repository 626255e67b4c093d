"""ood_lib.book.newer: which newer detector needs a backward pass, and the GAIA summary rows."""

import numpy as np
import pandas as pd
import pytest

from conftest import REPO
from ood_lib import OODInputError
from ood_lib.book.newer import NEWER, RELATION, backward_pass, best_by_kind, gaia_rows, newer_table, odin_rows
from ood_lib.findings.study import load_tables
from ood_lib.findings.study import Study

RECORDED = REPO / "results" / "recorded"


def test_backward_pass_follows_the_registry():
    assert backward_pass("gaia") == "needed"
    assert backward_pass("gaia_last") == backward_pass("gradorth") == "closed form"
    assert backward_pass("vim") == backward_pass("gen") == "none"
    with pytest.raises(OODInputError, match="unknown detector"):
        backward_pass("no_such_detector")
    assert set(NEWER) <= set(RELATION)


def test_tables_from_a_recorded_study():
    studies = {"cifar10": Study.load(RECORDED / "cifar10")}
    t = newer_table(studies, "far")
    m = studies["cifar10"]["metrics"].set_index(["method", "ood"]).auroc
    assert t.loc["GradOrth", "CIFAR-10 · ResNet-20"] == m[("gradorth", "far")]
    assert (t["backward pass"] != "needed").all()
    best = best_by_kind(studies, "far").iloc[0]
    grads = [m[(n, "far")] for n in NEWER if backward_pass(n) == "closed form"]
    assert best["gradient AUROC"] == max(grads)


def _gaia(variant="A"):
    rows = []
    for part, method, auc in (("all_layers", "gaia", 80.0), ("last_layer", "gaia_last", 70.0),
                              ("reference", "knn", 90.0)):
        rows.append({"method": method, "variant": variant if part != "reference" else np.nan, "part": part,
                     "ood": "far", "group": "far", "auroc": auc,
                     "diff_vs_last": 10.0 if part == "all_layers" else np.nan, "lo_vs_last": 8.0, "hi_vs_last": 12.0,
                     "diff_vs_best": -10.0 if part != "reference" else np.nan, "lo_vs_best": -12.0,
                     "hi_vs_best": -8.0})
    return pd.DataFrame(rows)


def test_gaia_rows():
    r = gaia_rows({"cifar10": _gaia()}).iloc[0]
    assert r["GAIA-A"] == 80.0 and r["last layer"] == 70.0
    nb = "\u00a0"  # an interval does not break across lines
    assert r["all − last"] == f"+10.00 [+8.00,{nb}+12.00]" and r["all − best"] == f"−10.00 [−12.00,{nb}−8.00]"
    assert r["best forward-only"] == "KNN 90.0"
    with pytest.raises(OODInputError, match="lacks columns"):
        gaia_rows({"cifar10": _gaia().drop(columns="diff_vs_best")})
    assert gaia_rows({}).empty


def test_odin_rows_show_a_share_only_where_the_gain_clears_zero(tmp_path):
    base = {"auroc_msp_t": 80.0, "gain_first_order": 1.0, "gain_first_order_lo": 0.5, "gain_first_order_hi": 1.5}
    t = pd.DataFrame([
        {**base, "ood": "near", "group": "near", "auroc_odin": 80.1, "gain": 0.1, "gain_lo": -0.2, "gain_hi": 0.4,
         "explained": 10.0},
        {**base, "ood": "far", "group": "far", "auroc_odin": 82.0, "gain": 2.0, "gain_lo": 1.5, "gain_hi": 2.5,
         "explained": 0.5},
        {**base, "ood": "textures", "group": "far", "auroc_odin": 90.0, "gain": 9.0, "gain_lo": 8.0, "gain_hi": 10.0,
         "explained": 0.9}])  # a set's row: not a group summary
    (tmp_path / "cifar10").mkdir()
    t.to_csv(tmp_path / "cifar10" / "depth_odin.csv", index=False)
    tables = load_tables(tmp_path, ["cifar10", "mnist"], "depth_odin.csv")
    assert list(tables) == ["cifar10"]
    rows = odin_rows(tables)
    assert list(rows.index.get_level_values("group")) == ["near", "far"]
    assert rows["share explained"].tolist() == ["—", "0.50"] and rows["ODIN"].tolist() == [80.1, 82.0]
    assert rows["ODIN − S_T"].iloc[1] == "+2.00 [+1.50,\u00a0+2.50]"
    with pytest.raises(OODInputError, match="lacks columns"):
        odin_rows({"cifar10": t.drop(columns="explained")})
