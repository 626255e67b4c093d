"""Closed-form OOD scores: the U(h)·V(p) family and the closed forms of the gradient scores.

Everything here is a pure function of the penultimate features ``h`` (N, D) and the logits
``f`` (N, C) of a classifier ``f = W h + b``, with ``p = softmax(f / T)``. No backward pass.
The derivation is in the chapter *Gradient scores and their closed forms*
(``notebooks/01_gradient_closed_forms.py``); the terms are in :mod:`ood_lib.outputs`, the gradient
scores' records in :mod:`ood_lib.gradient_registry`.

Orientation convention (stated once, applied once, in :func:`scores`): **higher = more
in-distribution**. A U·V product takes its V term's sign (U terms are norms and count as "larger
= in-distribution"). The gradient scores follow the published reading, "a larger gradient norm
means in-distribution", and each one whose V term points the other way is also registered with
``_flipped`` appended, so that both readings can be evaluated rather than one chosen silently.

Several registered names are the same detector as a U·V grid member — equal up to a positive
factor or an added constant, hence the same ranking of any inputs (``msp`` is ``one*msp``,
``gradnorm`` is ``l1*pu_l1`` / T, ``exgrad_flipped`` is ``2/T · l1*gini``, …). :data:`ALIASES`
declares each once, and :func:`canonical` maps a name to the member it repeats, so a count or a
ranking of methods can leave aliases out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable

import torch

from ._checks import OODInputError, unknown_name
from .gradient_registry import GRADIENT_FORMS, GradientScore, flipped_name, grid_member
from .outputs import U_TERMS, V_TERMS, Outputs, UTerm, VTerm, u_term, v_term, with_bias

__all__ = [
    "ALIASES", "GRADIENT_FORMS", "SCORES", "U_TERMS", "V_TERMS", "Alias", "Outputs", "ScoreSpec",
    "canonical", "closed_form", "grid_names", "score", "scores", "u_term", "v_term",
]


def _closed_form(o: Outputs, g: GradientScore, bias: bool) -> torch.Tensor:
    return g.factor(o.C, o.T) * U_TERMS[with_bias(g.u, bias)].fn(o) * V_TERMS[g.v].fn(o)


def closed_form(
    name: str, features: Any, logits: Any, temperature: float = 1.0, bias: bool = False
) -> torch.Tensor:
    """Closed form c·U(h)·V(p) of the last-layer gradient score ``name`` (raw value).

    ``bias=True`` gives the score of the gradient w.r.t. (W, b) together: ‖h‖₁ becomes
    ‖h‖₁ + 1 and ‖h‖₂² becomes ‖h‖₂² + 1.
    """
    if name not in GRADIENT_FORMS:
        raise unknown_name("gradient score", name, GRADIENT_FORMS)
    return _closed_form(Outputs(features, logits, temperature), GRADIENT_FORMS[name], bias)


# --- the registry of named, oriented scores ---------------------------------------------
@dataclass(frozen=True)
class ScoreSpec:
    """A named detector score computable from (h, logits) alone."""

    name: str
    family: str  # "uv", "baseline" or "gradient"
    sign: int
    fn: Callable[[Outputs], torch.Tensor]  # raw value
    needs_features: bool
    description: str


@dataclass(frozen=True)
class Alias:
    """``name`` is the same detector as ``canonical``: ``relation`` says how the two scores relate."""

    name: str
    canonical: str
    relation: str


# the output-side baselines: (name, its V term)
BASELINES = (("msp", "msp"), ("maxlogit", "maxlogit"), ("energy", "lse"))

# grid members of the row U = 1 that differ from another by an added constant
SHIFTED = (
    ("one*one_minus_msp", "one*msp", "−(1 − max p) = max p − 1"),
    ("one*kl_u", "one*neg_entropy", "log C + Σ p log p"),
    ("one*unif_l2sq", "one*p_l2sq", "‖p‖₂² + 1 − 2/C"),
    ("one*gini", "one*p_l2sq", "−Σ p(1 − p) = ‖p‖₂² − 1"),
)


def _uv(u: UTerm, v: VTerm) -> ScoreSpec:
    return ScoreSpec(
        f"{u.name}*{v.name}", "uv", v.sign,
        lambda o, u=u, v=v: u.fn(o) * v.fn(o), u.name != "one",
        f"{u.formula} · {v.formula}",
    )


def _registry() -> tuple[dict[str, ScoreSpec], dict[str, Alias]]:
    reg: dict[str, ScoreSpec] = {}
    aliases: dict[str, Alias] = {}
    for u in U_TERMS.values():
        for v in V_TERMS.values():
            if u.name == "one" and v.name == "one":
                continue
            s = _uv(u, v)
            reg[s.name] = s
    for name, v in BASELINES:
        vt = V_TERMS[v]
        reg[name] = ScoreSpec(name, "baseline", vt.sign, vt.fn, False, vt.formula)
        aliases[name] = Alias(name, f"one*{v}", "the same score")
    for g in GRADIENT_FORMS.values():
        fn = lambda o, g=g: _closed_form(o, g, False)  # noqa: E731
        reg[g.name] = ScoreSpec(g.name, "gradient", g.orientation, fn, True, f"{g.definition} = {g.formula}")
        if g.flippable:
            f = flipped_name(g.name)
            reg[f] = ScoreSpec(f, "gradient", -g.orientation, fn, True,
                               f"−({g.definition}): the reading 'larger gradient = OOD'")
        # the reading that agrees with V's orientation is a positive multiple of the grid member
        same = flipped_name(g.name) if g.flippable else g.name
        aliases[same] = Alias(same, grid_member(g), f"{g.formula}: a positive multiple of {grid_member(g)}")
    for name, canon, relation in SHIFTED:
        aliases[name] = Alias(name, canon, f"{relation}: a constant shift of {canon}")
    return reg, aliases


SCORES, ALIASES = _registry()


def canonical(name: str) -> str:
    """The registered score that ``name`` repeats (itself when it is not an alias)."""
    if name not in SCORES:
        raise unknown_name("score", name, SCORES)
    while name in ALIASES:
        name = ALIASES[name].canonical
    return name


def grid_names(u: Iterable[str] | None = None, v: Iterable[str] | None = None) -> list[str]:
    """Names of the U·V grid members for the given U and V terms (default: all)."""
    us = list(U_TERMS) if u is None else list(u)
    vs = list(V_TERMS) if v is None else list(v)
    for n in us:
        if n not in U_TERMS:
            raise unknown_name("U term", n, U_TERMS)
    for n in vs:
        if n not in V_TERMS:
            raise unknown_name("V term", n, V_TERMS)
    return [f"{a}*{b}" for a in us for b in vs if not (a == "one" and b == "one")]


def _oriented(spec: ScoreSpec, o: Outputs) -> torch.Tensor:
    s = spec.fn(o)
    s = s if spec.sign > 0 else -s
    if not bool(torch.isfinite(s.sum())) and not bool(torch.isfinite(s).all()):
        raise OODInputError(f"score {spec.name!r} produced non-finite values; check the inputs' scale")
    return s


def scores(
    names: Iterable[str], features: Any, logits: Any, temperature: float = 1.0
) -> dict[str, torch.Tensor]:
    """Several oriented scores (higher = more in-distribution) from one shared computation."""
    names = list(names)
    for n in names:
        if n not in SCORES:
            raise unknown_name("score", n, SCORES)
    needs_h = any(SCORES[n].needs_features for n in names)
    o = Outputs(features if needs_h else None, logits, temperature)
    return {n: _oriented(SCORES[n], o) for n in names}


def score(name: str, features: Any, logits: Any, temperature: float = 1.0) -> torch.Tensor:
    """One oriented score (higher = more in-distribution); see :data:`SCORES` for the names."""
    return scores([name], features, logits, temperature)[name]
