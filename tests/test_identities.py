"""Every identity of the chapter *Gradient scores and their closed forms*, at float64, autograd (as defined) vs closed form."""

import pytest
import torch

from ood_lib.gradients import GRADIENT_SCORES, gradient_score, head_gradient_score, target_spread
from ood_lib.scores import GRADIENT_FORMS, closed_form

TOL = 1e-10


def rel(a, b):
    return float(((a - b).abs() / b.abs()).max())


@pytest.mark.parametrize("name", sorted(GRADIENT_FORMS))
@pytest.mark.parametrize("classes,T", [(5, 1.0), (2, 1.0), (5, 0.5), (3, 7.3)])
@pytest.mark.parametrize("bias", [False, True])
def test_last_layer_identity(name, classes, T, bias, tiny_model, tiny_images):
    model, x = tiny_model(classes), tiny_images(6)
    with torch.no_grad():
        h, f = model.forward_features(x)
    assert (h < 0).any(), "the test should cover features with negative entries"
    c = closed_form(name, h, f, T, bias)
    for method in ("vmap", "loop"):
        a = gradient_score(name, model, x, temperature=T, bias=bias, method=method)
        assert rel(a, c) <= TOL, (name, method)


@pytest.mark.parametrize("name", ["gradnorm", "exgrad", "fisher"])
def test_full_backward_loop_reads_the_same_gradient(name, tiny_model, tiny_images):
    model, x = tiny_model(4), tiny_images(4)
    with torch.no_grad():
        h, f = model.forward_features(x)
    a = gradient_score(name, model, x, method="loop", full_backward=True)
    assert rel(a, closed_form(name, h, f)) <= TOL


def test_official_gradnorm_is_C_times_gradnorm(tiny_model, tiny_images):
    model, x = tiny_model(6), tiny_images(5)
    a = gradient_score("gradnorm_official", model, x)
    b = gradient_score("gradnorm", model, x)
    assert rel(a, 6 * b) <= TOL


def test_uniform_l1_is_a_pure_feature_norm(tiny_model, tiny_images):
    model, x = tiny_model(5), tiny_images(6)
    with torch.no_grad():
        h = model.features(x)
    a = gradient_score("unif_l1", model, x, temperature=2.0)
    assert rel(a, 2 * h.abs().sum(1) * 4 / (5 * 2.0)) <= TOL


def test_norm_of_expected_gradient_is_zero(tiny_model, tiny_images):
    model, x = tiny_model(5), tiny_images(6)
    zero = gradient_score("mean_grad", model, x, temperature=1.7)
    scale = gradient_score("exgrad", model, x, temperature=1.7)
    assert float((zero / scale).max()) <= TOL
    assert float((gradient_score("mean_grad", model, x, method="loop") / scale).max()) <= TOL


def test_head_only_path_matches_full_model(tiny_model, tiny_images):
    model, x = tiny_model(5), tiny_images(6)
    with torch.no_grad():
        h = model.features(x)
    for name in GRADIENT_SCORES:
        a = gradient_score(name, model, x, temperature=1.3)
        b = head_gradient_score(name, model.head, h, temperature=1.3)
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-300), name


def test_last_layer_gradient_factorises_over_targets(tiny_model, tiny_images):
    model, x = tiny_model(5, relu_features=True), tiny_images(6)
    for bias in (False, True):
        for norm in ("l1", "l2sq"):
            assert float(target_spread(model, x, wrt="head", bias=bias, norm=norm).max()) <= TOL


@pytest.mark.parametrize("wrt", ["body", "conv", "input"])
def test_deeper_layers_and_input_do_not_factorise(wrt, tiny_model, tiny_images):
    model, x = tiny_model(5), tiny_images(6)
    spread = target_spread(model, x, wrt=wrt)
    assert float(spread.min()) > 1e-3, spread
    # and no constant multiple of the last-layer closed form reproduces the deeper gradient norm
    with torch.no_grad():
        h, f = model.forward_features(x)
    a = gradient_score("gradnorm", model, x, wrt=wrt)
    cf = closed_form("gradnorm", h, f)
    k = (a * cf).sum() / (cf * cf).sum()
    assert rel(k * cf, a) > 1e-2


def test_deeper_layer_loop_and_vmap_agree(tiny_model, tiny_images):
    model, x = tiny_model(5), tiny_images(4)
    for wrt in ("body", "input"):
        a = gradient_score("exgrad", model, x, wrt=wrt)
        b = gradient_score("exgrad", model, x, wrt=wrt, method="loop")
        assert rel(a, b) <= 1e-12, wrt


def test_float32_model_gives_float32_scores(tiny_model, tiny_images):
    model, x = tiny_model(5).float(), tiny_images(3).float()
    a = gradient_score("gradnorm", model, x)
    assert a.dtype == torch.float32
    with torch.no_grad():
        h, f = model.forward_features(x)
    assert rel(a.double(), closed_form("gradnorm", h, f).double()) < 1e-5


def test_head_gradients_run_the_backbone_once_per_batch(tiny_model, tiny_images, monkeypatch):
    model, x = tiny_model(5), tiny_images(6)
    calls = []
    real = type(model).features
    monkeypatch.setattr(type(model), "features", lambda self, xb: calls.append(len(xb)) or real(self, xb))
    gradient_score("exgrad", model, x, batch_size=4)  # C = 5 one-hot targets per image
    assert calls == [4, 2]
    calls.clear()
    target_spread(model, x)
    assert calls == [6]
