"""Where the factorisation stops: the rank-one residual of per-sample weight gradients, against
hand-built cases (one outer product, a sum over positions) and an independent batch-1 loop."""

import numpy as np
import pytest
import torch
from torch import nn

from ood_lib import OODInputError
from ood_lib.gradients.rank import rank_one_residual, residual_of
from ood_lib.book.layer_plots import NO_CLOSED_FORM, rank_one_figure


def conv_net(size: int, seed: int = 0) -> nn.Module:
    """conv 3×3 (3 → 5 channels) → ReLU → global average pooling → linear head (4 classes)."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 5, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(5, 4)).double().eval()


def images(n: int, size: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_residual_of_hand_built_matrices():
    u, v = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64), torch.tensor([3.0, 1.0], dtype=torch.float64)
    g = torch.stack([torch.outer(u, v), torch.diag(torch.tensor([3.0, 4.0, 0.0], dtype=torch.float64))[:, :2],
                     torch.zeros(3, 2, dtype=torch.float64)])
    r = residual_of(g)
    assert float(r[0]) <= 1e-15  # one outer product
    assert float(r[1]) == pytest.approx(3 / 5, abs=1e-15)  # σ = (4, 3): (9 / 25)^½
    assert float(r[2]) == 0.0  # the zero matrix
    wide = torch.randn(4, 3, 40, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert torch.allclose(residual_of(wide), residual_of(wide.transpose(1, 2)), rtol=0, atol=1e-14)


def test_linear_layers_are_one_outer_product_and_a_conv_is_not(tiny_model, tiny_images):
    net = tiny_model(relu_features=True)
    r = rank_one_residual(net, tiny_images(9))
    assert list(r) == ["conv.weight", "body.weight", "head_layer.weight"]  # no biases: vectors
    assert all(v.shape == (9,) for v in r.values())
    assert float(r["body.weight"].max()) <= 1e-12 and float(r["head_layer.weight"].max()) <= 1e-12
    assert float(r["conv.weight"].min()) > 0.05  # a 3×3 convolution over 16 positions


def test_a_conv_with_one_output_position_is_one_outer_product():
    # a 3×3 input and a 3×3 kernel without padding: one patch, so ∇_W ℓ = δ Aᵀ
    assert float(rank_one_residual(conv_net(3), images(6, 3))["0.weight"].max()) <= 1e-12
    assert float(rank_one_residual(conv_net(3), images(6, 8))["0.weight"].min()) > 0.05


def test_matches_the_batch1_loop():
    net, x = conv_net(8, seed=2), images(5, 8, seed=3)
    got = rank_one_residual(net, x, chunk_size=2)
    for i in range(len(x)):
        net.zero_grad()
        logp = torch.log_softmax(net(x[i : i + 1])[0], 0)
        (-logp.mean()).backward()  # KL(u ‖ p) + const
        for name, p in net.named_parameters():
            if p.ndim >= 2:
                s = np.linalg.svd(p.grad.reshape(p.shape[0], -1).numpy(), compute_uv=False)
                assert float(got[name][i]) == pytest.approx(float(np.sqrt((s[1:] ** 2).sum() / (s**2).sum())),
                                                            abs=1e-12)
    assert torch.equal(rank_one_residual(net, x, params=["0"])["0.weight"], got["0.weight"])


def test_bad_input_is_named(tiny_model, tiny_images):
    net, x = tiny_model(), tiny_images(3)
    with pytest.raises(OODInputError, match="select no weight tensor"):
        rank_one_residual(net, x, params=["head_layer.bias"])
    with pytest.raises(OODInputError, match="chunk_size"):
        rank_one_residual(net, x, chunk_size=0)
    with pytest.raises(OODInputError, match="eval mode"):
        rank_one_residual(net.train(), x)
    with pytest.raises(OODInputError, match="loss must be one of"):
        rank_one_residual(net.eval(), x, loss="mse")
    with pytest.raises(OODInputError, match="batch of matrices"):
        residual_of(torch.zeros(3, 4))


def test_rank_one_figure():
    fig = rank_one_figure({"conv.weight": [0.5, 0.6], "fc.weight": [1e-16, 2e-16]}, {"fc.weight": "one product"})
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["conv", "fc"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["one product", NO_CLOSED_FORM]
    assert fig.dpi >= 150
    with pytest.raises(OODInputError, match="in \\[0, 1\\]"):
        rank_one_figure({"conv.weight": [1.5]}, {})
    with pytest.raises(OODInputError, match="no layers"):
        rank_one_figure({}, {})
