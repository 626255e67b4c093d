"""Every closed-form score from one pass: each member is a row of one broadcast product.

A closed-form score is ``s = c · U(h) · V(p)`` (chapter *Gradient scores and their closed
forms*): a constant ``c`` (which carries the sign of a flipped reading, and is 1 for the U·V grid
and the baselines), one U term and one V term. All U terms come from three statistics of ``h``
(‖h‖₁, ‖h‖₂², ‖h‖_∞) and all V terms from one pass over the logits (:class:`Outputs`). So the
whole family is:

    U = stack of every U term        (k_u, N)
    V = stack of every V term        (k_v, N)
    S = (c[:, None] · U[u]) · V[v]   (M, N), one row per member

The number of operator calls does not depend on the number of members M, and one finiteness check
covers them all (chapter *Cost*). The products are taken in the order of the per-member formula
``(c · U) · V`` and ``c = ±1`` for grid members and baselines is exact, so every row equals the
per-member result bit for bit; a negated ``c`` is exact too (round-to-nearest is symmetric).
"""

from __future__ import annotations

import warnings
from typing import Callable, Sequence

import torch

from .._checks import OODInputError
from .terms import U_TERMS, V_TERMS, Outputs

U_ORDER: tuple[str, ...] = tuple(U_TERMS)
V_ORDER: tuple[str, ...] = tuple(V_TERMS)
U_INDEX = {n: i for i, n in enumerate(U_ORDER)}
V_INDEX = {n: i for i, n in enumerate(V_ORDER)}
# without features U is the single row U = 1, so "one" must be row 0 of both layouts
assert U_ORDER[0] == "one"


def term_stacks(o: Outputs, features: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(k_u, N) every U term (the row U = 1 alone when not ``features``) and (k_v, N) every V term,
    each computed by its own definition from the statistics ``o`` holds once."""
    us = [U_TERMS[n].fn(o) for n in U_ORDER] if features else [U_TERMS["one"].fn(o)]
    return torch.stack(us), torch.stack([V_TERMS[n].fn(o) for n in V_ORDER])


def combine(u: torch.Tensor, v: torch.Tensor, coef: torch.Tensor, ui: torch.Tensor,
            vi: torch.Tensor) -> torch.Tensor:
    """S[m] = (c_m · U[ui_m]) · V[vi_m]: every member at once, in the per-member order of products."""
    return (coef[:, None] * u.index_select(0, ui)) * v.index_select(0, vi)


def matrix(f: torch.Tensor, h: torch.Tensor | None, temperature: float, coef: torch.Tensor, ui: torch.Tensor,
           vi: torch.Tensor) -> torch.Tensor:
    """The (M, N) scores of validated logits ``f`` and features ``h`` (same dtype and device)."""
    o = Outputs.from_checked(f, h, temperature)
    u, v = term_stacks(o, h is not None)
    return combine(u, v, coef, ui, vi)


def check_finite(s: torch.Tensor, names: Sequence[str]) -> None:
    """One check for the whole (M, N) result (one host sync when it passes); names the members
    with a non-finite value when it fails."""
    if bool(torch.isfinite(s.sum())) or bool(torch.isfinite(s).all()):
        return
    bad = [n for n, ok in zip(names, torch.isfinite(s).all(dim=1).tolist()) if not ok]
    what = f"score {bad[0]!r}" if len(bad) == 1 else "scores " + ", ".join(map(repr, bad))
    raise OODInputError(f"{what} produced non-finite values; check the inputs' scale")


_COMPILED: dict[str, Callable[..., torch.Tensor]] = {}


def compiled_matrix() -> Callable[..., torch.Tensor]:
    """:func:`matrix` through ``torch.compile`` (built on first use, never at import)."""
    if "matrix" not in _COMPILED:
        _COMPILED["matrix"] = torch.compile(matrix, dynamic=False)
    return _COMPILED["matrix"]


def run_matrix(args: tuple, compile: bool) -> torch.Tensor:
    """:func:`matrix` (``compile``: compiled; equal to the eager result to rounding, not bit for
    bit, since the compiler may fuse and reorder). A compile that fails warns and falls back to
    the eager result."""
    if compile:
        try:
            return compiled_matrix()(*args)
        except Exception as exc:  # noqa: BLE001 - any compiler failure falls back to eager
            warnings.warn(f"torch.compile of the fused scorer failed ({type(exc).__name__}: {exc}); "
                          "scoring eagerly instead", RuntimeWarning, stacklevel=3)
    return matrix(*args)
