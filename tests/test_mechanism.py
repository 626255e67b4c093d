"""The pre-registered mechanism rule: its threshold is the page's, and its prediction follows the
feature norm's own AUROC on features it has never seen."""

import re

import numpy as np
import pytest

from conftest import REPO
from ood_lib.findings.mechanism import TAU, feature_norm_auroc, predict_feature_norm_effect

PAGE = REPO / "book" / "preregistration.md"


def test_the_page_states_the_threshold_the_code_applies():
    text = PAGE.read_text()
    assert TAU == 75.0
    assert re.search(r"\\tau = 75\b", text) and "predict_feature_norm_effect" in text


def _features(rng, n, scale):
    return np.abs(rng.normal(size=(n, 16))) * scale


def test_a_feature_norm_that_separates_is_predicted_to_help():
    rng = np.random.default_rng(0)
    h_id, h_ood = _features(rng, 400, 2.0), _features(rng, 300, 1.0)
    got = predict_feature_norm_effect(h_id, h_ood)
    assert got["auroc_u"] > 95 and got["helps"] is True and got["tau"] == TAU


def test_a_near_constant_feature_norm_is_predicted_not_to_help():
    rng = np.random.default_rng(1)
    h_id, h_ood = _features(rng, 400, 1.0), _features(rng, 300, 1.0)
    got = predict_feature_norm_effect(h_id, h_ood)
    assert 40 < got["auroc_u"] < 60 and got["helps"] is False


def test_the_threshold_is_strict_and_oriented_id_positive():
    h_id, h_ood = np.array([[2.0], [3.0]]), np.array([[1.0], [4.0]])
    assert feature_norm_auroc(h_id, h_ood) == pytest.approx(50.0)
    assert predict_feature_norm_effect(h_id, h_ood, tau=50.0)["helps"] is False
    assert predict_feature_norm_effect(h_ood, h_id)["auroc_u"] == pytest.approx(50.0)
    assert feature_norm_auroc(np.array([[3.0]]), np.array([[1.0]])) == 100.0
