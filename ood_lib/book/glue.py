"""Pasting numbers into the book: :func:`glue` checks a value before MyST-NB stores it.

Every number the prose quotes is glued by the notebook that computes it (chapter *Appendix:
environment and execution*). A NaN or an infinity there would be printed as ``nan`` in a sentence;
here it fails the cell instead, inside the kernel, naming the key. MyST-NB is needed only when
:func:`glue` is called (it belongs to the book's dependencies, not the library's).
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

from .._checks import OODInputError


def check_glue_value(name: str, value: Any) -> None:
    """Raise :class:`OODInputError` if ``value`` is None or holds a non-finite number.

    Numbers (Python, NumPy, 0-d or larger tensors and arrays, pandas objects) must be finite;
    strings, figures and other objects pass unchanged.
    """
    if value is None:
        raise OODInputError(f"glue {name!r}: the value is None")
    if isinstance(value, (str, bytes, bool)):
        return
    if isinstance(value, numbers.Number):
        bad = isinstance(value, numbers.Complex) and not all(
            math.isfinite(x) for x in (value.real, value.imag))
    elif hasattr(value, "__array__") or hasattr(value, "to_numpy"):
        a = np.asarray(value.to_numpy() if hasattr(value, "to_numpy") else value)
        bad = a.dtype.kind in "fc" and not np.isfinite(a).all()
    else:
        return
    if bad:
        raise OODInputError(f"glue {name!r}: non-finite value {value!r} (a result the prose would print as nan/inf)")


def glue(name: str, value: Any, display: bool = False) -> None:
    """``myst_nb.glue(name, value, display)`` after :func:`check_glue_value`."""
    check_glue_value(name, value)
    from myst_nb import glue as myst_glue

    myst_glue(name, value, display=display)
