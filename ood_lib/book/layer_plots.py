"""Figures for the per-layer gradients of the chapter *Gradient scores and their closed forms*:
how far each layer's per-sample weight gradient is from one outer product
(:func:`ood_lib.gradients.rank.rank_one_residual`). Drawn at :data:`ood_lib.book.plots.DPI`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from .._checks import OODInputError
from .plots import DPI

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["NO_CLOSED_FORM", "rank_one_figure"]

NO_CLOSED_FORM = "no closed form"


def rank_one_figure(residuals: Mapping[str, Any], forms: Mapping[str, str], *, head: str | None = None) -> "Figure":
    """One column per layer (in the order given, input side first): each image's rank-one
    residual r as a dot, the median as a bar; colour = which closed form the layer's gradient norm
    has (``forms[layer]``; absent = :data:`NO_CLOSED_FORM`). r = 0: one outer product. ``head``:
    the classifier head's weight tensor, if drawn, marked "(head)" on its tick."""
    import matplotlib.pyplot as plt  # imported here: importing ood_lib must not load a plotting backend

    if not residuals:
        raise OODInputError("no layers to draw")
    values = {n: np.asarray(v, float).ravel() for n, v in residuals.items()}
    bad = [n for n, v in values.items() if len(v) == 0 or not np.isfinite(v).all() or (v < 0).any() or (v > 1).any()]
    if bad:
        raise OODInputError(f"residuals of {bad[0]!r} must be a non-empty array of numbers in [0, 1]")
    kinds = list(dict.fromkeys([*(f for f in forms.values() if f != NO_CLOSED_FORM), NO_CLOSED_FORM]))
    colour = {k: f"C{i}" for i, k in enumerate(kinds[:-1])} | {NO_CLOSED_FORM: "0.4"}
    n = len(values)
    fig, ax = plt.subplots(figsize=(min(6.5, max(3.8, 1.6 + 0.32 * n)), 3.2), dpi=DPI)
    rng = np.random.default_rng(0)  # horizontal jitter of the dots only
    handles = {}
    for i, (name, v) in enumerate(values.items()):
        kind = forms.get(name, NO_CLOSED_FORM)
        c = colour[kind]
        ax.scatter(i + rng.uniform(-0.18, 0.18, len(v)), v, s=6, color=c, alpha=0.45, linewidths=0)
        handles[kind] = ax.hlines(np.median(v), i - 0.3, i + 0.3, color=c, lw=2, label=kind)
    if head is not None and head not in values:
        raise OODInputError(f"head {head!r} is not one of the layers drawn")
    ticks = [k.removesuffix(".weight") + (" (head)" if k == head else "") for k in values]
    ax.set_xticks(range(n), ticks, rotation=60, ha="right", fontsize=7)
    ax.set(ylim=(-0.02, 1.0), xlim=(-0.6, n - 0.4), xlabel="weight tensor, input side first",
           ylabel="rank-one residual r\n(0 = one outer product)")
    ax.grid(axis="y", alpha=0.3)
    shown = [k for k in kinds if k in handles]
    ax.legend([handles[k] for k in shown], shown, fontsize=7, frameon=False, loc="lower left",
              bbox_to_anchor=(0.0, 1.0), ncol=len(shown), borderaxespad=0.2)
    fig.tight_layout()
    return fig
