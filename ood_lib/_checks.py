"""Input validation shared by every entry point.

Every public function that takes arrays goes through these helpers, so that bad input
(NaN/Inf, empty sets, wrong shapes, too few classes, a bad temperature) fails loudly with an
error that names the problem instead of producing a silent NaN further down.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch


class OODInputError(ValueError):
    """Raised for input that cannot be scored or evaluated; the message names the problem."""


class DataNotFoundError(FileNotFoundError):
    """A data set or file is missing; the message says where it was looked for and how to get it."""


def as_float_tensor(x: Any, name: str, ndim: int | None = None) -> torch.Tensor:
    """Return ``x`` as a floating tensor (float64 kept, every other dtype promoted safely).

    Integer, boolean and half-precision inputs are promoted to float32 (half/bfloat16 would
    overflow in ``exp`` and lose the small differences that the scores depend on). Raises
    :class:`OODInputError` for non-numeric input, wrong dimensionality, empty input, or
    non-finite values.
    """
    if isinstance(x, torch.Tensor):
        t = x.detach()
    else:
        try:
            arr = np.asarray(x)
        except Exception as exc:  # pragma: no cover - numpy raises many types here
            raise OODInputError(f"{name}: cannot be read as an array ({exc})") from exc
        if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
            raise OODInputError(f"{name}: expected a numeric array, got dtype {arr.dtype}")
        t = torch.from_numpy(np.ascontiguousarray(arr))
    if t.is_complex():
        raise OODInputError(f"{name}: complex values are not supported")
    if t.dtype != torch.float64 and t.dtype != torch.float32:
        t = t.to(torch.float32)
    if ndim is not None and t.ndim != ndim:
        raise OODInputError(
            f"{name}: expected a {ndim}-d array, got shape {tuple(t.shape)}"
        )
    if t.numel() == 0 or (t.ndim >= 1 and t.shape[0] == 0):
        raise OODInputError(f"{name}: is empty (shape {tuple(t.shape)})")
    # a finite sum proves every entry finite, without a full-size boolean temporary
    if bool(torch.isfinite(t.sum())):
        return t
    finite = torch.isfinite(t)
    if not bool(finite.all()):
        n_bad = int((~finite).sum())
        kind = "NaN" if bool(torch.isnan(t).any()) else "Inf"
        raise OODInputError(f"{name}: contains {n_bad} non-finite value(s) (e.g. {kind})")
    return t


def check_logits(logits: Any, name: str = "logits") -> torch.Tensor:
    """Validate an (N, C) logit matrix with C >= 2."""
    f = as_float_tensor(logits, name, ndim=2)
    if f.shape[1] < 2:
        raise OODInputError(f"{name}: needs at least 2 classes, got C = {f.shape[1]}")
    return f


def check_features(features: Any, n: int | None = None, name: str = "features") -> torch.Tensor:
    """Validate an (N, D) feature matrix, optionally with a required number of rows."""
    h = as_float_tensor(features, name, ndim=2)
    if n is not None and h.shape[0] != n:
        raise OODInputError(
            f"{name}: has {h.shape[0]} rows but the logits have {n}; they must describe the same samples"
        )
    return h


def check_temperature(temperature: Any) -> float:
    """Validate a temperature: a finite number > 0."""
    try:
        t = float(temperature)
    except (TypeError, ValueError) as exc:
        raise OODInputError(f"temperature must be a number, got {temperature!r}") from exc
    if not math.isfinite(t) or t <= 0:
        raise OODInputError(f"temperature must be finite and > 0, got {temperature!r}")
    return t


EXACT_INT = 2**53  # every integer up to this magnitude is exact in float64


def check_scores(x: Any, name: str) -> np.ndarray:
    """Validate a 1-d score vector and return it as a float64 numpy array.

    Integer scores go to float64 directly (through float32 two integers above 2²⁴ could become
    one tie); beyond 2⁵³, where float64 would merge them too, they are refused."""
    if not isinstance(x, torch.Tensor) and not isinstance(x, np.ndarray):
        try:
            x = np.asarray(x)
        except Exception:  # as_float_tensor reports it
            pass
    kind = x.dtype.kind if isinstance(x, np.ndarray) else None
    if kind in ("i", "u") and ((x > EXACT_INT).any() or (x < -EXACT_INT).any()):
        raise OODInputError(f"{name}: integer scores beyond 2**53 cannot be compared exactly; rescale them")
    if kind in ("i", "u", "b"):
        x = x.astype(np.float64)
    elif isinstance(x, torch.Tensor) and not x.is_floating_point() and not x.is_complex():
        return check_scores(x.detach().cpu().numpy(), name)
    t = as_float_tensor(x, name, ndim=1)
    return t.to(torch.float64).cpu().numpy()


def common_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """float64 if any input is float64, else float32."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def unknown_name(kind: str, name: str, valid: Any) -> OODInputError:
    """An error for an unknown registry name that lists the valid ones."""
    return OODInputError(f"unknown {kind} {name!r}; valid: {', '.join(sorted(valid))}")

def check_max_skipped(max_skipped: float | None) -> None:
    """``max_skipped`` must be a fraction in [0, 1], or None."""
    ok = max_skipped is None or (isinstance(max_skipped, (int, float)) and not isinstance(max_skipped, bool)
                                 and 0 <= max_skipped <= 1)
    if not ok:
        raise OODInputError(f"max_skipped must be a fraction in [0, 1] (or None: no limit), got {max_skipped!r}")
