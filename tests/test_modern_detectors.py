"""ViM, ASH, SCALE, DICE, GEN, fDBD, NNGuide: hand-built examples worked out from the published
formulas, an independent transcription of ViM's reference code, orientation, validation, and the
KNN paper's rule for k."""

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from ood_lib import OODInputError
from ood_lib.detectors import DETECTORS, FitData, create
from ood_lib.detectors.settings import knn_k_for_bank, paper_setting, vim_principal_dim

NAMES = ["vim", "ash", "scale", "dice", "gen", "fdbd", "nnguide"]


def head(w, b=None):
    """An nn.Linear with the given W (C×D) and b, in float64."""
    w = torch.as_tensor(w, dtype=torch.float64)
    lin = torch.nn.Linear(w.shape[1], w.shape[0]).double()
    with torch.no_grad():
        lin.weight.copy_(w)
        lin.bias.copy_(torch.zeros(len(w)) if b is None else torch.as_tensor(b, dtype=torch.float64))
    return lin


def t(x):
    return torch.tensor(x, dtype=torch.float64)


# --- hand-built examples: each expected number is worked out in the comment, not by the code ----
def test_gen_by_hand():
    # f = (ln 2, 0, 0) → p = (1/2, 1/4, 1/4); γ = 0.1:
    # (1/2)^0.1 (1/2)^0.1 = 0.5^0.2 = 0.870551; (1/4)^0.1 (3/4)^0.1 = 0.1875^0.1 = 0.845863 (twice)
    # GEN = −(0.870551 + 2 · 0.845863) = −2.562277
    s = create("gen").score(None, t([[math.log(2), 0.0, 0.0]]))
    assert s.item() == pytest.approx(-2.562276948, abs=1e-8)
    # a one-hot prediction has generalised entropy 0: the highest possible score
    assert create("gen").score(None, t([[100.0, 0.0, 0.0]])).item() == pytest.approx(0.0, abs=1e-3)


def test_fdbd_by_hand():
    # W rows w0 = (1, 0), w1 = (0, 1), w2 = (−1, 0), b = 0; training features (0, 0), (2, 2): μ = (1, 1).
    # h = (2, 1): f = (2, 1, −2), c = 0. |f0 − f1| / ‖w0 − w1‖ = 1/√2 = 0.707107; |f0 − f2| / ‖w0 − w2‖ = 4/2 = 2.
    # mean over the C − 1 = 2 boundaries: 1.353553; ‖h − μ‖ = ‖(1, 0)‖ = 1 → fDBD = 1.353553
    lin = head([[1, 0], [0, 1], [-1, 0]])
    det = create("fdbd", model=lin).fit(FitData(t([[0, 0], [2, 2]]), None, None))
    h = t([[2, 1]])
    assert det.score(h, lin(h).detach()).item() == pytest.approx(1.3535533906, abs=1e-9)


def test_dice_by_hand():
    # W = [[1, 2, 0], [0, 1, 3]], b = (0.5, −0.5); training features (0, 0, 2), (2, 2, 2): h̄ = (1, 1, 2).
    # V = W ⊙ h̄ = [[1, 2, 0], [0, 1, 6]]; its 50th percentile (sorted 0 0 1 1 2 6) is 1; keep V > 1:
    # masked W = [[0, 2, 0], [0, 0, 3]]. h = (1, 2, 1): f = (4 + 0.5, 3 − 0.5) = (4.5, 2.5);
    # energy = 4.5 + ln(1 + e^−2) = 4.626928
    lin = head([[1, 2, 0], [0, 1, 3]], [0.5, -0.5])
    det = create("dice", model=lin, sparsity=0.5).fit(FitData(t([[0, 0, 2], [2, 2, 2]])))
    assert det.score(t([[1, 2, 1]])).item() == pytest.approx(4.626928011, abs=1e-8)
    assert torch.equal(det.masked_weight_, t([[0, 2, 0], [0, 0, 3]]))


def test_ash_and_scale_by_hand():
    # h = (4, 3, 2, 1), p = 50: k = 4 − round(2) = 2 kept, (4, 3); s1 = 10, s2 = 7, factor e^(10/7) = 4.172734.
    # W rows e1 and e4, b = 0.
    # ASH-S: h̃ = 4.172734 · (4, 3, 0, 0) → f = (16.690935, 0); energy = 16.690935 + ln(1 + e^−16.69) = 16.6909356
    # ASH-P: h̃ = (4, 3, 0, 0) → f = (4, 0); energy = 4 + ln(1 + e^−4) = 4.0181499
    # ASH-B: h̃ = (s1/k) 1[top k] = (5, 5, 0, 0) → f = (5, 0); energy = 5 + ln(1 + e^−5) = 5.0067153
    # SCALE: f = 4.172734 · (4, 1) = (16.690935, 4.172734); energy = 16.690935 + ln(1 + e^−12.518) = 16.6909392
    lin = head([[1, 0, 0, 0], [0, 0, 0, 1]])
    h = t([[4, 3, 2, 1]])
    assert create("ash", model=lin, percentile=50).score(h).item() == pytest.approx(16.69093559, abs=1e-7)
    assert create("ash", model=lin, percentile=50, variant="p").score(h).item() == pytest.approx(4.01814993, abs=1e-7)
    assert create("ash", model=lin, percentile=50, variant="b").score(h).item() == pytest.approx(5.00671535, abs=1e-7)
    assert create("scale", model=lin, percentile=50).score(h).item() == pytest.approx(16.69093919, abs=1e-7)
    # all-zero features: f = b for any factor, no 0/0
    assert create("ash", model=lin).score(t([[0, 0, 0, 0]])).item() == pytest.approx(math.log(2))


def test_nnguide_by_hand():
    # bank: h1 = (3, 4), logits (0, 0) → S = ln 2, entry (0.6, 0.8) · ln 2; h2 = (1, 0), logits (1, 1) →
    # S = 1 + ln 2, entry (1, 0) · (1 + ln 2). Query h = (0, 2), logits (2, 0): ĥ = (0, 1),
    # S = 2 + ln(1 + e^−2) = 2.126928; inner products 0.8 ln 2 = 0.554518 and 0.
    # k = 1: 2.126928 · 0.554518 = 1.179419; k = 2: 2.126928 · 0.277259 = 0.589710
    train = FitData(t([[3, 4], [1, 0]]), t([[0, 0], [1, 1]]))
    h, f = t([[0, 2]]), t([[2, 0]])
    assert create("nnguide", k=1).fit(train).score(h, f).item() == pytest.approx(1.1794193, abs=1e-6)
    assert create("nnguide", k=2).fit(train).score(h, f).item() == pytest.approx(0.5897097, abs=1e-6)


def test_ash_s_and_scale_match_a_transcription_of_the_reference_code():
    """ash_s (andrijazz/ash, ash.py) and scale (kai422/SCALE, scale_net.py) on (B, D, 1, 1) pooled
    features, then the head and energy, as their ResNet forward passes do."""

    def reference(x, percentile, prune):
        x = x.clone()[:, :, None, None]
        inp = x.clone()
        b, c, hh, ww = x.shape
        s1 = x.sum(dim=[1, 2, 3])
        n = x.shape[1:].numel()
        k = n - int(np.round(n * percentile / 100.0))
        t_ = x.view((b, c * hh * ww))
        v, i = torch.topk(t_, k, dim=1)
        t_.zero_().scatter_(dim=1, index=i, src=v)
        s2 = x.sum(dim=[1, 2, 3])
        out = (x if prune else inp) * torch.exp((s1 / s2)[:, None, None, None])
        return out.flatten(1)

    g = torch.Generator().manual_seed(3)
    lin = head(torch.randn(10, 64, generator=g, dtype=torch.float64), torch.randn(10, generator=g, dtype=torch.float64))
    h = torch.relu(torch.randn(50, 64, generator=g, dtype=torch.float64))
    with torch.no_grad():
        ash = torch.logsumexp(lin(reference(h, 95, prune=True)), dim=1)
        scale = torch.logsumexp(lin(reference(h, 85, prune=False)), dim=1)
    torch.testing.assert_close(create("ash", model=lin).score(h), ash, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(create("scale", model=lin).score(h), scale, rtol=1e-12, atol=1e-12)


def test_vim_matches_a_transcription_of_the_reference_code():
    """The authors' benchmark.py (haoqiwang/vim), line by line in numpy / scikit-learn."""
    from numpy.linalg import norm, pinv
    from scipy.special import logsumexp
    from sklearn.covariance import EmpiricalCovariance

    g = np.random.default_rng(0)
    w, b = g.normal(size=(5, 12)), g.normal(size=5)
    feat_train, feat_test = np.abs(g.normal(size=(300, 12))), np.abs(g.normal(size=(40, 12))) * 1.5
    dim = 6
    u = -np.matmul(pinv(w), b)
    ec = EmpiricalCovariance(assume_centered=True)
    ec.fit(feat_train - u)
    eig_vals, eigen_vectors = np.linalg.eig(ec.covariance_)
    NS = np.ascontiguousarray((eigen_vectors.T[np.argsort(eig_vals * -1)[dim:]]).T)
    alpha = (feat_train @ w.T + b).max(axis=-1).mean() / norm(np.matmul(feat_train - u, NS), axis=-1).mean()
    expected = -norm(np.matmul(feat_test - u, NS), axis=-1) * alpha + logsumexp(feat_test @ w.T + b, axis=-1)

    lin = head(w, b)
    det = create("vim", model=lin, dim=dim).fit(FitData(feat_train))
    got = det.score(feat_test, feat_test @ w.T + b).numpy()
    assert det.alpha_ == pytest.approx(alpha, rel=1e-10)
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-10)


# --- orientation: ID scores above OOD on a synthetic benchmark every detector should solve -------
@pytest.fixture(scope="module")
def synthetic():
    """Post-ReLU features: class y fills dims 2y, 2y+1 of 0..7; OOD fills dims 8..15 the head ignores."""
    g = torch.Generator().manual_seed(0)

    def id_set(n):
        y = torch.randint(0, 4, (n,), generator=g)
        h = 0.1 * torch.randn(n, 16, generator=g, dtype=torch.float64)
        h[torch.arange(n), 2 * y] += 3
        h[torch.arange(n), 2 * y + 1] += 3
        return h.clamp_min(0), y

    w = torch.zeros(4, 16, dtype=torch.float64)
    for c in range(4):
        w[c, 2 * c : 2 * c + 2] = 2.0
    lin = head(w, [0.1, -0.1, 0.2, 0.0])
    h_train, y_train = id_set(600)
    h_id, _ = id_set(200)
    h_ood = 0.1 * torch.randn(200, 16, generator=g, dtype=torch.float64)
    h_ood[:, 8:] += 1 + 0.2 * torch.randn(200, 8, generator=g, dtype=torch.float64)
    h_ood = h_ood.clamp_min(0)
    with torch.no_grad():
        train = FitData(h_train, lin(h_train), y_train)
        return lin, train, (h_id, lin(h_id)), (h_ood, lin(h_ood))


@pytest.mark.parametrize("name", NAMES)
def test_higher_is_in_distribution_and_deterministic(name, synthetic):
    lin, train, (h_id, f_id), (h_ood, f_ood) = synthetic
    assert create(name, model=lin).not_applicable(train) is None
    runs = []
    for _ in range(2):
        det = create(name, model=lin).fit(train)
        runs.append((det.score(h_id, f_id), det.score(h_ood, f_ood)))
    s_id, s_ood = runs[0]
    assert s_id.dtype == torch.float64 and torch.isfinite(s_id).all() and torch.isfinite(s_ood).all()
    auroc = roc_auc_score(np.r_[np.ones(len(s_id)), np.zeros(len(s_ood))], np.r_[s_id.numpy(), s_ood.numpy()])
    assert auroc > 0.95, (name, auroc)
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])


# --- validation ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_bad_input_is_a_clear_error(name, synthetic):
    lin, train, (h, f), _ = synthetic
    det = create(name, model=lin)
    if det.needs.fit:
        with pytest.raises(OODInputError, match="not fitted"):
            det.score(h, f)
        det.fit(train)
    nan = f.clone()
    nan[0, 0] = float("nan")
    with pytest.raises(OODInputError, match="non-finite"):
        det.score(h, nan) if det.needs.logits else det.score(torch.where(h > 0, h, float("nan")), f)
    if det.needs.features:
        with pytest.raises(OODInputError, match="columns"):
            det.score(h[:, :5], f)
    if det.needs.features and det.needs.logits:
        with pytest.raises(OODInputError, match="rows"):
            det.score(h[:3], f[:4])
    if det.needs.model and det.needs.logits:
        with pytest.raises(OODInputError, match="C = 3 columns"):
            det.score(h, f[:, :3])


def test_bad_hyper_parameters_are_clear_errors():
    lin = head(np.eye(4)[:3])
    for name, kw, msg in [("ash", {"percentile": 100}, r"\[0, 100\)"), ("ash", {"variant": "x"}, "one of s, p, b"),
                          ("scale", {"percentile": -1}, r"\[0, 100\)"), ("dice", {"sparsity": 1.0}, r"\[0, 1\)"),
                          ("gen", {"gamma": 0}, "gamma > 0"), ("gen", {"top_m": 0}, "top_m"),
                          ("vim", {"dim": 4}, r"\[1, 4\)"), ("nnguide", {"k": 0}, "k ≥ 1")]:
        with pytest.raises(OODInputError, match=msg):
            create(name, model=lin, **kw)
    with pytest.raises(OODInputError, match="two rows of the head's W are equal"):
        create("fdbd", model=head([[1, 0], [1, 0]]))


def test_vim_needs_more_training_samples_than_principal_dimensions():
    lin = head(np.random.default_rng(0).normal(size=(3, 8)))
    det = create("vim", model=lin)
    assert det.dim == 4
    small = FitData(np.abs(np.random.default_rng(1).normal(size=(4, 8))))
    assert "4 ID training samples lie inside the 4-dimensional principal space" in det.not_applicable(small)
    assert "no ID training split" in det.not_applicable(None)
    with pytest.raises(OODInputError, match="need more than dim = 4"):
        det.fit(small)
    assert "no logits" in create("nnguide").not_applicable(FitData(np.ones((20, 3))))
    assert "k = 10 exceeds the 5 features" in create("nnguide").not_applicable(FitData(np.ones((5, 3)), np.ones((5, 2))))


# --- the papers' settings ----------------------------------------------------------------------
def test_defaults_follow_the_papers_setting_by_number_of_classes():
    cifar, imagenet = head(np.ones((10, 64)) * np.arange(10)[:, None]), head(np.ones((1000, 2048)) * np.arange(1000)[:, None])
    assert paper_setting(10) == paper_setting(100) == "cifar" and paper_setting(1000) == "imagenet"
    assert create("ash", model=cifar).get_params() == {"percentile": 95.0, "variant": "s"}
    assert create("ash", model=imagenet).percentile == 90.0
    assert create("ash", model=imagenet, variant="b").percentile == 65.0
    assert create("dice", model=cifar).sparsity == 0.9 and create("dice", model=imagenet).sparsity == 0.7
    assert create("scale", model=cifar).percentile == 85.0
    assert create("gen").get_params() == {"gamma": 0.1, "top_m": 100}
    assert create("vim", model=cifar).dim == 32 and create("vim", model=imagenet).dim == 1000
    assert [vim_principal_dim(d) for d in (2048, 1536, 768, 1280, 512, 342)] == [1000, 1000, 512, 640, 256, 171]
    assert create("fdbd", model=cifar).get_params() == {}


def test_knn_k_follows_the_bank_size():
    assert knn_k_for_bank(50_000, 10) == 50  # the paper's CIFAR-10 setting
    assert knn_k_for_bank(1_281_167, 1000) == 1000  # ImageNet-1k, full bank
    assert knn_k_for_bank(12_811, 1000) == 10  # ImageNet-1k, 1 % bank
    assert knn_k_for_bank(5_000, 10) == 5 and knn_k_for_bank(400, 10) == 1 and knn_k_for_bank(3, 10) == 1
    assert knn_k_for_bank(50_000, 100) == 50 and knn_k_for_bank(100_000, 200) == 78
    with pytest.raises(OODInputError, match="n_bank"):
        knn_k_for_bank(0, 10)
    with pytest.raises(OODInputError, match="n_classes"):
        knn_k_for_bank(100, 1)


def test_registered_after_the_older_baselines():
    names = list(DETECTORS)
    assert [n for n in names if n in NAMES] == NAMES and names.index("vim") > names.index("odin")
    assert all(DETECTORS[n].alias_of is None for n in NAMES)
