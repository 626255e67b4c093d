"""Where things are in a classifier: its head, the last block before it, its last BatchNorm.

Every per-layer reading of the study (GradNorm below the head, GAIA's attribution maps, the
identity checks) asks one of these questions of a model in the :class:`~ood_lib.models.FeatureModel`
interface (``features(x) -> h``, a linear ``head``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .._checks import OODInputError, as_float_tensor

__all__ = ["check_feature_model", "default_deeper", "has_attention", "last_bn_name"]


def check_feature_model(model: nn.Module) -> nn.Linear:
    """The model's ``head`` linear layer; an error unless it also exposes ``features(x)``."""
    head = getattr(model, "head", None)
    if not isinstance(head, nn.Linear) or not callable(getattr(model, "features", None)):
        raise OODInputError(
            "the model must expose features(x) and a `head` nn.Linear (see ood_lib.models.FeatureModel)"
        )
    return head


def default_deeper(model: nn.Module) -> str:
    """The last top-level submodule with parameters before the head (e.g. ``layer3``)."""
    head = check_feature_model(model)
    names = [
        n for n, m in model.named_children()
        if m is not head and any(True for _ in m.parameters())
    ]
    if not names:
        raise OODInputError("the model has no parameters outside its head")
    return names[-1]


def has_attention(model: nn.Module) -> bool:
    """Whether the model holds an attention layer (``nn.MultiheadAttention``, or a module whose class
    name ends in ``Attention``, as timm's ViT blocks): per-sample gradients through it cannot be
    batched with ``torch.func.vmap`` (no batching rule for ``scaled_dot_product_attention``)."""
    return any(isinstance(m, nn.MultiheadAttention) or type(m).__name__.endswith("Attention")
               for m in model.modules())


def last_bn_name(model: nn.Module, x: Any) -> str:
    """The last BatchNorm2d called in a forward pass of ``x[:1]`` (ResNet-20: ``layer3.2.bn2``)."""
    order: list[str] = []
    hooks = [m.register_forward_hook(lambda *_a, n=n: order.append(n))
             for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)]
    try:
        with torch.no_grad():
            model(as_float_tensor(x, "x")[:1])
    finally:
        for hd in hooks:
            hd.remove()
    if not order:
        raise OODInputError(f"{type(model).__name__} has no BatchNorm2d layer")
    return order[-1]
