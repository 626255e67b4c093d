"""The closed-form scores, c · U(h) · V(p): no backward pass.

- :mod:`.terms`: the U terms (norms of h) and V terms (functions of the logits);
- :mod:`.registry`: the gradient scores, one record each, with their closed forms;
- :mod:`.closed_forms`: the registry of every closed-form score by name, ``score`` / ``scores``;
- :mod:`.fused`: every member from one pass (``score_matrix``).

The names of :mod:`.closed_forms` are re-exported here (``ood_lib.scores.score``).
"""

from .closed_forms import (  # noqa: F401
    ALIASES,
    Alias,
    BASELINES,
    GRADIENT_FORMS,
    GRADNORM_FORM,
    GRID_ALIASES,
    GRID_U,
    GRID_V,
    Outputs,
    PREREGISTERED,
    SCORES,
    ScoreSpec,
    U_TERMS,
    V_TERMS,
    canonical,
    closed_form,
    grid_names,
    per_member_scores,
    score,
    score_matrix,
    scores,
    u_term,
    uv_members,
    v_term,
)

__all__ = [
    "ALIASES",
    "Alias",
    "BASELINES",
    "GRADIENT_FORMS",
    "GRADNORM_FORM",
    "GRID_ALIASES",
    "GRID_U",
    "GRID_V",
    "Outputs",
    "PREREGISTERED",
    "SCORES",
    "ScoreSpec",
    "U_TERMS",
    "V_TERMS",
    "canonical",
    "closed_form",
    "grid_names",
    "per_member_scores",
    "score",
    "score_matrix",
    "scores",
    "u_term",
    "uv_members",
    "v_term",
]
