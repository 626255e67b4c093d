"""Figures for the book. Each function takes data and returns a matplotlib Figure; nothing global
(no style is set on import)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np
import pandas as pd
import torch

from .scores import V_TERMS, v_term

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
    """Each V term drawn over the 3-class probability simplex (Figure 1 of Igoe et al.), oriented as registered:
    bright = scored as more in-distribution."""
    import matplotlib.pyplot as plt  # imported here: importing ood_lib must not load a plotting backend
    import matplotlib.tri as mtri
    p = simplex_points(resolution)
    logits = torch.from_numpy(np.log(p))
    x, y = _to_xy(p)
    tri = mtri.Triangulation(x, y)
    nrows = int(np.ceil(len(v_names) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 2.9 * nrows), squeeze=False)
    for ax, name in zip(axes.flat, v_names):
        v = V_TERMS[name].sign * v_term(name, logits).numpy()
        m = ax.tricontourf(tri, v, levels=20, cmap="viridis")
        fig.colorbar(m, ax=ax, shrink=0.8)
        sign = "" if V_TERMS[name].sign > 0 else "−"
        ax.set_title(f"{sign}{V_TERMS[name].formula}", fontsize=9)
        ax.set_aspect("equal")
        ax.axis("off")
    for ax in list(axes.flat)[len(v_names):]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def grid_heatmap(df: pd.DataFrame, metric: str = "auroc", ood: str = "mean") -> Figure:
    """U (rows) × V (columns) heatmap of one metric of the U·V grid."""
    import matplotlib.pyplot as plt  # imported here: importing ood_lib must not load a plotting backend
    import seaborn as sns

    d = df[(df.family == "uv") & (df.ood == ood)].copy()
    d[["u", "v"]] = d.method.str.split("*", n=1, expand=True)
    table = d.pivot(index="u", columns="v", values=metric)
    fig, ax = plt.subplots(figsize=(1.0 + 0.75 * table.shape[1], 0.9 + 0.45 * table.shape[0]))
    sns.heatmap(table, annot=True, fmt=".1f", cmap="viridis_r" if metric == "fpr95" else "viridis", ax=ax,
                cbar_kws={"label": f"{metric} (%)"})
    ax.set_xlabel("V(p)")
    ax.set_ylabel("U(h)")
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
