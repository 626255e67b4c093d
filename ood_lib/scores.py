"""Closed-form OOD scores: the U(h)·V(p) family and the closed forms of the gradient scores.

Everything here is a pure function of the penultimate features ``h`` (N, D) and the logits
``f`` (N, C) of a classifier ``f = W h + b``, with ``p = softmax(f / T)``. No backward pass.
The derivation is in the chapter *Gradient scores and their closed forms*
(``notebooks/01_gradient_closed_forms.py``).

Orientation convention (stated once, applied once, in :func:`score`): **higher = more
in-distribution**. Each V term declares a sign: +1 if it is larger for confident (vertex-of-the-
simplex) predictions, -1 if it is larger near the uniform prediction. A U·V product takes its
V's sign; U terms are norms and count as "larger = in-distribution". The gradient scores
follow the convention of the GradNorm paper, "a larger gradient norm means in-distribution",
and each gradient score whose V term points the other way (ExGrad, the Fisher trace, the
predicted-label cross-entropy) is also registered with ``_flipped`` appended, so that both
readings can be evaluated rather than one chosen silently.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Callable, Iterable

import torch

from ._checks import (
    OODInputError,
    check_features,
    check_logits,
    check_temperature,
    common_dtype,
    unknown_name,
)


class Outputs:
    """The quantities every closed-form score is built from, each computed at most once.

    Parameters
    ----------
    features: (N, D) penultimate embeddings ``h`` (may be ``None`` if only V terms are needed).
    logits: (N, C) logits ``f = W h + b``.
    temperature: ``T > 0``; ``p = softmax(f / T)``.
    """

    def __init__(self, features: Any, logits: Any, temperature: float = 1.0) -> None:
        self.f = check_logits(logits)
        self.h = None if features is None else check_features(features, n=self.f.shape[0])
        dtype = common_dtype(self.f, *([] if self.h is None else [self.h]))
        self.f = self.f.to(dtype)
        if self.h is not None:
            self.h = self.h.to(dtype=dtype, device=self.f.device)
        self.T = check_temperature(temperature)
        self.C = self.f.shape[1]

    def _need_h(self) -> torch.Tensor:
        if self.h is None:
            raise OODInputError("this score needs the penultimate features h, but none were given")
        return self.h

    # --- output side -------------------------------------------------------------------
    # Every per-sample statistic of one side (logits or features) is computed in a single pass
    # over row blocks small enough to stay in cache, so a whole grid of scores costs about one
    # read of each array (chapter *Cost*).

    def _blocks(self, t: torch.Tensor):
        rows = max(1, (1 << 19) // max(1, t.shape[1]))  # ~2 MB of float32 per block
        for i in range(0, t.shape[0], rows):
            yield t[i : i + rows]

    @cached_property
    def _out(self) -> dict[str, torch.Tensor]:
        """Per-sample statistics of the output distribution, from one blocked pass over f."""
        keys = ("maxlogit", "lse", "msp", "rest", "rest_sq", "pu_l1", "entropy")
        parts: dict[str, list[torch.Tensor]] = {k: [] for k in keys}
        inv_c = 1.0 / self.C
        for fb in self._blocks(self.f):
            zb = fb / self.T if self.T != 1.0 else fb
            lse = torch.logsumexp(zb, dim=1)
            p = torch.softmax(zb, dim=1)
            top = torch.max(p, dim=1)
            parts["maxlogit"].append(fb.amax(dim=1))
            parts["lse"].append(lse)
            parts["msp"].append(top.values)
            parts["pu_l1"].append((p - inv_c).abs_().sum(dim=1))
            parts["entropy"].append(lse - torch.einsum("nc,nc->n", p, zb))
            # the mass and squared mass of the classes other than the top one, summed from the
            # small probabilities themselves (never as 1 − max p): full relative precision when
            # max p ≈ 1
            p.scatter_(1, top.indices[:, None], 0.0)
            parts["rest"].append(p.sum(dim=1))
            parts["rest_sq"].append(torch.einsum("nc,nc->n", p, p))
        return {k: torch.cat(v) for k, v in parts.items()}

    @property
    def maxlogit(self) -> torch.Tensor:
        return self._out["maxlogit"]

    @property
    def lse(self) -> torch.Tensor:
        """logsumexp(f / T)."""
        return self._out["lse"]

    @property
    def msp(self) -> torch.Tensor:
        return self._out["msp"]

    @property
    def one_minus_msp(self) -> torch.Tensor:
        """1 − max p."""
        return self._out["rest"]

    @property
    def gini(self) -> torch.Tensor:
        """Σ p(1 − p) = Σ_{j≠k*} p_j − Σ_{j≠k*} p_j² + max p · (1 − max p)."""
        o = self._out
        return o["rest"] - o["rest_sq"] + o["msp"] * o["rest"]

    @property
    def p_sq(self) -> torch.Tensor:
        """‖p‖₂²."""
        return self._out["rest_sq"] + self.msp * self.msp

    @property
    def pu_l1(self) -> torch.Tensor:
        """‖p − u‖₁ with u the uniform distribution."""
        return self._out["pu_l1"]

    @property
    def entropy(self) -> torch.Tensor:
        """H(p) = logsumexp(z) − Σ p z (no log of a tiny probability is ever taken)."""
        return self._out["entropy"]

    # --- feature side ------------------------------------------------------------------
    @cached_property
    def _feat(self) -> dict[str, torch.Tensor]:
        """‖h‖₁, ‖h‖₂², ‖h‖_∞ from one blocked pass over h."""
        h = self._need_h()
        parts: dict[str, list[torch.Tensor]] = {"l1": [], "l2sq": [], "linf": []}
        for hb in self._blocks(h):
            a = hb.abs()
            parts["l1"].append(a.sum(dim=1))
            parts["linf"].append(a.amax(dim=1))
            parts["l2sq"].append(torch.einsum("nd,nd->n", hb, hb))
        return {k: torch.cat(v) for k, v in parts.items()}

    @property
    def h_l1(self) -> torch.Tensor:
        return self._feat["l1"]

    @property
    def h_l2sq(self) -> torch.Tensor:
        return self._feat["l2sq"]

    @property
    def h_linf(self) -> torch.Tensor:
        return self._feat["linf"]


# --- U terms: functions of h alone -------------------------------------------------------
@dataclass(frozen=True)
class UTerm:
    name: str
    formula: str
    fn: Callable[[Outputs], torch.Tensor]


def _ones(o: Outputs) -> torch.Tensor:
    return torch.ones_like(o.f[:, 0])


U_TERMS: dict[str, UTerm] = {
    u.name: u
    for u in [
        UTerm("one", "1", _ones),
        UTerm("l1", "‖h‖₁", lambda o: o.h_l1),
        UTerm("l1b", "‖h‖₁ + 1 (bias included)", lambda o: o.h_l1 + 1.0),
        UTerm("l2", "‖h‖₂", lambda o: o.h_l2sq.sqrt()),
        UTerm("l2b", "(‖h‖₂² + 1)^½ (bias included)", lambda o: (o.h_l2sq + 1.0).sqrt()),
        UTerm("l2sq", "‖h‖₂²", lambda o: o.h_l2sq),
        UTerm("l2sqb", "‖h‖₂² + 1 (bias included)", lambda o: o.h_l2sq + 1.0),
        UTerm("linf", "‖h‖_∞", lambda o: o.h_linf),
        UTerm("linfb", "max(‖h‖_∞, 1) (bias included)", lambda o: o.h_linf.clamp(min=1.0)),
    ]
}


# --- V terms: functions of the output distribution ---------------------------------------
@dataclass(frozen=True)
class VTerm:
    name: str
    formula: str
    sign: int  # +1: larger at a vertex of the simplex (confident); -1: larger near uniform
    fn: Callable[[Outputs], torch.Tensor]


V_TERMS: dict[str, VTerm] = {
    v.name: v
    for v in [
        VTerm("one", "1", +1, _ones),
        VTerm("msp", "max_k p_k", +1, lambda o: o.msp),
        VTerm("pu_l1", "‖p − u‖₁ (GradNorm)", +1, lambda o: o.pu_l1),
        VTerm("p_l2sq", "‖p‖₂² = 1 − Σ p(1−p)", +1, lambda o: o.p_sq),
        VTerm("unif_l2sq", "1 − 2/C + ‖p‖₂²", +1, lambda o: 1.0 - 2.0 / o.C + o.p_sq),
        VTerm("neg_entropy", "Σ p log p", +1, lambda o: -o.entropy),
        VTerm("kl_u", "log C − H(p) = KL(p ‖ u)", +1, lambda o: math.log(o.C) - o.entropy),
        VTerm("maxlogit", "max_k f_k", +1, lambda o: o.maxlogit),
        VTerm("lse", "T · logsumexp(f / T) (= −energy)", +1, lambda o: o.T * o.lse),
        VTerm("gini", "Σ p(1 − p) = 1 − ‖p‖₂² (ExGrad)", -1, lambda o: o.gini),
        VTerm("one_minus_msp", "1 − max_k p_k", -1, lambda o: o.one_minus_msp),
    ]
}


# --- closed forms of the last-layer gradient scores --------------------------------------
@dataclass(frozen=True)
class GradientForm:
    name: str
    definition: str
    formula: str
    u: str  # U term (without bias); the bias variant uses the "b" form of the same norm
    v: str  # V term
    factor: Callable[[int, float], float]  # constant c(C, T) in c · U · V
    flippable: bool  # its V term is larger near uniform, so both orientations are registered


GRADIENT_FORMS: dict[str, GradientForm] = {
    g.name: g
    for g in [
        GradientForm(
            "gradnorm", "‖∇_W KL(u ‖ p)‖₁", "‖h‖₁ ‖p − u‖₁ / T", "l1", "pu_l1",
            lambda C, T: 1.0 / T, False,
        ),
        GradientForm(
            "gradnorm_official", "‖∇_W Σ_k −log p_k‖₁ (all-ones target)", "C ‖h‖₁ ‖p − u‖₁ / T",
            "l1", "pu_l1", lambda C, T: C / T, False,
        ),
        GradientForm(
            "exgrad", "E_{Y~p} ‖∇_W CE(f, Y)‖₁", "2 ‖h‖₁ Σ p(1 − p) / T", "l1", "gini",
            lambda C, T: 2.0 / T, True,
        ),
        GradientForm(
            "fisher", "E_{Y~p} ‖∇_W CE(f, Y)‖₂² (trace of the last-layer Fisher)",
            "‖h‖₂² (1 − ‖p‖₂²) / T²", "l2sq", "gini", lambda C, T: 1.0 / T**2, True,
        ),
        GradientForm(
            "unif_l1", "E_{Y~u} ‖∇_W CE(f, Y)‖₁", "2 ‖h‖₁ (C − 1) / (C T)", "l1", "one",
            lambda C, T: 2.0 * (C - 1) / (C * T), False,
        ),
        GradientForm(
            "unif_l2sq", "E_{Y~u} ‖∇_W CE(f, Y)‖₂²", "‖h‖₂² (1 − 2/C + ‖p‖₂²) / T²", "l2sq",
            "unif_l2sq", lambda C, T: 1.0 / T**2, False,
        ),
        GradientForm(
            "ce_pred", "‖∇_W CE(f, argmax p)‖₁", "2 ‖h‖₁ (1 − max p) / T", "l1",
            "one_minus_msp", lambda C, T: 2.0 / T, True,
        ),
    ]
}

# The bias-included version of each U term used by a gradient form.
_BIAS_U = {"l1": "l1b", "l2sq": "l2sqb"}


def u_term(name: str, features: Any, bias: bool = False) -> torch.Tensor:
    """The feature-norm term U(h) named ``name`` (see :data:`U_TERMS`); raw, not oriented."""
    if name not in U_TERMS:
        raise unknown_name("U term", name, U_TERMS)
    h = check_features(features)
    o = Outputs(h, torch.zeros(h.shape[0], 2, dtype=h.dtype), 1.0)
    return U_TERMS[_BIAS_U.get(name, name) if bias else name].fn(o)


def v_term(name: str, logits: Any, temperature: float = 1.0) -> torch.Tensor:
    """The output term V(p) named ``name`` (see :data:`V_TERMS`); raw, not oriented."""
    if name not in V_TERMS:
        raise unknown_name("V term", name, V_TERMS)
    return V_TERMS[name].fn(Outputs(None, logits, temperature))


def _closed_form(o: Outputs, name: str, bias: bool) -> torch.Tensor:
    g = GRADIENT_FORMS[name]
    u = _BIAS_U.get(g.u, g.u) if bias else g.u
    return g.factor(o.C, o.T) * U_TERMS[u].fn(o) * V_TERMS[g.v].fn(o)


def closed_form(
    name: str, features: Any, logits: Any, temperature: float = 1.0, bias: bool = False
) -> torch.Tensor:
    """Closed form c·U(h)·V(p) of the last-layer gradient score ``name`` (raw value).

    ``bias=True`` gives the score of the gradient w.r.t. (W, b) together: ‖h‖₁ becomes
    ‖h‖₁ + 1 and ‖h‖₂² becomes ‖h‖₂² + 1.
    """
    if name not in GRADIENT_FORMS:
        raise unknown_name("gradient score", name, GRADIENT_FORMS)
    return _closed_form(Outputs(features, logits, temperature), name, bias)


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


def _uv(u: UTerm, v: VTerm) -> ScoreSpec:
    return ScoreSpec(
        f"{u.name}*{v.name}", "uv", v.sign,
        lambda o, u=u, v=v: u.fn(o) * v.fn(o), u.name != "one",
        f"{u.formula} · {v.formula}",
    )


def _registry() -> dict[str, ScoreSpec]:
    reg: dict[str, ScoreSpec] = {}
    for u in U_TERMS.values():
        for v in V_TERMS.values():
            if u.name == "one" and v.name == "one":
                continue
            s = _uv(u, v)
            reg[s.name] = s
    for name, v in [("msp", "msp"), ("maxlogit", "maxlogit"), ("energy", "lse")]:
        vt = V_TERMS[v]
        reg[name] = ScoreSpec(name, "baseline", vt.sign, vt.fn, False, vt.formula)
    for g in GRADIENT_FORMS.values():
        fn = lambda o, n=g.name: _closed_form(o, n, False)  # noqa: E731
        reg[g.name] = ScoreSpec(g.name, "gradient", +1, fn, True, f"{g.definition} = {g.formula}")
        if g.flippable:
            reg[g.name + "_flipped"] = ScoreSpec(
                g.name + "_flipped", "gradient", -1, fn, True,
                f"−({g.definition}): the reading 'larger gradient = OOD'",
            )
    return reg


SCORES: dict[str, ScoreSpec] = _registry()


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
