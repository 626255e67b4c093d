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
with a study; :func:`ood_lib.book.roc_plot.roc_figure` draws them.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from .._checks import OODInputError, check_scores
from ..data.benchmarks import OOD_GROUPS
from .paired_tables import targets_of

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


def check_roc_table(roc: pd.DataFrame, methods: Sequence[str]) -> None:
    missing = [c for c in (*KEYS, *methods) if c not in roc.columns]
    if missing:
        raise OODInputError(f"the roc table has no column(s) {', '.join(map(repr, missing))} (use roc_table)")
