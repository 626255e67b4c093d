"""The pre-registered mechanism: when does multiplying an output score by the feature norm help?

Rule of 6 December 2026 (page *Pre-registration*), fixed before any model it is tested on was
scored: on one (model, OOD set), the feature norm ‖h‖₁ is predicted to help MSP —
AUROC(‖h‖₁·MSP) > AUROC(MSP) — exactly when ‖h‖₁ alone separates the set from the ID test images
with AUROC(‖h‖₁) > :data:`TAU` (percent, ID positive). The same prediction is made for GradNorm
against its output term ‖p − u‖₁. The threshold was chosen on the recorded pairs listed on that
page; every pair scored later is out of sample.
"""

from __future__ import annotations

from typing import Any

from ..stats.metrics import auroc
from ..scores.terms import u_term

__all__ = ["TAU", "feature_norm_auroc", "predict_feature_norm_effect"]

TAU = 75.0  # AUROC (percent) of ‖h‖₁ alone above which the feature norm is predicted to help


def feature_norm_auroc(h_id: Any, h_ood: Any) -> float:
    """AUROC (percent, ID positive) of ‖h‖₁ alone: ID test features ``h_id`` (N, D) against one
    OOD set's ``h_ood`` (M, D)."""
    return auroc(u_term("l1", h_id).double().cpu().numpy(), u_term("l1", h_ood).double().cpu().numpy())


def predict_feature_norm_effect(h_id: Any, h_ood: Any, tau: float = TAU) -> dict[str, Any]:
    """The mechanism's prediction for one (model, OOD set), from penultimate features alone.

    Returns ``{"auroc_u": AUROC(‖h‖₁), "tau": tau, "helps": AUROC(‖h‖₁) > tau}``: ``helps`` True
    predicts AUROC(‖h‖₁·MSP) > AUROC(MSP) (and GradNorm > ‖p − u‖₁) on that set."""
    a = feature_norm_auroc(h_id, h_ood)
    return {"auroc_u": a, "tau": float(tau), "helps": bool(a > tau)}
