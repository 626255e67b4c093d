"""ood_lib — gradient-based OOD scores, their closed forms U(h)·V(p), and the benchmarks.

Importing the package does nothing beyond defining names: no seeding, no downloads, no styling.
"""

from ._checks import OODInputError
from .metrics import aupr_in, aupr_out, auroc, bootstrap_ci, evaluate_scores, fpr95
from .scores import ALIASES, GRADIENT_FORMS, SCORES, U_TERMS, V_TERMS, canonical, closed_form, score

__version__ = "0.1.0"

__all__ = [
    "ALIASES",
    "OODInputError",
    "GRADIENT_FORMS",
    "SCORES",
    "U_TERMS",
    "V_TERMS",
    "aupr_in",
    "aupr_out",
    "auroc",
    "bootstrap_ci",
    "canonical",
    "closed_form",
    "evaluate_scores",
    "fpr95",
    "score",
]
