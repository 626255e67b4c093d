"""The gradient scores, one record each: what is differentiated, which norm, and its closed form.

A gradient score is a norm of the gradient of a loss of the logits w.r.t. the last layer's weight
W (and its bias b when asked). Its record names the loss target, the norm, the parameters taken,
and the closed form ``c(C, T) · U(h) · V(p)`` the chapter *Gradient scores and their closed forms*
derives. Everything else is derived from these records, never listed again:

* :data:`GRADIENT_FORMS` — the scores with a closed form (every one but the zero ``mean_grad``),
  scored without a backward pass by :mod:`ood_lib.scores`;
* :data:`RUNNER_AUTOGRAD` — the scores the evaluation also computes by autograd, as
  ``<name>_autograd``, to show that the closed form gives the same numbers;
* the ``_flipped`` readings (:func:`flipped_name`) — for every score whose V term is larger near the
  uniform prediction (ExGrad, the Fisher trace, the predicted-label CE), the feature norm says
  "larger = in-distribution" and V the opposite: a mixed orientation. Both readings are evaluated,
  rather than one chosen silently, and neither is a member of the U·V grid;
* :func:`grid_member` — the grid member a score's closed form is a positive multiple of, where
  there is one (GradNorm: ``l1*pu_l1``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .terms import GRID_U, GRID_V, V_TERMS

# loss targets, and how many backward passes per image each takes by autograd (C = classes)
TARGETS = {
    "uniform_kl": "KL(u ‖ p): the uniform distribution u as target (one pass)",
    "ones": "Σ_k −log p_k: the all-ones target (one pass)",
    "pred": "CE(f, argmax p): the predicted label (one pass)",
    "expect_p": "E_{Y~p} over one-hot targets (C passes)",
    "expect_u": "E_{Y~u} over one-hot targets (C passes)",
    "mean_grad_p": "the p-weighted mean of the one-hot gradients (C passes)",
}
EXPECTATION_TARGETS = ("expect_p", "expect_u", "mean_grad_p")


@dataclass(frozen=True)
class GradientScore:
    """One gradient score, by definition and in closed form.

    ``orientation`` is the published reading: +1 = "a larger gradient norm means
    in-distribution" (GradNorm's convention, used by every score here).
    """

    name: str
    definition: str  # the gradient norm, as defined
    target: str  # loss target, a key of TARGETS
    norm: str  # "l1" or "l2sq"
    formula: str  # the closed form, as text ("0" where the gradient vanishes)
    u: str | None  # U term of the closed form (without bias); None where the closed form is 0
    v: str | None  # V term of the closed form
    factor: Callable[[int, float], float] | None  # the constant c(C, T) in c · U · V
    params: str = "W"  # parameters differentiated: the head's weight W; bias=True adds b (U gains a + 1)
    orientation: int = +1
    runner_autograd: bool = False  # the evaluation also runs it by autograd, as <name>_autograd

    @property
    def has_closed_form(self) -> bool:
        """True unless the closed form is identically 0."""
        return self.u is not None

    @property
    def flippable(self) -> bool:
        """Mixed orientation: its V term is larger near the uniform prediction, its U a feature norm."""
        return self.v is not None and V_TERMS[self.v].larger_near_uniform

    @property
    def passes_per_image(self) -> str:
        """Backward passes per image by autograd: "1", or "C" for the exact expectations."""
        return "C" if self.target in EXPECTATION_TARGETS else "1"


GRADIENT_SCORES: dict[str, GradientScore] = {
    g.name: g
    for g in [
        GradientScore("gradnorm", "‖∇_W KL(u ‖ p)‖₁", "uniform_kl", "l1", "‖h‖₁ ‖p − u‖₁ / T",
                      "l1", "pu_l1", lambda C, T: 1.0 / T, runner_autograd=True),
        GradientScore("gradnorm_official", "‖∇_W Σ_k −log p_k‖₁ (all-ones target)", "ones", "l1",
                      "C ‖h‖₁ ‖p − u‖₁ / T", "l1", "pu_l1", lambda C, T: C / T, runner_autograd=True),
        GradientScore("exgrad", "E_{Y~p} ‖∇_W CE(f, Y)‖₁", "expect_p", "l1", "2 ‖h‖₁ Σ p(1 − p) / T",
                      "l1", "gini", lambda C, T: 2.0 / T, runner_autograd=True),
        GradientScore("fisher", "E_{Y~p} ‖∇_W CE(f, Y)‖₂² (trace of the last-layer Fisher)", "expect_p", "l2sq",
                      "‖h‖₂² (1 − ‖p‖₂²) / T²", "l2sq", "gini", lambda C, T: 1.0 / T**2, runner_autograd=True),
        GradientScore("unif_l1", "E_{Y~u} ‖∇_W CE(f, Y)‖₁", "expect_u", "l1", "2 ‖h‖₁ (C − 1) / (C T)",
                      "l1", "one", lambda C, T: 2.0 * (C - 1) / (C * T)),
        GradientScore("unif_l2sq", "E_{Y~u} ‖∇_W CE(f, Y)‖₂²", "expect_u", "l2sq",
                      "‖h‖₂² (1 − 2/C + ‖p‖₂²) / T²", "l2sq", "unif_l2sq", lambda C, T: 1.0 / T**2),
        GradientScore("ce_pred", "‖∇_W CE(f, argmax p)‖₁", "pred", "l1", "2 ‖h‖₁ (1 − max p) / T",
                      "l1", "one_minus_msp", lambda C, T: 2.0 / T, runner_autograd=True),
        GradientScore("mean_grad", "‖E_{Y~p} ∇_W CE(f, Y)‖₁", "mean_grad_p", "l1", "0", None, None, None),
    ]
}

GRADIENT_FORMS: dict[str, GradientScore] = {n: g for n, g in GRADIENT_SCORES.items() if g.has_closed_form}
RUNNER_AUTOGRAD: tuple[str, ...] = tuple(n for n, g in GRADIENT_SCORES.items() if g.runner_autograd)


def flipped_name(name: str) -> str:
    """The name of the reversed reading of gradient score ``name`` ("larger gradient = OOD")."""
    return name + "_flipped"


def grid_member(g: GradientScore) -> str | None:
    """The U·V grid member ``"u*v"`` the closed form of ``g`` is a positive multiple of, or None
    where its U or V is not a grid term (the mixed-orientation scores)."""
    if g.u in GRID_U and g.v in GRID_V and (g.u, g.v) != ("one", "one"):
        return f"{g.u}*{g.v}"
    return None
