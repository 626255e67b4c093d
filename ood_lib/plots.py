"""Figures for the book. Each function takes data and returns a matplotlib Figure; nothing global
(no style is set on import)."""

from __future__ import annotations

import textwrap
from typing import TYPE_CHECKING, Sequence

import numpy as np
import pandas as pd
import torch

from ._checks import OODInputError
from .scores import GRADNORM_FORM, GRID_U, GRID_V, PREREGISTERED, U_TERMS, V_TERMS, grid_names, v_term

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def simplex_points(resolution: int = 60) -> np.ndarray:
    """A triangular grid of probability vectors on the 3-class simplex, strictly inside it."""
    pts = [
        (i, j, resolution - i - j)
        for i in range(resolution + 1)
        for j in range(resolution + 1 - i)
    ]
    p = np.asarray(pts, dtype=np.float64) / resolution
    p = 0.998 * p + 0.002 / 3  # keep log p finite at the vertices
    return p


def _to_xy(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    corners = np.array([[0.0, 0.0], [1.0, 0.0], [0.5, np.sqrt(3) / 2]])
    xy = p @ corners
    return xy[:, 0], xy[:, 1]


def simplex_figure(v_names: Sequence[str], resolution: int = 60, ncols: int = 3) -> Figure:
    """Each V term drawn over the 3-class probability simplex (Figure 1 of Igoe et al.), as defined
    (never negated): bright = larger. Each title is the term's formula; a term that is largest near
    the uniform prediction says so (for grid terms, bright = scored as in-distribution)."""
    import matplotlib.pyplot as plt  # imported here: importing ood_lib must not load a plotting backend
    import matplotlib.tri as mtri
    p = simplex_points(resolution)
    logits = torch.from_numpy(np.log(p))
    x, y = _to_xy(p)
    tri = mtri.Triangulation(x, y)
    nrows = int(np.ceil(len(v_names) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 3.0 * nrows), squeeze=False)
    for ax, name in zip(axes.flat, v_names):
        v = v_term(name, logits).numpy()  # a clear error for an unknown name
        term = V_TERMS[name]
        m = ax.tricontourf(tri, v, levels=20, cmap="viridis")
        fig.colorbar(m, ax=ax, shrink=0.8)
        note = "larger near uniform" if term.larger_near_uniform else "larger at a vertex"
        ax.set_title("\n".join(textwrap.wrap(term.formula, 36)) + f"\n({note})", fontsize=8)
        ax.set_aspect("equal")
        ax.axis("off")
    for ax in list(axes.flat)[len(v_names):]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def grid_heatmap(df: pd.DataFrame, metric: str = "auroc", ood: str = "mean") -> Figure:
    """The U·V grid as a heatmap of one metric: rows U (:data:`~ood_lib.scores.GRID_U`), columns V
    (:data:`~ood_lib.scores.GRID_V`), each labelled by its formula; GradNorm's form and the
    pre-registered member are outlined.

    ``df`` is one benchmark's results table (columns ``method``, ``ood``, ``metric``, …, as
    :func:`ood_lib.evaluate.run_benchmark` returns it); ``ood`` picks the row per method (a set,
    ``"near"``, ``"far"`` or ``"mean"``). Members missing from ``df`` stay blank, as does 1·1.
    """
    import matplotlib.pyplot as plt  # imported here: importing ood_lib must not load a plotting backend
    import seaborn as sns
    from matplotlib.patches import Patch, Rectangle

    for col in ("method", "ood", metric):
        if col not in df.columns:
            raise OODInputError(f"the results table has no column {col!r}")
    d = df[df.method.isin(grid_names()) & (df.ood == ood)]
    if d.empty:
        raise OODInputError(f"no U·V grid member in the results table for ood={ood!r}")
    if d.method.duplicated().any():
        raise OODInputError(f"several rows per grid member for ood={ood!r}: pass one benchmark's table")
    values = d.set_index("method")[metric]
    table = pd.DataFrame([[values.get(f"{u}*{v}", np.nan) for v in GRID_V] for u in GRID_U],
                         index=[U_TERMS[u].label for u in GRID_U],
                         columns=["\n".join(textwrap.wrap(V_TERMS[v].label, 16)) for v in GRID_V])
    fig, ax = plt.subplots(figsize=(1.6 + 1.05 * len(GRID_V), 1.6 + 0.5 * len(GRID_U)))
    sns.heatmap(table, annot=True, fmt=".1f", cmap="viridis_r" if metric == "fpr95" else "viridis", ax=ax,
                cbar_kws={"label": f"{metric} (%)"})
    outlines = ((GRADNORM_FORM, "tab:red", "-", f"GradNorm's form, ‖h‖₁·‖p − u‖₁ ({GRADNORM_FORM})"),
                (PREREGISTERED, "white", "--", f"pre-registered member, ‖h‖₁·max p ({PREREGISTERED})"))
    handles = []
    for member, colour, style, text in outlines:
        u, v = member.split("*")
        for edge, line, width in (("black", "-", 4.0), (colour, style, 2.5)):  # visible on any cell colour
            ax.add_patch(Rectangle((GRID_V.index(v) + 0.04, GRID_U.index(u) + 0.04), 0.92, 0.92, fill=False,
                                   edgecolor=edge, linestyle=line, linewidth=width))
        handles.append(Patch(facecolor="0.45", edgecolor=colour, linestyle=style, linewidth=2, label=text))
    ax.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, 1.01), ncol=2, fontsize=8, frameon=False,
              handlelength=2.5, handleheight=1.4)
    ax.set_xlabel("V (output term; larger = ID)")
    ax.set_ylabel("U (feature term)")
    ax.tick_params(axis="x", labelrotation=0, labelsize=8)
    ax.tick_params(axis="y", labelrotation=0, labelsize=8)
    fig.tight_layout()
    return fig


def joint_uv_figure(u_id, v_id, u_ood, v_ood, ood_name: str, u_label: str, v_label: str) -> Figure:
    """Scatter and marginal densities of (U, V) for ID vs one OOD set, on log scales."""
    import seaborn as sns

    d = pd.DataFrame({
        u_label: np.r_[u_id, u_ood], v_label: np.r_[v_id, v_ood],
        "set": ["ID"] * len(u_id) + [ood_name] * len(u_ood),
    })
    g = sns.jointplot(data=d, x=u_label, y=v_label, hue="set", kind="scatter", s=8, alpha=0.5,
                      height=4.5, marginal_kws={"common_norm": False})
    g.ax_joint.set_xscale("log")
    g.ax_joint.set_yscale("log")
    return g.figure


def metric_bars(df: pd.DataFrame, methods: Sequence[str], metric: str = "auroc") -> Figure:
    """Grouped bars: one group per OOD set, one bar per method."""
    import matplotlib.pyplot as plt  # imported here: importing ood_lib must not load a plotting backend
    import seaborn as sns

    d = df[df.method.isin(methods)]
    fig, ax = plt.subplots(figsize=(9, 3.4))
    sns.barplot(data=d, x="ood", y=metric, hue="method", hue_order=list(dict.fromkeys(methods)), ax=ax)
    ax.set_ylabel(f"{metric} (%)")
    ax.set_xlabel("")
    lo = max(0.0, float(d[metric].min()) - 5)
    ax.set_ylim(lo, 100 if metric != "fpr95" else None)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    return fig


def cost_figure(df: pd.DataFrame) -> Figure:
    """Median time per image of each way of scoring, per model, log scale."""
    import matplotlib.pyplot as plt  # imported here: importing ood_lib must not load a plotting backend
    import seaborn as sns

    fig, ax = plt.subplots(figsize=(8, 3.6))
    sns.barplot(data=df, y="path", x="ms_per_image", hue="model", ax=ax, orient="h")
    ax.set_xscale("log")
    ax.set_xlabel("median milliseconds per image (log scale)")
    ax.set_ylabel("")
    fig.tight_layout()
    return fig
