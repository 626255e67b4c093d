"""OOD detection metrics, in percent, with ID as the positive class.

Scores must already be oriented so that higher = more in-distribution (see
:mod:`ood_lib.scores`); metrics never guess a sign. Ties are handled exactly, the way
scikit-learn does: the ROC and precision-recall curves step only at distinct score values.

* AUROC — area under the ROC curve (ties count one half).
* FPR95 — the fraction of OOD samples scored at or above the threshold that keeps 95 % of ID
  samples (the threshold is the highest one whose true-positive rate reaches 0.95).
* AUPR-In — average precision with ID positive; AUPR-Out — with OOD positive and the score
  negated.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._checks import OODInputError, check_scores

METRICS = ("auroc", "fpr95", "aupr_in", "aupr_out")


def _curve(pos: np.ndarray, neg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative (true positives, false positives) at each distinct threshold, descending."""
    s = np.concatenate([pos, neg])
    y = np.concatenate([np.ones(len(pos), bool), np.zeros(len(neg), bool)])
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # last index of each tie group
    tp = np.cumsum(y)[last]
    fp = (last + 1) - tp
    return tp.astype(np.float64), fp.astype(np.float64)


def _validate(id_scores: Any, ood_scores: Any) -> tuple[np.ndarray, np.ndarray]:
    return check_scores(id_scores, "id_scores"), check_scores(ood_scores, "ood_scores")


# Each metric is a function of one curve: (true positives, false positives) at the distinct
# thresholds, with the positive and negative counts. evaluate_scores builds each curve once.
def _auroc_c(tp: np.ndarray, fp: np.ndarray, n_pos: int, n_neg: int) -> float:
    return float(100.0 * np.trapezoid(np.r_[0.0, tp / n_pos], np.r_[0.0, fp / n_neg]))


def _fpr_c(tp: np.ndarray, fp: np.ndarray, n_pos: int, n_neg: int, tpr_level: float = 0.95) -> float:
    i = int(np.searchsorted(tp / n_pos, tpr_level, side="left"))
    return float(100.0 * fp[i] / n_neg)


def _ap_c(tp: np.ndarray, fp: np.ndarray, n_pos: int, n_neg: int) -> float:
    return float(100.0 * np.sum(np.diff(np.r_[0.0, tp / n_pos]) * (tp / (tp + fp))))


def _all(pos: np.ndarray, neg: np.ndarray) -> dict[str, float]:
    c_in = (*_curve(pos, neg), len(pos), len(neg))
    c_out = (*_curve(-neg, -pos), len(neg), len(pos))
    return {"auroc": _auroc_c(*c_in), "fpr95": _fpr_c(*c_in), "aupr_in": _ap_c(*c_in), "aupr_out": _ap_c(*c_out)}


def _one(fn, flip: bool = False):
    def metric(pos: np.ndarray, neg: np.ndarray) -> float:
        if flip:
            pos, neg = -neg, -pos
        return fn(*_curve(pos, neg), len(pos), len(neg))

    return metric


_IMPL = {
    "auroc": _one(_auroc_c),
    "fpr95": _one(_fpr_c),
    "aupr_in": _one(_ap_c),
    "aupr_out": _one(_ap_c, flip=True),
}


def auroc(id_scores: Any, ood_scores: Any) -> float:
    """Area under the ROC curve, percent (50 for constant scores)."""
    return _IMPL["auroc"](*_validate(id_scores, ood_scores))


def fpr_at_tpr(id_scores: Any, ood_scores: Any, tpr_level: float = 0.95) -> float:
    """FPR (percent of OOD accepted) at the first threshold whose ID recall reaches ``tpr_level``."""
    if not 0.0 < tpr_level <= 1.0:
        raise OODInputError(f"tpr_level must be in (0, 1], got {tpr_level}")
    pos, neg = _validate(id_scores, ood_scores)
    return _fpr_c(*_curve(pos, neg), len(pos), len(neg), tpr_level)


def fpr95(id_scores: Any, ood_scores: Any) -> float:
    """FPR at 95 % TPR, percent (ID positive)."""
    return fpr_at_tpr(id_scores, ood_scores, 0.95)


def aupr_in(id_scores: Any, ood_scores: Any) -> float:
    """Average precision with ID as the positive class, percent."""
    return _IMPL["aupr_in"](*_validate(id_scores, ood_scores))


def aupr_out(id_scores: Any, ood_scores: Any) -> float:
    """Average precision with OOD as the positive class (scores negated), percent."""
    return _IMPL["aupr_out"](*_validate(id_scores, ood_scores))


def evaluate_scores(id_scores: Any, ood_scores: Any) -> dict[str, float]:
    """All four metrics (percent) for one pair of score vectors."""
    return _all(*_validate(id_scores, ood_scores))


def bootstrap_ci(
    id_scores: Any,
    ood_scores: Any,
    metric: str = "auroc",
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``metric``, resampling ID and OOD sets independently."""
    if metric not in _IMPL:
        raise OODInputError(f"unknown metric {metric!r}; valid: {', '.join(METRICS)}")
    if n_boot < 1:
        raise OODInputError(f"n_boot must be >= 1, got {n_boot}")
    if not 0.0 < level < 1.0:
        raise OODInputError(f"level must be in (0, 1), got {level}")
    pos, neg = _validate(id_scores, ood_scores)
    rng = np.random.default_rng(seed)
    fn = _IMPL[metric]
    vals = np.array(
        [
            fn(pos[rng.integers(0, len(pos), len(pos))], neg[rng.integers(0, len(neg), len(neg))])
            for _ in range(n_boot)
        ]
    )
    a = (1.0 - level) / 2.0
    lo, hi = np.quantile(vals, [a, 1.0 - a])
    return float(lo), float(hi)
