"""The four-verdict rule of 6 December 2026 on synthetic scores with known effects: each verdict
where it should be, the margin and the training seeds doing what the rule says they do."""

import numpy as np
import pytest

from ood_lib import OODInputError
from ood_lib.findings.decide import (Replicates, bonferroni_level, conjunction, decisions_table, family_verdict,
                                    four_way, min_resamples)
from ood_lib.stats.metrics import auroc, fpr95
from ood_lib.stats.paired import verdict as old_verdict

B = 2000


def _scores(rng, n_id, n_ood, shifts: dict[str, float], noise_shared=1.0):
    """Scores of methods that share most of their noise: method k's ID scores are shifted by
    ``shifts[k]`` (in units of the noise), so AUROC differences are small and resolvable."""
    base_id, base_ood = rng.normal(1.0, 1.0, n_id), rng.normal(0.0, 1.0, n_ood)
    ids = {k: base_id + s + 0.05 * rng.normal(size=n_id) for k, s in shifts.items()}
    ood = {k: base_ood + 0.05 * rng.normal(size=n_ood) for k in shifts}
    return ids, ood


def _one_set(ids, ood, name="set"):
    return ids, {name: ood}


@pytest.mark.parametrize("lo, hi, want", [
    (0.2, 3.0, ("better", "")), (-3.0, -0.2, ("worse", "")), (-0.5, 0.6, ("equivalent", "")),
    (0.1, 0.9, ("equivalent", "")), (-2.0, 2.5, ("inconclusive", "too wide")),
    (-0.2, 1.3, ("inconclusive", "crosses the margin")), (0.0, 1.0, ("inconclusive", "crosses the margin")),
])
def test_four_way_reads_an_interval_against_the_margin(lo, hi, want):
    assert four_way(lo, hi, 1.0) == want


@pytest.mark.parametrize("bad", [(1.0, 0.0, 1.0), (float("nan"), 1.0, 1.0), (0.0, 1.0, 0.0), (0.0, 1.0, float("inf"))])
def test_four_way_refuses_a_broken_interval_or_margin(bad):
    with pytest.raises(OODInputError):
        four_way(*bad)


def test_bonferroni_levels_and_the_resamples_they_need():
    assert bonferroni_level(1) == 0.95 and bonferroni_level(10) == pytest.approx(0.995)
    assert min_resamples(1) == 2000 and min_resamples(12) == 4800
    with pytest.raises(OODInputError):
        bonferroni_level(0)


def test_fpr95_of_the_resamples_equals_the_metric_on_the_resampled_arrays():
    rng = np.random.default_rng(3)
    ids = {"a": np.round(rng.normal(1, 1, 300), 1), "b": rng.normal(0.5, 1, 300)}
    ood = {"s": {"a": np.round(rng.normal(0, 1, 120), 1), "b": rng.normal(0, 1, 120)}}
    r = Replicates.paired(ids, ood, n_boot=5, seed=1)
    from ood_lib.stats.paired import PairedBootstrap

    pb = PairedBootstrap(ids, ood, n_boot=5, seed=1)
    for b in range(5):
        i, o = pb.resample(b)
        for j, k in enumerate(r.methods):
            assert r.draws[1, b, 0, j] == pytest.approx(fpr95(ids[k][i], ood["s"][k][o["s"]]), abs=1e-12)
            assert r.draws[0, b, 0, j] == pytest.approx(auroc(ids[k][i], ood["s"][k][o["s"]]), abs=1e-9)
    assert r.point[1, 0, 0] == pytest.approx(fpr95(ids["a"], ood["s"]["a"]))


def test_a_clear_gain_is_better_and_a_clear_loss_worse():
    rng = np.random.default_rng(0)
    ids, ood = _scores(rng, 3000, 1500, {"a": 0.4, "b": 0.0})
    r = Replicates.paired(*_one_set(ids, ood), n_boot=B)
    assert r.decide("a", "b").verdict == "better"
    assert r.decide("b", "a").verdict == "worse"
    assert r.decide("a", "b", direction=-1).verdict == "worse"


def test_a_small_resolved_gap_is_equivalent_only_because_of_the_margin():
    rng = np.random.default_rng(1)
    ids, ood = _scores(rng, 10000, 5000, {"a": 0.012, "b": 0.0})
    r = Replicates.paired(*_one_set(ids, ood), n_boot=B)
    d = r.decide("a", "b")
    assert 0 < d.lo and d.hi < 1.0  # resolved, and inside the margin
    assert old_verdict(d.lo, d.hi) == "supported"  # the rule of 27 November calls it a win
    assert d.verdict == "equivalent"
    assert r.decide("a", "b", margin=0.1).verdict == "better"  # with a smaller margin it would not be


def test_few_images_leave_it_inconclusive_too_wide():
    rng = np.random.default_rng(2)
    ids, ood = _scores(rng, 60, 40, {"a": 0.0, "b": 0.0})
    ood = {k: v + 0.8 * rng.normal(size=len(v)) for k, v in ood.items()}  # unshared noise: wide
    d = Replicates.paired(*_one_set(ids, ood), n_boot=B).decide("a", "b")
    assert d.verdict == "inconclusive" and d.cause == "too wide"


def _seed_runs(effects, n_id=2000, n_ood=1000):
    runs = {}
    for s, e in enumerate(effects):
        rng = np.random.default_rng(100 + s)
        runs[s] = _one_set(*_scores(rng, n_id, n_ood, {"a": e, "b": 0.0}))
    return runs


def test_inconclusive_only_because_of_seed_variance():
    runs = _seed_runs([0.25, -0.2, 0.22, -0.18, 0.03])
    seed0 = Replicates.paired(*runs[0], n_boot=B).decide("a", "b")
    assert seed0.verdict == "better"  # seed 0 alone: a clear gain
    h = Replicates.hierarchical(runs, n_boot=B)
    d = h.decide("a", "b")
    assert h.kind == "seeds × images" and d.verdict == "inconclusive" and d.cause == "too wide"
    assert d.estimate == pytest.approx(np.mean([Replicates.paired(*runs[s], n_boot=2).point[0, 0, 0]
                                                - Replicates.paired(*runs[s], n_boot=2).point[0, 0, 1] for s in runs]))


def test_consistent_seeds_keep_a_verdict():
    h = Replicates.hierarchical(_seed_runs([0.3, 0.32, 0.28, 0.31, 0.29]), n_boot=B)
    assert h.decide("a", "b").verdict == "better"


def test_a_hierarchical_bootstrap_needs_five_seeds():
    with pytest.raises(OODInputError, match="at least 5 training seeds"):
        Replicates.hierarchical(_seed_runs([0.1] * 4, n_id=50, n_ood=30), n_boot=10)


def test_per_set_signs_and_leave_one_out_beside_the_group_verdict():
    rng = np.random.default_rng(4)
    sets = {}
    ids = None
    for name, e in (("x", 0.5), ("y", 0.4), ("z", -0.9)):
        i, o = _scores(rng, 2000, 800, {"a": 0.0, "b": 0.0})
        o = {"a": o["a"] - e, "b": o["b"]}  # method a pushes this set's OOD scores down by e
        ids = ids or i
        sets[name] = o
    r = Replicates.paired(ids, sets, n_boot=B)
    d = r.decide("a", "b", cells=3)
    assert d.level == pytest.approx(1 - 0.05 / 3)
    signs = {k: v > 0 for k, v in d.per_set.items()}
    assert signs == {"x": True, "y": True, "z": False}
    assert d.agree == (2 if d.estimate > 0 else 1)
    assert d.leave_one_out[0] < d.estimate < d.leave_one_out[1]
    row = decisions_table({"far-natural": d}).iloc[0]
    assert row.cell == "far-natural" and row.n_sets == 3 and "z -" in row.per_set


def test_too_few_resamples_for_the_cells_give_no_verdict():
    rng = np.random.default_rng(5)
    r = Replicates.paired(*_one_set(*_scores(rng, 100, 50, {"a": 0.2, "b": 0.0})), n_boot=2000)
    with pytest.raises(OODInputError, match="4,800"):
        r.decide("a", "b", cells=12)


def test_fpr95_is_decided_lower_is_better():
    rng = np.random.default_rng(6)
    ids, ood = _scores(rng, 3000, 1500, {"a": 0.5, "b": 0.0})
    r = Replicates.paired(*_one_set(ids, ood), n_boot=B)
    d = r.decide("a", "b", metric="fpr95")
    assert d.estimate > 0 and d.margin == 2.0 and d.verdict == "better"


@pytest.mark.parametrize("a, b, want", [
    ("better", "better", "better"), ("better", "equivalent", "equivalent"), ("equivalent", "equivalent", "equivalent"),
    ("better", "worse", "worse"), ("inconclusive", "worse", "worse"), ("better", "inconclusive", "inconclusive"),
])
def test_claim_four_as_a_conjunction(a, b, want):
    assert conjunction(a, b) == want


@pytest.mark.parametrize("verdicts, want", [
    (["worse", "better", "inconclusive"], "better"), (["worse", "equivalent", "inconclusive"], "equivalent"),
    (["worse", "worse"], "worse"), (["worse", "inconclusive"], "inconclusive"),
])
def test_the_family_verdict_of_7_december(verdicts, want):
    assert family_verdict(verdicts) == want


def test_a_family_with_one_clearly_better_member_is_better_with_simultaneous_intervals():
    rng = np.random.default_rng(5)
    ids, ood = _scores(rng, 3000, 3000, {"ref": 0.0, "same": 0.0, "up": 0.3, "down": -0.3})
    r = Replicates.paired(*_one_set(ids, ood), n_boot=B)
    verdict, fam = r.family(["same", "up", "down"], "ref", cells=1)
    assert verdict == "better" and fam.set_index("member").verdict.to_dict() == {
        "same": "equivalent", "up": "better", "down": "worse"}
    one = r.decide("up", "ref")
    row = fam.set_index("member").loc["up"]
    assert row.hi - row.lo > one.hi - one.lo  # simultaneous over three members: wider than one alone
    verdict, _ = r.family(["down"], "ref", cells=1)
    assert verdict == "worse"
    with pytest.raises(OODInputError, match="exclude 'ref'"):
        r.family(["ref", "up"], "ref")


def test_fpr95_from_resample_indices_equals_the_weighted_reading_with_ties():
    from ood_lib.findings.decide import _fpr95_resampled, _fpr95_weighted

    rng = np.random.default_rng(11)
    ids = rng.integers(0, 30, (3, 101)).astype(float)  # many ties
    oods = [rng.integers(0, 30, (3, 57)).astype(float), rng.integers(0, 30, (3, 9)).astype(float)]
    id_idx = rng.integers(0, 101, (40, 101))
    ood_idx = [rng.integers(0, o.shape[1], (40, o.shape[1])) for o in oods]
    got = _fpr95_resampled(ids, oods, id_idx, ood_idx)
    w = np.stack([np.bincount(i, minlength=101) for i in id_idx])
    for s, (o, idx) in enumerate(zip(oods, ood_idx)):
        v = np.stack([np.bincount(i, minlength=o.shape[1]) for i in idx])
        for j in range(3):
            np.testing.assert_allclose(got[:, s, j], _fpr95_weighted(ids[j], o[j], w, v), rtol=0, atol=1e-12)
            assert got[0, s, j] == pytest.approx(fpr95(ids[j][id_idx[0]], o[j][idx[0]]))
