"""The ROC figure of a study (:func:`ood_lib.findings.roc.roc_table`): one panel per group of OOD sets."""

from __future__ import annotations

from typing import Sequence

import pandas as pd
from matplotlib.figure import Figure

from .._checks import OODInputError
from ..findings.labels import group_label, method_label
from ..findings.roc import KEYS, check_roc_table
from ..scores.closed_forms import PREREGISTERED
from .plots import DPI

STYLE = {"gradnorm": dict(color="tab:red", lw=2.2, zorder=5),
         PREREGISTERED: dict(color="black", lw=2.2, ls="--", zorder=6)}  # the two the book compares
NOTE = {PREREGISTERED: " (pre-registered)"}


def roc_figure(roc: pd.DataFrame, groups: Sequence[str] = ("near", "far"), methods: Sequence[str] | None = None) -> Figure:
    """One panel per group of ``groups`` that the table holds (the group's sets pooled, equal
    weights): TPR (ID kept, %) against FPR (OOD kept, %) for each method of ``methods`` (default:
    every method column), by display name; GradNorm (red) and the pre-registered member (black,
    dashed) drawn thick; the diagonal is a detector at chance, the dotted line TPR = 95 % (where
    FPR95 is read)."""
    import matplotlib as mpl
    import matplotlib.pyplot as plt  # imported here: importing ood_lib must not load a plotting backend

    methods = [c for c in roc.columns if c not in KEYS] if methods is None else list(methods)
    check_roc_table(roc, methods)
    if not methods:
        raise OODInputError("the roc table has no method column")
    present = [g for g in groups if ((roc["ood"] == g) & (roc["group"] == g)).any()]
    if not present:
        raise OODInputError(f"the roc table has no pooled rows for group(s) {', '.join(map(repr, groups))}; "
                            f"it has {', '.join(map(repr, sorted(set(roc['group'])))) or 'none'}")
    others = iter(mpl.colormaps["tab10"](i) for i in (0, 1, 2, 4, 5, 6, 8, 9))  # no red, no grey
    style = {m: STYLE.get(m, dict(color=next(others, "0.5"), lw=1.2)) for m in methods}
    fig, axes = plt.subplots(1, len(present), figsize=(3.3 * len(present) + 0.3, 4.0), dpi=DPI, squeeze=False,
                             sharey=True, layout="constrained")
    for ax, g in zip(axes[0], present):
        d = roc[(roc["ood"] == g) & (roc["group"] == g)]
        n_sets = roc.loc[(roc["group"] == g) & (roc["ood"] != g), "ood"].nunique()
        x = 100 * d["fpr"].to_numpy(float)
        ax.plot([0, 100], [0, 100], color="0.6", lw=0.8, label="chance")
        ax.axhline(95, color="0.6", lw=0.8, ls=":", label="TPR = 95 % (FPR95)")
        for m in methods:
            ax.plot(x, 100 * d[m].to_numpy(float), label=method_label(m) + NOTE.get(m, ""), **style[m])
        ax.set(xlim=(0, 100), ylim=(0, 100.5))
        ax.set_title(group_label(g) + (": 1 set" if n_sets < 2 else f": {n_sets} sets pooled, equal weight"), fontsize=9)
        ax.set_xlabel("FPR: OOD images kept (%)")
        ax.tick_params(labelsize=8)
    fig.get_layout_engine().set(wspace=0.06)  # keeps "100" and the next panel's "0" apart
    axes[0, 0].set_ylabel("TPR: ID images kept (%)")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=4, fontsize=8, frameon=False)
    return fig
