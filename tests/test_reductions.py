"""The newer gradient detectors: each definition by autograd against its closed form (tiny random
models, then once the real CIFAR-10 ResNet-20), the fits by hand, the registered detectors, bad input.

Differences are relative, except where autograd itself forms p_ŷ − 1 (a predicted-label target): there
the difference is held in units of the feature factor times the bound of the output factor (as
``ood_lib.gradients.verify`` does), since that subtraction loses ε / (1 − max p) of relative precision."""

import copy
import math

import pytest
import torch
from torch import nn

from conftest import SHARED_DATA, needs_shared_data
from ood_lib import OODInputError
from ood_lib.detectors import DETECTORS, FitData, create
from ood_lib.gradients.gaia import gaia_autograd, gaia_last_closed_form, gap_map, hooked_modules
from ood_lib.models.anatomy import last_bn_name
from ood_lib.models import CifarResNet, MnistCNN
from ood_lib.gradients.reductions import (GRADUNC_AGGREGATIONS, KFAC_TARGETS, grad_uncertainty_autograd,
                                grad_uncertainty_closed_form, gradorth_autograd, gradorth_closed_form,
                                gradorth_subspace, kfac_autograd, kfac_closed_form, kfac_factors)

TOL = 1e-10
NEW = ["gradorth", "kfac_natgrad", "kfac_natgrad_flipped", "gradunc_l2", "gradunc_max", "gaia_last", "gaia_z_last",
       "gaia", "gaia_z"]


def t(x):
    return torch.tensor(x, dtype=torch.float64)


def rel(a, c):
    return float(((a - c).abs() / c.abs()).max())


def head_cases(tiny_model, tiny_images):
    """(model, h, f) for tiny random models with signed and with ReLU features, in float64."""
    for relu in (False, True):
        m = tiny_model(classes=5, dim=7, seed=2, relu_features=relu)
        with torch.no_grad():
            h = m.features(tiny_images(40, seed=3))
        yield m, h, m.head(h).detach()


def random_resnet(depth=8, classes=5, seed=3):
    """A CIFAR ResNet with random weights and BatchNorm statistics: its last map is partly zero."""
    torch.manual_seed(seed)
    net = CifarResNet(depth, classes).double()
    for mod in net.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.normal_(0, 0.5)
            mod.running_var.uniform_(0.5, 2.0)
            mod.weight.data.normal_(1.0, 0.3)
            mod.bias.data.normal_(0.0, 0.3)
    return net.eval()


def measure_all(model, head, x, h_train, f_train):
    """The worst difference of every reduction on images x (the real-model test prints these)."""
    with torch.no_grad():
        h, f = model.forward_features(x)
    out = {}
    basis = gradorth_subspace(h_train)
    for norm in ("l2", "l1"):
        out[f"gradorth_{norm}"] = rel(gradorth_autograd(head, h, basis, norm=norm, temperature=1.5),
                                      gradorth_closed_form(h, f, basis, norm=norm, temperature=1.5))
    fac = kfac_factors(h_train, f_train, temperature=1.5)
    for t in KFAC_TARGETS:
        a, c = kfac_autograd(head, h, fac, target=t), kfac_closed_form(h, f, fac, target=t)
        if t == "pred":  # units of (hᵀA⁻¹h) · max (p − e_ŷ)ᵀG⁻¹(p − e_ŷ) ≤ (hᵀA⁻¹h) · 2‖G⁻¹‖
            u = torch.einsum("nd,de,ne->n", h, fac.a_inv, h)
            out["kfac_pred"] = float(((a - c).abs() / (2 * u * torch.linalg.matrix_norm(fac.g_inv, 2))).max())
        else:
            out[f"kfac_{t}"] = rel(a, c)
    unit = {"l1": h.abs().sum(1), "l2": h.norm(dim=1), "std": h.norm(dim=1), "max": h.abs().amax(1),
            "min": h.abs().amax(1), "mean": h.abs().amax(1)}
    for agg in GRADUNC_AGGREGATIONS:
        a, c = grad_uncertainty_autograd(head, h, agg), grad_uncertainty_closed_form(h, f, agg)
        out[f"gradunc_{agg}"] = float(((a - c).abs() / (2 * unit[agg])).max())
    a_map, f2 = gap_map(model, x)
    bn = last_bn_name(model, x)
    for v in ("a", "z"):
        out[f"gaia_{v}_last"] = rel(gaia_autograd(model, x, v, modules=[bn]),
                                    gaia_last_closed_form(a_map, f2, head.weight.detach(), v))
    return out


# --- autograd = closed form, tiny random models ---------------------------------------------------
def test_head_reductions_equal_autograd(tiny_model, tiny_images):
    for m, h, f in head_cases(tiny_model, tiny_images):
        basis = gradorth_subspace(h[:30])
        for norm in ("l2", "l1"):
            assert rel(gradorth_autograd(m.head, h, basis, norm=norm, temperature=0.7),
                       gradorth_closed_form(h, f, basis, norm=norm, temperature=0.7)) <= TOL
        fac = kfac_factors(h[:30], f[:30], temperature=1.3, damping=1e-2)
        for t in KFAC_TARGETS:
            assert rel(kfac_autograd(m.head, h, fac, target=t), kfac_closed_form(h, f, fac, target=t)) <= TOL, t
        for agg in GRADUNC_AGGREGATIONS:
            a, c = grad_uncertainty_autograd(m.head, h, agg), grad_uncertainty_closed_form(h, f, agg)
            assert float((a - c).abs().max()) <= TOL * float(c.abs().max() + h.abs().max()), agg


def test_gaia_last_layer_equals_autograd_on_a_random_resnet():
    net = random_resnet()
    x = torch.randn(12, 3, 8, 8, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    a_map, f = gap_map(net, x)
    assert a_map.shape == (12, 64, 2, 2) and 0.1 < float((a_map == 0).double().mean()) < 0.9
    bn = last_bn_name(net, x)
    assert bn == "layer3.0.bn2"
    for v in ("a", "z"):
        last = gaia_autograd(net, x, v, modules=[bn])
        assert rel(last, gaia_last_closed_form(a_map, f, net.linear.weight.detach(), v)) <= TOL
        # the aggregation over every BatchNorm is another score: the last layer is one term of its mean
        full = gaia_autograd(net, x, v)
        assert rel(full, last) > 1e-2
    assert len(hooked_modules(net)) == 7 and hooked_modules(net, ["layer3"]) == ["layer3.0.bn1", "layer3.0.bn2"]


def test_gaia_last_layer_without_pooling_is_the_head_input():
    # MnistCNN: h = relu(fc1(·)) is read by the head directly, a 1 × 1 map (S = 1) whose last "BN" is fc1
    torch.manual_seed(0)
    net = MnistCNN(num_classes=4, width=4, embed=6).double().eval()
    x = torch.randn(10, 1, 28, 28, dtype=torch.float64)
    a_map, f = gap_map(net, x)
    assert a_map.shape == (10, 6, 1, 1)
    for v in ("a", "z"):
        assert rel(gaia_autograd(net, x, v, modules=["fc1"]),
                   gaia_last_closed_form(a_map, f, net.fc2.weight.detach(), v)) <= TOL
    assert hooked_modules(net) == ["conv1", "conv2"]  # no BatchNorm: the convolutions are read


# --- the fits, by hand ---------------------------------------------------------------------------
def test_gradorth_subspace_by_the_energy_rule():
    # rows along the axes with squared norms 90, 7, 3 (energy fractions 0.90, 0.97, 1.00)
    h = t([[90**0.5, 0, 0], [0, 7**0.5, 0], [0, 0, 3**0.5]])
    assert gradorth_subspace(h, 0.9).abs().tolist() == [[1.0], [0.0], [0.0]]
    two = gradorth_subspace(h, 0.97)
    assert two.shape == (3, 2) and torch.allclose(two.abs(), torch.eye(3, dtype=torch.float64)[:, :2])
    assert gradorth_subspace(h, 0.98).shape == (3, 3)
    # closed form: ‖p − u‖₂ ‖S_kᵀ h‖₂ with logits (ln 3, 0): p = (3/4, 1/4), ‖p − u‖₂ = √2/4
    s = gradorth_closed_form(t([[3.0, 4.0, 12.0]]), t([[math.log(3), 0.0]]), two)
    assert s.item() == pytest.approx(2**0.5 / 4 * 5.0, abs=1e-12)


def test_kfac_factors_by_hand():
    # features ±(1, 0), (0, 2): A = E[h hᵀ] = diag(2/3, 4/3); logits 0 → p = u = (1/2, 1/2):
    # G = diag p − p pᵀ = [[1/4, −1/4], [−1/4, 1/4]] (singular along 1), damping λ = 1e-3 · tr / dim
    h = t([[1.0, 0.0], [-1.0, 0.0], [0.0, 2.0]])
    fac = kfac_factors(h, torch.zeros(3, 2, dtype=torch.float64))
    assert torch.allclose(torch.linalg.inv(fac.a_inv), torch.diag(t([2 / 3 + 1e-3, 4 / 3 + 1e-3])))
    g = t([[0.25, -0.25], [-0.25, 0.25]]) + 0.25e-3 * torch.eye(2, dtype=torch.float64)
    assert torch.allclose(torch.linalg.inv(fac.g_inv), g)
    # h = (1, 0), p = (3/4, 1/4): hᵀA⁻¹h = 1/(2/3 + 1e-3); a = p − u = (1/4, −1/4) lies along (1, −1),
    # the eigenvector of G with eigenvalue 1/2 + 0.25e-3: aᵀG⁻¹a = (1/8) / (1/2 + 0.25e-3)
    s = kfac_closed_form(t([[1.0, 0.0]]), t([[math.log(3), 0.0]]), fac)
    assert s.item() == pytest.approx(1 / (2 / 3 + 1e-3) * 0.125 / (0.5 + 0.25e-3), rel=1e-12)


def test_grad_uncertainty_by_hand():
    # logits (ln 2, 0, 0): p = (1/2, 1/4, 1/4), ŷ = 0, a = p − e_ŷ = (−1/2, 1/4, 1/4); h = (2, −1)
    f, h = t([[math.log(2), 0.0, 0.0]]), t([[2.0, -1.0]])
    got = {agg: grad_uncertainty_closed_form(h, f, agg).item() for agg in GRADUNC_AGGREGATIONS}
    assert got["l1"] == pytest.approx(3 * 1.0)  # ‖h‖₁ ‖a‖₁ = 3 · 1
    assert got["l2"] == pytest.approx(5**0.5 * (6 / 16) ** 0.5)  # ‖h‖₂ ‖a‖₂
    assert got["max"] == pytest.approx(0.5) and got["min"] == pytest.approx(-1.0)  # (−1/2)(−1), (−1/2)(2)
    assert got["mean"] == 0.0 and got["std"] == pytest.approx(got["l2"] / 6**0.5)


# --- the registered detectors --------------------------------------------------------------------
def test_detectors_are_the_closed_forms_with_their_orientation(tiny_model, tiny_images):
    m, h, f = next(head_cases(tiny_model, tiny_images))
    train = FitData(h[:30], f[:30], f[:30].argmax(1))
    d = create("gradorth").fit(train)
    assert torch.equal(d.score(h, f), gradorth_closed_form(h, f, gradorth_subspace(h[:30])))
    k = create("kfac_natgrad").fit(train).score(h, f)
    assert torch.equal(create("kfac_natgrad_flipped").fit(train).score(h, f), -k)
    assert torch.equal(k, kfac_closed_form(h, f, kfac_factors(h[:30], f[:30])))
    assert torch.equal(create("gradunc_l2").score(h, f), -grad_uncertainty_closed_form(h, f, "l2"))
    assert create("kfac_natgrad").not_applicable(FitData(h[:30])) is not None  # no logits to fit G
    net = random_resnet()
    x = torch.randn(6, 3, 8, 8, dtype=torch.float64)
    loader = [(x, torch.zeros(6, dtype=torch.long), torch.tensor([True] * 5 + [False]))]
    a_map, f2 = gap_map(net, x[:5])
    s = create("gaia_last", model=net).score_inputs(loader)
    assert torch.equal(s, -gaia_last_closed_form(a_map, f2, net.linear.weight.detach(), "a"))
    assert torch.allclose(create("gaia", model=net, stages=["layer3"]).score_inputs(loader),
                          -gaia_autograd(net, x[:5], "a", stages=["layer3"]), rtol=1e-12)
    names = list(DETECTORS)
    assert [n for n in names if n in NEW] == NEW and names.index("gradorth") > names.index("nnguide")


def test_bad_input_is_named(tiny_model, tiny_images):
    m, h, f = next(head_cases(tiny_model, tiny_images))
    with pytest.raises(OODInputError, match="threshold"):
        gradorth_subspace(h, 1.5)
    with pytest.raises(OODInputError, match="norm"):
        gradorth_closed_form(h, f, gradorth_subspace(h), norm="l3")
    with pytest.raises(OODInputError, match="natural-gradient target"):
        kfac_closed_form(h, f, kfac_factors(h, f), target="ones")
    with pytest.raises(OODInputError, match="damping"):
        kfac_factors(h, f, damping=0.0)
    with pytest.raises(OODInputError, match="aggregation"):
        grad_uncertainty_closed_form(h, f, "median")
    with pytest.raises(OODInputError, match="variant"):
        gaia_last_closed_form(torch.ones(2, 7, 1, 1), f[:2], m.head.weight, "b")
    with pytest.raises(OODInputError, match="shapes do not fit"):
        gaia_last_closed_form(torch.ones(2, 6, 1, 1), f[:2], m.head.weight)
    with pytest.raises(OODInputError, match="stages"):
        hooked_modules(random_resnet(), ["layer9"])
    with pytest.raises(OODInputError, match="eval mode"):
        gaia_autograd(random_resnet().train(), torch.zeros(2, 3, 8, 8))


# --- once on the real model ---------------------------------------------------------------------------
@needs_shared_data("CIFAR10-JPEG", "test")
@needs_shared_data("weights", "resnet20-12fca82f.th")
def test_every_reduction_on_the_real_resnet20(capsys):
    from ood_lib.data.benchmarks import get_benchmark

    bench = get_benchmark("cifar10")
    model = copy.deepcopy(bench.load_model(SHARED_DATA)).double().eval()
    sp = bench.splits(SHARED_DATA, n_id=16, n_fit=100)
    x, xt = (torch.stack([s.dataset[i][0] for i in range(len(s.dataset))]).double()
             for s in (sp["id_test"], sp["id_train"]))
    with torch.no_grad():
        ht, ft = model.forward_features(xt)
    worst = measure_all(model, model.linear, x, ht, ft)
    with capsys.disabled():
        print("\nworst autograd vs closed form, ResNet-20, 16 CIFAR-10 test images:",
              ", ".join(f"{k} {v:.1e}" for k, v in worst.items()))
    assert last_bn_name(model, x) == "layer3.2.bn2" and gap_map(model, x)[0].shape == (16, 64, 8, 8)
    assert all(v <= TOL for v in worst.values()), worst
