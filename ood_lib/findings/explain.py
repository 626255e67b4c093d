"""When does the feature norm help an output score? (chapter *Feature norm × output distribution*).

A closed-form gradient score is a product U·V of a feature term U(h) ≥ 0 (here U = ‖h‖₁) and an
output term V(p) ≥ 0 (e.g. max_k p_k), both oriented larger = in-distribution. Whether the
product beats V alone is an empirical question per benchmark × model. :func:`norm_effect` tests
*multiplying V by U helps exactly when U separates ID from OOD*: sign(AUROC(U) − 50), or
sign(AUROC(U) − AUROC(V)), against sign(AUROC(U·V) − AUROC(V)), set by set.

Inputs are plain arrays in the shape :func:`ood_lib.findings.analysis.set_scores` returns,
``s[set][name]`` with set ``"id_test"`` and each OOD set, where ``name`` is any key the caller
chooses for the raw (non-negative, larger = ID) U, V and, optionally, U·V values. Every output is
a small table (CSV-ready) from which the figures are drawn, so a book can draw them without the
samples.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping

import numpy as np
import pandas as pd
from scipy import stats

from .._checks import OODInputError, check_scores
from ..stats.metrics import auroc

if TYPE_CHECKING:
    from matplotlib.figure import Figure

ID = "id_test"
GROUPS = ("near", "far", "covariate")  # the OOD groups of ood_lib.data.benchmarks
FACTOR_COLUMNS = ("auroc_u", "auroc_v", "auroc_uv", "uv_minus_v")


def _sets(s: Mapping[str, Mapping[str, np.ndarray]], names: list[str], nonneg: list[str]) -> dict:
    """Validated ``{set: {name: float64 array}}``: ``id_test`` present, names present, finite,
    equal lengths within a set, ``nonneg`` names ≥ 0."""
    if ID not in s or len(s) < 2:
        raise OODInputError(f"scores: need {ID!r} and at least one OOD set (got {', '.join(map(repr, s)) or 'none'})")
    out = {}
    for key, per in s.items():
        missing = [n for n in names if n not in per]
        if missing:
            raise OODInputError(f"set {key!r}: no values named {', '.join(map(repr, missing))} "
                                f"(has {', '.join(map(repr, per)) or 'none'})")
        out[key] = {n: check_scores(per[n], f"{key}/{n}") for n in names}
        lengths = {n: len(a) for n, a in out[key].items()}
        if len(set(lengths.values())) > 1:
            raise OODInputError(f"set {key!r}: values of different lengths {lengths}")
        for n in nonneg:
            if (out[key][n] < 0).any():
                raise OODInputError(f"set {key!r}: {n!r} has {int((out[key][n] < 0).sum())} negative value(s); "
                                    "U and V must be non-negative (larger = in-distribution)")
    return out


def _rank_corr(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman correlation (NaN when either side is constant)."""
    return float(stats.spearmanr(a, b).statistic) if np.ptp(a) > 0 and np.ptp(b) > 0 else float("nan")


def factor_table(s: Mapping[str, Mapping[str, np.ndarray]], groups: Mapping[str, str], u: str, v: str,
                 uv: str | None = None) -> pd.DataFrame:
    """One row per OOD set: AUROC (percent, ID positive) of U, V and U·V; ``uv_minus_v`` and
    ``uv_minus_u`` (points); median U on ID and on the set and ``median_u_ratio`` = set / ID; the
    Spearman correlation of log U and log V on ID and on the set (ranks: equal to that of U and V).

    ``uv`` names given product values (e.g. a gradient score); by default U·V is computed.
    ``groups`` maps every OOD set to "near" or "far".
    """
    names = [u, v] + ([uv] if uv is not None else [])
    d = _sets(s, names, nonneg=[u, v])
    for key in d:
        if key != ID and groups.get(key) not in GROUPS:
            raise OODInputError(f"groups: set {key!r} needs one of {GROUPS}, got {groups.get(key)!r}")
    prod = {k: (a[uv] if uv is not None else a[u] * a[v]) for k, a in d.items()}
    idu, idv = d[ID][u], d[ID][v]
    med_id = float(np.median(idu))
    rows = []
    for key, a in d.items():
        if key == ID:
            continue
        au, av, auv = auroc(idu, a[u]), auroc(idv, a[v]), auroc(prod[ID], prod[key])
        med = float(np.median(a[u]))
        rows.append({
            "ood": key, "group": groups[key], "n_id": len(idu), "n_ood": len(a[u]),
            "auroc_u": au, "auroc_v": av, "auroc_uv": auv, "uv_minus_v": auv - av, "uv_minus_u": auv - au,
            "median_u_id": med_id, "median_u_ood": med, "median_u_ratio": med / med_id if med_id > 0 else float("nan"),
            "spearman_id": _rank_corr(idu, idv), "spearman_ood": _rank_corr(a[u], a[v]),
        })
    return pd.DataFrame(rows)


def norm_effect(table: pd.DataFrame, against: str = "chance") -> dict:
    """Test "U·V beats V exactly where U separates" over the rows of :func:`factor_table`.

    The predictor is x = AUROC(U) − 50 (``against="chance"``: U points the ID-larger way) or
    x = AUROC(U) − AUROC(V) (``against="v"``: U alone separates better than V alone); the outcome
    is y = AUROC(U·V) − AUROC(V). Returns ``n_sets``; ``n_helps`` (y > 0); ``n_predicted`` (x > 0);
    ``n_agree`` (sign x = sign y); and ``spearman``, the rank correlation of x and y across rows —
    None, with ``reason`` saying why, for fewer than 3 rows or a constant column.
    """
    if against not in ("chance", "v"):
        raise OODInputError(f"against must be 'chance' or 'v', got {against!r}")
    missing = [c for c in FACTOR_COLUMNS if c not in table.columns]
    if missing:
        raise OODInputError(f"table: missing column(s) {', '.join(missing)} (use factor_table)")
    x = table["auroc_u"].to_numpy(float) - (50.0 if against == "chance" else table["auroc_v"].to_numpy(float))
    y = table["uv_minus_v"].to_numpy(float)
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise OODInputError("table: non-finite AUROC values")
    out = {"against": against, "n_sets": len(x), "n_helps": int((y > 0).sum()), "n_predicted": int((x > 0).sum()),
           "n_agree": int((np.sign(x) == np.sign(y)).sum()), "spearman": None, "reason": None}
    if len(x) < 3:
        out["reason"] = f"only {len(x)} set(s); a rank correlation needs at least 3"
    elif np.ptp(x) == 0 or np.ptp(y) == 0:
        out["reason"] = "the predictor or AUROC(U·V) − AUROC(V) is the same on every set"
    else:
        out["spearman"] = float(stats.spearmanr(x, y).statistic)
    return out


def _values(values: Mapping[str, np.ndarray], what: str, log: bool) -> dict[str, np.ndarray]:
    if not values:
        raise OODInputError(f"{what}: no sets given")
    out = {k: check_scores(a, f"{what}/{k}") for k, a in values.items()}
    if log:
        for k, a in out.items():
            if (a <= 0).any():
                raise OODInputError(f"{what}/{k}: {int((a <= 0).sum())} value(s) <= 0 cannot be binned on a log scale")
        out = {k: np.log10(a) for k, a in out.items()}
    return out


def _edges(values: dict[str, np.ndarray], bins: int) -> np.ndarray:
    if not isinstance(bins, (int, np.integer)) or bins < 1:
        raise OODInputError(f"bins must be a positive integer, got {bins!r}")
    return np.histogram_bin_edges(np.concatenate(list(values.values())), bins=int(bins))


def _unscale(e: np.ndarray, log: bool) -> np.ndarray:  # bin edges back in the quantity's units
    return 10.0 ** e if log else e


def histograms(values: Mapping[str, np.ndarray], quantity: str, bins: int = 40, log: bool = False) -> pd.DataFrame:
    """Long table (set, quantity, scale, left, right, count, density) on edges shared by every set,
    spanning the pooled range; with ``log`` the edges are equally spaced in log10 and density is per
    unit of log10 (so the curves read correctly on a log axis). Density = count / (n · width)."""
    x = _values(values, quantity, log)
    e = _edges(x, bins)
    rows = []
    for k, a in x.items():
        c, _ = np.histogram(a, bins=e)
        rows.append(pd.DataFrame({"set": k, "quantity": quantity, "scale": "log10" if log else "linear",
                                  "left": _unscale(e[:-1], log), "right": _unscale(e[1:], log),
                                  "count": c, "density": c / (len(a) * np.diff(e))}))
    return pd.concat(rows, ignore_index=True)


def _name(names: Mapping[str, str] | None, key: str) -> str:
    return (names or {}).get(key, "ID (test)" if key == ID else key)


def _log_ticks(axis) -> None:
    """Plain numbers (1, 2, 5, 10, 20, …) on a log axis instead of crowded 2×10¹ labels."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
    axis.set_minor_formatter(NullFormatter())


def _colours(n: int) -> list:
    import matplotlib as mpl

    cmap = mpl.colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def distribution_figure(hist: pd.DataFrame, quantity: str, label: str, sets_order: list[str] | None = None,
                        names: Mapping[str, str] | None = None) -> Figure:
    """Overlaid step densities of one quantity from :func:`histograms`: ID filled grey, each OOD set
    a coloured line; a log10 x axis where the histogram was binned in log10."""
    import matplotlib.pyplot as plt  # imported here: importing ood_lib must not load a plotting backend

    d = hist[hist["quantity"] == quantity]
    if d.empty:
        raise OODInputError(f"hist: no rows for quantity {quantity!r}")
    order = [k for k in (sets_order or d["set"].unique()) if k != ID]
    log = (d["scale"] == "log10").all()
    fig, ax = plt.subplots(figsize=(6.4, 3.2), dpi=150, layout="constrained")
    for key, colour in zip([ID] + order, ["0.55"] + _colours(len(order))):
        g = d[d["set"] == key]
        if g.empty:
            raise OODInputError(f"hist: no rows for set {key!r}")
        x = np.r_[g["left"].to_numpy(), g["right"].to_numpy()[-1]]
        y = np.r_[g["density"].to_numpy(), g["density"].to_numpy()[-1]]
        if key == ID:
            ax.fill_between(x, y, step="post", color=colour, alpha=0.5, lw=0, label=_name(names, key))
        else:
            ax.step(x, y, where="post", color=colour, lw=1.3, label=_name(names, key))
    if log:
        ax.set_xscale("log")
        _log_ticks(ax.xaxis)
    ax.set_xlabel(label + (" (log scale)" if log else ""))
    ax.set_ylabel("density per log₁₀ unit" if log else "density")
    ax.set_ylim(bottom=0)
    fig.legend(loc="outside right upper", fontsize=8, frameon=False)
    return fig
