"""The book's tables: how a Styler is dressed, how a ratio is written, and the display names of
what the chapter *Cost* times (its paths and architectures) and of the metrics.

Methods, OOD sets and groups have theirs in :mod:`ood_lib.findings.labels`; an unknown id is shown as it is.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import numpy as np

from .._checks import OODInputError
from ..findings.labels import MODEL_NAMES

if TYPE_CHECKING:
    import pandas as pd
    from pandas.io.formats.style import Styler

__all__ = ["COST_PATH_LABELS", "METRIC_LABELS", "MODEL_LABELS", "Tables", "bold_best", "book_table", "captioned",
           "column_parts", "cost_path_label", "interval_text", "metric_label", "model_label", "ratio_text"]

METRIC_LABELS = {"auroc": "AUROC (%)", "fpr95": "FPR at 95 % TPR (%)",
                 "aupr_in": "AUPR, ID positive (%)", "aupr_out": "AUPR, OOD positive (%)"}

# the ways of scoring timed by ood_lib.run.cost, as the chapter *Cost* names them
COST_PATH_LABELS = {
    "forward": "forward pass",
    "closed_form": "forward + every closed form",
    "closed_form_scoring_only": "every closed form, cached h",
    "closed_form_per_member": "forward + every closed form, one at a time",
    "closed_form_per_member_scoring_only": "every closed form one at a time, cached h",
    "closed_form_compiled_scoring_only": "every closed form compiled, cached h",
    "vmap_head": "forward + head gradients (vmap)",
    "vmap_head_scoring_only": "head gradients (vmap), cached h",
    "gradnorm_published": "GradNorm as published (loop)",
    "loop_head_only": "head gradient, batch-1 loop",
    "exgrad_loop": "exact ExGrad (loop over C)",
    "exgrad_closed_form": "forward + ExGrad closed form",
    "forward_backward": "forward + backward (batched)",
    "per_layer_all": "all-layer gradients (vmap)",
    "per_layer_hooks": "all-layer gradients (hooks)",
    "per_layer_loop": "all-layer gradients, batch-1 loop",
}
MODEL_LABELS = MODEL_NAMES  # the one map of architecture display names (ood_lib.findings.labels)


def metric_label(metric: str) -> str:
    """The axis label of a metric, with its unit ("auroc" → "AUROC (%)")."""
    return METRIC_LABELS.get(metric, metric)


def cost_path_label(path: str) -> str:
    """The display name of a timed path of :mod:`ood_lib.run.cost` (the id itself when unknown)."""
    return COST_PATH_LABELS.get(path, path)


def model_label(name: str) -> str:
    """The display name of an architecture ("resnet50" → "ResNet-50")."""
    return MODEL_LABELS.get(name, name)


def ratio_text(r: float) -> str:
    """A ratio with three significant digits and no exponent, for tables ("0.00123", "1.54",
    "140", "7,055"); "—" for a missing value."""
    if not np.isfinite(r):
        return "—"
    if r == 0:
        return "0"
    if abs(float(f"{r:.3g}")) >= 100:
        return f"{r:,.0f}"
    return f"{r:#.3g}" if abs(r) >= 1e-3 else f"{r:.1e}"


def interval_text(d: float, lo: float, hi: float, decimals: int = 2) -> str:
    """A difference with its interval, "+1.10 [−0.20, +1.40]": signed, a true minus sign, and no
    line break inside the brackets (the interval may go under the estimate); "" when ``d`` is
    missing. Two decimals by default: whether an interval clears 0 must be readable."""
    if not np.isfinite(d):
        return ""
    f = f"{{:+.{decimals}f}}"
    return f"{f.format(d)} [{f.format(lo)},\u00a0{f.format(hi)}]".replace("-", "−")


def book_table(styler: Styler, caption: str, numbers: bool = True) -> Styler:
    """A pandas Styler dressed as the book's tables are: the theme's table class (borders,
    striped rows), padded cells, ``caption`` above, and with ``numbers`` the cells right-aligned."""
    css = [{"selector": "th, td", "props": "padding: 0.2em 0.6em;"},
           {"selector": "caption", "props": "caption-side: top; text-align: left;"}]
    if numbers:
        css.append({"selector": "td", "props": "text-align: right;"})
    # the index's names would take a header row of their own, empty but for them: left out
    styler = styler.hide(axis="index", names=True).hide(axis="columns", names=True)
    return styler.set_caption(caption).set_table_attributes('class="dataframe"').set_table_styles(css, overwrite=False)


class Tables:
    """Several book tables shown one under the other: a table too wide for the page, split by
    columns (:func:`captioned` with ``columns``). Displays as their HTML; iterable."""

    def __init__(self, parts: "list[Styler]"):
        self.parts = list(parts)

    def __iter__(self):
        return iter(self.parts)

    def __len__(self) -> int:
        return len(self.parts)

    def _repr_html_(self) -> str:
        return "\n".join(p.to_html() for p in self.parts)

    def __repr__(self) -> str:
        return "\n\n".join(f"{p.caption}\n{p.data!r}" for p in self.parts)


def column_parts(columns, most: int) -> list[list]:
    """``columns`` cut into consecutive parts of at most ``most``, each run of pairs of one data set
    (the label before " · ", as in "CIFAR-10 · ResNet-20") kept in one part where it fits."""
    if most < 1:
        raise OODInputError(f"a part holds at least one column, not {most}")
    runs: list[list] = []
    for c in columns:
        key = str(c).split(" · ")[0]
        if runs and str(runs[-1][0]).split(" · ")[0] == key:
            runs[-1].append(c)
        else:
            runs.append([c])
    parts: list[list] = []
    for run in runs:
        for i in range(0, len(run), most):
            chunk = run[i:i + most]
            if parts and len(parts[-1]) + len(chunk) <= most:
                parts[-1] += chunk
            else:
                parts.append(list(chunk))
    return parts


def captioned(table: "pd.DataFrame | Styler", caption: str, fmt: str | None = None, *,
              best: str | None = None, axis: int = 0, columns: int | None = None) -> "Styler | Tables":
    """``table`` (a DataFrame, or a Styler whose styles are kept) as a book table with ``caption``:
    text tables left-aligned, tables of numbers right-aligned and formatted with ``fmt``. ``best``
    ("max" or "min", DataFrames only) sets the best number of each column (``axis=0``) or row
    (``axis=1``) in bold, compared as ``fmt`` shows them, so that a tie on the page is bolded alike.

    ``columns``: at most this many columns per table; a wider table is shown as several
    (:class:`Tables`, captions "… (1 of 2)"), cut by :func:`column_parts` (the index repeated in
    each). Styles are computed on the whole table first, so a row-wise ``best`` still compares
    every column."""
    import copy

    from pandas.io.formats.style import Styler

    if columns is not None:
        styler = captioned(table, caption, fmt, best=best, axis=axis)
        cols = list(styler.data.columns)
        parts = column_parts(cols, columns)
        if len(parts) == 1:
            return styler
        out = []
        for i, part in enumerate(parts, 1):
            st = copy.deepcopy(styler)
            st.hide([c for c in cols if c not in part], axis="columns").set_uuid(f"{styler.uuid}_{i}")
            out.append(st.set_caption(f"{caption} ({i} of {len(parts)})"))
        return Tables(out)
    import pandas as pd

    if best is not None:
        if best not in ("max", "min") or axis not in (0, 1) or isinstance(table, Styler):
            raise OODInputError(f"best must be 'max' or 'min' on a DataFrame, axis 0 or 1; got {best!r}, {axis!r}")
        return bold_best(captioned(table, caption, fmt), best, axis, _shown_decimals(fmt))

    if isinstance(table, Styler):
        numbers = all(pd.api.types.is_numeric_dtype(t) for t in table.data.dtypes)
        return book_table(table, caption, numbers=numbers)
    if not isinstance(table, pd.DataFrame):
        raise OODInputError(f"captioned() takes a DataFrame or a Styler, not {type(table).__name__}")
    numbers = all(pd.api.types.is_numeric_dtype(t) for t in table.dtypes)
    if fmt:
        return book_table(table.style.format(fmt, na_rep="—"), caption, numbers=numbers)
    styler = table.style.format(na_rep="—")
    for col in table.columns:  # floats as rounded where they come from: no trailing zeros added
        if pd.api.types.is_float_dtype(table[col]):
            styler = styler.format(f"{{:.{_decimals(table[col])}f}}", subset=[col], na_rep="—")
    return book_table(styler, caption, numbers=numbers)


def bold_best(styler: Styler, best: str = "max", axis: int = 0, decimals: int | None = None,
              values: "pd.DataFrame | None" = None) -> Styler:
    """``styler`` with the largest (``best="max"``) or smallest number of each numeric column
    (``axis=0``) or row (``axis=1``) in bold, compared after rounding to ``decimals``. ``values``
    (same labels as the styler's data) are the numbers to compare where the cells hold text, such
    as "98.5 ±0.4"."""
    import pandas as pd

    data = styler.data if values is None else values
    cols = [c for c in data.columns if pd.api.types.is_numeric_dtype(data[c])]
    shown = data[cols].astype(float).round(decimals) if decimals is not None else data[cols].astype(float)
    ext = getattr(shown, best)(axis=axis)

    def marks(line: pd.Series) -> list[str]:  # one column (axis 0) or one row (axis 1)
        values = (shown[line.name] if axis == 0 else shown.loc[line.name])[line.index]
        return ["font-weight: bold" if np.isfinite(x) and x == ext[line.name] else "" for x in values]

    return styler.apply(marks, axis=axis, subset=cols)


def _shown_decimals(fmt: str | None) -> int | None:
    """The decimals a format such as "{:.1f}" shows (None when it does not say)."""
    m = re.search(r"\.(\d+)f", fmt or "")
    return int(m.group(1)) if m else None


def _decimals(values, most: int = 3) -> int:
    """The fewest decimals (≤ ``most``) that write every finite value of ``values`` exactly."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    for d in range(most + 1):
        if np.allclose(np.round(v, d), v, rtol=0, atol=1e-9):
            return d
    return most
