"""The shaping arithmetic of ReAct, ASH and DICE, shared by their detectors (:mod:`.shaping`) and by
the rule that fits their settings to a model (:mod:`.regime`)."""

from __future__ import annotations

import numpy as np
import torch

from .base import _n_kept, _top_mask

__all__ = ["ASH_PERCENTILE", "ash_shape", "dice_mask", "react_logits"]

ASH_PERCENTILE = {"s": {"cifar": 95.0, "imagenet": 90.0}, "p": {"cifar": 90.0, "imagenet": 60.0},
                  "b": {"cifar": 95.0, "imagenet": 65.0}}


def react_logits(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, threshold: float) -> torch.Tensor:
    """ReAct's logits W min(h, c) + b (h: (N, D) float64)."""
    return h.clamp(max=threshold) @ weight.T.to(h.device) + bias.to(h.device)


def ash_shape(h: torch.Tensor, percentile: float, variant: str) -> torch.Tensor:
    """ASH's shaped feature h̃ (see :class:`.shaping.ASH`) of (N, D) float64 features h ≥ 0."""
    k = _n_kept(h.shape[1], percentile)
    keep = _top_mask(h, k)
    s1 = h.sum(1, keepdim=True)
    if variant == "b":
        return keep * (s1 / k)
    shaped = h * keep
    if variant == "s":
        s2 = shaped.sum(1, keepdim=True)
        shaped = shaped * torch.exp(torch.where(s2 != 0, s1 / s2.where(s2 != 0, 1.0), 1.0))
    return shaped


def dice_mask(weight: torch.Tensor, mean: torch.Tensor, sparsity: float) -> torch.Tensor:
    """DICE's mask M: the entries of V = W ⊙ 1 h̄ᵀ above its ``sparsity``-quantile."""
    contrib = (weight * mean[None, :]).numpy()
    return torch.from_numpy(contrib > np.percentile(contrib, 100 * sparsity))
