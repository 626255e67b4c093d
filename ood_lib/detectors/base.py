"""The detector protocol and the registry of detectors by name.

A detector, in the style of scikit-learn and pytorch-ood:

* hyper-parameters in ``__init__`` (stored under the same names; :meth:`Detector.get_params`);
  a detector that reads the network takes it as its first argument, ``model``;
* ``fit(train)`` on the ID *training* split only — its features, logits and labels
  (:class:`FitData`) — and returns ``self``; a no-op for post-hoc scores;
* ``score(features, logits)`` → one number per sample, **higher = more in-distribution**; a
  detector that must see the images again (it perturbs them, or backpropagates to them) declares
  ``needs.inputs`` and implements ``score_inputs(loader, device)`` instead;
* ``needs`` (:class:`Needs`) declares what it reads, so a runner hands it exactly that;
* ``not_applicable(train)`` gives the reason it cannot be fitted honestly on ``train`` (``None``
  when it can), so that a runner reports it as not applicable instead of dropping it.

The registry maps each name to a class and the constructor arguments that fix which member of a
family it is (``"l1*msp"`` is ``UV(u="l1", v="msp")``). A new detector is one class decorated
with :func:`register` in a module of this package, plus a test.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np
import torch

from .._checks import OODInputError, check_features, check_logits, unknown_name


@dataclass(frozen=True)
class Needs:
    """What a detector reads: the features h, the logits, a fit on the ID training split, the
    network's weights, the images again."""

    features: bool = False
    logits: bool = False
    fit: bool = False
    model: bool = False
    inputs: bool = False


@dataclass(frozen=True)
class FitData:
    """The ID training split — all that a detector's ``fit`` may see."""

    features: Any  # (N, D)
    logits: Any = None  # (N, C)
    labels: Any = None  # (N,) int, −1 where unknown

    @classmethod
    def of(cls, train: Any, logits: Any = None, labels: Any = None) -> "FitData":
        """``train`` as FitData: FitData itself, anything with ``h``/``logits``/``labels``
        attributes (e.g. :class:`ood_lib.run.features.Features`), or an (N, D) feature array."""
        if isinstance(train, FitData):
            return train
        if hasattr(train, "h") and hasattr(train, "logits"):
            return cls(train.h, train.logits, getattr(train, "labels", None))
        return cls(train, logits, labels)

    def __len__(self) -> int:
        return len(self.features)


class Detector:
    """Base class of every detector (see the module docstring for the protocol)."""

    name: str = ""  # the registry name it was created under
    family: str = "baseline"  # "uv", "baseline", "gradient" (closed form), "autograd"
    needs: Needs = Needs(logits=True)

    def fit(self, train: Any, logits: Any = None, labels: Any = None) -> "Detector":
        """Fit on the ID training split (``FitData``, a ``Features``, or arrays); returns ``self``."""
        return self

    def not_applicable(self, train: FitData | None) -> str | None:
        """Why the detector cannot be fitted honestly on ``train`` (``None``: it can)."""
        if self.needs.fit and train is None:
            return "there is no ID training split to fit on"
        return None

    def score(self, features: Any, logits: Any) -> torch.Tensor:
        """One score per sample, higher = more in-distribution."""
        raise OODInputError(f"{type(self).__name__} scores images: call score_inputs(loader, device)")

    def score_inputs(self, loader: Any, device: torch.device | str = "cpu") -> torch.Tensor:
        """Scores from the images of ``loader`` (batches ``(x, label, ok)``), for ``needs.inputs``."""
        raise OODInputError(f"{type(self).__name__} needs no images: call score(features, logits)")

    def get_params(self) -> dict[str, Any]:
        """The hyper-parameters given to ``__init__`` (the model excluded)."""
        sig = inspect.signature(type(self).__init__)
        return {p: getattr(self, p) for p in sig.parameters if p not in ("self", "model")}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"


class FittedDetector(Detector):
    """A detector with a fit: its fitted attributes end in ``_``."""

    needs = Needs(features=True, fit=True)

    def _check_fitted(self) -> None:
        if not any(k.endswith("_") and not k.startswith("_") for k in vars(self)):
            raise OODInputError(f"{type(self).__name__} is not fitted; call fit() on ID training features first")


def head_of(model: Any) -> torch.nn.Linear:
    """The last linear layer: ``model`` itself if it is one, else its ``head``."""
    head = model if isinstance(model, torch.nn.Linear) else getattr(model, "head", None)
    if not isinstance(head, torch.nn.Linear):
        raise OODInputError("the detector needs a model with a `head` nn.Linear (see ood_lib.models.FeatureModel)")
    return head


# --- the registry --------------------------------------------------------------------------
@dataclass(frozen=True)
class Entry:
    """A registered name: the class, the arguments that fix the member, and what it is the same as."""

    name: str
    cls: type[Detector]
    fixed: Mapping[str, Any] = field(default_factory=dict)
    alias_of: str | None = None  # another registered name this one repeats (same ranking)
    relation: str = ""


DETECTORS: dict[str, Entry] = {}


def add(name: str, cls: type[Detector], *, alias_of: str | None = None, relation: str = "", **fixed: Any) -> None:
    """Register ``name`` as ``cls(**fixed)``; a name may be registered once only."""
    if name in DETECTORS:
        raise OODInputError(f"detector {name!r} is already registered")
    DETECTORS[name] = Entry(name, cls, dict(fixed), alias_of, relation)


def register(name: str, **fixed: Any) -> Callable[[type[Detector]], type[Detector]]:
    """Class decorator: ``@register("knn")`` makes ``create("knn")`` build that class."""

    def deco(cls: type[Detector]) -> type[Detector]:
        add(name, cls, **fixed)
        return cls

    return deco


def create(name: str, model: Any = None, **params: Any) -> Detector:
    """The detector registered as ``name``, with hyper-parameters ``params`` (others at their defaults).

    ``model`` is handed to detectors that declare ``needs.model``; an unknown name or
    hyper-parameter is an error that lists the valid ones.
    """
    if name not in DETECTORS:
        raise unknown_name("method", name, DETECTORS)
    e = DETECTORS[name]
    takes = [p for p in inspect.signature(e.cls.__init__).parameters if p not in ("self", "model", *e.fixed)]
    for p in params:
        if p not in takes:
            raise OODInputError(
                f"detector {name!r} has no hyper-parameter {p!r}; it takes: {', '.join(takes) or 'none'}")
    kwargs = {**e.fixed, **params}
    if e.cls.needs.model:
        if model is None:
            raise OODInputError(f"detector {name!r} reads the network: pass model=")
        kwargs["model"] = model
    det = e.cls(**kwargs)
    det.name = name
    return det


def canonical(name: str) -> str:
    """The registered detector that ``name`` repeats (same ranking of any inputs); itself if none."""
    if name not in DETECTORS:
        raise unknown_name("method", name, DETECTORS)
    while DETECTORS[name].alias_of is not None:
        name = DETECTORS[name].alias_of
    return name


def as_numpy(s: Any) -> np.ndarray:
    """A score vector as a numpy array (dtype kept)."""
    return s.detach().cpu().numpy() if isinstance(s, torch.Tensor) else np.asarray(s)


# --- shared checks of the feature-space detectors (distance.py, shaping.py) ------------------
def _head64(model: Any) -> tuple[torch.Tensor, torch.Tensor]:
    head = head_of(model)
    w = head.weight.detach().cpu().double()
    b = head.bias.detach().cpu().double() if head.bias is not None else torch.zeros(len(w), dtype=torch.float64)
    return w, b


def _h(features: Any, w: torch.Tensor) -> torch.Tensor:
    """(N, D) float64 features; D must be the head's (or the bank's) width, ``w.shape[1]``."""
    h = check_features(features).double()
    if h.shape[1] != w.shape[1]:
        raise OODInputError(f"features: have D = {h.shape[1]} columns but the detector takes D = {w.shape[1]}")
    return h


def _f(logits: Any, n: int, c: int | None) -> torch.Tensor:
    f = check_logits(logits).double()
    if f.shape[0] != n:
        raise OODInputError(f"logits: have {f.shape[0]} rows but the features have {n}; they must be the same samples")
    if c is not None and f.shape[1] != c:
        raise OODInputError(f"logits: have C = {f.shape[1]} columns but the head has C = {c} classes")
    return f


def _percent(p: float, name: str) -> float:
    p = float(p)
    if not 0.0 <= p < 100.0:
        raise OODInputError(f"{name} must be in [0, 100), got {p}")
    return p


def _n_kept(d: int, percentile: float) -> int:
    """Activations kept above the percentile, as the ASH / SCALE code counts them (at least one)."""
    return max(1, d - int(np.round(d * percentile / 100.0)))


def _top_mask(h: torch.Tensor, k: int) -> torch.Tensor:
    return torch.zeros_like(h, dtype=torch.bool).scatter_(1, h.topk(k, dim=1).indices, True)
