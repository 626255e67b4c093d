"""ODIN's pixel-space step, ODIN as an input-gradient score, GradNorm's gradient by depth and GAIA's
table; the recorded MNIST depth and GAIA tables recomputed from the real data."""

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from ood_lib import OODInputError
from ood_lib.data.benchmarks import MNIST_STD
from ood_lib.run.config import RunConfig
from ood_lib.findings.depth import (DEPTH_COLUMNS, GAIA_COLUMNS, GAIA_LAST, best_forward_only, depth_figure, depth_scores,
                           depth_table, gaia_table, layer_blocks, odin_first_order, odin_terms)
from ood_lib.detectors import ODIN, create
from ood_lib.detectors.model_access import log_msp_and_input_gradient, odin_perturb
from ood_lib.run.evaluate import Prepared, prepare
from ood_lib.run.features import batch_loader
from ood_lib.gradients import gradient_score
from ood_lib.stats.metrics import auroc
from ood_lib.models import CifarResNet, DenseNetBC, MnistCNN
from ood_lib.stats.paired import VERDICTS
from conftest import REPO, SHARED_DATA, needs_shared_data


# --- ODIN's step, by hand on a linear model -----------------------------------------------------
def _linear(T=1000.0):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(8, 3)).double().eval()
    x = torch.randn(5, 2, 2, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    W, b = model[1].weight.detach(), model[1].bias.detach()
    p = torch.softmax((x.flatten(1) @ W.T + b) / T, dim=1)
    k = p.argmax(1)
    grad = ((W[k] - p @ W) / T).reshape(x.shape)  # ∇ₓ log S_T = (W_k − Σ_j p_j W_j) / T
    return model, x, W, b, grad


def _loader(x):
    ok = torch.ones(len(x), dtype=torch.bool)
    return [(x[:3], torch.zeros(3), ok[:3]), (x[3:], torch.zeros(2), ok[3:])]


def test_input_gradient_of_log_msp_is_the_hand_computed_one():
    model, x, W, b, grad = _linear()
    log_s, g = log_msp_and_input_gradient(model, x, 1000.0)
    assert torch.allclose(g, grad, rtol=1e-10, atol=1e-18)
    assert torch.allclose(log_s, torch.log_softmax((x.flatten(1) @ W.T + b) / 1000.0, 1).max(1).values, rtol=1e-14)


@pytest.mark.parametrize("std", [None, (0.5, 0.25)])
def test_odin_steps_in_pixel_space(std):
    """x̃ = x − ε·sign(−∇ₓ log S_T)/std: each channel moves ε/std_c in normalised units."""
    model, x, W, b, grad = _linear()
    eps, T = 0.01, 1000.0
    s = torch.tensor((1.0, 1.0) if std is None else std, dtype=torch.float64).view(1, 2, 1, 1)
    by_hand = x + eps * torch.sign(grad) / s
    assert torch.equal(odin_perturb(x, grad, eps, s), by_hand)
    expect = torch.softmax((by_hand.flatten(1) @ W.T + b) / T, 1).max(1).values
    got = ODIN(model, temperature=T, epsilon=eps, input_std=std).score_inputs(_loader(x))
    assert torch.allclose(got, expect, rtol=1e-13, atol=0)
    if std is not None:  # a step in normalised units scores differently
        plain = ODIN(model, temperature=T, epsilon=eps).score_inputs(_loader(x))
        assert not torch.allclose(plain, got, rtol=1e-9, atol=0)


def test_odin_epsilon_zero_is_temperature_scaled_msp():
    model, x, W, b, _ = _linear()
    got = ODIN(model, temperature=7.0, epsilon=0, input_std=(0.5, 0.25)).score_inputs(_loader(x))
    assert torch.allclose(got, torch.softmax((x.flatten(1) @ W.T + b) / 7.0, 1).max(1).values, rtol=1e-14)
    assert create("odin", model=model, epsilon=0.0, input_std=[0.2, 0.3]).input_std == (0.2, 0.3)


@pytest.mark.parametrize("kw,match", [
    ({"epsilon": -0.1}, "epsilon must be"), ({"epsilon": math.nan}, "epsilon must be"),
    ({"input_std": (1.0, 2.0, 3.0)}, "3 values for 2 input channels"), ({"input_std": (1.0, 0.0)}, "finite and > 0"),
    ({"temperature": 0}, "temperature")])
def test_odin_bad_settings_are_named(kw, match):
    model, x, *_ = _linear()
    with pytest.raises(OODInputError, match=match):
        ODIN(model, **kw).score_inputs(_loader(x))


# --- blocks ------------------------------------------------------------------------------------
def test_layer_blocks_cover_every_parameter_once_in_forward_order():
    for model, shape, first, last, n in [(CifarResNet(), (1, 3, 32, 32), "conv1", "linear", 12),
                                         (DenseNetBC(depth=10, growth=4), (1, 3, 32, 32), "conv1", "fc", 8),
                                         (MnistCNN(), (1, 1, 28, 28), "conv1", "fc2", 4)]:
        blocks = layer_blocks(model.eval(), torch.randn(*shape))
        names = [p for ps in blocks.values() for p in ps]
        assert sorted(names) == sorted(n for n, _ in model.named_parameters())
        assert (list(blocks)[0], list(blocks)[-1], len(blocks)) == (first, last, n)
    assert "layer2.1" in layer_blocks(CifarResNet()) and "trans1" in layer_blocks(DenseNetBC(depth=10, growth=4))

    class Backwards(nn.Module):  # registered head first, used last
        def __init__(self):
            super().__init__()
            self.head, self.body = nn.Linear(4, 2), nn.Linear(3, 4)

        def forward(self, x):
            return self.head(torch.relu(self.body(x)))

    assert list(layer_blocks(Backwards())) == ["head", "body"]
    assert list(layer_blocks(Backwards(), torch.randn(2, 3))) == ["body", "head"]


# --- on a small benchmark with random weights ------------------------------------------------
@pytest.fixture(scope="module")
def prep(tmp_path_factory):
    return prepare("embedded", checkpoint="random", n_id=60, n_ood=30, n_fit=80, progress=False,
                   cache_dir=tmp_path_factory.mktemp("cache"))


def _images(prep, key):
    return torch.cat([x[ok] for x, _y, ok in batch_loader(prep.splits[key].dataset, 64)])


def test_depth_scores_add_up_and_match_independent_code(prep):
    sc = depth_scores(prep, sets=["id_test", "noise"])
    assert list(sc) == ["input", "conv1", "conv2", "fc1", "fc2", "network"]
    for k in ("id_test", "noise"):
        blocks = sum(sc[b][k] for b in ("conv1", "conv2", "fc1", "fc2"))
        assert np.allclose(sc["network"][k], blocks, rtol=1e-12)
    h, f = prep.float64("id_test")  # the head: ‖∇_W‖₁ + ‖∇_b‖₁ = (‖h‖₁ + 1) ‖p − u‖₁
    pu = (torch.softmax(f, 1) - 0.1).abs().sum(1)
    assert np.allclose(sc["fc2"]["id_test"], ((h.abs().sum(1) + 1) * pu).numpy(), rtol=1e-4)
    x = _images(prep, "id_test")[:8].double()
    ref = gradient_score("gradnorm", prep.model.double(), x, wrt="input", method="loop") / MNIST_STD
    prep.model.float()
    assert np.allclose(sc["input"]["id_test"][:8], ref.numpy(), rtol=1e-4)


def test_depth_table_compares_every_depth_with_both_references(prep):
    sc = depth_scores(prep)
    gn = {k: create("gradnorm").score(*prep.float64(k)).numpy() for k in ["id_test", *prep.ood_keys]}
    t = depth_table(prep, gn, "gradnorm again", scores=sc, n_boot=100)
    assert set(t.ood) == set(prep.ood_keys) | {"near", "far", "covariate"}
    assert set(t.kind) == {"input", "block", "network", "reference"}
    assert t.groupby("ood").size().eq(len(sc) + 2).all()
    layers = t[t.kind != "reference"]
    assert np.allclose(layers.diff_vs_best, layers.diff_vs_gradnorm)
    assert np.allclose(layers.lo_vs_best, layers.lo_vs_gradnorm)
    assert (layers.verdict == layers.verdict_vs_gradnorm).all()
    assert set(layers.verdict) <= set(VERDICTS) and set(layers.verdict_family) <= set(VERDICTS)
    assert (layers.lo_family <= layers.lo_vs_best + 1e-12).all()  # simultaneous intervals are wider
    one = t[(t.ood == "noise") & (t.layer == "conv2")].iloc[0]
    assert one.auroc == pytest.approx(auroc(sc["conv2"]["id_test"], sc["conv2"]["noise"]))
    assert one.depth == 2 and t[t.layer == "input"].depth.eq(0).all() and t[t.layer == "network"].depth.isna().all()
    fig = depth_figure(t)
    assert fig.dpi >= 150 and [ax.get_title(loc="left") for ax in fig.axes] == ["near OOD", "far OOD", "covariate shift"]
    assert len(fig.legends) == 1 and fig.get_size_inches()[0] <= 7  # one shared legend; fits the text column
    with pytest.raises(OODInputError, match="no scores for set"):
        depth_table(prep, {"id_test": gn["id_test"]}, scores=sc, n_boot=10)


def test_best_forward_only_is_the_best_on_near_and_far(prep):
    names = ["msp", "energy", "l1*one"]
    best, s = best_forward_only(prep, names)
    keys = [k for k in prep.ood_keys if prep.splits[k].group != "covariate"]

    def mean_auc(n):
        sc = {k: create(n).score(*prep.float64(k)).numpy() for k in ["id_test", *keys]}
        return np.mean([auroc(sc["id_test"], sc[k]) for k in keys])

    assert best == max(names, key=mean_auc) and set(s) == {"id_test", *prep.ood_keys}


def test_odin_terms_are_the_detectors_scores(prep):
    t = odin_terms(prep, sets=["noise"], epsilon=0.002)["noise"]
    loader = batch_loader(prep.splits["noise"].dataset, 64)
    det = ODIN(prep.model, epsilon=0.002, input_std=MNIST_STD).score_inputs(loader)
    assert np.allclose(np.log(det.numpy()), t["log_s"], rtol=0, atol=1e-12)
    assert not np.allclose(t["log_s"], t["log_s0"], rtol=0, atol=1e-12)


def test_first_order_explains_odin_on_a_smooth_model(prep):
    torch.manual_seed(0)
    smooth = nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.Tanh(), nn.Linear(32, 10)).eval()
    p = Prepared(prep.benchmark, smooth, prep.splits, prep.feats, prep.device, prep.root, prep.batch_size, prep.config)
    t = odin_first_order(p, epsilon=1e-4, temperature=10.0, n_boot=50)
    assert t.correlation.min() > 0.999 and np.allclose(t.ratio_of_means, 1.0, atol=1e-2)
    assert np.allclose(t.rise_id, t.pred_id, rtol=1e-2) and (t.pred_id > 0).all()
    zero = odin_first_order(p, epsilon=0.0, n_boot=20)
    assert (zero.gain == 0).all() and (zero.rise_id == 0).all() and (zero.auroc_odin == zero.auroc_msp_t).all()


def test_gaia_table_holds_gaia_against_its_last_layer_and_the_reference(prep):
    ref = {k: create("energy").score(*prep.float64(k)).numpy() for k in ["id_test", *prep.ood_keys]}
    t = gaia_table(prep, ref, "energy", n_boot=100)
    assert list(t.columns) == GAIA_COLUMNS and t.attrs["reference"] == "energy"
    assert set(t.method) == {"gaia", "gaia_last", "gaia_z", "gaia_z_last", "energy"}
    assert t.groupby("ood").size().eq(5).all() and set(t.ood) == set(prep.ood_keys) | {"near", "far", "covariate"}
    one = t[t.ood == "noise"].set_index("method")
    for v, last in GAIA_LAST.items():
        assert one.loc[v, "diff_vs_last"] == pytest.approx(one.loc[v, "auroc"] - one.loc[last, "auroc"], abs=1e-9)
        assert one.loc[v, "lo_vs_last"] <= one.loc[v, "diff_vs_last"] <= one.loc[v, "hi_vs_last"]
        assert one.loc[v, "verdict_vs_last"] in VERDICTS and one.loc[last, "verdict_vs_last"] == ""
        assert np.isnan(one.loc[last, "diff_vs_last"]) and (one.loc[v, "part"], one.loc[last, "part"]) == (
            "all_layers", "last_layer")
    assert one.loc["gaia_z", "diff_vs_best"] == pytest.approx(
        one.loc["gaia_z", "auroc"] - one.loc["energy", "auroc"], abs=1e-9)
    assert one.loc["energy", "part"] == "reference" and one.loc["energy", "verdict"] == ""
    scores = {n: {k: -np.arange(len(s), dtype=float) for k, s in ref.items()} for n in ("gaia_z", "gaia_z_last")}
    z = gaia_table(prep, ref, "energy", variants=["gaia_z"], scores=scores, n_boot=20)
    assert (z[z.part != "reference"].diff_vs_last.fillna(0) == 0).all()  # the same scores: no difference
    with pytest.raises(OODInputError, match="GAIA variants"):
        gaia_table(prep, ref, variants=["gaia_last"], scores=scores)
    with pytest.raises(OODInputError, match="no entry for"):
        gaia_table(prep, ref, variants=["gaia"], scores=scores)


# --- the recorded MNIST tables, recomputed from the real data ------------------------------------
RECORDED = REPO / "results" / "recorded" / "mnist"
TOL = 1e-6


@pytest.fixture(scope="module")
def mnist_recorded(tmp_path_factory):
    """The recorded MNIST run's benchmark, restricted to the ID test set and its first OOD set, and
    the recorded reference's scores on it.

    Bootstrap replicates resample the ID set and the k-th OOD set from streams seeded by (seed,
    replicate, k) only, so the rows of the first OOD set do not depend on the sets after it:
    recomputing that set (3000 of the 6000 images) checks its rows exactly, within the time a test
    may take (the full run back-propagates every image of every set). Not recomputed: the other
    sets and the group rows, the choice of the gradient-free reference among all forward-only
    methods (the recorded one is scored) and the ODIN table. The cache is a fresh one holding the
    recorded study's trained CNN (``results/recorded/mnist/model``: the model is not trained again).
    """
    import sys

    sys.path.insert(0, str(REPO / "tools"))
    import recorded_check

    meta = json.loads((RECORDED / "depth.json").read_text())
    fields = {f.name for f in dataclasses.fields(RunConfig)}
    kept = {k: v for k, v in meta["config"].items() if k in fields and k not in ("data_root", "progress", "cache_dir")}
    cache = tmp_path_factory.mktemp("mnist-cache")
    recorded_check.seed_model_cache(RECORDED, cache)
    full = prepare("mnist", RunConfig(**kept, data_root=SHARED_DATA, cache_dir=cache, progress=False), with_train=True)
    keep = ("id_train", "id_test", full.ood_keys[0])
    prep = dataclasses.replace(full, splits={k: v for k, v in full.splits.items() if k in keep},
                               feats={k: v for k, v in full.feats.items() if k in keep}, _as64={})
    best, ref = best_forward_only(prep, [meta["reference"]])
    return meta, prep, best, ref


def _same_rows(live, recorded_csv, columns, key, tmp_path, n_id=None):
    """The rows of the one OOD set of ``live`` (written and read back as recorded) are the recorded
    ones: names exactly, numbers to :data:`TOL` plus what another processor's summation order may
    move (the quick check's ``recorded_check.RTOL`` of each number, and one ID × OOD pair of
    near-tied scores changing order: 100 / (n_ID · n_OOD) AUROC points)."""
    import pandas as pd
    import recorded_check

    path = tmp_path / recorded_csv
    live.to_csv(path, index=False, float_format="%.10g")  # the recorded round trip
    got = pd.read_csv(path)
    want = pd.read_csv(RECORDED / recorded_csv)
    assert list(got.columns) == list(want.columns) == columns
    checked = got.ood.iloc[0]
    sizes = json.loads((RECORDED / "depth.json").read_text())["sizes"]
    pair = 100.0 / ((n_id or sizes["id_test"]) * sizes[checked])
    got, want = (d[d.ood == checked].reset_index(drop=True) for d in (got, want))
    assert len(want) > 0 and list(got[key]) == list(want[key])
    for c in columns:
        if want[c].dtype.kind in "fi" and got[c].dtype.kind in "fi":
            np.testing.assert_allclose(got[c].to_numpy(float), want[c].to_numpy(float), rtol=recorded_check.RTOL,
                                       atol=TOL + pair, equal_nan=True, err_msg=c)
        else:
            assert got[c].fillna("").astype(str).tolist() == want[c].fillna("").astype(str).tolist(), c


@needs_shared_data()
def test_recorded_mnist_depth_table_reproduces(mnist_recorded, tmp_path):
    meta, prep, best, ref = mnist_recorded
    scores = depth_scores(prep, method=meta["method"], chunk_size=meta.get("chunk_size", 64))
    live = depth_table(prep, ref, best, scores=scores, n_boot=meta["n_boot"])
    _same_rows(live, "depth.csv", DEPTH_COLUMNS, "layer", tmp_path)


@needs_shared_data()
def test_recorded_mnist_gaia_table_reproduces(mnist_recorded, tmp_path):
    meta, prep, best, ref = mnist_recorded
    assert meta["gaia"]["reference"] == best and meta["gaia"]["n_boot"] >= 1000
    live = gaia_table(prep, ref, best, variants=list(meta["gaia"]["variants"]), n_boot=meta["gaia"]["n_boot"])
    _same_rows(live, "gaia.csv", GAIA_COLUMNS, "method", tmp_path)


@needs_shared_data()
def test_recorded_mnist_increment_table_reproduces(mnist_recorded, tmp_path):
    """The increment test's rows of the first OOD set (the same-block choice as recorded: it is made
    over all sets), on the evaluation half of the ID images."""
    import pandas as pd
    from ood_lib.findings.increment import INCREMENT_COLUMNS, block_forward_scores, increment_table

    meta, prep, best, ref = mnist_recorded
    inc = meta["increment"]
    assert inc["reference"] == best and inc["n_boot"] >= 1000
    grads = depth_scores(prep, method=meta["method"], chunk_size=meta.get("chunk_size", 64))
    forward = block_forward_scores(prep, list(grads), n_fit=inc["n_fit_max"])
    want = pd.read_csv(RECORDED / "increment.csv")
    same = want.dropna(subset=["same_block"]).drop_duplicates("layer").set_index("layer").same_block.to_dict()
    live = increment_table(prep, grads, forward, ref, odin=odin_terms(prep, **inc["odin"]), same_block=same,
                           n_boot=inc["n_boot"])
    _same_rows(live, "increment.csv", INCREMENT_COLUMNS, "layer", tmp_path, n_id=inc["n_evaluation"])
