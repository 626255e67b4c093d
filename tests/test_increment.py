"""Depth as an incremental-information test: Mahalanobis on pooled activations, simultaneous intervals
over any pairs, the per-block table on a small benchmark (the recorded MNIST table is recomputed in
test_depth.py, beside the depth table it shares a fixture with)."""

import numpy as np
import pytest

from ood_lib import OODInputError
from ood_lib.findings.depth import depth_scores, layer_blocks
from ood_lib.findings.increment import (CONTROL, INCREMENT_COLUMNS, block_forward_scores, head_blocks,
                                        increment_table, mahalanobis_fit, mahalanobis_score)
from ood_lib.run.evaluate import prepare
from ood_lib.stats.metrics import auroc
from ood_lib.stats.paired import PairedBootstrap


def test_mahalanobis_is_the_hand_computed_distance_to_the_nearest_class():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 50)
    z = rng.normal(size=(150, 4)) + 3.0 * np.eye(4)[y]
    means, prec = mahalanobis_fit(z, y)
    mu = np.stack([z[y == c].mean(0) for c in range(3)])
    cov = sum(((z[y == c] - mu[c]).T @ (z[y == c] - mu[c])) for c in range(3)) / len(z)
    q = rng.normal(size=(7, 4))
    want = -np.min([[(v - m) @ np.linalg.inv(cov) @ (v - m) for m in mu] for v in q], axis=1)
    np.testing.assert_allclose(mahalanobis_score(q, means, prec), want, rtol=1e-9)
    assert mahalanobis_score(mu, means, prec).max() == pytest.approx(0.0, abs=1e-9)  # a class mean is ID-most


@pytest.mark.parametrize("z, y, match", [
    (np.ones((4, 2)), np.zeros(4), "two classes"),
    (np.full((4, 2), np.nan), np.array([0, 0, 1, 1]), "finite"),
    (np.ones((4, 2)), np.array([0, 1]), "N labels"),
])
def test_mahalanobis_bad_fits_are_named(z, y, match):
    with pytest.raises(OODInputError, match=match):
        mahalanobis_fit(z, y)


def test_pairs_family_is_family_for_one_reference_and_wider_than_one_interval():
    rng = np.random.default_rng(1)
    ids = {m: rng.normal(size=80) for m in "abcd"}
    oods = {"s": {m: rng.normal(size=60) - (0.5 if m == "a" else 0.0) for m in "abcd"}}
    pb = PairedBootstrap(ids, oods, n_boot=300, seed=0)
    fam = pb.family(["a", "b", "c"], "d")
    pairs = pb.pairs_family([("a", "d"), ("b", "d"), ("c", "d")])
    assert np.allclose(fam[["estimate", "lo", "hi"]].to_numpy(), pairs[["estimate", "lo", "hi"]].to_numpy())
    mixed = pb.pairs_family([("a", "d"), ("b", "c"), ("c", "a")]).set_index(["a", "b"])
    one = pb.difference("b", "c")
    assert mixed.loc[("b", "c")].lo < one.lo and mixed.loc[("b", "c")].hi > one.hi
    with pytest.raises(OODInputError, match="different methods"):
        pb.pairs_family([("a", "a")])
    with pytest.raises(OODInputError, match="empty"):
        pb.pairs_family([])


# --- on a small benchmark with random weights ------------------------------------------------
@pytest.fixture(scope="module")
def small(tmp_path_factory):
    prep = prepare("embedded", checkpoint="random", n_id=80, n_ood=40, n_fit=120, progress=False,
                   cache_dir=tmp_path_factory.mktemp("cache"), with_train=True)
    grads = depth_scores(prep)
    forward = block_forward_scores(prep, list(grads))
    return prep, grads, forward


def test_forward_statistics_are_the_blocks_outputs(small):
    prep, grads, forward = small
    assert head_blocks(prep.model, layer_blocks(prep.model)) == ["fc2"]
    assert set(forward) == {"input", "conv1", "conv2", "fc1", "fc2"}  # "network" is no module
    x = next(iter(__import__("ood_lib.run.features", fromlist=["batch_loader"]).batch_loader(
        prep.splits["id_test"].dataset, 8)))[0]
    import torch
    with torch.no_grad():
        a = prep.model.conv1(x)
    np.testing.assert_allclose(forward["conv1"]["l1"]["id_test"][:8], a.double().abs().flatten(1).sum(1).numpy(),
                               rtol=1e-5)
    np.testing.assert_allclose(forward["input"]["l1"]["id_test"][:8], x.double().abs().flatten(1).sum(1).numpy(),
                               rtol=1e-9)


def _oracle(prep, value):
    """A "gradient" that is ``value`` on ID images and 0 on OOD ones (plus tiny noise): perfect information."""
    rng = np.random.default_rng(0)
    n = {k: len(prep.splits[k].dataset) for k in ["id_test", *prep.ood_keys]}
    return {k: (value if k == "id_test" else 0.0) + 1e-3 * rng.normal(size=m) for k, m in n.items()}


def test_increment_table_leaves_out_the_head_and_finds_added_information(small):
    prep, grads, forward = small
    ref = {k: -forward["fc1"]["l1"][k] for k in grads["input"]}  # a weak forward score
    t = increment_table(prep, grads, forward, ref, n_boot=200)
    assert list(t.columns) == INCREMENT_COLUMNS and "fc2" not in set(t.layer) and CONTROL not in set(t.layer)
    assert set(t.layer) == {"input", "conv1", "conv2", "fc1", "network"}
    assert set(t.same_block.dropna()) <= {"l1", "maha"} and t[t.layer == "network"].same_block.isna().all()
    # every AUROC is taken on the evaluation half of the ID images: the gradient's, by hand
    n = len(grads["input"]["id_test"])
    ev = np.sort(np.random.default_rng(prep.config.seed).permutation(n)[n // 2:])
    k = prep.ood_keys[0]
    row = t[(t.layer == "conv1") & (t.ood == k)].iloc[0]
    assert row.auroc_grad == pytest.approx(auroc(grads["conv1"]["id_test"][ev], grads["conv1"][k]), abs=1e-9)
    assert t.attrs["n_evaluation"] == len(ev)
    # a block whose gradient separates ID from OOD perfectly is found to add information; noise is not
    boosted = {**grads, "conv2": _oracle(prep, 10.0)}
    b = increment_table(prep, boosted, forward, ref, n_boot=200, seed=0)
    groups = b[b.ood == b.group]
    assert (groups[groups.layer == "conv2"].verdict_fused == "supported").all()
    assert (groups[groups.layer == "conv2"].auroc_grad == 100).all()
    assert not (groups[groups.layer == "conv2"].verdict_same == "refuted").any()  # a forward statistic may tie it
    noise = {**grads, "conv2": {k: np.random.default_rng(3).normal(size=len(v)) for k, v in grads["conv2"].items()}}
    rng = np.random.default_rng(4)  # a fair reference: ID higher by one spread; noise added can only blur it
    fair = {k: (1.0 if k == "id_test" else 0.0) + rng.normal(size=len(v)) for k, v in ref.items()}
    c = increment_table(prep, noise, forward, fair, n_boot=200, seed=0)
    assert not (c[c.layer == "conv2"].verdict_fused == "supported").any()


def test_increment_table_positive_control_and_bad_input(small):
    prep, grads, forward = small
    rng = np.random.default_rng(5)
    ref = {k: (1.0 if k == "id_test" else 0.0) + rng.normal(size=len(v)) for k, v in grads["input"].items()}
    odin = {k: {"log_s0": ref[k], "log_s": ref[k] + (9.0 if k == "id_test" else 0.0)} for k in ref}
    t = increment_table(prep, grads, forward, ref, odin=odin, n_boot=200)
    ctrl = t[t.layer == CONTROL]
    assert len(ctrl) == len(t[t.layer == "input"]) and (ctrl[ctrl.ood == ctrl.group].verdict_fused == "supported").all()
    short = {**grads, "conv1": {k: v[:-1] for k, v in grads["conv1"].items()}}
    with pytest.raises(OODInputError, match="conv1"):
        increment_table(prep, short, forward, ref, n_boot=200)
    with pytest.raises(OODInputError, match="same_block"):
        increment_table(prep, grads, forward, ref, same_block={"conv1": "knn"}, n_boot=200)
    flat = {**grads, "conv1": {k: np.ones(len(v)) for k, v in grads["conv1"].items()}}
    with pytest.raises(OODInputError, match="constant"):
        increment_table(prep, flat, forward, ref, n_boot=200)


def test_summary_counts_verdicts_and_the_figure_draws_every_group(small):
    import matplotlib

    matplotlib.use("Agg")
    from ood_lib.findings.increment import increment_figure, increment_summary

    prep, grads, forward = small
    rng = np.random.default_rng(6)
    ref = {k: (1.0 if k == "id_test" else 0.0) + rng.normal(size=len(v)) for k, v in grads["input"].items()}
    odin = {k: {"log_s0": ref[k], "log_s": ref[k] + (9.0 if k == "id_test" else 0.0)} for k in ref}
    t = increment_table(prep, {**grads, "conv2": _oracle(prep, 10.0)}, forward, ref, odin=odin, n_boot=200)
    groups = sorted(set(t.group) & {"near", "far"})
    s = increment_summary({"embedded": t}, groups)
    assert list(s.group) == groups
    for _, r in s.iterrows():
        g = t[(t.ood == r.group) & (t.group == r.group) & (t.kind != "control")]
        assert r.fused_n == len(g) and r.fused_supported == (g.verdict_fused == "supported").sum() >= 1
        assert r.same_n == g.verdict_same.notna().sum() and r.control_verdict == "supported"
    fig = increment_figure(t, groups)
    assert len(fig.axes) == len(groups)
    fig.canvas.draw()
    assert [x.get_text() for x in fig.axes[-1].get_xticklabels()][-1] == "ODIN"
    with pytest.raises(OODInputError, match="group rows"):
        increment_figure(t, ["covariate-only"])
