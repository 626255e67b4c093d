"""Per-sample gradient norms of every parameter tensor: batched = batch-1 loop, and the closed forms."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import RESNET20, needs_shared_data
from ood_lib import OODInputError
from ood_lib.gradients import gradient_score
from ood_lib.gradients.layers import (INPUT, fastest_method, gap_conv_closed_form, layer_grad_norms,
                                     linear_closed_form)
from ood_lib.models import CifarResNet, DenseNetBC, FeatureModel, MnistCNN


class _GapNet(FeatureModel):
    """conv → BN → ReLU → conv (with bias) → BN → ReLU → global mean → Linear."""

    head_name = "fc"

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.c2, self.b2 = nn.Conv2d(4, 5, 3, stride=2, padding=1), nn.BatchNorm2d(5)
        self.fc = nn.Linear(5, 3)

    def features(self, x):
        x = torch.relu(self.b2(self.c2(torch.relu(self.b1(self.c1(x))))))
        return x.mean((2, 3))


def _model(name):
    torch.manual_seed(0)
    m = {"resnet20": CifarResNet, "densenet": lambda: DenseNetBC(depth=10, growth=4),
         "mnist": MnistCNN, "gap": _GapNet}[name]()
    for mod in m.modules():  # non-trivial running statistics and affine maps
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.5, 0.5), mod.running_var.uniform_(0.5, 2.0)
            mod.weight.data.uniform_(0.5, 1.5), mod.bias.data.uniform_(-0.2, 0.2)
    shape = (3, 1, 28, 28) if name == "mnist" else (3, 3, 32, 32)
    return m.double().eval(), torch.randn(*shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


def _worst(a, b, names=None):
    return max(float(((a[k][n] - b[k][n]).abs() / b[k][n].abs()).max()) for k in a for n in (names or a[k]))


@pytest.mark.parametrize("name,loss,T", [("resnet20", "uniform_kl", 1.0), ("densenet", "pred", 2.0),
                                         ("mnist", "label", 1.0), ("gap", "ones", 1.0)])
def test_batched_equals_batch1_loop_for_every_parameter(name, loss, T):
    model, x = _model(name)
    kw = dict(loss=loss, temperature=T, labels=[0, 2, 1] if loss == "label" else None)
    a = layer_grad_norms(model, x, chunk_size=2, **kw)
    b = layer_grad_norms(model, x, method="loop", **kw)
    assert set(a["l1"]) == set(b["l2sq"]) == {n for n, _ in model.named_parameters()}
    assert all((v > 0).all() for v in b["l1"].values())
    assert _worst(a, b) <= 1e-10
    c = layer_grad_norms(model, x, method="hooks", chunk_size=2, **kw)
    assert _worst(c, b) <= 1e-10


@pytest.mark.parametrize("name,std", [("resnet20", (0.2, 0.3, 0.5)), ("mnist", 0.3081), ("gap", None)])
def test_input_gradient_in_pixel_units(name, std):
    """‖∂ℓ/∂pixel‖ = ‖(∂ℓ/∂x)/std‖ on every path; the L1 norm against the gradient scores' own code."""
    model, x = _model(name)
    kw = dict(params=[next(iter(dict(model.named_parameters())))], wrt_input=True, input_std=std)
    ref = layer_grad_norms(model, x, method="loop", **kw)
    for method in ("vmap", "hooks"):
        assert _worst(layer_grad_norms(model, x, method=method, chunk_size=2, **kw), ref) <= 1e-10
    s = torch.ones(x.shape[1], dtype=x.dtype) if std is None else torch.as_tensor(std, dtype=x.dtype).expand(x.shape[1])
    from torch.func import grad, vmap

    def kl_u(xi):  # KL(u ‖ p) = −log C − mean_k log p_k
        logp = F.log_softmax(model(xi[None])[0], -1)
        return -logp.mean() - math.log(logp.numel())

    g = vmap(grad(kl_u))(x) / s.view(1, -1, *([1] * (x.ndim - 2)))
    assert torch.allclose(ref["l1"][INPUT], g.flatten(1).abs().sum(1), rtol=1e-12, atol=0)
    assert torch.allclose(ref["l2sq"][INPUT], g.flatten(1).pow(2).sum(1), rtol=1e-12, atol=0)
    if std is None:
        assert torch.allclose(ref["l1"][INPUT], gradient_score("gradnorm", model, x, wrt="input"), rtol=1e-12, atol=0)


def test_hooks_rebuild_grouped_convolutions_and_refuse_changed_forwards():
    torch.manual_seed(0)
    dw = nn.Sequential(nn.Conv2d(4, 8, 1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1, groups=8),
                       nn.Conv2d(8, 6, 3, stride=2, groups=2), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3))
    dw = dw.double().eval()
    x = torch.randn(3, 4, 9, 9, dtype=torch.float64)
    assert fastest_method(dw) == "hooks"
    assert _worst(layer_grad_norms(dw, x, method="hooks"), layer_grad_norms(dw, x, method="loop")) <= 1e-10

    class PaddedConv(nn.Conv2d):  # pads inside forward, as TensorFlow-style "same" convolutions do
        def forward(self, x):
            return super().forward(F.pad(x, (1, 1, 1, 1)))

    model = nn.Sequential(PaddedConv(4, 2, 3), nn.Flatten(), nn.Linear(2 * 9 * 9, 3)).double().eval()
    assert fastest_method(model) == "vmap" and fastest_method(model, params=["2"]) == "hooks"
    with pytest.raises(OODInputError, match="cannot rebuild 0: it is a PaddedConv whose forward is not Conv2d's"):
        layer_grad_norms(model, x, method="hooks")


def test_only_the_norms_asked_for():
    model, x = _model("densenet")
    both = layer_grad_norms(model, x, method="loop", wrt_input=True)
    for method in ("hooks", "vmap", "loop"):
        one = layer_grad_norms(model, x, method=method, norms=("l1",), wrt_input=True)
        assert list(one) == ["l1"] and _worst(one, both, names=list(both["l1"])) <= 1e-10
    with pytest.raises(OODInputError, match="norms must be a non-empty subset"):
        layer_grad_norms(model, x, norms=("l3",))


def test_channel_std_is_checked():
    model, x = _model("resnet20")
    with pytest.raises(OODInputError, match="2 values for 3 input channels"):
        layer_grad_norms(model, x, wrt_input=True, input_std=(0.2, 0.3))
    with pytest.raises(OODInputError, match="finite and > 0"):
        layer_grad_norms(model, x, wrt_input=True, input_std=-1.0)


def test_hooks_survive_in_place_operations():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(inplace=True), nn.Conv2d(4, 4, 3),
                          nn.BatchNorm2d(4), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 3)).double().eval()
    model[1].running_mean.fill_(0.3)  # the BN outputs are then neither all positive nor all negative
    x = torch.randn(3, 3, 8, 8, dtype=torch.float64)
    assert _worst(layer_grad_norms(model, x, method="hooks"), layer_grad_norms(model, x, method="loop")) <= 1e-10


def test_hooks_refuse_layers_they_do_not_rebuild():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.GroupNorm(1, 2), nn.Flatten(), nn.Linear(2 * 4 * 4, 3))
    with pytest.raises(OODInputError, match="cannot rebuild 1: it is a GroupNorm"):
        layer_grad_norms(model.double().eval(), torch.randn(2, 1, 6, 6, dtype=torch.float64), method="hooks")
    rows = layer_grad_norms(model.double().eval(), torch.randn(2, 1, 6, 6, dtype=torch.float64), params=["0", "3"],
                            method="hooks")
    assert set(rows["l1"]) == {"0.weight", "0.bias", "3.weight", "3.bias"}


def test_loop_agrees_with_the_gradient_scores():
    """Summed over a block's tensors, the L1 norms are GradNorm w.r.t. that block (independent code)."""
    model, x = _model("resnet20")
    a = layer_grad_norms(model, x, params=["layer3", "linear.weight"])
    block = sum(v for n, v in a["l1"].items() if n.startswith("layer3"))
    ref = gradient_score("gradnorm", model, x, wrt="layer3", method="loop")
    assert torch.allclose(block, ref, rtol=1e-12, atol=0)
    head = gradient_score("gradnorm", model, x, wrt="head", method="loop")
    assert torch.allclose(a["l1"]["linear.weight"], head, rtol=1e-12, atol=0)


def test_chunking_does_not_change_the_result():
    model, x = _model("gap")
    a, b = layer_grad_norms(model, x, chunk_size=1), layer_grad_norms(model, x, chunk_size=64)
    assert _worst(a, b) <= 1e-14


@pytest.mark.parametrize("name", ["mnist", "resnet20", "gap"])
def test_linear_closed_form_equals_autograd(name):
    model, x = _model(name)
    c = linear_closed_form(model, x, loss="pred")
    lin = {f"{n}.{p}" for n, m in model.named_modules() if isinstance(m, nn.Linear) for p in ("weight", "bias")}
    assert set(c["l1"]) == lin
    assert _worst(c, layer_grad_norms(model, x, loss="pred", params=sorted(lin))) <= 1e-10


@pytest.mark.parametrize("name,conv", [("resnet20", "layer3.2.conv2"), ("densenet", "block3.layer.0.conv2"),
                                       ("gap", "c2")])
def test_gap_conv_closed_form_equals_autograd(name, conv):
    model, x = _model(name)
    c = gap_conv_closed_form(model, x, temperature=1.5)
    names = sorted(c["l1"])
    assert names == sorted(f"{conv}.{p}" for p, _ in dict(model.named_modules())[conv].named_parameters())
    assert _worst(c, layer_grad_norms(model, x, temperature=1.5, params=names)) <= 1e-10


def test_gap_conv_closed_form_refuses_a_conv_not_before_pooling():
    model, x = _model("mnist")  # max pooling and a Linear follow its last conv
    with pytest.raises(OODInputError, match="not spatially constant"):
        gap_conv_closed_form(model, x)
    with pytest.raises(OODInputError, match="not an nn.Conv2d"):
        gap_conv_closed_form(model, x, conv="fc1")


def test_bad_input_is_named():
    model, x = _model("gap")
    with pytest.raises(OODInputError, match="eval mode"):
        layer_grad_norms(model.train(), x)
    model.eval()
    with pytest.raises(OODInputError, match="needs labels"):
        layer_grad_norms(model, x, loss="label")
    with pytest.raises(OODInputError, match="labels must lie"):
        layer_grad_norms(model, x, loss="label", labels=[0, 1, 7])
    with pytest.raises(OODInputError, match="loss must be one of"):
        layer_grad_norms(model, x, loss="mse")
    with pytest.raises(OODInputError, match="match no parameter"):
        layer_grad_norms(model, x, params=["nope"])
    with pytest.raises(OODInputError, match="method"):
        layer_grad_norms(model, x, method="backpack")
    with pytest.raises(OODInputError, match="running statistics"):
        bn = nn.BatchNorm2d(3, track_running_stats=False)
        layer_grad_norms(nn.Sequential(bn, nn.Flatten(), nn.Linear(3 * 32 * 32, 2)).double().eval(), x,
                         method="hooks")


def test_shared_linear_is_not_called_an_outer_product():
    class Twice(FeatureModel):
        head_name = "out"

        def __init__(self):
            super().__init__()
            self.a, self.out = nn.Linear(4, 4), nn.Linear(4, 2)

        def features(self, x):
            return self.a(torch.tanh(self.a(x)))

    with pytest.raises(OODInputError, match="ran 2 times"):
        linear_closed_form(Twice().double().eval(), torch.randn(3, 4, dtype=torch.float64))


def test_verify_layers_table():
    from ood_lib.gradients.verify import verify_layers

    model, x = _model("gap")
    t = verify_layers(model.float(), x.float(), loss="pred")  # verify_layers runs in float64 itself
    assert list(t.parameter) == [n for n, _ in model.named_parameters()]
    assert (t[["rel_diff_l1", "rel_diff_l2sq"]] <= 1e-10).all().all()
    closed = t[t.closed_form != ""]
    assert set(closed.parameter) == {"c2.weight", "c2.bias", "fc.weight", "fc.bias"}
    assert (closed.rel_diff_closed <= 1e-10).all()
    assert (t.rel_diff_hooks <= 1e-10).all()
    assert set(t.attrs) == {"seconds_loop", "seconds_batched", "seconds_hooks", "seconds_closed",
                            "closed_forms_not_applied"}


@needs_shared_data("CIFAR10-JPEG", "test")
@needs_shared_data("weights", "resnet20-12fca82f.th")
def test_verify_layers_command_on_the_real_resnet20(capsys):
    from ood_lib.cli import main

    base = ["verify", "--checkpoint", str(RESNET20), "--n", "2", "--quiet"]
    assert main(base + ["--layers", "all"]) == 0
    out = capsys.readouterr().out
    assert "59 parameter tensors" in out and "layer1.0.bn1.weight" in out and "linear.bias" in out
    assert main(base + ["--layers", "linear,layer3.2.conv2", "--tol", "1e-30"]) == 1  # differences are ~1e-15, not 0
    assert "3 parameter tensors" in capsys.readouterr().out


def test_cost_benchmark_has_the_per_layer_rows():
    from ood_lib.run.cost import LAYER_PATHS, score_cost

    model, x = _model("gap")
    t = score_cost(model.float(), x.float(), label="gap", repeats=1, paths=("forward",) + LAYER_PATHS)
    assert list(t.path) == ["forward", "forward_backward", "per_layer_all", "per_layer_hooks"]
    assert (t.ms_per_image > 0).all()
    with pytest.raises(OODInputError, match="unknown cost path"):
        score_cost(model, x, label="gap", paths=("forward", "per_layer_everything"))
