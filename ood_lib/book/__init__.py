"""What the book shows: glued numbers, display tables, figures, the reports of several studies.

- :mod:`.glue`: :func:`glue` checks a value before MyST-NB stores it;
- :mod:`.tables`, :mod:`.plots`, :mod:`.layer_plots`, :mod:`.gallery`: tables and figures;
- :mod:`.report`, :mod:`.newer`: tables built from several studies.

The names of :mod:`.glue` are re-exported here (``ood_lib.book.glue``).
"""

from .glue import (  # noqa: F401
    check_glue_value,
    glue,
)

__all__ = [
    "check_glue_value",
    "glue",
]
