"""Metrics equal scikit-learn's, exactly, including heavy ties."""

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from ood_lib.stats.metrics import aupr_in, aupr_out, auroc, bootstrap_ci, evaluate_scores, fpr95, fpr_at_tpr


def sk_fpr95(id_s, ood_s):
    y = np.r_[np.ones(len(id_s)), np.zeros(len(ood_s))]
    fpr, tpr, _ = roc_curve(y, np.r_[id_s, ood_s])
    return 100 * fpr[np.searchsorted(tpr, 0.95, side="left")]


def cases():
    rng = np.random.default_rng(0)
    for i in range(40):
        n1, n0 = rng.integers(1, 300, size=2)
        levels = rng.integers(2, 12)  # few distinct values: many ties
        shift = rng.normal()
        id_s = rng.integers(0, levels, n1) + shift * (i % 2)
        ood_s = rng.integers(0, levels, n0).astype(float)
        yield id_s.astype(float), ood_s
    yield np.arange(20.0), np.arange(20.0) + 0.5  # n = 20: TPR hits exactly 0.95
    yield rng.normal(size=1000), rng.normal(size=700) - 1


@pytest.mark.parametrize("id_s,ood_s", list(cases()))
def test_against_sklearn(id_s, ood_s):
    y = np.r_[np.ones(len(id_s)), np.zeros(len(ood_s))]
    s = np.r_[id_s, ood_s]
    assert auroc(id_s, ood_s) == pytest.approx(100 * roc_auc_score(y, s), abs=1e-10)
    assert fpr95(id_s, ood_s) == pytest.approx(sk_fpr95(id_s, ood_s), abs=1e-10)
    assert aupr_in(id_s, ood_s) == pytest.approx(100 * average_precision_score(y, s), abs=1e-10)
    assert aupr_out(id_s, ood_s) == pytest.approx(100 * average_precision_score(1 - y, -s), abs=1e-10)


def test_constant_scores():
    m = evaluate_scores(np.zeros(10), np.zeros(7))
    assert m["auroc"] == 50.0
    assert m["fpr95"] == 100.0  # every OOD sample ties with the threshold and is accepted
    assert m["aupr_in"] == pytest.approx(100 * 10 / 17)


def test_perfect_and_reversed_separation():
    a, b = np.arange(10.0) + 100, np.arange(5.0)
    assert auroc(a, b) == 100.0 and fpr95(a, b) == 0.0
    assert auroc(b, a) == 0.0 and fpr95(b, a) == 100.0


def test_fpr_at_other_levels():
    id_s, ood_s = np.arange(100.0), np.arange(100.0) - 10
    assert fpr_at_tpr(id_s, ood_s, 0.5) == pytest.approx(40.0)


def test_bootstrap_ci_is_seeded_and_brackets_the_estimate():
    rng = np.random.default_rng(1)
    a, b = rng.normal(1, 1, 300), rng.normal(0, 1, 300)
    lo, hi = bootstrap_ci(a, b, "auroc", n_boot=300, seed=3)
    assert lo < auroc(a, b) < hi
    assert (lo, hi) == bootstrap_ci(a, b, "auroc", n_boot=300, seed=3)
    assert hi - lo < 15
    lo2, hi2 = bootstrap_ci(a, b, "fpr95", n_boot=200, seed=0)
    assert lo2 <= fpr95(a, b) <= hi2
