"""Reading weights files: a strict load whose error says what did not match; fingerprints of a
model's weights and of its code."""

from __future__ import annotations

import hashlib
import inspect
import sys
from pathlib import Path

import torch
from torch import nn

from .._checks import OODInputError


def _strip_prefix(state: dict, prefix: str = "module.") -> dict:
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix):]: v for k, v in state.items()}
    return state


# the keys a training script wraps its state dict in ({"epoch": 3, "state_dict": {...}}), in the
# order they are tried, and the prefixes a wrapper module leaves on every key
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net", "state")
PREFIXES = ("module.", "model.")


def _is_state(obj) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def unwrap_state(ck) -> dict | None:
    """The state dict inside a loaded checkpoint: itself, or the first of :data:`WRAPPER_KEYS` that
    holds one; ``module.`` removed (DataParallel), at any depth (``module.module.``)."""
    state = ck if _is_state(ck) else None
    if state is None and isinstance(ck, dict):
        state = next((ck[k] for k in WRAPPER_KEYS if _is_state(ck.get(k))), None)
    if state is None:
        return None
    while state and all(k.startswith("module.") for k in state):
        state = _strip_prefix(state)
    return state


def strip_prefixes(state: dict) -> dict:
    """``state`` without the :data:`PREFIXES` every key carries (``model.module.`` → none)."""
    while any(state and all(k.startswith(p) for k in state) for p in PREFIXES):
        state = next(_strip_prefix(state, p) for p in PREFIXES if all(k.startswith(p) for k in state))
    return state


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict in a weights file: a bare one or wrapped in one of :data:`WRAPPER_KEYS`
    (``{"state_dict": ...}``, ``{"model": ...}``, …), ``module.`` removed.

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
    state = unwrap_state(ck)
    if state is None:
        raise OODInputError(f"{path}: expected a state dict of tensors, or one under "
                            f"{' / '.join(repr(k) for k in WRAPPER_KEYS)}")
    return state


def load_checkpoint(model: nn.Module, path: str | Path) -> nn.Module:
    """Load weights into ``model`` with ``strict=True``; the error says what did not match.

    Accepts a bare state dict or ``{"state_dict": ...}``, with or without the ``module.`` prefix
    that DataParallel adds. A model with ``adapt_state_dict`` (every
    :class:`~ood_lib.models.FeatureModel`) first renames the keys of the file of the model it wraps.
    """
    return load_state_strict(model, read_state_dict(path), path)


def _listed(keys: list[str], limit: int = 10) -> str:
    """The first ``limit`` of ``keys``, then "and N more"."""
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def state_problems(model: nn.Module, state: dict[str, torch.Tensor]) -> list[str]:
    """What keeps ``state`` from loading into ``model`` exactly: missing and unexpected keys, shape
    mismatches, and integer or boolean tensors where the model holds floating-point ones (they would
    load as truncated weights). Buffers that are integers in the model itself (BatchNorm's
    ``num_batches_tracked``) are compared with the model's own dtype, so they pass; a missing
    ``num_batches_tracked`` is not a problem (BatchNorm sets it when it loads)."""
    own = model.state_dict()
    # BatchNorm fills in a missing step counter itself (files written before PyTorch 0.4.1 have none)
    missing = [k for k in own if k not in state and k.rsplit(".", 1)[-1] != "num_batches_tracked"]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} (file {tuple(state[k].shape)}, model {tuple(own[k].shape)})"
              for k in own if k in state and state[k].shape != own[k].shape]
    dtypes = [f"{k} (file {state[k].dtype}, model {own[k].dtype})" for k in own
              if k in state and own[k].is_floating_point() and not state[k].is_floating_point()]
    kinds = (("missing key", "missing keys", missing), ("unexpected key", "unexpected keys", unexpected),
             ("shape mismatch", "shape mismatches", shapes),
             ("integer tensor for a float parameter", "integer tensors for float parameters", dtypes))
    return [f"{len(items)} {one if len(items) == 1 else many}: {_listed(items)}" for one, many, items in kinds if items]


def load_state_strict(model: nn.Module, state: dict[str, torch.Tensor], source: str | Path) -> nn.Module:
    """:func:`load_checkpoint` for a state dict already read from ``source`` (named in errors).

    Nothing is loaded unless every key, shape and kind of number matches; the error names the
    missing and unexpected keys and the shape and dtype mismatches (the first ten of each). A
    ``model.`` or ``module.`` prefix on every key is dropped where the model's own keys lack it."""
    adapt = getattr(model, "adapt_state_dict", None)
    adapt = adapt if callable(adapt) else (lambda s: s)
    problems = state_problems(model, adapt(state))
    if problems and strip_prefixes(state) is not state:  # a wrapper's ``model.`` prefix on every key
        bare = adapt(strip_prefixes(state))
        if not state_problems(model, bare):
            state, problems = strip_prefixes(state), []
    state = adapt(state)
    if problems:
        raise OODInputError(f"{source}: does not match the {type(model).__name__} architecture — "
                            + "; ".join(problems))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:  # anything torch refuses that the checks above do not cover
        raise OODInputError(f"{source}: does not match the {type(model).__name__} architecture ({exc})") from exc
    return model


def weights_fingerprint(model: nn.Module) -> str:
    """A SHA-256 of every parameter and buffer (names, shapes, dtypes, values)."""
    d = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        d.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        d.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return d.hexdigest()


def _source(obj: object) -> str:
    """The source of a class or function; where there is none (defined in a REPL, or compiled), its
    qualified name and a hash of its module's file."""
    try:
        return inspect.getsource(obj)
    except (OSError, TypeError):
        file = getattr(sys.modules.get(getattr(obj, "__module__", ""), None), "__file__", None)
        digest = hashlib.sha256(Path(file).read_bytes()).hexdigest() if file and Path(file).is_file() else "no file"
        return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', '?')} {digest}"


def _class_code(cls: type) -> str:
    """The code of one class: its source, plus that of any method set on it after its definition
    (a patched ``features`` changes the features without changing the class's source)."""
    if cls.__module__.split(".")[0] == "torch":  # torch's layers: their code is torch's version
        return f"{cls.__module__}.{cls.__qualname__} torch {torch.__version__}"
    parts = [_source(cls)]
    for name, attr in sorted(vars(cls).items()):
        fn = getattr(attr, "__func__", attr)
        if inspect.isfunction(fn) and fn.__qualname__ != f"{cls.__qualname__}.{name}":
            parts.append(f"{name} = {_source(fn)}")
    return "\n".join(parts)


def model_code_fingerprint(model: torch.nn.Module) -> str:
    """A SHA-256 of the code that computes the model's features: every class (and base class) of
    the model and its submodules, so that a changed ``forward`` or ``features`` gives another key."""
    classes = {c for m in model.modules() for c in type(m).__mro__ if c is not object}
    d = hashlib.sha256()
    for cls in sorted(classes, key=lambda c: f"{c.__module__}.{c.__qualname__}"):
        d.update(f"{cls.__module__}.{cls.__qualname__}\n{_class_code(cls)}\n".encode())
    return d.hexdigest()
