"""The detector protocol: every registered detector honours it; the registry; when a fit is not applicable."""

import numpy as np
import pytest
import torch

from ood_lib import OODInputError
from ood_lib.detectors import (
    ALIASES, DETECTORS, KNN, ODIN, Detector, FitData, Mahalanobis, Needs, add, canonical, create, register,
)
from ood_lib.detectors.base import Entry
from ood_lib.scores import SCORES


@pytest.fixture
def fit_and_test(tiny_model, tiny_images):
    """A float64 model with features that separate its classes, its training split and a test batch."""
    model = tiny_model(classes=3, dim=4)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        h_train = torch.randn(60, 4, generator=g, dtype=torch.float64)
        f_train = model.head(h_train)
        h_test = torch.randn(10, 4, generator=g, dtype=torch.float64)
        f_test = model.head(h_test)
    train = FitData(h_train.numpy(), f_train.numpy(), f_train.argmax(1).numpy())
    return model, train, h_test, f_test


def _loader(x):
    return [(x, torch.zeros(len(x), dtype=torch.long), torch.ones(len(x), dtype=torch.bool))]


@pytest.mark.parametrize("name", list(DETECTORS))
def test_every_detector_follows_the_protocol(name, fit_and_test, tiny_images):
    model, train, h, f = fit_and_test
    det = create(name, model=model)
    assert isinstance(det, Detector) and isinstance(det.needs, Needs) and det.name == name
    assert det.not_applicable(train) is None
    assert det.fit(train) is det  # a no-op for post-hoc scores, the fit for the others
    if det.needs.inputs:
        s = det.score_inputs(_loader(tiny_images(10)))
    else:
        s = det.score(h if det.needs.features else None, f)
    assert isinstance(s, torch.Tensor) and s.shape == (10,) and torch.isfinite(s).all()
    assert isinstance(det.get_params(), dict) and type(det).__name__ in repr(det)


def test_registry_keeps_every_score_name_in_table_order():
    expected = list(SCORES) + ["gradnorm_autograd", "gradnorm_official_autograd", "exgrad_autograd",
                               "fisher_autograd", "ce_pred_autograd", "mahalanobis", "react", "knn", "odin"]
    assert [n for n in DETECTORS if n in expected] == expected  # the order of the existing tables


def test_aliases_rank_like_their_canonical_detector(fit_and_test):
    model, train, h, f = fit_and_test
    for name in ALIASES:
        a, b = create(name, model=model), create(canonical(name), model=model)
        sa, sb = a.score(h, f), b.score(h, f)
        assert torch.equal(torch.argsort(sa), torch.argsort(sb)), name
    assert canonical("gradnorm_autograd") == "l1*pu_l1" and canonical("exgrad_autograd") == "exgrad"
    assert canonical("msp") == "one*msp" and canonical("knn") == "knn"


def test_unknown_names_and_parameters_are_clear_errors():
    with pytest.raises(OODInputError, match="unknown method 'gradnrom'; valid:.*gradnorm"):
        create("gradnrom")
    with pytest.raises(OODInputError, match="'mahalanobis' has no hyper-parameter 'temperature'; it takes: reg"):
        create("mahalanobis", temperature=2.0)
    with pytest.raises(OODInputError, match="reads the network: pass model="):
        create("react")
    with pytest.raises(OODInputError, match="already registered"):
        add("msp", KNN)
    with pytest.raises(OODInputError, match="call score_inputs"):
        ODIN(torch.nn.Linear(2, 2)).score(None, torch.zeros(2, 2))
    with pytest.raises(OODInputError, match="needs no images"):
        create("msp").score_inputs([])


def test_mahalanobis_not_applicable_rule():
    g = np.random.default_rng(0)
    h = g.normal(size=(40, 5))
    ok = FitData(h, None, np.repeat([0, 1, 2, 3], 10))
    assert Mahalanobis().not_applicable(ok) is None
    assert "no ID training split" in Mahalanobis().not_applicable(None)
    assert "no class labels" in Mahalanobis().not_applicable(FitData(h, None, -np.ones(40, int)))
    single = FitData(h, None, np.r_[np.repeat([0, 1, 2], 13), [3]])
    assert "class 3 has 1 ID training sample(s)" in Mahalanobis().not_applicable(single)
    # 40 samples in 20 classes of 2: pooled covariance of rank <= 20 < D = 30
    wide = FitData(g.normal(size=(40, 30)), None, np.repeat(np.arange(20), 2))
    assert "rank at most N − K = 20 < D = 30" in Mahalanobis().not_applicable(wide)
    assert "k = 50 exceeds the 40" in KNN(k=50).not_applicable(ok)
    assert KNN().not_applicable(ok) is None  # k from the bank-size rule always fits


def test_fit_accepts_fitdata_features_objects_and_arrays():
    g = np.random.default_rng(1)
    h, y = g.normal(size=(30, 3)), np.repeat([0, 1, 2], 10)

    class Feats:  # anything with h / logits / labels, as ood_lib.run.features.Features
        def __init__(self):
            self.h, self.logits, self.labels = h, None, y

    a = Mahalanobis().fit(FitData(h, None, y)).score(h)
    torch.testing.assert_close(a, Mahalanobis().fit(Feats()).score(h))
    torch.testing.assert_close(a, Mahalanobis().fit(h, None, y).score(h))


def test_a_new_detector_is_one_registered_class(fit_and_test, monkeypatch):
    monkeypatch.setattr("ood_lib.detectors.base.DETECTORS", dict(DETECTORS))

    @register("neg_norm")
    class NegNorm(Detector):
        """−‖h‖₂ (a toy: smaller features = in-distribution)."""

        needs = Needs(features=True)

        def __init__(self, p: float = 2.0) -> None:
            self.p = p

        def score(self, features, logits=None):
            return -torch.as_tensor(features).norm(p=self.p, dim=1)

    from ood_lib.detectors import base

    model, train, h, f = fit_and_test
    det = base.create("neg_norm", p=1.0)
    assert isinstance(base.DETECTORS["neg_norm"], Entry) and det.get_params() == {"p": 1.0}
    torch.testing.assert_close(det.fit(train).score(h, f), -h.abs().sum(1))
    assert "neg_norm" not in DETECTORS  # the module's registry is untouched after the test
