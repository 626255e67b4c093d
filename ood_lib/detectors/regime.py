"""Shaping settings chosen in the model's own regime, from ID training features only.

ReAct's clipping percentile, ASH's pruning percentile and DICE's sparsity were published for
particular networks (ResNet-18/-50, DenseNet-101 and their feature sizes); at a published setting a
smaller or differently distributed feature can lose most of what the head reads (ASH-S at p = 95
keeps 3 of ResNet-20's 64 units). The three papers chose or defended their settings by the ID
classification accuracy they keep (ReAct, Sun, Guo & Li 2021, §4 and its ablation of p; ASH,
Djurisic et al. 2023, ID accuracy against the pruning percentile; DICE, Sun & Li 2022, its
ID-accuracy table). The rule here states that criterion on ID training features alone:

    the most aggressive value of a fixed grid whose shaped head predicts the same class as the
    unshaped head, argmax (W h + b), on at least 99 % of the ID training features.

Grid: percentiles 10, 15, …, 95, 99 (ReAct, ASH), sparsity 0.1, 0.2, …, 0.9 (DICE). Most aggressive:
the highest percentile for ASH and the highest sparsity for DICE (more pruned), the lowest percentile
for ReAct (a lower clip). Agreement, not accuracy: it needs no labels and measures what shaping
changes, not the model's errors. If no grid value reaches the level, the one of highest agreement is
taken (the milder of equals), and the rule's text says so: agreement need not fall monotonically
(DICE's sparse head at a low sparsity drops the most negative contributions, ASH-B flattens the
kept units). Nothing but the training split is read: no test or OOD image, no OOD score.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch

from .._checks import OODInputError, check_features
from .base import FitData, _h, _head64
from .shapes import ASH_PERCENTILE, ash_shape, dice_mask, react_logits

PERCENTILE_GRID = (*(float(p) for p in range(10, 100, 5)), 99.0)
SPARSITY_GRID = tuple(round(0.1 * i, 1) for i in range(1, 10))
MIN_AGREEMENT = 0.99
SHAPING = ("react", "ash", "dice")
PARAMETER = {"react": "percentile", "ash": "percentile", "dice": "sparsity"}
SOURCES = {"react": "Sun, Guo & Li (NeurIPS 2021): p chosen so that ID accuracy is kept",
           "ash": "Djurisic et al. (ICLR 2023): pruning that keeps ID accuracy",
           "dice": "Sun & Li (ECCV 2022): sparsification that keeps ID accuracy"}


class Regime(NamedTuple):
    """The chosen value, the rule that chose it (one sentence), and the grid's table
    (``value``, ``agreement`` in [0, 1], ``meets``, ``chosen``)."""

    value: float
    rule: str
    table: Any  # pandas.DataFrame


def _weights(model: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """(W, b) in float64 of a network with a head, an nn.Linear, or a shaping detector built on one."""
    w, b = getattr(model, "weight", None), getattr(model, "bias", None)
    if not isinstance(model, torch.nn.Module) and isinstance(w, torch.Tensor) and isinstance(b, torch.Tensor):
        return w.detach().cpu().double(), b.detach().cpu().double()
    return _head64(model)


def shaped_predictions(method: str, model: Any, train: Any, value: float, *, variant: str = "s") -> np.ndarray:
    """The class the shaped head predicts for each ID training feature at setting ``value``."""
    _check_method(method, variant)
    w, b = _weights(model)
    h = _h(FitData.of(train).features, w)
    if method == "react":
        c = float(np.percentile(h.numpy().ravel(), value))
        f = react_logits(h, w, b, c)
    elif method == "ash":
        f = ash_shape(h, value, variant) @ w.T + b
    else:
        f = h @ (w * dice_mask(w, h.mean(0), value)).T + b
    return f.argmax(1).numpy()


def agreement(method: str, model: Any, train: Any, value: float, *, variant: str = "s") -> float:
    """Fraction of the ID training features on which the shaped head predicts the unshaped head's class."""
    w, b = _weights(model)
    h = _h(FitData.of(train).features, w)
    plain = (h @ w.T + b).argmax(1).numpy()
    return float((shaped_predictions(method, model, h, value, variant=variant) == plain).mean())


def _check_method(method: str, variant: str) -> None:
    if method not in SHAPING:
        raise OODInputError(f"in-regime settings exist for {', '.join(SHAPING)}; got {method!r}")
    if method == "ash" and variant not in ASH_PERCENTILE:
        raise OODInputError(f"ASH variant must be one of s, p, b; got {variant!r}")


def _grid(method: str, grid: Any) -> tuple[float, ...]:
    values = (SPARSITY_GRID if method == "dice" else PERCENTILE_GRID) if grid is None else tuple(grid)
    if not values:
        raise OODInputError("the grid of settings is empty")
    hi = 1.0 if method == "dice" else 100.0
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not (0.0 <= v < hi or (method == "react" and v == hi)):
            raise OODInputError(f"{method} {PARAMETER[method]} grid values must be numbers in [0, {hi:g}), got {v!r}")
    return tuple(float(v) for v in values)


def choose_in_regime(method: str, model: Any, train: Any, *, variant: str = "s", grid: Any = None,
                     min_agreement: float = MIN_AGREEMENT) -> Regime:
    """The most aggressive ``grid`` value (default :data:`PERCENTILE_GRID` / :data:`SPARSITY_GRID`) at
    which the shaped head of ``method`` ("react", "ash" with ``variant``, "dice") predicts the unshaped
    head's class on at least ``min_agreement`` of the ID training features ``train`` (FitData,
    Features or an (N, D) array); the value of highest agreement if none does (module docstring).

    ``model``: the network (its ``head``), the head itself, or a shaping detector.
    """
    _check_method(method, variant)
    if isinstance(min_agreement, bool) or not isinstance(min_agreement, (int, float)) or not 0.0 < min_agreement <= 1.0:
        raise OODInputError(f"min_agreement must be in (0, 1], got {min_agreement!r}")
    values = _grid(method, grid)
    w, b = _weights(model)
    h = _h(check_features(FitData.of(train).features), w)
    if len(h) < 2:
        raise OODInputError(f"need at least 2 ID training features to choose a setting, got {len(h)}")
    agree = [agreement(method, model, h, v, variant=variant) for v in values]
    # order from mildest to most aggressive: ReAct clips more at a lower percentile
    order = sorted(range(len(values)), key=lambda i: values[i], reverse=method == "react")
    meets = [a >= min_agreement for a in agree]
    ok = [i for i in order if meets[i]]
    pick = ok[-1] if ok else max(order, key=lambda i: agree[i])  # max: the first, mildest, of equals
    name = "ASH-" + variant.upper() if method == "ash" else {"react": "ReAct", "dice": "DICE"}[method]
    direction = "lowest" if method == "react" else "highest"
    rule = (f"{name} {PARAMETER[method]}: the {direction} of {', '.join(f'{v:g}' for v in sorted(values))} whose shaped "
            f"head predicts the unshaped head's class on >= {100 * min_agreement:g} % of the {len(h):,} ID training "
            f"features ({SOURCES[method]})")
    rule += (f"; chosen {values[pick]:g} ({100 * agree[pick]:.2f} %)" if ok else
             f"; none reaches it: the highest agreement, {values[pick]:g} ({100 * agree[pick]:.2f} %)")
    import pandas as pd

    table = pd.DataFrame({"value": values, "agreement": agree, "meets": meets,
                          "chosen": [i == pick for i in range(len(values))]})
    return Regime(values[pick], rule, table.sort_values("value", ignore_index=True))
