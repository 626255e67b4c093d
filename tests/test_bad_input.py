"""Bad input raises an error that names the problem; never a silent NaN."""

import math

import numpy as np
import pytest
import torch

from ood_lib import OODInputError
from ood_lib.gradients import gradient_score, target_spread
from ood_lib.metrics import auroc, bootstrap_ci, evaluate_scores, fpr_at_tpr
from ood_lib.scores import closed_form, grid_names, score, u_term, v_term

H = torch.ones(3, 4)
F = torch.zeros(3, 5)


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: score("msp", None, torch.tensor([[1.0, float("nan")]])), "non-finite"),
        (lambda: score("msp", None, torch.tensor([[1.0, float("inf")]])), "non-finite"),
        (lambda: score("l1*msp", torch.tensor([[float("nan")] * 4] * 3), F), "features: contains"),
        (lambda: score("msp", None, torch.zeros(0, 5)), "empty"),
        (lambda: score("msp", None, torch.zeros(3, 1)), "at least 2 classes"),
        (lambda: score("msp", None, torch.zeros(3)), "2-d"),
        (lambda: score("l1*msp", torch.ones(2, 4), F), "rows but the logits have 3"),
        (lambda: score("msp", None, F, temperature=0), "temperature"),
        (lambda: score("msp", None, F, temperature=-1), "temperature"),
        (lambda: score("msp", None, F, temperature=float("nan")), "temperature"),
        (lambda: score("msp", None, F, temperature="hot"), "temperature"),
        (lambda: score("nope", H, F), "valid:.*msp"),
        (lambda: closed_form("nope", H, F), "valid:.*gradnorm"),
        (lambda: u_term("l3", H), "valid:.*l1"),
        (lambda: v_term("x", F), "valid:.*msp"),
        (lambda: grid_names(["l1"], ["bogus"]), "V term"),
        (lambda: score("l1*msp", None, F), "needs the penultimate features"),
        (lambda: score("msp", None, np.array([["a", "b"]])), "numeric"),
        (lambda: auroc([], [1.0]), "empty"),
        (lambda: auroc([1.0], [float("nan")]), "non-finite"),
        (lambda: auroc([[1.0]], [1.0]), "1-d"),
        (lambda: fpr_at_tpr([1.0], [0.0], 0), "tpr_level"),
        (lambda: bootstrap_ci([1.0], [0.0], "auc"), "unknown metric"),
        (lambda: bootstrap_ci([1.0], [0.0], n_boot=0), "n_boot"),
    ],
)
def test_clear_errors(call, match):
    with pytest.raises(OODInputError, match=match):
        call()


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
