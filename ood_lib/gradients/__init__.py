"""Gradients computed by autograd, and where their closed forms stop.

- :mod:`.autograd`: the gradient scores exactly as defined (the evidence for the closed forms);
- :mod:`.signals`, :mod:`.layers`: per-sample gradient norms of every layer and of the input;
- :mod:`.reductions`: the newer last-layer gradient detectors, by autograd and in closed form;
- :mod:`.gaia`: GAIA's attribution gradients; :mod:`.rank`: distance of a gradient from rank one;
- :mod:`.verify`: autograd against closed form on a real model.

The names of :mod:`.autograd` are re-exported here (``ood_lib.gradients.gradient_score``).
"""

from .autograd import (  # noqa: F401
    GRADIENT_SCORES,
    check_feature_model,
    gradient_score,
    head_gradient_score,
    target_spread,
)

__all__ = [
    "GRADIENT_SCORES",
    "check_feature_model",
    "gradient_score",
    "head_gradient_score",
    "target_spread",
]
