"""Post-hoc detectors: pure functions of (h, logits), no fit, no backward pass.

Every U·V grid member, MSP, MaxLogit and Energy, and the closed form of every gradient score
(both readings for the mixed-orientation ones), as computed by :mod:`ood_lib.scores`. Every name of
:data:`ood_lib.scores.SCORES` is registered here, with its aliases declared there. Then GEN, a
generalised entropy of p.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from .._checks import OODInputError, check_logits, unknown_name
from ..scores.registry import GRADIENT_FORMS, flipped_name
from ..scores.closed_forms import ALIASES, SCORES, grid_names, scores
from .base import Detector, Needs, add, register


class ClosedFormScore(Detector):
    """The oriented score ``score_name`` of :data:`ood_lib.scores.SCORES` at temperature T."""

    def __init__(self, score_name: str, temperature: float = 1.0) -> None:
        if score_name not in SCORES:
            raise unknown_name("score", score_name, SCORES)
        spec = SCORES[score_name]
        self.score_name, self.temperature = score_name, temperature
        self.family = spec.family
        self.needs = Needs(features=spec.needs_features, logits=True)

    def score(self, features: Any, logits: Any) -> torch.Tensor:
        return scores([self.score_name], features, logits, self.temperature)[self.score_name]

    def get_params(self) -> dict[str, Any]:
        return {"score_name": self.score_name, "temperature": self.temperature}


class MSP(ClosedFormScore):
    """max_k p_k (Hendrycks & Gimpel 2017)."""

    def __init__(self, temperature: float = 1.0) -> None:
        super().__init__("msp", temperature)


class MaxLogit(ClosedFormScore):
    """max_k f_k (Hendrycks et al. 2022)."""

    def __init__(self, temperature: float = 1.0) -> None:
        super().__init__("maxlogit", temperature)


class Energy(ClosedFormScore):
    """−energy = T · logsumexp(f / T) (Liu et al. 2020)."""

    def __init__(self, temperature: float = 1.0) -> None:
        super().__init__("energy", temperature)


class UV(ClosedFormScore):
    """U(h) · V(f) of the grid: both factors ≥ 0 and larger = ID (chapter *Feature norm × output distribution*)."""

    def __init__(self, u: str, v: str, temperature: float = 1.0) -> None:
        self.u, self.v = u, v
        super().__init__(f"{u}*{v}", temperature)


class GradientClosedForm(ClosedFormScore):
    """The closed form c·U(h)·V(p) of the last-layer gradient score ``gradient``; ``flipped``
    reads it the other way ("larger gradient = OOD")."""

    def __init__(self, gradient: str, flipped: bool = False, temperature: float = 1.0) -> None:
        self.gradient, self.flipped = gradient, flipped
        super().__init__(flipped_name(gradient) if flipped else gradient, temperature)


def _alias(name: str) -> dict[str, str]:
    a = ALIASES.get(name)
    return {} if a is None else {"alias_of": a.canonical, "relation": a.relation}


# registered in the order of SCORES (grid, baselines, gradient closed forms), so tables keep it
for _name in grid_names():
    _u, _v = _name.split("*")
    add(_name, UV, u=_u, v=_v, **_alias(_name))
for _cls in (MSP, MaxLogit, Energy):
    add(_cls().score_name, _cls, **_alias(_cls().score_name))
for _g in GRADIENT_FORMS.values():
    add(_g.name, GradientClosedForm, gradient=_g.name, **_alias(_g.name))
    if _g.flippable:
        add(flipped_name(_g.name), GradientClosedForm, gradient=_g.name, flipped=True,
            **_alias(flipped_name(_g.name)))


@register("gen")
class GEN(Detector):
    """GEN (Liu, Lochman & Zach, CVPR 2023): −Σ_{j in the top M of p} p_j^γ (1 − p_j)^γ, p = softmax(f).

    γ = 0.1, M = 100: the paper's values (and the authors' ``benchmark.py`` defaults); with fewer
    than M classes, all C. U·V: a pure V term (a generalised entropy of p), U = 1.
    """

    needs = Needs(logits=True)

    def __init__(self, gamma: float = 0.1, top_m: int = 100) -> None:
        try:
            g, m = float(gamma), int(top_m)
        except (TypeError, ValueError) as exc:
            raise OODInputError(f"GEN needs a number gamma and an integer top_m, got {gamma!r}, {top_m!r}") from exc
        if not (math.isfinite(g) and g > 0) or m < 1:
            raise OODInputError(f"GEN needs gamma > 0 (finite) and top_m ≥ 1, got gamma={gamma!r}, top_m={top_m!r}")
        self.gamma, self.top_m = g, m

    def score(self, features: Any, logits: Any) -> torch.Tensor:
        p = torch.softmax(check_logits(logits).double(), dim=1)
        top = p.topk(min(self.top_m, p.shape[1]), dim=1).values
        return -(top.pow(self.gamma) * (1 - top).pow(self.gamma)).sum(1)
