"""Reading weights files: a strict load whose error says what did not match, and a fingerprint."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from torch import nn

from .._checks import OODInputError


def _strip_prefix(state: dict, prefix: str = "module.") -> dict:
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix):]: v for k, v in state.items()}
    return state


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict in a weights file: a bare one or ``{"state_dict": ...}`` (``module.`` removed).

    Read with ``weights_only=True``: a file that needs arbitrary code to unpickle is refused.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"checkpoint not found: {path.resolve()} — pass the path of a saved state dict "
            "(for the CIFAR-10 ResNet-20: resnet20-12fca82f.th from akamaster/pytorch_resnet_cifar10)"
        )
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise OODInputError(f"{path}: not a readable PyTorch checkpoint ({exc})") from exc
    state = ck.get("state_dict", ck) if isinstance(ck, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise OODInputError(f"{path}: expected a state dict of tensors or {{'state_dict': ...}}")
    return _strip_prefix(state)


def load_checkpoint(model: nn.Module, path: str | Path) -> nn.Module:
    """Load weights into ``model`` with ``strict=True``; the error says what did not match.

    Accepts a bare state dict or ``{"state_dict": ...}``, with or without the ``module.`` prefix
    that DataParallel adds. A model with ``adapt_state_dict`` (every
    :class:`~ood_lib.models.FeatureModel`) first renames the keys of the file of the model it wraps.
    """
    return load_state_strict(model, read_state_dict(path), path)


def load_state_strict(model: nn.Module, state: dict[str, torch.Tensor], source: str | Path) -> nn.Module:
    """:func:`load_checkpoint` for a state dict already read from ``source`` (named in errors)."""
    adapt = getattr(model, "adapt_state_dict", None)
    if callable(adapt):
        state = adapt(state)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise OODInputError(
            f"{source}: does not match the {type(model).__name__} architecture ({first}; "
            f"{str(exc).count(',') + 1} key problems in all)"
        ) from exc
    return model


def weights_fingerprint(model: nn.Module) -> str:
    """A SHA-256 of every parameter and buffer (names, shapes, dtypes, values)."""
    d = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        d.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        d.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return d.hexdigest()
