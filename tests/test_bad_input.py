"""Bad input raises an error that names the problem; never a silent NaN."""

import math

import numpy as np
import pytest
import torch

from ood_lib import OODInputError
from ood_lib.gradients import gradient_score, target_spread
from ood_lib.stats.metrics import auroc, bootstrap_ci, evaluate_scores, fpr_at_tpr
from ood_lib.scores import closed_form, grid_names, score, u_term, v_term

H = torch.ones(3, 4)
F = torch.zeros(3, 5)


@pytest.mark.parametrize(
    "call,match",
    [
        pytest.param(lambda: score("msp", None, torch.tensor([[1.0, float("nan")]])), "non-finite", id='NaN in logits'),
        pytest.param(lambda: score("msp", None, torch.tensor([[1.0, float("inf")]])), "non-finite", id='Inf in logits'),
        pytest.param(lambda: score("l1*msp", torch.tensor([[float("nan")] * 4] * 3), F), "features: contains", id='NaN in features'),
        pytest.param(lambda: score("msp", None, torch.zeros(0, 5)), "empty", id='empty logits'),
        pytest.param(lambda: score("msp", None, torch.zeros(3, 1)), "at least 2 classes", id='a single class'),
        pytest.param(lambda: score("msp", None, torch.zeros(3)), "2-d", id='1-d logits'),
        pytest.param(lambda: score("l1*msp", torch.ones(2, 4), F), "rows but the logits have 3", id='mismatched lengths'),
        pytest.param(lambda: score("msp", None, F, temperature=0), "temperature", id='T = 0'),
        pytest.param(lambda: score("msp", None, F, temperature=-1), "temperature", id='T < 0'),
        pytest.param(lambda: score("msp", None, F, temperature=float("nan")), "temperature", id='T = NaN'),
        pytest.param(lambda: score("msp", None, F, temperature="hot"), "temperature", id='T not a number'),
        pytest.param(lambda: score("nope", H, F), "valid:.*msp", id='unknown score'),
        pytest.param(lambda: closed_form("nope", H, F), "valid:.*gradnorm", id='unknown gradient score'),
        pytest.param(lambda: u_term("l3", H), "valid:.*l1", id='unknown U term'),
        pytest.param(lambda: v_term("x", F), "valid:.*msp", id='unknown V term'),
        pytest.param(lambda: grid_names(["l1"], ["bogus"]), "V term", id='unknown V term in grid'),
        pytest.param(lambda: score("l1*msp", None, F), "needs the penultimate features", id='features missing'),
        pytest.param(lambda: score("msp", None, np.array([["a", "b"]])), "numeric", id='non-numeric array'),
        pytest.param(lambda: auroc([], [1.0]), "empty", id='empty ID scores'),
        pytest.param(lambda: auroc([1.0], [float("nan")]), "non-finite", id='NaN OOD score'),
        pytest.param(lambda: auroc([[1.0]], [1.0]), "1-d", id='2-d scores'),
        pytest.param(lambda: fpr_at_tpr([1.0], [0.0], 0), "tpr_level", id='TPR level 0'),
        pytest.param(lambda: bootstrap_ci([1.0], [0.0], "auc"), "unknown metric", id='unknown metric'),
        pytest.param(lambda: bootstrap_ci([1.0], [0.0], n_boot=0), "n_boot", id='zero bootstrap resamples'),
    ],
)
def test_clear_errors(call, match, record, request):
    with pytest.raises(OODInputError, match=match) as err:
        call()
    record("bad input", request.node.callspec.id, f"OODInputError: {str(err.value)[:70]}")


def test_overflowing_scale_is_reported_not_returned():
    f = torch.tensor([[3e38, -3e38]], dtype=torch.float32)
    with pytest.raises(OODInputError, match="non-finite"):
        score("l2sq*msp", torch.full((1, 4), 3e38), f)


def test_gradient_score_errors(tiny_model, tiny_images):
    model, x = tiny_model(), tiny_images(2)
    with pytest.raises(OODInputError, match="valid:.*exgrad"):
        gradient_score("exgrad2", model, x)
    with pytest.raises(OODInputError, match="method"):
        gradient_score("exgrad", model, x, method="fast")
    with pytest.raises(OODInputError, match="temperature"):
        gradient_score("exgrad", model, x, temperature=0)
    with pytest.raises(OODInputError, match="matches no parameter.*conv"):
        gradient_score("exgrad", model, x, wrt="layer9")
    with pytest.raises(OODInputError, match="non-finite"):
        gradient_score("exgrad", model, x * math.nan)
    with pytest.raises(OODInputError, match="eval mode"):
        gradient_score("exgrad", model.train(), x)
    with pytest.raises(OODInputError, match="norm"):
        target_spread(model.eval(), x, norm="l3")
    with pytest.raises(OODInputError, match="features\\(x\\)"):
        gradient_score("exgrad", torch.nn.Linear(3, 2), torch.ones(2, 3))


def test_constant_scores_are_defined():
    m = evaluate_scores(np.ones(5), np.ones(5))
    assert m["auroc"] == 50.0 and all(np.isfinite(v) for v in m.values())


def test_detector_and_run_option_errors(record):
    from ood_lib.run.config import RunConfig
    from ood_lib.detectors import create

    cases = {
        "unknown detector": (lambda: create("gradnrom"), "unknown method 'gradnrom'; valid:"),
        "unknown hyper-parameter": (lambda: create("knn", kk=3), "no hyper-parameter 'kk'; it takes: k, chunk"),
        "detector without its model": (lambda: create("odin"), "reads the network"),
        "unknown run option": (lambda: RunConfig().replace(n_test=1), "unknown run option 'n_test'"),
        "methods as one string": (lambda: RunConfig(methods="msp"), "list of names"),
        "negative bootstrap": (lambda: RunConfig(bootstrap=-1), "bootstrap >= 0"),
    }
    for case, (call, match) in cases.items():
        with pytest.raises(OODInputError, match=match) as err:
            call()
        record("bad input", case, f"OODInputError: {str(err.value)[:70]}")
