"""ROC curves of the headline methods, thinned to a fixed FPR grid (chapter *The evaluation*).

ID is the positive class and a larger score means in-distribution, as everywhere in the project:
at a threshold t, TPR(t) = fraction of ID images with score ≥ t (kept) and FPR(t) = fraction of
OOD images with score ≥ t (wrongly kept). The exact curve joins the (FPR, TPR) points of every
distinct threshold by straight lines (a staircase without ties; ties give diagonal steps, so
its area is the AUROC with ties counted one half); :func:`roc_points` reads it at each FPR of a
grid, taking the top of a vertical step (the best TPR at that FPR). The trapezoid area of the
thinned curve is within half a grid step (0.25 points on the default 201-point grid) of the AUROC.

A group (near, far, …) pools its OOD sets with **equal weight per set**, whatever their sizes:
FPR(t) is the mean over the sets of each set's FPR(t). The pooled curve is the ROC of one
threshold against an equal mixture of the sets, and its area is the mean of the sets' AUROCs —
the group row of the results table. :func:`roc_table` stores the curves small enough to record
with a study; :func:`roc_figure` draws them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np
import pandas as pd

from ._checks import OODInputError, check_scores
from .benchmarks import OOD_GROUPS
from .labels import group_label, method_label
from .paired_tables import targets_of
from .scores import PREREGISTERED

if TYPE_CHECKING:
    from matplotlib.figure import Figure

ID = "id_test"
FPR_GRID = np.linspace(0.0, 1.0, 201)  # steps of 0.5 %
KEYS = ("ood", "group", "fpr")  # the columns of a roc table besides one TPR column per method


def roc_points(id_scores: np.ndarray, ood_sets: Sequence[np.ndarray], fpr_grid: np.ndarray = FPR_GRID) -> np.ndarray:
    """TPR (fraction, ID positive) at each FPR of ``fpr_grid`` of the exact ROC of ``id_scores``
    against the sets of ``ood_sets`` pooled with equal weight per set (one set: its own curve).

    The curve is :func:`sklearn.metrics.roc_curve` with sample weights 1/n_ID for ID and
    1/(n_set · number of sets) for each OOD image; a vertical segment keeps its top point."""
    from sklearn.metrics import roc_curve

    grid = np.asarray(fpr_grid, dtype=np.float64)
    if grid.ndim != 1 or len(grid) < 2 or not np.isfinite(grid).all() or grid[0] < 0 or grid[-1] > 1 \
            or (np.diff(grid) <= 0).any():
        raise OODInputError("fpr_grid: needs at least two increasing values in [0, 1]")
    if not len(ood_sets):
        raise OODInputError("ood_sets: no OOD set given")
    pos = check_scores(id_scores, "id_scores")
    negs = [check_scores(a, f"ood_sets[{i}]") for i, a in enumerate(ood_sets)]
    s = np.concatenate([pos, *negs])
    y = np.r_[np.ones(len(pos)), np.zeros(len(s) - len(pos))]
    w = np.concatenate([np.full(len(pos), 1.0 / len(pos)), *[np.full(len(a), 1.0 / (len(a) * len(negs))) for a in negs]])
    fpr, tpr, _ = roc_curve(y, s, sample_weight=w, drop_intermediate=False)
    # the segment from the last (highest) point at FPR ≤ x to the next point (the lowest at the next
    # FPR); FPRs within 1e-9 of x count as equal, so that the weights' rounding cannot move a grid
    # point that is a corner of the curve to the foot of its step
    j = np.minimum(np.searchsorted(fpr, grid + 1e-9, side="right") - 1, len(fpr) - 2)
    step = fpr[j + 1] - fpr[j]
    frac = np.clip(np.divide(grid - fpr[j], step, out=np.ones_like(grid), where=step > 0), 0.0, 1.0)
    return tpr[j] + frac * (tpr[j + 1] - tpr[j])


def roc_table(scores: Mapping[str, Mapping[str, np.ndarray]], group_of: Mapping[str, str],
              methods: Sequence[str] | None = None, fpr_grid: np.ndarray = FPR_GRID, decimals: int = 6) -> pd.DataFrame:
    """The thinned ROC curves of ``methods`` (default: every key of ``scores``), one row per OOD
    set or group and FPR: columns ``ood`` (a set, or a group for the pooled rows), ``group``,
    ``fpr`` (fraction), then one TPR column (fraction, rounded to ``decimals``) per method.

    ``scores[method][set]`` holds oriented scores (larger = ID) for ``"id_test"`` and each OOD
    set; ``group_of`` maps each OOD set to near, far or covariate. The sets' rows come first, in
    the order of ``group_of``, then one pooled row block per group present (equal set weights).
    """
    methods = list(scores) if methods is None else list(methods)
    absent = [m for m in methods if m not in scores]
    if absent or not methods:
        raise OODInputError(f"scores: no values for method(s) {', '.join(map(repr, absent)) or '(none asked)'}")
    for key, g in group_of.items():
        if g not in OOD_GROUPS:
            raise OODInputError(f"group_of: set {key!r} needs one of {OOD_GROUPS}, got {g!r}")
    for m in methods:
        lacking = [k for k in (ID, *group_of) if k not in scores[m]]
        if lacking:
            raise OODInputError(f"scores[{m!r}]: no values for set(s) {', '.join(map(repr, lacking))}")
    grid = np.asarray(fpr_grid, dtype=np.float64)
    blocks = targets_of(group_of)
    out = []
    for ood, group, sets in blocks:
        t = pd.DataFrame({"ood": ood, "group": group, "fpr": np.round(grid, 10)})
        for m in methods:
            t[m] = np.round(roc_points(scores[m][ID], [scores[m][k] for k in sets], grid), decimals)
        out.append(t)
    return pd.concat(out, ignore_index=True)


def roc_auroc(roc: pd.DataFrame, ood: str, method: str) -> float:
    """Area (percent, trapezoid rule) under one thinned curve of a :func:`roc_table`."""
    _check(roc, [method])
    d = roc[roc["ood"] == ood]
    if d.empty:
        raise OODInputError(f"the roc table has no rows for {ood!r}")
    return float(100.0 * np.trapezoid(d[method].to_numpy(float), d["fpr"].to_numpy(float)))


def _check(roc: pd.DataFrame, methods: Sequence[str]) -> None:
    missing = [c for c in (*KEYS, *methods) if c not in roc.columns]
    if missing:
        raise OODInputError(f"the roc table has no column(s) {', '.join(map(repr, missing))} (use roc_table)")


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

    from .plots import DPI

    methods = [c for c in roc.columns if c not in KEYS] if methods is None else list(methods)
    _check(roc, methods)
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
