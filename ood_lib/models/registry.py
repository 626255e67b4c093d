"""Models by name: the registered architectures, ``torchvision:NAME`` and ``timm:NAME``."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from .._checks import OODInputError, unknown_name
from .base import FeatureModel
from .checkpoint import load_state_strict, read_state_dict
from .cifar import CifarResNet, DenseNetBC, cifar_resnet_from_checkpoint, densenet_from_checkpoint
from .imagenet import (
    EfficientNetLite,
    EfficientNetLite0,
    TimmBiT,
    TimmModel,
    TorchvisionModel,
    TorchvisionResNet,
    efficientnet_lite0_weights,
    efficientnet_lite_weights,
)
from .small import MnistCNN

MODELS: dict[str, Callable[..., FeatureModel]] = {
    "resnet20": lambda num_classes=10: CifarResNet(20, num_classes),
    "densenet_bc100": lambda num_classes=10: DenseNetBC(100, 12, 0.5, num_classes),
    "mnist_cnn": lambda num_classes=10: MnistCNN(num_classes),
    "resnet50": lambda num_classes=1000: TorchvisionResNet("resnet50", num_classes),
    "resnet18": lambda num_classes=1000: TorchvisionResNet("resnet18", num_classes),
    "bit_r101x1": lambda num_classes=1000: TimmBiT(num_classes=num_classes),
    "efficientnet_lite0": lambda num_classes=1000: EfficientNetLite0(num_classes),
    "efficientnet_lite1": lambda num_classes=1000: EfficientNetLite(1, num_classes),
    "efficientnet_lite2": lambda num_classes=1000: EfficientNetLite(2, num_classes),
    # ViT-Ti/16: h = the class token after the final LayerNorm (192-d), head ``head`` (timm's names)
    "vit_tiny_patch16_224": lambda num_classes=1000: TimmModel("vit_tiny_patch16_224", num_classes),
}
#: Architectures whose size is read off the checkpoint (depth, growth, classes).
FROM_CHECKPOINT: dict[str, Callable[[str | Path], FeatureModel]] = {
    "cifar_resnet": cifar_resnet_from_checkpoint,
    "densenet_bc": densenet_from_checkpoint,
}
#: Weights that come with an installed package, used when no checkpoint is given.
DEFAULT_WEIGHTS: dict[str, Callable[[], Path]] = {
    "efficientnet_lite0": efficientnet_lite0_weights,
    "efficientnet_lite1": lambda: efficientnet_lite_weights(1),
    "efficientnet_lite2": lambda: efficientnet_lite_weights(2),
}
_PREFIXES = ("torchvision:", "timm:")


def _valid_names() -> list[str]:
    return [*MODELS, *FROM_CHECKPOINT, "torchvision:NAME", "timm:NAME"]


def build_model(name: str, num_classes: int | None = None) -> FeatureModel:
    """An untrained model: a name from :data:`MODELS`, ``torchvision:NAME`` or ``timm:NAME``."""
    if name.startswith("torchvision:"):
        return TorchvisionModel(name.split(":", 1)[1], 1000 if num_classes is None else num_classes)
    if name.startswith("timm:"):
        return TimmModel(name.split(":", 1)[1], 1000 if num_classes is None else num_classes)
    if name in FROM_CHECKPOINT:
        raise OODInputError(f"model {name!r} reads its size from a checkpoint: use resolve_model({name!r}, path)")
    if name not in MODELS:
        raise unknown_name("model", name, _valid_names())
    return MODELS[name]() if num_classes is None else MODELS[name](num_classes)


def _head_key(model: FeatureModel) -> str:
    return next(n for n, p in model.named_parameters() if p is model.head.weight)


def resolve_model(spec: str, checkpoint: str | Path | None, num_classes: int | None = None) -> FeatureModel:
    """The model a command line names, with its weights, in eval mode.

    ``spec``: a name in :data:`MODELS`, one in :data:`FROM_CHECKPOINT` (``cifar_resnet``: any
    6n+2 depth; ``densenet_bc``), or ``torchvision:NAME`` / ``timm:NAME``. ``checkpoint``: a
    weights file (loaded strictly), ``"random"`` for random weights, or None for the packaged
    weights of :data:`DEFAULT_WEIGHTS`. The class count is read off the checkpoint's head unless
    ``num_classes`` is given, which must then agree with it.
    """
    if not isinstance(spec, str) or not (spec in MODELS or spec in FROM_CHECKPOINT or spec.startswith(_PREFIXES)):
        raise unknown_name("model", str(spec), _valid_names())
    random = isinstance(checkpoint, str) and checkpoint == "random"
    if spec in FROM_CHECKPOINT:
        if checkpoint is None or random:
            raise OODInputError(f"model {spec!r} reads its depth from a checkpoint: pass one")
        model = FROM_CHECKPOINT[spec](checkpoint)
    elif random:
        model = build_model(spec, num_classes)
    else:
        if checkpoint is None:
            if spec not in DEFAULT_WEIGHTS:
                raise OODInputError(
                    f"model {spec!r} has no packaged weights: pass a checkpoint file, or 'random' for random weights"
                )
            checkpoint = DEFAULT_WEIGHTS[spec]()
        model = build_model(spec, num_classes)
        state = read_state_dict(checkpoint)
        if num_classes is None:
            w = model.adapt_state_dict(state).get(_head_key(model))
            if isinstance(w, torch.Tensor) and w.ndim == 2 and w.shape[0] != model.head.out_features:
                model = build_model(spec, int(w.shape[0]))
        load_state_strict(model, state, checkpoint)
    if num_classes is not None and model.head.out_features != num_classes:
        raise OODInputError(
            f"{checkpoint}: its head has {model.head.out_features} classes, but num_classes={num_classes}"
        )
    return model.eval()
