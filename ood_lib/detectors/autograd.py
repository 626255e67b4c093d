"""Gradient scores by autograd: the head's per-sample gradients, from features already computed.

The last-layer gradient depends on the image only through h, so differentiating the head on
cached h gives the same number as backpropagating from the image (:func:`ood_lib.gradients.
head_gradient_score`). These detectors exist to show, in the results table, that the closed
forms of :mod:`ood_lib.detectors.posthoc` are the gradient scores: ``<name>_autograd`` is
registered for every score of :data:`ood_lib.scores.registry.RUNNER_AUTOGRAD`.
"""

from __future__ import annotations

from typing import Any

import torch

from ..scores.registry import GRADIENT_SCORES, RUNNER_AUTOGRAD
from ..gradients.autograd import head_gradient_score
from ..scores.closed_forms import canonical as score_canonical
from .base import Detector, Needs, add, head_of

# per-sample head gradients are (C, D) each: keep a chunk of them near this many bytes
CHUNK_BYTES = 5e8


class AutogradGradient(Detector):
    """Gradient score ``gradient`` w.r.t. the head (W, and b with ``bias``), by autograd in float64,
    read as published (larger gradient = in-distribution)."""

    family = "autograd"
    needs = Needs(features=True, model=True)

    def __init__(self, model: Any, gradient: str, temperature: float = 1.0, bias: bool = False) -> None:
        head = head_of(model)
        self.gradient, self.temperature, self.bias = gradient, temperature, bias
        self.head_ = torch.nn.Linear(head.in_features, head.out_features, bias=head.bias is not None).double().eval()
        self.head_.load_state_dict({k: v.detach().cpu().double() for k, v in head.state_dict().items()})

    def score(self, features: Any, logits: Any = None) -> torch.Tensor:
        chunk = max(1, int(CHUNK_BYTES // (8 * self.head_.weight.numel())))
        h = torch.as_tensor(features).double()
        s = head_gradient_score(self.gradient, self.head_, h, temperature=self.temperature, bias=self.bias,
                                batch_size=chunk)
        return s if GRADIENT_SCORES[self.gradient].orientation > 0 else -s


def autograd_name(gradient: str) -> str:
    """The registered name of gradient score ``gradient`` by autograd."""
    return f"{gradient}_autograd"


for _g in RUNNER_AUTOGRAD:
    _canon = score_canonical(_g)
    add(autograd_name(_g), AutogradGradient, gradient=_g, alias_of=_g,
        relation=f"{_g} computed by autograd" + (f" (= {_canon})" if _canon != _g else ""))
