"""Detectors that reshape the features before the head: ReAct, ASH, SCALE, DICE.

Each clips, prunes, rescales or sparsifies h (or the head's weights), recomputes the logits through
the head and reads their energy. ReAct and DICE are fitted on the ID *training* split only; ASH and
SCALE are not fitted. Hyper-parameters are the papers' own (:mod:`.settings`) by default; ReAct's
and ASH's ``percentile`` and DICE's ``sparsity`` also take ``"id"`` (:data:`IN_REGIME`): the value
is then chosen at ``fit`` from the ID training features alone by the rule of :mod:`.regime`
(``fit`` stores it as ``percentile_`` / ``sparsity_`` and the grid's table as ``regime_``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .._checks import OODInputError, check_features
from .base import (
    Detector,
    FitData,
    FittedDetector,
    Needs,
    _h,
    _head64,
    _n_kept,
    _percent,
    head_of,
    register,
)
from .regime import choose_in_regime
from .settings import paper_setting
from .shapes import ASH_PERCENTILE, ash_shape, dice_mask, react_logits

IN_REGIME = "id"  # the setting chosen on the ID training features (:func:`.regime.choose_in_regime`)


def _in_regime(value: Any) -> bool:
    if isinstance(value, str):
        if value != IN_REGIME:
            raise OODInputError(f"a shaping setting is a number or {IN_REGIME!r} (chosen on ID training features), "
                                f"got {value!r}")
        return True
    return False


def _choose(method: str, model: Any, train: Any, **kw: Any) -> Any:
    return choose_in_regime(method, model, train, **kw)


@register("react")
class ReAct(FittedDetector):
    """Energy T · logsumexp(f̃ / T) of the logits f̃ = W min(h, c) + b recomputed from features
    clipped at c, the ``percentile`` of the ID training activations (Sun et al. 2021).

    percentile: 90 by default, the paper's (chosen there so that ID accuracy is kept). ``"id"``: the
    lowest (most clipping) of 10, 15, …, 95, 99 whose clipped head predicts the unclipped head's class
    on ≥ 99 % of the ID training features (else the one of highest agreement;
    :func:`.regime.choose_in_regime`), fitted as ``percentile_``.
    """

    needs = Needs(features=True, fit=True, model=True)

    def __init__(self, model: Any, percentile: float | str = 90.0, temperature: float = 1.0) -> None:
        head = head_of(model)
        self.weight = head.weight.detach().cpu().double()
        self.bias = (head.bias.detach().cpu().double() if head.bias is not None
                     else torch.zeros(head.out_features, dtype=torch.float64))
        if not _in_regime(percentile) and not 0.0 <= float(percentile) <= 100.0:
            raise OODInputError(f"ReAct percentile must be in [0, 100], got {percentile!r}")
        self.percentile = percentile
        self.temperature = temperature

    def fit(self, train: Any, logits: Any = None, labels: Any = None) -> "ReAct":
        data = FitData.of(train, logits, labels)
        h = check_features(data.features)
        p = self.percentile
        if _in_regime(p):
            self.regime_ = _choose("react", self, data)
            p = self.percentile_ = self.regime_.value
        self.threshold_ = float(np.percentile(h.cpu().numpy().ravel(), p))
        return self

    def score(self, features: Any, logits: Any = None) -> torch.Tensor:
        self._check_fitted()
        f = react_logits(check_features(features).double(), self.weight, self.bias, self.threshold_)
        T = self.temperature
        return T * torch.logsumexp(f / T, dim=1)




@register("ash")
class ASH(Detector):
    """ASH (Djurisic, Bozanic, Ashok & Liu, ICLR 2023), variant ASH-S by default: energy of
    f̃ = W h̃ + b with h̃ = exp(s₁/s₂) · h ⊙ 1[h among the top k], s₁ = Σ_j h_j, s₂ = Σ_top-k h_j,
    k = D − round(D·p/100) (ASH-P: h̃ = h ⊙ 1[top k]; ASH-B: h̃ = (s₁/k) · 1[top k]).

    p: the paper's per-setting value (ASH-S@95 on CIFAR, @90 on ImageNet-1k ResNet-50; P@90/@60,
    B@95/@65), which the authors picked from a sweep of p on their benchmarks' OOD sets (their
    ``run.py`` grid); used as published by default. ``percentile="id"``: the highest (most pruning)
    of 10, 15, …, 95, 99 whose shaped head predicts the unshaped head's class on ≥ 99 % of the ID
    training features (else the one of highest agreement; :func:`.regime.choose_in_regime`; the paper
    reports its setting keeps ID accuracy) — ASH then needs a fit, which stores it as ``percentile_``.
    Applied to the pooled
    penultimate h, as the authors' ResNet code does (``apply_ash`` after ``avgpool``, before ``fc``).
    Assumes h ≥ 0 (post-ReLU); where s₂ = 0 the factor is 1 (then h̃ = 0 and f̃ = b whatever it is).
    U·V: rescales the (pruned) logits W h by exp(‖h‖₁ / ‖top-k(h)‖₁), a ratio of feature norms.
    """

    needs = Needs(features=True, model=True)

    def __init__(self, model: Any, percentile: float | str | None = None, variant: str = "s") -> None:
        if variant not in ASH_PERCENTILE:
            raise OODInputError(f"ASH variant must be one of s, p, b; got {variant!r}")
        self.weight, self.bias = _head64(model)
        self.variant = variant
        default = ASH_PERCENTILE[variant][paper_setting(self.weight.shape[0])]
        if _in_regime(percentile):
            self.percentile = percentile
            self.needs = Needs(features=True, fit=True, model=True)
        else:
            self.percentile = _percent(default if percentile is None else percentile, "ASH percentile")

    def fit(self, train: Any, logits: Any = None, labels: Any = None) -> "ASH":
        """With ``percentile="id"``: choose it on the ID training split; otherwise nothing to fit."""
        if _in_regime(self.percentile):
            self.regime_ = _choose("ash", self, FitData.of(train, logits, labels), variant=self.variant)
            self.percentile_ = self.regime_.value
        return self

    def score(self, features: Any, logits: Any = None) -> torch.Tensor:
        p = self.percentile
        if _in_regime(p):
            if not hasattr(self, "percentile_"):
                raise OODInputError('ASH(percentile="id") is not fitted; call fit() on ID training features first')
            p = self.percentile_
        h = _h(features, self.weight)
        f = ash_shape(h, p, self.variant) @ self.weight.T.to(h.device) + self.bias.to(h.device)
        return torch.logsumexp(f, dim=1)


@register("scale")
class SCALE(Detector):
    """SCALE (Xu, Chen, Franchi & Yao, ICLR 2024): energy of f̃ = exp(s₁/s₂) · W h + b, with s₁, s₂ as
    in ASH-S but h itself not pruned (the paper's point: pruning hurts, scaling helps).

    p = 85, the authors' published setting (ImageNet-1k ResNet-50; their config ``scale.yml``, no
    search on OOD data); the paper gives no other, so it is also the default here for CIFAR-size
    heads. Applied to the pooled h (their ``ScaleNet``: the feature reshaped to (B, D, 1, 1)).
    U·V: energy at a per-sample temperature 1/exp(‖h‖₁ / ‖top-k(h)‖₁) (exactly so when b = 0).
    """

    needs = Needs(features=True, model=True)

    def __init__(self, model: Any, percentile: float = 85.0) -> None:
        self.weight, self.bias = _head64(model)
        self.percentile = _percent(percentile, "SCALE percentile")

    def score(self, features: Any, logits: Any = None) -> torch.Tensor:
        h = _h(features, self.weight)
        s1 = h.sum(1)
        s2 = h.topk(_n_kept(h.shape[1], self.percentile), dim=1).values.sum(1)
        r = torch.where(s2 != 0, s1 / s2.where(s2 != 0, 1.0), 1.0)
        f = torch.exp(r)[:, None] * (h @ self.weight.T.to(h.device)) + self.bias.to(h.device)
        return torch.logsumexp(f, dim=1)


@register("dice")
class DICE(FittedDetector):
    """DICE (Sun & Li, ECCV 2022): energy of f = (M ⊙ W) h + b, with M keeping the entries of the
    contribution matrix V = W ⊙ 1 h̄ᵀ (V_cj = w_cj · h̄_j, h̄ the mean ID training feature) above its
    ``sparsity``-quantile (linear interpolation, as numpy.percentile in the authors' code).

    sparsity p = 0.9 for CIFAR, 0.7 for ImageNet-1k: the paper's values (``demo-cifar.sh`` uses
    --p 90), chosen by the authors, by default. ``sparsity="id"``: the highest of 0.1, 0.2, …, 0.9
    whose sparse head predicts the full head's class on ≥ 99 % of the ID training features (else the
    one of highest agreement; :func:`.regime.choose_in_regime`; the paper reports that DICE keeps ID
    accuracy), fitted as ``sparsity_``.
    U·V: no norm factor; it sparsifies the head, then reads the energy (V term) of the sparse head.
    """

    needs = Needs(features=True, fit=True, model=True)

    def __init__(self, model: Any, sparsity: float | str | None = None) -> None:
        self.weight, self.bias = _head64(model)
        default = {"cifar": 0.9, "imagenet": 0.7}[paper_setting(self.weight.shape[0])]
        if _in_regime(sparsity):
            self.sparsity = sparsity
            return
        self.sparsity = float(default if sparsity is None else sparsity)
        if not 0.0 <= self.sparsity < 1.0:
            raise OODInputError(f"DICE sparsity must be in [0, 1), got {sparsity!r}")

    def fit(self, train: Any, logits: Any = None, labels: Any = None) -> "DICE":
        data = FitData.of(train, logits, labels)
        mean = _h(data.features, self.weight).mean(0).cpu()
        p = self.sparsity
        if _in_regime(p):
            self.regime_ = _choose("dice", self, data)
            p = self.sparsity_ = self.regime_.value
        self.mean_, self.masked_weight_ = mean, self.weight * dice_mask(self.weight, mean, p)
        return self

    def score(self, features: Any, logits: Any = None) -> torch.Tensor:
        self._check_fitted()
        h = _h(features, self.weight)
        return torch.logsumexp(h @ self.masked_weight_.T.to(h.device) + self.bias.to(h.device), dim=1)
