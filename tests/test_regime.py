"""Shaping settings chosen in the model's regime (ood_lib.detectors.regime) and the before/after table
(ood_lib.findings.regime): the rule's choice worked out by hand and by independent code, its blindness
to OOD data, its errors, and the table on the embedded benchmark."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from ood_lib._checks import OODInputError
from ood_lib.detectors import FitData, create
from ood_lib.detectors.regime import PERCENTILE_GRID, SPARSITY_GRID, agreement, choose_in_regime


def _head(w, b=None) -> nn.Linear:
    w = torch.as_tensor(w, dtype=torch.float64)
    lin = nn.Linear(w.shape[1], w.shape[0]).double()
    with torch.no_grad():
        lin.weight.copy_(w)
        lin.bias.copy_(torch.zeros(len(w)) if b is None else torch.as_tensor(b, dtype=torch.float64))
    return lin


def _tricky(n_robust: int, n_tricky: int) -> tuple[nn.Linear, np.ndarray]:
    """20 units; class 0 reads unit 0, class 1 reads units 1–19 at 0.1 each. A robust sample
    (unit 0 = 10) is class 0 whatever is pruned; a tricky one (unit 0 = 1.45, others 1) is class 1
    (1.9 > 1.45) only while ASH keeps ≥ 16 units (0.1 · 15 > 1.45), i.e. percentile ≤ 20
    (k = 20 − round(0.2 p))."""
    w = np.zeros((2, 20))
    w[0, 0], w[1, 1:] = 1.0, 0.1
    robust = np.r_[10.0, np.ones(19)]
    tricky = np.r_[1.45, np.ones(19)]
    return _head(w), np.array([robust] * n_robust + [tricky] * n_tricky)


@pytest.mark.parametrize("variant", ["s", "p"])
def test_ash_picks_the_most_aggressive_percentile_that_keeps_99_percent(variant):
    head, h = _tricky(99, 1)  # one tricky sample in 100: 99 % agree at every percentile
    assert choose_in_regime("ash", head, h, variant=variant).value == 99.0
    head, h = _tricky(98, 2)  # two: 98 % above p = 20
    r = choose_in_regime("ash", head, h, variant=variant)
    assert r.value == 20.0
    t = r.table.set_index("value")
    assert t.loc[20.0, "agreement"] == 1.0 and t.loc[25.0, "agreement"] == pytest.approx(0.98)
    assert list(t.index[t.meets]) == [10.0, 15.0, 20.0] and t.chosen.sum() == 1 and t.loc[20.0, "chosen"]
    assert "highest" in r.rule and "chosen 20" in r.rule and "Djurisic" in r.rule
    # the level is a parameter: at 98 % every percentile qualifies
    assert choose_in_regime("ash", head, h, variant=variant, min_agreement=0.98).value == 99.0


def _independent_predictions(method, w, b, h, v):
    """ReAct, ASH-B and DICE written again from their papers' formulas, in numpy."""
    if method == "react":
        return (np.minimum(h, np.percentile(h, v)) @ w.T + b).argmax(1)
    if method == "ash-b":
        k = max(1, h.shape[1] - int(np.round(h.shape[1] * v / 100)))
        top = np.argsort(-h, axis=1, kind="stable")[:, :k]
        shaped = np.zeros_like(h)
        np.put_along_axis(shaped, top, (h.sum(1) / k)[:, None], axis=1)
        return (shaped @ w.T + b).argmax(1)
    contrib = w * h.mean(0)[None, :]
    return (h @ (w * (contrib > np.percentile(contrib, 100 * v))).T + b).argmax(1)


@pytest.mark.parametrize("method", ["react", "ash-b", "dice"])
def test_choice_matches_an_independent_computation_of_the_rule(method):
    rng = np.random.default_rng(3)
    h = rng.gamma(2.0, 1.0, size=(400, 16))  # post-ReLU-like: non-negative
    w, b = rng.normal(size=(5, 16)), rng.normal(size=5) * 0.1
    name, kw = ("ash", {"variant": "b"}) if method == "ash-b" else (method, {})
    plain = (h @ w.T + b).argmax(1)
    grid = SPARSITY_GRID if method == "dice" else PERCENTILE_GRID
    agree = {v: float((_independent_predictions(method, w, b, h, v) == plain).mean()) for v in grid}
    r = choose_in_regime(name, _head(w, b), h, **kw)
    assert dict(zip(r.table.value, r.table.agreement)) == pytest.approx(agree)
    # at 99 % and at a level some grid values meet and others miss (the median agreement)
    for level in (0.99, float(np.median(list(agree.values())))):
        ok = [v for v in grid if agree[v] >= level]
        mildest_first = sorted(grid, reverse=method == "react")
        expect = (min(ok) if method == "react" else max(ok)) if ok else max(mildest_first, key=agree.get)
        assert choose_in_regime(name, _head(w, b), h, min_agreement=level, **kw).value == expect


def test_none_meeting_the_level_takes_the_highest_agreement_and_says_so(monkeypatch):
    import ood_lib.detectors.regime as R

    head, h = _tricky(0, 10)
    r = choose_in_regime("ash", head, h, variant="p", grid=[50, 90])  # every prediction flips at both
    assert r.value == 50.0 and "none reaches it: the highest agreement, 50 (0.00 %)" in r.rule
    curve = {0.1: 0.94, 0.2: 0.95, 0.3: 0.97, 0.4: 0.97, 0.5: 0.96}  # not monotone, as DICE's can be
    curve_react = {10.0: 0.90, 20.0: 0.95, 30.0: 0.97, 40.0: 0.97, 50.0: 0.96}
    monkeypatch.setattr(R, "agreement", lambda method, model, train, v, variant="s": {**curve, **curve_react}[v])
    assert choose_in_regime("dice", head, h, grid=list(curve)).value == 0.3
    assert choose_in_regime("dice", head, h, grid=list(curve), min_agreement=0.96).value == 0.5
    assert choose_in_regime("react", head, h, grid=[10, 20, 30, 40, 50], min_agreement=0.99).value == 40.0


def test_detectors_take_id_and_fit_it_on_the_training_split_only():
    head, h = _tricky(98, 2)
    det = create("ash", model=head, percentile="id", variant="p")
    assert det.needs.fit and det.not_applicable(None) == "there is no ID training split to fit on"
    with pytest.raises(OODInputError, match="not fitted"):
        det.score(h)
    assert det.fit(FitData(h)).percentile_ == 20.0 and det.get_params()["percentile"] == "id"
    torch.testing.assert_close(det.score(h), create("ash", model=head, percentile=20.0, variant="p").score(h))
    # the choice reads the training features only: scoring other data afterwards cannot move it
    det.score(np.full((3, 20), 7.0))
    assert det.percentile_ == 20.0
    rng = np.random.default_rng(0)
    x = rng.gamma(2.0, 1.0, size=(300, 16))
    lin = _head(rng.normal(size=(4, 16)), rng.normal(size=4))
    react = create("react", model=lin, percentile="id").fit(FitData(x))
    assert react.percentile_ == choose_in_regime("react", lin, x).value
    assert react.threshold_ == pytest.approx(np.percentile(x, react.percentile_))
    dice = create("dice", model=lin, sparsity="id").fit(FitData(x))
    assert dice.sparsity_ == choose_in_regime("dice", lin, x).value
    # the published defaults are unchanged
    assert create("react", model=lin).percentile == 90.0 and create("dice", model=lin).sparsity == 0.9
    assert create("ash", model=lin).percentile == 95.0


def test_bad_input_is_an_error_that_names_it():
    head, h = _tricky(5, 5)
    cases = [
        (lambda: choose_in_regime("knn", head, h), "in-regime settings exist for react, ash, dice"),
        (lambda: choose_in_regime("ash", head, h, variant="x"), "one of s, p, b"),
        (lambda: choose_in_regime("ash", head, h, grid=[]), "grid of settings is empty"),
        (lambda: choose_in_regime("ash", head, h, grid=[50, 100]), r"\[0, 100\)"),
        (lambda: choose_in_regime("dice", head, h, grid=[0.5, 2]), r"\[0, 1\)"),
        (lambda: choose_in_regime("ash", head, h, min_agreement=1.5), r"min_agreement must be in \(0, 1\]"),
        (lambda: choose_in_regime("ash", head, h[:, :5]), "D = 5 columns but the detector takes D = 20"),
        (lambda: choose_in_regime("ash", head, h[:1]), "at least 2 ID training features"),
        (lambda: choose_in_regime("ash", head, np.where(h > 5, np.nan, h)), "non-finite"),
        (lambda: choose_in_regime("ash", object(), h), "needs a model with a `head`"),
        (lambda: create("ash", model=head, percentile="auto"), "a number or 'id'"),
        (lambda: create("dice", model=head, sparsity="best"), "a number or 'id'"),
        (lambda: create("react", model=head, percentile=120), r"\[0, 100\]"),
    ]
    for call, msg in cases:
        with pytest.raises(OODInputError, match=msg):
            call()
    assert agreement("ash", head, h, 10.0, variant="p") == 1.0


# --- the before/after table on the embedded benchmark (random weights, small subsets) ----------
@pytest.fixture(scope="module")
def prep(tmp_path_factory):
    from ood_lib.run.evaluate import prepare

    return prepare("embedded", checkpoint="random", n_id=60, n_ood=30, n_fit=80, progress=False,
                   cache_dir=tmp_path_factory.mktemp("cache"))


def test_table_before_is_the_runner_and_groups_are_means_of_their_sets(prep):
    from ood_lib.findings.regime import COLUMNS, regime_table
    from ood_lib.run.evaluate import score_methods

    table, info = regime_table(prep, bank=prep.feats["id_train"], bank_note="the same split, for the test",
                               odin={"n_id": 8, "n_ood": 4, "seed": 0})
    assert list(table.columns) == list(COLUMNS)
    rows, _, _ = score_methods(prep, ["react", "ash", "dice", "knn", "energy"])
    for r in rows:
        if r["ood"] in prep.ood_keys:
            mine = table[(table.method == r["method"]) & (table.ood == r["ood"])] if r["method"] != "energy" else \
                table[(table.method == "react") & (table.ood == r["ood"])]
            col = "energy_auroc" if r["method"] == "energy" else "auroc_before"
            assert mine[col].item() == pytest.approx(r["auroc"], abs=1e-9)
    near = table[(table.method == "dice") & (table.level == "group")].set_index("ood")
    sets = table[(table.method == "dice") & (table.level == "set")]
    far = sets[sets.group == "far-natural"]
    assert near.loc["far-natural", "auroc_after"] == pytest.approx(far.auroc_after.mean())
    assert near.loc["far-natural", "n_sets"] == len(far) == 2 and "covariate" not in near.index
    assert info["knn"]["k_after"] == info["knn"]["k_before"]  # the same bank: the same detector
    odin = table[table.method == "odin"]
    assert odin.auroc_before.isna().all() and (odin[odin.level == "set"].n_ood == 4).all()
    assert info["ash"]["value_before"] == 95.0 and info["ash"]["value_after"] in PERCENTILE_GRID


def test_table_settings_do_not_depend_on_the_ood_sets(prep):
    """Replace every OOD set's features by noise: the settings chosen stay, the AUROCs after move."""
    import copy

    from ood_lib.findings.regime import regime_table

    t1, i1 = regime_table(prep, methods=("react", "dice"))
    other = copy.copy(prep)
    other.feats, other._as64 = dict(prep.feats), {}
    rng = np.random.default_rng(1)
    for k in prep.ood_keys:
        f = copy.copy(prep.feats[k])
        f.h = rng.gamma(1.0, 1.0, size=f.h.shape).astype(np.float32)
        other.feats[k] = f
    t2, i2 = regime_table(other, methods=("react", "dice"))
    assert {m: i1[m]["value_after"] for m in i1} == {m: i2[m]["value_after"] for m in i2}
    assert not np.allclose(t1.auroc_after, t2.auroc_after)
    with pytest.raises(OODInputError, match="unknown method id"):
        regime_table(prep, methods=("mahalanobis",))
    no_train = copy.copy(prep)
    no_train.feats = {k: v for k, v in prep.feats.items() if k != "id_train"}
    with pytest.raises(OODInputError, match="needs the ID training split"):
        regime_table(no_train)
