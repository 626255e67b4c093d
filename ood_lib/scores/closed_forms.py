"""Closed-form OOD scores: the U·V grid, the output baselines and the closed forms of the gradient scores.

Everything here is a pure function of the penultimate features ``h`` (N, D) and the logits
``f`` (N, C) of a classifier ``f = W h + b``, with ``p = softmax(f / T)``. No backward pass.
The derivation is in the chapter *Gradient scores and their closed forms*
(``notebooks/01_gradient_closed_forms.py``); the terms are in :mod:`ood_lib.scores.terms`, the gradient
scores' records in :mod:`ood_lib.scores.registry`.

Orientation convention (stated once, applied once, as the sign of :meth:`ScoreSpec.coefficient`):
**higher = more in-distribution**.

Every call scores all the members asked for together (:func:`score_matrix`, :mod:`ood_lib.scores.fused`):
the shared statistics once, each member a row of one broadcast product ``sign · (c · U) · V``,
bit for bit equal to scoring the members one at a time (:func:`per_member_scores`), at a number of
operator calls that does not grow with the number of members (chapter *Cost*).

* The **U·V grid** (family ``"uv"``) is every product of a grid U term (:data:`GRID_U`) and a grid
  V term (:data:`GRID_V`) but 1·1: both factors are non-negative, larger = in-distribution, and
  unchanged when a constant is added to all logits, so every member is scored as it is (sign +1).
  The bias rows of U are left out of the grid (near-duplicates of their bias-free rows), and so
  are the V terms that are negative, larger near uniform or not shift-invariant; each term says why.
* The **baselines** (family ``"baseline"``): MSP, MaxLogit, Energy, as published.
* The **gradient scores** (family ``"gradient"``) follow the published reading, "a larger gradient
  norm means in-distribution". ExGrad, the Fisher trace and the predicted-label CE multiply a
  feature norm (larger = ID) by a V term that is larger near uniform (larger = OOD): they are also
  registered with ``_flipped`` appended, so both readings are evaluated, and neither is a grid member.

Some names are the same detector as another — equal up to a positive factor, an added constant or
a strictly increasing map, hence the same ranking of any inputs (``msp`` is ``one*msp``,
``gradnorm`` is ``l1*pu_l1`` / T, …). :data:`ALIASES` declares each once, and :func:`canonical` maps
a name to the score it repeats, so a count or a ranking of methods can leave aliases out.
MaxLogit and Energy are *not* aliases of their grid forms ``one*maxlogit_gap`` and ``one*lse_gap``:
subtracting the mean logit changes the ranking.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, Iterable

import torch

from . import fused
from .._checks import OODInputError, unknown_name
from .registry import GRADIENT_FORMS, GradientScore, flipped_name, grid_member
from .terms import GRID_U, GRID_V, U_TERMS, V_TERMS, Outputs, UTerm, VTerm, u_term, v_term, with_bias

__all__ = [
    "ALIASES", "GRADIENT_FORMS", "GRADNORM_FORM", "GRID_U", "GRID_V", "PREREGISTERED", "SCORES", "U_TERMS",
    "V_TERMS", "Alias", "Outputs", "ScoreSpec", "canonical", "closed_form", "grid_names", "per_member_scores",
    "score", "score_matrix", "scores", "u_term", "uv_members", "v_term",
]

# the grid member chosen before any result was seen: ‖h‖₁ · max_k p_k
PREREGISTERED = "l1*msp"


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
    sign: int  # the orientation applied to the raw value: +1 except the flipped gradient readings
    fn: Callable[[Outputs], torch.Tensor]  # raw value
    needs_features: bool
    description: str
    u: str = "one"  # raw value = factor(C, T) · U · V (factor 1 when None), as the fused scorer forms it
    v: str = "one"
    factor: Callable[[int, float], float] | None = None

    def coefficient(self, C: int, T: float) -> float:
        """sign · c(C, T): the constant of the oriented score sign · c · U · V."""
        c = 1.0 if self.factor is None else self.factor(C, T)
        return c if self.sign > 0 else -c


@dataclass(frozen=True)
class Alias:
    """``name`` is the same detector as ``canonical``: ``relation`` says how the two scores relate."""

    name: str
    canonical: str
    relation: str


# the output-side baselines: (name, its V term, the grid member it is, if any)
BASELINES = (("msp", "msp", "one*msp"), ("maxlogit", "maxlogit", None), ("energy", "lse", None))

# grid members that repeat another grid member
GRID_ALIASES = (
    ("one*unif_l2sq", "one*p_l2sq", "‖p‖₂² + 1 − 2/C: a constant shift of one*p_l2sq"),
    ("l2sq*one", "l2*one", "‖h‖₂² = (‖h‖₂)²: an increasing map of the non-negative l2*one"),
)


def _uv(u: UTerm, v: VTerm) -> ScoreSpec:
    return ScoreSpec(
        f"{u.name}*{v.name}", "uv", +1,
        lambda o, u=u, v=v: u.fn(o) * v.fn(o), u.name != "one",
        f"{u.formula} · {v.formula}", u.name, v.name,
    )


def _registry() -> tuple[dict[str, ScoreSpec], dict[str, Alias]]:
    reg: dict[str, ScoreSpec] = {}
    aliases: dict[str, Alias] = {}
    for u in GRID_U:
        for v in GRID_V:
            if (u, v) != ("one", "one"):
                s = _uv(U_TERMS[u], V_TERMS[v])
                reg[s.name] = s
    for name, canon, relation in GRID_ALIASES:
        aliases[name] = Alias(name, canon, relation)
    for name, v, alias in BASELINES:
        vt = V_TERMS[v]
        note = "" if alias else f"; not its grid form one*{v}_gap: subtracting the mean logit changes the ranking"
        reg[name] = ScoreSpec(name, "baseline", +1, vt.fn, False, vt.formula + note, v=v)
        if alias:
            aliases[name] = Alias(name, alias, "the same score")
    for g in GRADIENT_FORMS.values():
        fn = lambda o, g=g: _closed_form(o, g, False)  # noqa: E731
        form = {"u": g.u, "v": g.v, "factor": g.factor}
        reg[g.name] = ScoreSpec(g.name, "gradient", g.orientation, fn, True, f"{g.definition} = {g.formula}", **form)
        if g.flippable:
            f = flipped_name(g.name)
            reg[f] = ScoreSpec(f, "gradient", -g.orientation, fn, True,
                               f"−({g.definition}): the reading 'larger gradient = OOD'", **form)
        member = grid_member(g)
        if member is not None:
            aliases[g.name] = Alias(g.name, member, f"{g.formula}: a positive multiple of {member}")
    return reg, aliases


SCORES, ALIASES = _registry()


def canonical(name: str) -> str:
    """The registered score that ``name`` repeats (itself when it is not an alias)."""
    if name not in SCORES:
        raise unknown_name("score", name, SCORES)
    while name in ALIASES:
        name = ALIASES[name].canonical
    return name


# GradNorm's form in the grid: ‖h‖₁ · ‖p − u‖₁
GRADNORM_FORM = canonical("gradnorm")


def _grid_terms(names: Iterable[str] | None, kind: str, grid: tuple[str, ...], terms: dict) -> list[str]:
    out = list(grid) if names is None else list(names)
    for n in out:
        if n not in terms:
            raise unknown_name(kind, n, grid)
        if n not in grid:
            raise OODInputError(f"{kind} {n!r} is not a grid term: {terms[n].reason}")
    return out


def grid_names(u: Iterable[str] | None = None, v: Iterable[str] | None = None) -> list[str]:
    """Names of the U·V grid members for the given grid U and V terms (default: the whole grid,
    :data:`GRID_U` × :data:`GRID_V` without 1·1), rows of U in order."""
    us = _grid_terms(u, "U term", GRID_U, U_TERMS)
    vs = _grid_terms(v, "V term", GRID_V, V_TERMS)
    return [f"{a}*{b}" for a in us for b in vs if not (a == "one" and b == "one")]


def uv_members(exclude_output_only: bool = True, exclude: Iterable[str] = ("l1*pu_l1",)) -> list[str]:
    """The grid members that count as gradient-free U·V members against GradNorm, each once.

    Leaves out aliases of another member, the row U = 1 when ``exclude_output_only`` (those are
    output-only scores: the baselines' kind, with no feature norm) and every member that repeats
    a name of ``exclude`` (default: GradNorm's own form ‖h‖₁·‖p − u‖₁, and so its aliases).
    """
    drop = {canonical(n) for n in exclude}
    return [n for n in grid_names() if canonical(n) == n and n not in drop
            and not (exclude_output_only and n.startswith("one*"))]


def _checked_names(names: Iterable[str]) -> list[str]:
    names = list(names)
    for n in names:
        if n not in SCORES:
            raise unknown_name("score", n, SCORES)
    return names


@lru_cache(maxsize=64)
def _plan(names: tuple[str, ...], C: int, T: float, dtype: torch.dtype,
          device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each member's sign · c, U row and V row, as tensors on ``device`` (made once per member list)."""
    specs = [SCORES[n] for n in names]
    coef = torch.tensor([s.coefficient(C, T) for s in specs], dtype=dtype, device=device)
    ui = torch.tensor([fused.U_INDEX[s.u] for s in specs], dtype=torch.long, device=device)
    vi = torch.tensor([fused.V_INDEX[s.v] for s in specs], dtype=torch.long, device=device)
    return coef, ui, vi


def score_matrix(
    names: Iterable[str], features: Any, logits: Any, temperature: float = 1.0, compile: bool = False
) -> tuple[torch.Tensor, list[str]]:
    """Every named oriented score as a row of one (M, N) tensor, and the names in row order.

    Row m is sign_m · (c_m · U_m(h)) · V_m(p) (chapter *Gradient scores and their closed forms*),
    formed for all members at once from statistics computed once (:mod:`ood_lib.scores.fused`; its cost in
    the chapter *Cost*): equal bit for bit to :func:`per_member_scores`. ``compile=True`` runs the
    scorer through ``torch.compile`` (equal to rounding, not bit for bit; a failed compile warns and
    scores eagerly). Raises :class:`OODInputError` naming every member with a non-finite value.
    """
    names = _checked_names(names)
    needs_h = any(SCORES[n].needs_features for n in names)
    o = Outputs(features if needs_h else None, logits, temperature)
    if needs_h and o.h is None:
        o._need_h()  # the error every score that needs h gives without it
    coef, ui, vi = _plan(tuple(names), o.C, o.T, o.f.dtype, o.f.device)
    s = fused.run_matrix((o.f, o.h, o.T, coef, ui, vi), compile)
    fused.check_finite(s, names)
    return s, names


def scores(
    names: Iterable[str], features: Any, logits: Any, temperature: float = 1.0, compile: bool = False
) -> dict[str, torch.Tensor]:
    """Several oriented scores (higher = more in-distribution) from one fused computation
    (:func:`score_matrix`; each value is a row of its matrix)."""
    s, names = score_matrix(names, features, logits, temperature, compile)
    return dict(zip(names, s.unbind(0)))


def score(name: str, features: Any, logits: Any, temperature: float = 1.0) -> torch.Tensor:
    """One oriented score (higher = more in-distribution); see :data:`SCORES` for the names."""
    return scores([name], features, logits, temperature)[name]


def _oriented(spec: ScoreSpec, o: Outputs) -> torch.Tensor:
    s = spec.fn(o)
    s = s if spec.sign > 0 else -s
    if not bool(torch.isfinite(s.sum())) and not bool(torch.isfinite(s).all()):
        raise OODInputError(f"score {spec.name!r} produced non-finite values; check the inputs' scale")
    return s


def per_member_scores(
    names: Iterable[str], features: Any, logits: Any, temperature: float = 1.0
) -> dict[str, torch.Tensor]:
    """The same scores one member at a time, each its own products and its own finiteness check
    (a host sync per member): the reference :func:`score_matrix` is tested and timed against."""
    names = _checked_names(names)
    needs_h = any(SCORES[n].needs_features for n in names)
    o = Outputs(features if needs_h else None, logits, temperature)
    return {n: _oriented(SCORES[n], o) for n in names}
