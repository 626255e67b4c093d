"""The per-sample quantities every closed-form score is built from: U(h) and V(p).

``h`` (N, D) are the penultimate features and ``f`` (N, C) the logits of a classifier
``f = W h + b``, with ``p = softmax(f / T)``. A U term is a norm of ``h`` alone, a V term a
function of the logits alone; every closed-form score is a product of one of each (chapter
*Gradient scores and their closed forms*).

The U·V grid (chapter *Feature norm × output distribution*) uses only the terms marked ``grid``:
both factors non-negative, oriented "larger = in-distribution", and unchanged when a constant is
added to all logits of an input. The other terms stay because a gradient's closed form or a
baseline needs them; each says in ``reason`` why it is not a grid term.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Callable

import torch

from .._checks import OODInputError, check_features, check_logits, check_temperature, common_dtype, unknown_name


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

    @classmethod
    def from_checked(cls, f: torch.Tensor, h: torch.Tensor | None, temperature: float) -> "Outputs":
        """Outputs of inputs already validated, of one dtype and device (no checks, no host sync:
        the fused scorer of :mod:`ood_lib.scores.fused` builds it, compiled or not)."""
        o = cls.__new__(cls)
        o.f, o.h, o.T, o.C = f, h, temperature, f.shape[1]
        return o

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
        keys = ("maxlogit", "mean", "lse", "msp", "rest", "rest_sq", "pu_l1", "entropy")
        parts: dict[str, list[torch.Tensor]] = {k: [] for k in keys}
        inv_c = 1.0 / self.C
        for fb in self._blocks(self.f):
            zb = fb / self.T if self.T != 1.0 else fb
            lse = torch.logsumexp(zb, dim=1)
            p = torch.softmax(zb, dim=1)
            top = torch.max(p, dim=1)
            parts["maxlogit"].append(fb.amax(dim=1))
            parts["mean"].append(fb.mean(dim=1))
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
    def mean_logit(self) -> torch.Tensor:
        """mean_k f_k."""
        return self._out["mean"]

    @property
    def lse(self) -> torch.Tensor:
        """logsumexp(f / T)."""
        return self._out["lse"]

    @property
    def maxlogit_gap(self) -> torch.Tensor:
        """max_k f_k − mean_k f_k = T·(log(C·max p) + KL(u ‖ p)) ≥ 0 (clamped at 0 against rounding)."""
        return (self.maxlogit - self.mean_logit).clamp_(min=0.0)

    @property
    def lse_gap(self) -> torch.Tensor:
        """T·logsumexp(f / T) − mean_k f_k = T·(log C + KL(u ‖ p)) ≥ T log C."""
        return self.T * self.lse - self.mean_logit

    @property
    def kl_u(self) -> torch.Tensor:
        """KL(p ‖ u) = log C − H(p) ≥ 0 (clamped at 0 against rounding at the uniform prediction)."""
        return (math.log(self.C) - self.entropy).clamp_(min=0.0)

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
    """A feature term U(h) ≥ 0; ``grid``: a row of the U·V grid, else ``reason`` says why not."""

    name: str
    formula: str
    fn: Callable[[Outputs], torch.Tensor]
    grid: bool = True
    reason: str = ""

    @property
    def label(self) -> str:
        """The formula without its annotations, for tables and figures."""
        return self.formula.split(" = ")[0].split(" (")[0]


def _ones(o: Outputs) -> torch.Tensor:
    return torch.ones_like(o.f[:, 0])


def _bias(row: str) -> str:
    return (f"the bias row (gradient w.r.t. (W, b)): a near-duplicate of the {row} row wherever that norm is "
            "large against 1; kept for the closed forms")


U_TERMS: dict[str, UTerm] = {
    u.name: u
    for u in [
        UTerm("one", "1", _ones),
        UTerm("l1", "‖h‖₁", lambda o: o.h_l1),
        UTerm("l1b", "‖h‖₁ + 1 (bias included)", lambda o: o.h_l1 + 1.0, False, _bias("‖h‖₁")),
        UTerm("l2", "‖h‖₂", lambda o: o.h_l2sq.sqrt()),
        UTerm("l2b", "(‖h‖₂² + 1)^½ (bias included)", lambda o: (o.h_l2sq + 1.0).sqrt(), False,
              _bias("‖h‖₂")),
        UTerm("l2sq", "‖h‖₂²", lambda o: o.h_l2sq),
        UTerm("l2sqb", "‖h‖₂² + 1 (bias included)", lambda o: o.h_l2sq + 1.0, False, _bias("‖h‖₂²")),
        UTerm("linf", "‖h‖_∞", lambda o: o.h_linf),
        UTerm("linfb", "max(‖h‖_∞, 1) (bias included)", lambda o: o.h_linf.clamp(min=1.0), False,
              _bias("‖h‖_∞")),
    ]
}


# --- V terms: functions of the logits ----------------------------------------------------
@dataclass(frozen=True)
class VTerm:
    """An output term V(f); ``grid``: a column of the U·V grid (≥ 0, larger = in-distribution,
    shift-invariant), else ``reason`` says why not. ``larger_near_uniform``: the term is largest at
    the uniform prediction — against a feature norm, a mixed orientation."""

    name: str
    formula: str
    fn: Callable[[Outputs], torch.Tensor]
    grid: bool = True
    reason: str = ""
    larger_near_uniform: bool = False

    @property
    def label(self) -> str:
        """The formula without its annotations, for tables and figures."""
        return self.formula.split(" = ")[0].split(" (")[0]


_SHIFT = "changes when a constant is added to all logits (softmax does not); {} is the grid form"

V_TERMS: dict[str, VTerm] = {
    v.name: v
    for v in [
        VTerm("one", "1", _ones),
        VTerm("msp", "max_k p_k (MSP)", lambda o: o.msp),
        VTerm("pu_l1", "‖p − u‖₁ (GradNorm)", lambda o: o.pu_l1),
        VTerm("p_l2sq", "‖p‖₂² = 1 − Σ p(1 − p) (1 − Gini)", lambda o: o.p_sq),
        VTerm("unif_l2sq", "1 − 2/C + ‖p‖₂²", lambda o: 1.0 - 2.0 / o.C + o.p_sq),
        VTerm("kl_u", "KL(p ‖ u) = log C − H(p)", lambda o: o.kl_u),
        VTerm("maxlogit_gap", "max_k f_k − mean_k f_k = T·log(C·max_k p_k) + T·KL(u ‖ p)",
              lambda o: o.maxlogit_gap),
        VTerm("lse_gap", "T·logsumexp(f/T) − mean_k f_k = T·(log C + KL(u ‖ p))", lambda o: o.lse_gap),
        # not grid terms: the closed forms of the gradient scores and the baselines use them
        VTerm("gini", "Σ p(1 − p) = 1 − ‖p‖₂² (Gini impurity; ExGrad, Fisher trace)", lambda o: o.gini, False,
              "larger near uniform: mixed orientation with a feature norm; "
              "1 − Gini = ‖p‖₂² is the grid form", larger_near_uniform=True),
        VTerm("one_minus_msp", "1 − max_k p_k (predicted-label CE)", lambda o: o.one_minus_msp, False,
              "larger near uniform: mixed orientation with a feature norm; max_k p_k is the grid form",
              larger_near_uniform=True),
        VTerm("neg_entropy", "Σ p log p = −H(p)", lambda o: -o.entropy, False,
              "negative; −H = KL(p ‖ u) − log C, and KL(p ‖ u) is the grid form"),
        VTerm("maxlogit", "max_k f_k (MaxLogit)", lambda o: o.maxlogit, False,
              _SHIFT.format("max_k f_k − mean_k f_k")),
        VTerm("lse", "T · logsumexp(f / T) (= −energy)", lambda o: o.T * o.lse, False,
              _SHIFT.format("T·logsumexp(f/T) − mean_k f_k")),
    ]
}

# the grid's rows and columns, in table order
GRID_U: tuple[str, ...] = tuple(n for n, u in U_TERMS.items() if u.grid)
GRID_V: tuple[str, ...] = tuple(n for n, v in V_TERMS.items() if v.grid)


# The bias-included version of a U term: the gradient w.r.t. (W, b) sees h extended by a 1.
BIAS_U = {"l1": "l1b", "l2sq": "l2sqb"}


def with_bias(u: str, bias: bool) -> str:
    """The name of U term ``u``, or of its bias-included form when ``bias``
    (‖h‖₁ → ‖h‖₁ + 1, ‖h‖₂² → ‖h‖₂² + 1)."""
    return BIAS_U.get(u, u) if bias else u


def u_term(name: str, features: Any, bias: bool = False) -> torch.Tensor:
    """The feature-norm term U(h) named ``name`` (see :data:`U_TERMS`); ``bias`` gives its bias row."""
    if name not in U_TERMS:
        raise unknown_name("U term", name, U_TERMS)
    h = check_features(features)
    o = Outputs(h, torch.zeros(h.shape[0], 2, dtype=h.dtype, device=h.device), 1.0)
    return U_TERMS[with_bias(name, bias)].fn(o)


def v_term(name: str, logits: Any, temperature: float = 1.0) -> torch.Tensor:
    """The output term V named ``name`` (see :data:`V_TERMS`), as defined (non-grid terms are not negated)."""
    if name not in V_TERMS:
        raise unknown_name("V term", name, V_TERMS)
    return V_TERMS[name].fn(Outputs(None, logits, temperature))
