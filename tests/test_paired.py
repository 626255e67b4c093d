"""The paired bootstrap: exact AUROC on every resample, the same resample for every detector,
honest coverage, both family-wise corrections, and clear errors for bad input."""

import numpy as np
import pytest
from scipy.stats import norm
from sklearn.metrics import roc_auc_score

from ood_lib import OODInputError
from ood_lib.stats.metrics import auroc
from ood_lib.stats.paired import VERDICTS, Difference, PairedBootstrap, holm, verdict


def tied_scores(seed: int = 0):
    """Three methods, two OOD sets of different sizes; 'coarse' has heavy ID/OOD ties."""
    rng = np.random.default_rng(seed)
    ids = {"coarse": rng.integers(0, 5, 300).astype(float), "normal": rng.normal(1, 1, 300),
           "flat": np.zeros(300)}
    ood = {s: {"coarse": rng.integers(0, 4, m).astype(float), "normal": rng.normal(0, 1, m), "flat": np.zeros(m)}
           for s, m in (("near", 250), ("far", 90))}
    return ids, ood


@pytest.fixture(scope="module")
def tied():
    ids, ood = tied_scores()
    return ids, ood, PairedBootstrap(ids, ood, n_boot=40, seed=3)


def test_point_equals_metrics_and_sklearn(tied):
    ids, ood, pb = tied
    assert pb.methods == ["coarse", "normal", "flat"] and pb.sets == ["near", "far"]
    assert pb.point.shape == (2, 3) and pb.replicates.shape == (40, 2, 3)
    for k, s in enumerate(pb.sets):
        for j, m in enumerate(pb.methods):
            y = np.r_[np.ones(300), np.zeros(len(ood[s][m]))]
            assert pb.point[k, j] == pytest.approx(auroc(ids[m], ood[s][m]), abs=1e-12)
            assert pb.point[k, j] == pytest.approx(100 * roc_auc_score(y, np.r_[ids[m], ood[s][m]]), abs=1e-12)
    assert pb.point[:, 2].tolist() == [50.0, 50.0]  # constant scores: every pair a tie
    np.testing.assert_allclose(pb.auroc().to_numpy(), pb.point.mean(axis=0), rtol=0, atol=1e-12)
    assert pb.auroc(["far"])["normal"] == pb.point[1, 1] and pb.auroc("far").name == "auroc"


@pytest.mark.parametrize("i", [0, 1, 17, 39])
def test_each_replicate_is_the_auroc_of_its_resample(tied, i):
    ids, ood, pb = tied
    id_idx, ood_idx = pb.resample(i)
    assert len(id_idx) == 300 and {s: len(x) for s, x in ood_idx.items()} == {"near": 250, "far": 90}
    for k, s in enumerate(pb.sets):
        for j, m in enumerate(pb.methods):
            assert pb.replicates[i, k, j] == pytest.approx(auroc(ids[m][id_idx], ood[s][m][ood_idx[s]]), abs=1e-12)


def test_resamples_are_shared_replayable_and_vary(tied):
    ids, ood, pb = tied
    a, b = pb.resample(5), pb.resample(5)
    assert np.array_equal(a[0], b[0]) and all(np.array_equal(a[1][s], b[1][s]) for s in pb.sets)
    c = pb.resample(6)
    assert not np.array_equal(a[0], c[0]) and not np.array_equal(a[1]["near"], c[1]["near"])
    assert np.unique(pb.replicates[:, 0, 1]).size > 30  # the statistic varies across replicates


def test_chunking_and_seed(tied):
    """Chunks of one replicate give the same numbers as the default; another seed does not."""
    ids, ood, pb = tied
    one = PairedBootstrap(ids, ood, n_boot=40, seed=3, max_bytes=1)
    assert np.array_equal(one.replicates, pb.replicates) and np.array_equal(one.point, pb.point)
    other = PairedBootstrap(ids, ood, n_boot=40, seed=4)
    assert not np.array_equal(other.replicates, pb.replicates)


def test_large_sizes_take_the_wide_integer_path():
    """2·n·m ≥ 2³¹: the counts no longer fit int32 and must still be exact."""
    rng = np.random.default_rng(1)
    ids, ood = {"s": np.round(rng.normal(0.3, 1, 40_000), 2)}, {"o": {"s": np.round(rng.normal(0, 1, 30_000), 2)}}
    pb = PairedBootstrap(ids, ood, n_boot=2, seed=0)
    id_idx, ood_idx = pb.resample(1)
    assert pb.point[0, 0] == pytest.approx(auroc(ids["s"], ood["o"]["s"]), abs=1e-10)
    assert pb.replicates[1, 0, 0] == pytest.approx(auroc(ids["s"][id_idx], ood["o"]["s"][ood_idx["o"]]), abs=1e-10)


def test_null_and_same_resample():
    """A copy, and a copy plus a constant, differ by exactly 0 in every replicate; an unrelated
    method does not, so the replicates really are paired."""
    rng = np.random.default_rng(2)
    x, y = rng.normal(1, 1, 400), rng.normal(0, 1, 300)
    ids = {"a": x, "copy": x.copy(), "shifted": x + 5.0, "other": x + rng.normal(0, 1, 400)}
    ood = {"o": {"a": y, "copy": y.copy(), "shifted": y + 5.0, "other": y + rng.normal(0, 1, 300)}}
    pb = PairedBootstrap(ids, ood, n_boot=200, seed=0)
    for twin in ("copy", "shifted"):
        assert np.array_equal(pb.replicates[:, 0, 0], pb.replicates[:, 0, pb.methods.index(twin)])
        d = pb.difference("a", twin)
        assert (d.estimate, d.lo, d.hi, d.p_value) == (0.0, 0.0, 0.0, 1.0)
        assert verdict(d.lo, d.hi) == "inconclusive"
    fam = pb.family(["copy", "shifted"], "a")
    assert fam[["estimate", "lo", "hi"]].to_numpy().tolist() == [[0.0] * 3] * 2
    assert fam["verdict"].tolist() == ["inconclusive"] * 2
    d = pb.difference("a", "other")
    assert d.lo < d.estimate < d.hi and d.hi - d.lo > 0.5
    # paired: the difference varies far less than each AUROC does on its own
    diff_sd = np.std(pb.replicates[:, 0, 0] - pb.replicates[:, 0, 3])
    assert diff_sd < 0.8 * np.std(pb.replicates[:, 0, 0])


def test_verdict_directions():
    assert VERDICTS == ("supported", "refuted", "inconclusive")
    assert verdict(0.1, 2.0) == "supported" and verdict(0.1, 2.0, direction=-1) == "refuted"
    assert verdict(-2.0, -0.1) == "refuted" and verdict(-2.0, -0.1, direction=-1) == "supported"
    for lo, hi in ((-1.0, 1.0), (0.0, 1.0), (-1.0, 0.0), (0.0, 0.0)):
        assert verdict(lo, hi) == verdict(lo, hi, -1) == "inconclusive"
    for bad in (0, 2, "+", None):
        with pytest.raises(OODInputError, match="direction"):
            verdict(0.1, 0.2, bad)
    with pytest.raises(OODInputError, match="lo <= hi"):
        verdict(1.0, 0.0)
    with pytest.raises(OODInputError, match="finite"):
        verdict(float("nan"), 1.0)


def gaussian_pair(rng, n):
    """'a' = x (AUROC Φ(1/√2)), 'b' = x + noise (AUROC Φ(1/2)), on the same samples."""
    x, y = rng.normal(1, 1, n), rng.normal(0, 1, n)
    ex, ey = rng.normal(0, 1, n), rng.normal(0, 1, n)
    return {"a": x, "b": x + ex}, {"o": {"a": y, "b": y + ey}}


def test_coverage_of_the_difference_interval():
    """On 200 synthetic data sets the 95 % interval holds the true difference about 95 % of the
    time (an unpaired interval covers ~100 %, a collapsed one ~0 %: both would fail here)."""
    true = 100 * (norm.cdf(1 / np.sqrt(2)) - norm.cdf(0.5))
    rng = np.random.default_rng(0)
    hits = []
    for r in range(200):
        pb = PairedBootstrap(*gaussian_pair(rng, 200), n_boot=200, seed=r)
        d = pb.difference("a", "b")
        assert isinstance(d, Difference) and d.lo <= d.hi
        hits.append(d.lo <= true <= d.hi)
    assert 0.90 <= np.mean(hits) <= 0.98, np.mean(hits)


def test_interval_and_difference_are_percentiles(tied):
    ids, ood, pb = tied
    mean_rep = pb.replicates[:, :, 1].mean(axis=1)
    assert pb.interval("normal") == tuple(np.quantile(mean_rep, [0.025, 0.975]))
    assert pb.interval("normal", ["far"], level=0.5) == tuple(np.quantile(pb.replicates[:, 1, 1], [0.25, 0.75]))
    d = pb.difference("normal", "coarse", sets=["near"])
    reps = pb.replicates[:, 0, 1] - pb.replicates[:, 0, 0]
    assert d.estimate == pytest.approx(pb.point[0, 1] - pb.point[0, 0], abs=1e-12)
    assert (d.lo, d.hi) == pytest.approx(tuple(np.quantile(reps, [0.025, 0.975])), abs=1e-12)
    expect = max(2 * min(np.mean(reps <= 0), np.mean(reps >= 0)), 1 / 41)
    assert d.p_value == pytest.approx(min(expect, 1.0))


def test_holm_adjustment():
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03, 0.2]), [0.04, 0.09, 0.09, 0.2])
    np.testing.assert_allclose(holm([0.5, 0.6]), [1.0, 1.0])


@pytest.fixture(scope="module")
def clear_family():
    """Members with clear effects (+, +, −) and two without, against a reference."""
    rng = np.random.default_rng(5)
    n, m = 1500, 1000
    x, y = rng.normal(0, 1, n), rng.normal(0, 1, m)
    ids, ood = {}, {"o": {}}
    for name, gain in (("ref", 1.0), ("up", 1.6), ("up2", 1.3), ("down", 0.6), ("null1", 1.0), ("null2", 1.0)):
        ids[name] = gain + x + rng.normal(0, 0.5, n)
        ood["o"][name] = y + rng.normal(0, 0.5, m)
    return PairedBootstrap(ids, ood, n_boot=1000, seed=0)


def test_family_holm_and_max_t_agree_on_clear_effects(clear_family):
    pb = clear_family
    members = ["up", "up2", "down", "null1", "null2"]
    fam = pb.family(members, "ref")
    assert fam.columns.tolist() == ["member", "estimate", "lo", "hi", "p", "p_holm", "verdict"]
    assert fam["member"].tolist() == members
    excludes = (fam["lo"] > 0) | (fam["hi"] < 0)
    assert excludes.tolist() == (fam["p_holm"] < 0.05).tolist() == [True, True, True, False, False]
    assert fam["verdict"].tolist() == ["supported", "supported", "refuted", "inconclusive", "inconclusive"]
    flipped = pb.family(members, "ref", direction=-1)["verdict"].tolist()
    assert flipped == ["refuted", "refuted", "supported", "inconclusive", "inconclusive"]
    assert (fam["p_holm"] >= fam["p"]).all()


def test_max_t_intervals_hold_simultaneously(clear_family):
    """About `level` of the replicates lie inside all K intervals at once; each single interval
    holds more of them (it is wider than a one-member interval)."""
    pb = clear_family
    members = ["up", "up2", "down", "null1", "null2"]
    fam = pb.family(members, "ref", level=0.9)
    j0 = pb.methods.index("ref")
    diffs = np.stack([pb.replicates[:, 0, pb.methods.index(k)] - pb.replicates[:, 0, j0] for k in members], 1)
    inside = (diffs >= fam["lo"].to_numpy()) & (diffs <= fam["hi"].to_numpy())
    assert abs(inside.all(axis=1).mean() - 0.9) <= 0.002
    assert (inside.mean(axis=0) > 0.93).all()
    for k, row in fam.iterrows():
        assert row["estimate"] == pytest.approx(pb.difference(row["member"], "ref").estimate)
        assert row["lo"] < row["estimate"] < row["hi"]


def test_holm_resolution_limit_is_real(clear_family):
    """With the p-value floor 1/(n_boot+1), Holm over K members cannot go below K/(n_boot+1)."""
    small = PairedBootstrap({m: s for m, s in zip(["a", "b", "c"], [np.arange(50.0)] * 3)},
                            {"o": {m: np.arange(50.0) - 40 for m in "abc"}}, n_boot=10)
    assert small.difference("a", "b").p_value == 1.0
    fam = clear_family.family(["up", "up2", "down"], "ref")
    assert fam["p"].min() == pytest.approx(1 / 1001) and fam["p_holm"].min() == pytest.approx(3 / 1001)


def test_bad_input(tied):
    ids, ood, pb = tied
    cases = [
        (dict(id_scores={}, ood_scores=ood), "id_scores is empty"),
        (dict(id_scores=ids, ood_scores={}), "ood_scores is empty"),
        (dict(id_scores=ids, ood_scores={"near": {"coarse": ood["near"]["coarse"], "normal": ood["near"]["normal"]}}),
         r"'near' has no scores for method\(s\) \['flat'\]"),
        (dict(id_scores=ids, ood_scores={"near": {**ood["near"], "extra": np.ones(5)}}), r"\['extra'\] that id_scores"),
        (dict(id_scores={**ids, "normal": np.r_[ids["normal"][:-1], np.nan]}, ood_scores=ood),
         r"id_scores\['normal'\]: contains 1 non-finite"),
        (dict(id_scores=ids, ood_scores={**ood, "far": {**ood["far"], "coarse": np.r_[np.inf, ood["far"]["coarse"][1:]]}}),
         r"ood_scores\['far'\]\['coarse'\]: contains 1 non-finite"),
        (dict(id_scores={**ids, "flat": np.zeros(0)}, ood_scores=ood), r"id_scores\['flat'\]: is empty"),
        (dict(id_scores={**ids, "flat": np.zeros(299)}, ood_scores=ood), "different numbers of samples"),
        (dict(id_scores={**ids, "flat": np.zeros((300, 2))}, ood_scores=ood), "1-d array"),
        (dict(id_scores=ids, ood_scores={"near": [1.0, 2.0]}), "must map method -> scores"),
    ]
    for kwargs, msg in cases:
        with pytest.raises(OODInputError, match=msg):
            PairedBootstrap(**kwargs, n_boot=2)
    for n_boot in (0, -1, 2.5, True):
        with pytest.raises(OODInputError, match="n_boot"):
            PairedBootstrap(ids, ood, n_boot=n_boot)
    with pytest.raises(OODInputError, match="seed"):
        PairedBootstrap(ids, ood, n_boot=2, seed=-1)
    for level in (0, 1, 1.5, -0.1, float("nan"), "0.9"):
        with pytest.raises(OODInputError, match="level"):
            pb.interval("normal", level=level)
        with pytest.raises(OODInputError, match="level"):
            pb.difference("normal", "coarse", level=level)
        with pytest.raises(OODInputError, match="level"):
            pb.family(["normal"], "coarse", level=level)
    with pytest.raises(OODInputError, match="unknown method 'nope'; valid: coarse, flat, normal"):
        pb.difference("normal", "nope")
    with pytest.raises(OODInputError, match="unknown method 'nope'"):
        pb.interval("nope")
    with pytest.raises(OODInputError, match="unknown method 'nope'"):
        pb.family(["nope"], "normal")
    with pytest.raises(OODInputError, match="unknown OOD set 'svhn'; valid: far, near"):
        pb.auroc(["near", "svhn"])
    with pytest.raises(OODInputError, match="sets is empty"):
        pb.difference("normal", "coarse", sets=[])
    with pytest.raises(OODInputError, match="twice"):
        pb.auroc(["near", "near"])
    with pytest.raises(OODInputError, match="members is empty"):
        pb.family([], "normal")
    with pytest.raises(OODInputError, match="also a member"):
        pb.family(["normal", "coarse"], "normal")
    with pytest.raises(OODInputError, match="direction"):
        pb.family(["normal"], "coarse", direction=0)
    for i in (-1, 40, 1.0):
        with pytest.raises(OODInputError, match="replicate index"):
            pb.resample(i)
