"""Figures for the book. Each function takes data and returns a matplotlib Figure drawn at
:data:`DPI`; nothing global (no style is set on import). Methods and OOD sets are shown by their
display names (:mod:`ood_lib.findings.labels`, :mod:`ood_lib.book.tables`), never by their ids.

Sizes are chosen for a content column of about 700 px: a figure about 6.5 in wide is shown at
roughly 0.7 of its 150-dpi size, so a 9 pt label reads at about 12 px.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Sequence

import numpy as np
import pandas as pd
import torch

from .._checks import OODInputError
from ..findings.labels import method_label, term_label
from ..scores.closed_forms import GRADNORM_FORM, GRID_U, GRID_V, PREREGISTERED, U_TERMS, V_TERMS, grid_names, v_term
from .tables import cost_path_label, metric_label, model_label

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DPI = 150
# rcParams for a notebook of the book: ``plt.rcParams.update(BOOK_STYLE)`` (figures made
# outside these functions get the same resolution and type size)
BOOK_STYLE = {"figure.dpi": DPI, "savefig.dpi": DPI, "font.size": 9, "axes.titlesize": 9,
              "axes.labelsize": 9, "legend.fontsize": 8}

def _require(df: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise OODInputError(f"the {what} table has no column(s) {', '.join(map(repr, missing))}")


def simplex_points(resolution: int = 60) -> np.ndarray:
    """A triangular grid of probability vectors on the 3-class simplex, strictly inside it."""
    pts = [(i, j, resolution - i - j) for i in range(resolution + 1) for j in range(resolution + 1 - i)]
    p = np.asarray(pts, dtype=np.float64) / resolution
    return 0.998 * p + 0.002 / 3  # keep log p finite at the vertices


def _to_xy(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    corners = np.array([[0.0, 0.0], [1.0, 0.0], [0.5, np.sqrt(3) / 2]])
    xy = p @ corners
    return xy[:, 0], xy[:, 1]


_NOTE = re.compile(r"\s(\([^()]*[A-Za-z]{3}[^()]*\))$")  # a trailing "(GradNorm)", "(1 − Gini)"


def _formula_lines(formula: str, width: int = 34) -> str:
    """A formula on short lines: a trailing note in brackets on its own line, and a new line
    before an "=" where the line would grow past ``width`` characters (never inside a term)."""
    note = _NOTE.search(formula)
    body = formula[: note.start()] if note else formula
    lines: list[str] = []
    for part in body.split(" = "):
        if lines and len(lines[-1]) + 3 + len(part) <= width:
            lines[-1] += " = " + part
        else:
            lines.append(("= " if lines else "") + part)
    return "\n".join(lines + ([note.group(1)] if note else []))


def simplex_figure(v_names: Sequence[str], resolution: int = 60, ncols: int = 3) -> Figure:
    """Each V term drawn over the 3-class probability simplex (Figure 1 of Igoe et al.), as defined
    (never negated): bright = larger. Each title is the term's formula; a term that is largest near
    the uniform prediction says so (for grid terms, bright = scored as in-distribution)."""
    import matplotlib.pyplot as plt  # imported here: importing ood_lib must not load a plotting backend
    import matplotlib.tri as mtri
    from matplotlib.ticker import MaxNLocator

    p = simplex_points(resolution)
    logits = torch.from_numpy(np.log(p))
    tri = mtri.Triangulation(*_to_xy(p))
    nrows = int(np.ceil(len(v_names) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.3 * ncols, 2.35 * nrows), squeeze=False, dpi=DPI)
    for ax, name in zip(axes.flat, v_names):
        v = v_term(name, logits).numpy()  # a clear error for an unknown name
        term = V_TERMS[name]
        m = ax.tricontourf(tri, v, levels=20, cmap="viridis")
        bar = fig.colorbar(m, ax=ax, shrink=0.75, pad=0.02)
        bar.locator = MaxNLocator(4)
        bar.ax.tick_params(labelsize=8)
        note = "larger near uniform" if term.larger_near_uniform else "larger at a vertex"
        ax.set_title(_formula_lines(term_label(term.formula)) + f"\n({note})", fontsize=8.5)
        ax.set_aspect("equal")
        ax.axis("off")
    for ax in list(axes.flat)[len(v_names):]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def _column_label(formula: str, width: int = 12) -> str:
    """A long formula on two lines, broken before its last " − " or " + " (never inside a term)."""
    return formula if len(formula) <= width else re.sub(r" ([−+]) (?!.* [−+] )", r"\n\1 ", formula)


def grid_heatmap(df: pd.DataFrame, metric: str = "auroc", ood: str = "mean") -> Figure:
    """The U·V grid as a heatmap of one metric: rows U (:data:`~ood_lib.scores.GRID_U`), columns V
    (:data:`~ood_lib.scores.GRID_V`), each labelled by its formula; GradNorm's form (red) and the
    pre-registered member (white, dashed) are outlined and named by formula in the legend.

    ``df`` is one benchmark's results table (columns ``method``, ``ood``, ``metric``, …, as
    :func:`ood_lib.run.evaluate.run_benchmark` returns it); ``ood`` picks the row per method (a set,
    ``"near"``, ``"far"`` or ``"mean"``). Members missing from ``df`` stay blank, as does 1·1.
    """
    import matplotlib.pyplot as plt  # imported here: importing ood_lib must not load a plotting backend
    import seaborn as sns
    from matplotlib.legend_handler import HandlerTuple
    from matplotlib.patches import Patch, Rectangle

    _require(df, ("method", "ood", metric), "results")
    d = df[df.method.isin(grid_names()) & (df.ood == ood)]
    if d.empty:
        raise OODInputError(f"no U·V grid member in the results table for ood={ood!r}")
    if d.method.duplicated().any():
        raise OODInputError(f"several rows per grid member for ood={ood!r}: pass one benchmark's table")
    values = d.set_index("method")[metric]
    table = pd.DataFrame([[values.get(f"{u}*{v}", np.nan) for v in GRID_V] for u in GRID_U],
                         index=[term_label(U_TERMS[u].label) for u in GRID_U],
                         columns=[_column_label(term_label(V_TERMS[v].label)) for v in GRID_V])
    # sized to be shown near 1:1 in the book's text column (about 7 in at 150 dpi)
    fig, ax = plt.subplots(figsize=(1.4 + 0.77 * len(GRID_V), 1.5 + 0.42 * len(GRID_U)), dpi=DPI)
    sns.heatmap(table, annot=True, fmt=".1f", cmap="viridis_r" if metric == "fpr95" else "viridis", ax=ax,
                annot_kws={"fontsize": 8}, cbar_kws={"label": metric_label(metric), "pad": 0.02})
    outlines = ((GRADNORM_FORM, "tab:red", "-", f"GradNorm's form: {method_label(GRADNORM_FORM)}"),
                (PREREGISTERED, "white", "--", f"pre-registered member: {method_label(PREREGISTERED)}"))
    handles, texts = [], []
    for member, colour, style, text in outlines:
        u, v = member.split("*")
        layers = (("black", "-", 4.0), (colour, style, 2.5))  # a black rim under the colour: visible on any cell
        for edge, line, width in layers:
            ax.add_patch(Rectangle((GRID_V.index(v) + 0.04, GRID_U.index(u) + 0.04), 0.92, 0.92, fill=False,
                                   edgecolor=edge, linestyle=line, linewidth=width))
        handles.append(tuple(Patch(facecolor="0.45" if i == 0 else "none", edgecolor=e, linestyle=ls, linewidth=w - 1)
                             for i, (e, ls, w) in enumerate(layers)))
        texts.append(text)
    ax.legend(handles, texts, handler_map={tuple: HandlerTuple(ndivide=1)}, loc="lower center",
              bbox_to_anchor=(0.5, 1.01), ncol=2, fontsize=8, frameon=False, handlelength=2.5, handleheight=1.4)
    ax.set_xlabel("V (output term; larger = ID)")
    ax.set_ylabel("U (feature term)")
    ax.tick_params(axis="x", labelrotation=0, labelsize=7.5)
    ax.tick_params(axis="y", labelrotation=0, labelsize=7.5)
    fig.tight_layout()
    return fig


def _plain_log_ticks(axis) -> None:
    """Ticks at 1, 2, 3 and 5 times each power of ten, as plain numbers (200, not 2×10²)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 3.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def _bins(a: np.ndarray, log: bool, n: int = 40) -> np.ndarray:
    lo, hi = float(a.min()), float(a.max())
    if hi <= lo:
        hi = lo * 1.01 + 1e-12 if log else lo + 1.0
    return np.geomspace(lo, hi, n + 1) if log else np.linspace(lo, hi, n + 1)


def joint_uv_figure(u_id, v_id, u_ood, v_ood, ood_name: str, u_label: str, v_label: str, *,
                    u_log: bool = True, v_log: bool = True, id_name: str = "ID test") -> Figure:
    """(U, V) of the ID test images against one OOD set: a scatter with the histogram of each
    coordinate on its side (each set's bars sum to 1, so sets of different sizes compare).

    ``u_log``/``v_log`` put an axis on a log scale (its values must then be positive)."""
    import matplotlib.pyplot as plt  # imported here: importing ood_lib must not load a plotting backend
    from matplotlib.lines import Line2D

    sets = [(id_name, "tab:blue", np.asarray(u_id, float), np.asarray(v_id, float)),
            (ood_name, "tab:orange", np.asarray(u_ood, float), np.asarray(v_ood, float))]
    for name, _, u, v in sets:
        if len(u) != len(v) or len(u) == 0:
            raise OODInputError(f"{name}: U and V need the same, non-zero length (got {len(u)} and {len(v)})")
        for vals, log, axis in ((u, u_log, "U"), (v, v_log, "V")):
            if not np.isfinite(vals).all() or (log and (vals <= 0).any()):
                raise OODInputError(f"{name}: {axis} must be finite{' and positive on a log axis' if log else ''}")
    fig = plt.figure(figsize=(6.2, 5.0), dpi=DPI)
    gs = fig.add_gridspec(2, 2, width_ratios=(4, 1), height_ratios=(1, 4), wspace=0.05, hspace=0.05,
                          left=0.12, right=0.97, bottom=0.11, top=0.97)
    ax = fig.add_subplot(gs[1, 0])
    top = fig.add_subplot(gs[0, 0], sharex=ax)
    side = fig.add_subplot(gs[1, 1], sharey=ax)
    key = fig.add_subplot(gs[0, 1])
    key.axis("off")
    u_bins = _bins(np.concatenate([s[2] for s in sets]), u_log)
    v_bins = _bins(np.concatenate([s[3] for s in sets]), v_log)
    handles = []
    for name, colour, u, v in sets:
        ax.scatter(u, v, s=5, alpha=0.35, color=colour, linewidths=0, rasterized=True)
        w = np.full(len(u), 1.0 / len(u))
        for a, vals, bins, orient in ((top, u, u_bins, "vertical"), (side, v, v_bins, "horizontal")):
            a.hist(vals, bins=bins, weights=w, histtype="stepfilled", alpha=0.3, color=colour, orientation=orient)
            a.hist(vals, bins=bins, weights=w, histtype="step", color=colour, orientation=orient, lw=1)
        handles.append(Line2D([], [], ls="", marker="o", color=colour, label=f"{name}\n(n = {len(u):,})"))
    if u_log:
        ax.set_xscale("log")
        _plain_log_ticks(ax.xaxis)
    if v_log:
        ax.set_yscale("log")
        _plain_log_ticks(ax.yaxis)
    ax.set_xlabel(u_label + (" (log scale)" if u_log else ""))
    ax.set_ylabel(v_label + (" (log scale)" if v_log else ""))
    for a, hide in ((top, "x"), (side, "y")):  # the margins share the main axes: no second set of labels
        a.tick_params(axis=hide, which="both", labelbottom=False, labelleft=False)
        a.tick_params(axis="y" if hide == "x" else "x", which="both", left=False, bottom=False,
                      labelleft=False, labelbottom=False)
        for spine in ("top", "right", "left" if hide == "x" else "bottom"):
            a.spines[spine].set_visible(False)
    key.legend(handles=handles, loc="center", frameon=False, fontsize=8, handletextpad=0.3, borderaxespad=0)
    return fig



def _times_text(v: float, _pos=None) -> str:
    """A ratio as a tick label: "0.1×", "1×", "100×"; else powers of ten as "10⁴×"."""
    e = np.log10(v) if v > 0 else np.nan
    if np.isfinite(e) and np.isclose(e, round(e)) and not -1 <= round(e) <= 2:
        return "10" + str(int(round(e))).translate(str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")) + "×"
    return f"{v:g}×"


def _log_times_axis(ax, extent: np.ndarray, n_panels: int) -> None:
    """A log x axis over ``extent`` with at most a few labels per panel (one of them 1×), a minor
    mark at every decade, and half a decade beyond the outer labels so they never meet the next panel's."""
    from matplotlib.ticker import NullFormatter

    ax.set_xscale("log")
    lo, hi = np.floor(np.log10(extent.min())), np.ceil(np.log10(extent.max()))
    most = {1: 9, 2: 6}.get(n_panels, 4)
    step = max(1.0, np.ceil((hi - lo) / (most - 0.5)))
    ticks = step * np.arange(np.ceil(lo / step), np.floor(hi / step) + 1)
    ax.set_xticks(10.0 ** ticks)
    ax.set_xticks(10.0 ** np.arange(lo, hi + 1), minor=True)
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlim(10.0 ** min(lo, ticks[0] - 0.5), 10.0 ** max(hi, ticks[-1] + 0.5))


def cost_figure(df: pd.DataFrame, panel: str | None = None) -> Figure:
    """Time per image of each way of scoring ÷ the batched forward pass of the same model: one
    row of bars per path, one bar per model, each drawn from the line at 1× to its ratio, with
    the range over repeats (``ms_min``–``ms_max`` ÷ the forward pass's median) where given. Log
    scale when the ratios span more than a factor 20. ``panel``: a column whose values get a
    panel each (e.g. CPU vs GPU); the panels share both axes (chapter *Cost*)."""
    import matplotlib.pyplot as plt  # imported here: importing ood_lib must not load a plotting backend
    from matplotlib.ticker import FuncFormatter

    _require(df, ("model", "path", "ratio_to_forward", "ms_per_image") + ((panel,) if panel else ()), "cost")
    groups = list(df.groupby(panel, sort=False)) if panel else [("", df)]
    paths = list(dict.fromkeys(df.path))
    models = list(dict.fromkeys(df.model))
    r = df.ratio_to_forward.to_numpy(float)
    if not (np.isfinite(r) & (r > 0)).all():
        raise OODInputError("every ratio_to_forward must be finite and positive")
    log = r.max() / r.min() > 20
    extent = [r]  # the axis covers the whiskers too
    if {"ms_min", "ms_max"} <= set(df.columns):
        for _, g in groups:
            fwd = g[g.path == "forward"].set_index("model").ms_per_image
            scale = g.model.map(fwd).to_numpy(float)
            extent += [g.ms_min.to_numpy(float) / scale, g.ms_max.to_numpy(float) / scale]
    extent = np.concatenate(extent)
    extent = extent[np.isfinite(extent) & (extent > 0)]
    fig, axes = plt.subplots(1, len(groups), figsize=(6.4, 0.9 + 0.16 * len(paths) * max(2, len(models))),
                             sharex=True, sharey=True, squeeze=False, dpi=DPI, layout="constrained")
    height = 0.8 / len(models)
    for ax, (name, g) in zip(axes[0], groups):
        for j, m in enumerate(models):
            rows = g[g.model == m].set_index("path").reindex(paths)
            y = np.arange(len(paths)) - 0.4 + (j + 0.5) * height
            ratio = rows.ratio_to_forward.to_numpy(float)
            # each bar runs from 1× to its ratio: right of the line slower than the forward pass
            ax.barh(y, ratio - 1.0, height, left=1.0, color=f"C{j}", label=model_label(m))
            if {"ms_min", "ms_max"} <= set(rows.columns) and "forward" in rows.index:
                fwd = float(rows.loc["forward", "ms_per_image"])
                lo, hi = rows.ms_min.to_numpy(float) / fwd, rows.ms_max.to_numpy(float) / fwd
                ok = np.isfinite(ratio) & np.isfinite(lo) & np.isfinite(hi)
                ax.errorbar(ratio[ok], y[ok], xerr=[np.clip(ratio[ok] - lo[ok], 0, None),
                                                   np.clip(hi[ok] - ratio[ok], 0, None)],
                            fmt="none", ecolor="black", elinewidth=0.7, capsize=1.5)
        ax.axvline(1.0, color="black", lw=1, ls="--")
        if log:
            _log_times_axis(ax, extent, len(groups))
        ax.xaxis.set_major_formatter(FuncFormatter(_times_text))
        ax.set_title(str(name), fontsize=9)
        ax.spines[["top", "right"]].set_visible(False)
        ax.tick_params(axis="x", labelsize=8)
    axes[0, 0].set_yticks(np.arange(len(paths)), [cost_path_label(p) for p in paths], fontsize=9)
    axes[0, 0].invert_yaxis()
    fig.supxlabel("time per image ÷ forward pass at the same batch size" + (" (log scale)" if log else "")
                  + "; dashed: 1×", fontsize=9)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside upper center", ncol=len(models), frameon=False, fontsize=9)
    return fig


def placeholder(text: str) -> Figure:
    """A small figure that says why the figure a page expects is not there (e.g. a benchmark that
    is not part of this run), so that every figure a page pastes exists."""
    import matplotlib.pyplot as plt  # imported here: importing ood_lib must not load a plotting backend

    fig, ax = plt.subplots(figsize=(6, 1.2), dpi=DPI)
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=10, color="0.3")
    return fig
