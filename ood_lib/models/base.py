"""The one interface every classifier is used through, and a wrapper that gives it to any module.

A :class:`FeatureModel` splits a classifier into ``features(x) -> h`` and a linear ``head``, with
``forward = head ∘ features``. Every score in the study needs exactly this split (chapter
*Gradient scores and their closed forms*): h is the penultimate embedding and the head is the last
linear layer f = W h + b.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

from .._checks import OODInputError


class FeatureModel(nn.Module):
    """Base class: subclasses define ``features`` and the attribute named by ``head_name``."""

    head_name = "head"

    @property
    def head(self) -> nn.Linear:
        return getattr(self, self.head_name)

    def features(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(h, logits) from one pass."""
        h = self.features(x)
        return h, self.head(h)

    def adapt_state_dict(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Rename a foreign state dict's keys to this model's own (identity here).

        :func:`~ood_lib.models.load_checkpoint` calls it before its strict load, so that a wrapper
        can read the file of the model it wraps (e.g. a timm file into ``net.*`` keys).
        """
        return state


def _linear_names(module: nn.Module) -> list[str]:
    return [n for n, m in module.named_modules() if isinstance(m, nn.Linear)]


class WrappedModel(FeatureModel):
    """Any ``nn.Module`` whose output is the output of one ``nn.Linear``: h = that layer's input.

    ``forward(x)`` is the module's own forward; ``features(x)`` runs the same forward with a hook
    on the head that keeps its input; ``forward_features(x)`` keeps both the head's input and its
    output from that single pass, so ``logits == head(h)`` holds exactly.
    """

    def __init__(self, module: nn.Module, head: str | None = None, example: torch.Tensor | None = None) -> None:
        super().__init__()
        if not isinstance(module, nn.Module):
            raise OODInputError(f"wrap_model needs an nn.Module, got {type(module).__name__}")
        self.net = module
        linears = _linear_names(module)
        if head is not None:
            try:
                layer = module.get_submodule(head)
            except AttributeError as exc:
                raise OODInputError(
                    f"head={head!r}: no such submodule; nn.Linear layers: {', '.join(linears) or 'none'}"
                ) from exc
            if not isinstance(layer, nn.Linear):
                raise OODInputError(
                    f"head={head!r} is a {type(layer).__name__}, not an nn.Linear: the scores need a "
                    "linear head f = W h + b (a 1×1 conv head can be rewritten as nn.Linear on pooled features)"
                )
            self._head_path = head
        elif linears:
            self._head_path = linears[-1]  # provisional: confirmed (or replaced) by tracing
        else:
            last = [n for n, m in module.named_modules() if not list(m.children())]
            kind = type(module.get_submodule(last[-1])).__name__ if last and last[-1] else type(module).__name__
            raise OODInputError(
                f"{type(module).__name__} has no nn.Linear layer (its last layer is a {kind}): the scores "
                "need a linear head f = W h + b"
            )
        self._explicit = head is not None
        self._verified = False
        if example is not None:
            with torch.no_grad():
                self._trace(example)

    @property
    def head(self) -> nn.Linear:
        return self.net.get_submodule(self._head_path)

    @property
    def head_path(self) -> str:
        """The head's name inside the wrapped module (e.g. ``"classifier.1"``)."""
        return self._head_path

    def adapt_state_dict(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A state dict of the wrapped module itself gets the ``net.`` prefix of this wrapper."""
        if any(k.startswith("net.") for k in state):
            return state
        return {f"net.{k}": v for k, v in state.items()}

    def _trace(self, x: torch.Tensor) -> torch.Tensor:
        """One forward with a hook on every Linear: which one's output is the model's output?"""
        calls: list[tuple[str, torch.Tensor]] = []
        handles = [
            m.register_forward_hook(lambda _m, _i, o, name=n: calls.append((name, o)))
            for n, m in self.net.named_modules() if isinstance(m, nn.Linear)
        ]
        try:
            out = self.net(x)
        finally:
            for hd in handles:
                hd.remove()
        if not isinstance(out, torch.Tensor):
            raise OODInputError(f"{type(self.net).__name__} returns a {type(out).__name__}, not a logit tensor")
        producer = next((n for n, o in reversed(calls) if o is out), None)
        if producer is None:
            ran = calls[-1][0] if calls else "none"
            raise OODInputError(
                f"the output of {type(self.net).__name__} is not the output of an nn.Linear (last Linear "
                f"called: {ran}); the scores need logits = W h + b from a linear head"
            )
        if producer != self._head_path:
            if self._explicit:
                raise OODInputError(
                    f"head={self._head_path!r} does not produce the model's output; {producer!r} does"
                )
            self._head_path = producer
        if out.ndim != 2:
            raise OODInputError(f"the head's output has shape {tuple(out.shape)}; expected (N, classes)")
        self._verified = True
        return out

    @contextmanager
    def _keep_head_io(self) -> Iterator[list]:
        seen: list = []
        hd = self.head.register_forward_hook(lambda _m, i, o: seen.append((i[0], o)))
        try:
            yield seen
        finally:
            hd.remove()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x) if self._verified else self._trace(x)

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(h, logits) from one pass: the head's input and output, kept by a hook."""
        if not self._verified:
            with torch.no_grad():
                self._trace(x[:1])
        with self._keep_head_io() as seen:
            out = self.net(x)
        h, logits = seen[-1]
        if logits is not out:
            raise OODInputError("the model's output is no longer its head's output (was it changed after wrapping?)")
        return h, logits

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)[0]


def wrap_model(module: nn.Module, head: str | None = None, example: torch.Tensor | None = None) -> WrappedModel:
    """Your own classifier as a :class:`FeatureModel`; h = the input of its last linear layer.

    The head is the ``nn.Linear`` whose output *is* the module's output, found with forward hooks
    on one call (``example``, else the first call): the last Linear registered is only a first
    guess, since a module may register an auxiliary head after its real one or call layers in
    another order than it declares them. ``head="name"`` picks the layer by its module name
    instead. Raises :class:`OODInputError` when the head is not an ``nn.Linear`` (e.g. a 1×1 conv)
    or when no Linear's output is the module's output.
    """
    return WrappedModel(module, head, example)
