"""The architecture read off a checkpoint: where a state dict's names and shapes fix it, no
``--model`` is needed (appendix *Run it on your own model and data*).

A CIFAR ResNet-6n+2 of any depth, a DenseNet-BC of any depth, growth and compression, and every
registered architecture (:data:`ood_lib.models.MODELS`) are recognised, with the class count read
off the head. Where no architecture matches every key and shape, the error names the closest
ones (the share of the file's keys each holds) and the flag to pass.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from .._checks import OODInputError
from .base import FeatureModel
from .checkpoint import load_state_strict, read_state_dict, state_problems, strip_prefixes
from .cifar import CifarResNet, DenseNetBC, cifar_resnet_depth, densenet_config
from .registry import MODELS, build_model

__all__ = ["architecture_of", "model_from_checkpoint"]

# the families whose size the checkpoint holds, and what to build when it does not hold one
_FAMILIES: dict[str, tuple[Callable[[dict], FeatureModel], Callable[[], FeatureModel]]] = {
    "cifar_resnet": (lambda s: CifarResNet(cifar_resnet_depth(s), int(s["linear.weight"].shape[0])),
                     lambda: CifarResNet(20)),
    "densenet_bc": (lambda s: DenseNetBC(**densenet_config(s)), lambda: DenseNetBC(100)),
}
_COVERED = ("resnet20", "densenet_bc100")  # registered members of the families above
MODEL_FLAG = "--model NAME (cifar_resnet, densenet_bc, a registered name, torchvision:NAME or timm:NAME)"


def _head_rows(model: FeatureModel, state: dict) -> int | None:
    key = next((n for n, p in model.named_parameters() if p is model.head.weight), None)
    w = model.adapt_state_dict(state).get(key)
    return int(w.shape[0]) if isinstance(w, torch.Tensor) and w.ndim == 2 else None


def _candidates(state: dict):
    """(name, model) for every architecture sized to ``state`` where it can be, else at its default size."""
    for name, (sized, default) in _FAMILIES.items():
        try:
            yield name, sized(state)
        except (OODInputError, KeyError, ZeroDivisionError):
            yield name, default()
    for name in MODELS:
        if name in _COVERED:
            continue
        try:
            model = build_model(name)
        except OODInputError:  # a library that is not installed
            continue
        rows = _head_rows(model, state)
        yield name, (build_model(name, rows) if rows and rows != model.head.out_features else model)


def _overlap(model: FeatureModel, state: dict) -> float:
    own = set(model.state_dict())
    return len(own & set(model.adapt_state_dict(state))) / max(len(own | set(state)), 1)


def architecture_of(state: dict[str, torch.Tensor], source: str | Path = "checkpoint") -> tuple[str, FeatureModel]:
    """The architecture ``state`` holds exactly (every key and shape), as (name, model with random
    weights of that size). Raises :class:`OODInputError` naming the closest architectures and
    :data:`MODEL_FLAG` where none matches."""
    state = strip_prefixes(state)
    seen = []
    for name, model in _candidates(state):
        if not state_problems(model, model.adapt_state_dict(state)):
            return name, model
        seen.append((_overlap(model, state), name))
    near = ", ".join(f"{n} ({share:.0%} of the keys)" for share, n in sorted(seen, reverse=True)[:3])
    raise OODInputError(f"{source}: the architecture cannot be read off this checkpoint ({len(state)} tensors); "
                        f"closest known: {near}; pass {MODEL_FLAG}")


def model_from_checkpoint(path: str | Path, num_classes: int | None = None, prefer: str | None = None) -> FeatureModel:
    """The model a weights file holds, loaded strictly, in eval mode: ``prefer`` (an architecture
    name) first where its keys and shapes match, else the one :func:`architecture_of` reads off it.
    With ``num_classes`` the head must have that many outputs."""
    state = read_state_dict(path)
    model = None
    if prefer is not None:
        try:
            own = build_model(prefer, num_classes)
        except OODInputError:
            own = None
        if own is not None and not state_problems(own, own.adapt_state_dict(strip_prefixes(state))):
            model = own
    if model is None:
        _, model = architecture_of(state, path)
    if num_classes is not None and model.head.out_features != num_classes:
        raise OODInputError(f"{path}: its head has {model.head.out_features} outputs, but the ID data has "
                            f"{num_classes} classes")
    return load_state_strict(model, state, path).eval()
