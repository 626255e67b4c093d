"""The verdicts of the rules of December 2026 as the book shows them (chapter *The evaluation*).

Reads the ``verdicts`` table of each :class:`ood_lib.findings.study.Study`
(:mod:`ood_lib.findings.verdicts`): the four-way verdict of every claim per unit, cell and metric,
coloured; the headline counts over units; the inconclusive verdicts with their causes; the per-set
signs; the verdicts the rule of 27 November gave beside the new ones; and the forest figure.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd

from .._checks import OODInputError
from ..data.benchmarks import DECISION_GROUPS
from ..findings.claims import CLAIMS, CONJUNCTION, MARGINS, get_claim
from ..findings.labels import BENCHMARK_NAMES, model_name, short_pair
from ..findings.study import Study
from ..findings.verdicts import SANITY_RUNS, unit_counts

# the colour of each verdict in tables and figures (colour-blind safe: blue, grey, orange, light)
COLOURS = {"better": "#0072b2", "equivalent": "#6c757d", "worse": "#d55e00", "inconclusive": "#c9c9c9"}
# the symbol of each verdict in the grids, so that a grid reads without its colours
SYMBOLS = {"better": "▲", "equivalent": "=", "worse": "▼", "inconclusive": "?"}
LEGEND = ", ".join(f"{mark} {word}" for word, mark in SYMBOLS.items())  # "▲ better, = equivalent, …"
COMPARISONS = [c for c in CLAIMS if c.kind != "identity"] + [CONJUNCTION]
# the grids' columns: first what the factorisation says (claim 4 and its halves, the feature norm
# on MSP), then the comparisons with GradNorm (claim 5, and the GradNorm paper's two)
GRID_ORDER = [get_claim(k) for k in ("product_beats_v", "product_beats_u", "u_and_v_weaker", "norm_helps_msp",
                                     "preregistered_beats_gradnorm", "some_member_beats_gradnorm",
                                     "gradnorm_beats_msp", "gradnorm_beats_energy")]
GRID_ORDER += [c for c in COMPARISONS if c not in GRID_ORDER]  # a claim added later: at the end
CELL_SHORT = {"near": "near", "far-natural": "far nat.", "far-synthetic": "far syn."}
# a unit in one short line, for the answer figure's columns (the model's name where none is given)
UNIT_SHORT = {"mnist": "CNN\nMNIST", "cifar10": "ResNet-20\nCIFAR-10", "cifar10_densenet": "DenseNet\nCIFAR-10",
              "imagenet_lite": "Lite0\nImageNet", "imagenet_lite1": "Lite1\nImageNet", "imagenet_lite2": "Lite2\nImageNet",
              "imagenet_vit": "ViT-Ti\nImageNet"}
OLD_CELLS = {"near": ("near",), "far": ("far-natural", "far-synthetic")}  # the November groups, in December cells


def units(studies: Mapping[str, Study]) -> dict[str, Study]:
    """The studies that are units of evidence (every one but the sanity runs)."""
    return {b: s for b, s in studies.items() if b not in SANITY_RUNS}


def _table(study: Study) -> pd.DataFrame:
    return study["verdicts"]


def counts(studies: Mapping[str, Study], metric: str = "auroc") -> pd.DataFrame:
    """Per claim and cell: units with the cell, units where the claim holds, each verdict's count."""
    return unit_counts({b: _table(s) for b, s in units(studies).items()}, metric)


def count_phrases(studies: Mapping[str, Study], metric: str = "auroc") -> dict[str, str]:
    """Per claim, the counts as a phrase: "1 of 4 units near, 0 of 4 far-natural, 3 of 4 far-synthetic"."""
    out = {}
    for key, t in counts(studies, metric).groupby("claim", sort=False):
        parts = [f"{r.holds} of {r.units}{' units' if i == 0 else ''} {r.group}" for i, r in enumerate(t.itertuples())]
        out[key] = ", ".join(parts)
    return out


def holds_phrases(studies: Mapping[str, Study], metric: str = "auroc") -> dict[str, str]:
    """Per comparison claim and cell, "3 of 7" (units where it holds, of the units with the cell),
    keyed "<claim>_<cell>" with the cell's hyphen an underscore; "—" where no unit has the cell."""
    n = counts(studies, metric).set_index(["claim", "group"])
    return {f"{c.key}_{g.replace('-', '_')}": f"{n.loc[(c.key, g), 'holds']} of {n.loc[(c.key, g), 'units']}"
            if (c.key, g) in n.index else "—" for c in COMPARISONS for g in DECISION_GROUPS}


def reading_phrases(studies: Mapping[str, Study], metric: str = "auroc") -> dict[str, str]:
    """Per comparison claim, the tally over every unit and cell as a heading can say it: "holds in
    all 21 unit × cells", "holds in most: 17 of 21 …" (three quarters or more), "split: 9 of 21 …",
    "mostly not: 3 of 21 …" (a quarter or less), "holds in none of the 21 …"."""
    n = counts(studies, metric)
    out = {}
    for c in COMPARISONS:
        t = n[n.claim == c.key]
        h, total = int(t.holds.sum()), int(t.units.sum())
        if total == 0:
            out[c.key] = "not decided on any unit"
        elif h == total:
            out[c.key] = f"holds in all {total} unit × cells"
        elif h == 0:
            out[c.key] = f"holds in none of the {total} unit × cells"
        else:
            lead = "holds in most" if h >= 0.75 * total else "mostly not" if h <= 0.25 * total else "split"
            out[c.key] = f"{lead}: {h} of {total} unit × cells"
    return out


def decision_facts(studies: Mapping[str, Study]) -> dict[str, object]:
    """How the units were decided, for the text: cells, level, resamples, training seeds, margins."""
    us = units(studies)
    d = next(iter(us.values())).meta["decision"]
    return {"cells": d["cells"], "level": f"{100 - 5 / d['cells']:.2f} %", "decide_boot": f"{d['n_boot']:,}",
            "decide_seeds": max(len(s.meta["decision"]["seeds"]) for s in us.values()),
            "margin_auroc": f"{MARGINS['auroc']:g}", "margin_fpr": f"{MARGINS['fpr95']:g}"}


def identity_phrases(studies: Mapping[str, Study]) -> dict[str, str]:
    """Per identity claim: "on 4 of 4 models" (the models where it was checked)."""
    out = {}
    for c in CLAIMS:
        if c.kind == "identity":
            held = [_table(s).set_index("claim").loc[c.key, "verdict"] for s in units(studies).values()]
            out[c.key] = f"on {sum(w == 'supported' for w in held)} of {sum(w != 'not run' for w in held)} models"
    return out


def split_claims(studies: Mapping[str, Study], metric: str = "auroc") -> list[str]:
    """The comparison claims that hold on some unit and cell and are *worse* on another."""
    out = []
    for c in COMPARISONS:
        rows = pd.concat([_table(s).loc[lambda d: (d.claim == c.key) & (d.metric == metric)]
                          for s in units(studies).values()])
        if rows.supports.astype(bool).any() and (rows.verdict == "worse").any():
            out.append(c.key)
    return out


def verdict_grid(studies: Mapping[str, Study], metric: str = "auroc"):
    """Units × cells (rows) against the comparison claims (columns): each verdict's symbol
    (:data:`SYMBOLS`) and its estimate, coloured by verdict. One row per unit and cell, so that the
    grid grows downwards with the number of units; the sanity runs are left out."""
    rows = {}
    for b, s in units(studies).items():
        v = _table(s)
        rows.update(_by_cell(short_pair(b), v[v.metric == metric]))
    return _grid(rows)


def _by_cell(label: str, v: pd.DataFrame) -> dict[tuple[str, str], dict[str, tuple[str, float]]]:
    """The rows of a grid for one verdict table ``v`` (one metric): ``{(label, cell): {claim: (verdict,
    estimate)}}`` for every decision cell it has."""
    return {(label, g): {r.claim: (r.verdict, r.estimate) for r in v[v.group == g].itertuples()}
            for g in DECISION_GROUPS if (v.group == g).any()}


def verdict_mark(verdict: str, estimate: float) -> str:
    """A verdict as the grids write it: its symbol and the signed estimate ("▲ +3.1", "? −0.4")."""
    mark = SYMBOLS.get(verdict, verdict)
    if not np.isfinite(estimate):
        return mark
    return f"{mark}\u00a0{round(float(estimate), 1) + 0.0:+.1f}".replace("-", "\u2212")  # + 0.0: no "−0.0"


def _grid(rows: Mapping[tuple[str, str], Mapping[str, tuple[str, float]]]):
    """The grid of :func:`verdict_grid` and :func:`confound_grid`: ``rows`` maps a two-part row
    label to ``{claim key: (verdict, estimate)}``; columns are the comparison claims' short labels in
    :data:`GRID_ORDER`, four of them per table with ``captioned(…, columns=4)``."""
    keys = [c.key for c in GRID_ORDER]
    shown = [c.short for c in GRID_ORDER]
    text = pd.DataFrame([[verdict_mark(*r[k]) if k in r else "" for k in keys] for r in rows.values()],
                        columns=shown, dtype=object)
    words = pd.DataFrame([[r[k][0] if k in r else "" for k in keys] for r in rows.values()], columns=shown,
                         dtype=object)
    index = pd.MultiIndex.from_tuples(list(rows), names=["pair", "cell"]) if rows else pd.RangeIndex(0)
    text.index = words.index = index
    css = [{"selector": "", "props": "font-size: 0.85em;"},
           {"selector": "td", "props": "white-space: nowrap; text-align: center;"},
           {"selector": "th.col_heading", "props": "white-space: normal; min-width: 4.2em; max-width: 6.2em;"},
           {"selector": "th.row_heading.level0", "props": "white-space: normal; max-width: 8em;"}]
    return (text.style.apply(lambda _: words.map(_cell_style), axis=None)
            .set_table_styles(css, overwrite=False))


def _cell_style(word: str) -> str:
    if word not in COLOURS:
        return ""
    text = "white" if word in ("better", "worse", "equivalent") else "black"
    return f"background-color: {COLOURS[word]}; color: {text};"


def identity_table(studies: Mapping[str, Study]) -> pd.DataFrame:
    """The identities, one row per model (pairs, sanity runs included) and one column per identity:
    the verdict and the largest difference (V units)."""
    rows = {}
    for b, s in studies.items():
        v = _table(s)
        for r in v[v.metric == "identity"].itertuples():
            rows.setdefault(short_pair(b), {})[get_claim(r.claim).short] = \
                f"{r.verdict} ({r.estimate:.1e})" if np.isfinite(r.estimate) else r.verdict
    return pd.DataFrame.from_dict(rows, orient="index").fillna("")


def count_table(studies: Mapping[str, Study], metric: str = "auroc") -> pd.DataFrame:
    """:func:`counts` as the book shows it: one row per claim (short label) and cell; the units where
    the claim holds ("3 of 7") and how many got each verdict, headed by the verdicts' symbols."""
    n = counts(studies, metric)
    t = pd.DataFrame({"claim": [get_claim(k).short for k in n.claim],
                      "cell": n.group, "holds": [f"{h} of {u}" for h, u in zip(n.holds, n.units)],
                      **{f"{SYMBOLS[w]} {w}": n[w] for w in SYMBOLS}})
    return t.set_index(["claim", "cell"])


def inconclusive_table(studies: Mapping[str, Study], metric: str = "auroc") -> pd.DataFrame:
    """Every inconclusive verdict with its interval and its cause."""
    rows = []
    for b, s in units(studies).items():
        v = _table(s)
        for r in v[(v.metric == metric) & (v.verdict == "inconclusive")].itertuples():
            rows.append({"pair": short_pair(b), "cell": r.group, "claim": get_claim(r.claim).short,
                         "interval": "—" if not np.isfinite(r.lo) else f"[{r.lo:+.2f}, {r.hi:+.2f}]",
                         "cause": r.cause})
    return pd.DataFrame(rows, columns=["pair", "cell", "claim", "interval", "cause"])


def per_set_table(studies: Mapping[str, Study], claim: str, metric: str = "auroc") -> pd.DataFrame:
    """One claim's per-set differences beside each cell's verdict: how many sets agree in sign,
    and the leave-one-set-out range of the cell's estimate."""
    rows = []
    for b, s in units(studies).items():
        v = _table(s)
        for r in v[(v.metric == metric) & (v.claim == claim)].itertuples():
            rows.append({"pair": short_pair(b), "cell": r.group, "verdict": r.verdict,
                         "estimate": round(float(r.estimate), 2), "sets agreeing": f"{int(r.sets_agree)} of {int(r.n_sets)}",
                         "leave one set out": f"{r.loo_lo:+.2f} to {r.loo_hi:+.2f}", "per set": r.per_set})
    return pd.DataFrame(rows)


def rule_change_table(studies: Mapping[str, Study]) -> pd.DataFrame:
    """For every comparison claim, unit and November group: the verdict of the rule of 27 November
    beside the AUROC verdicts of the December rules in the same sets' cells."""
    rows = []
    for b, s in units(studies).items():
        if "verdicts_nov" not in s:
            continue
        old = s["verdicts_nov"].set_index(["claim", "group"]).verdict
        new = _table(s)
        new = new[new.metric == "auroc"].set_index(["claim", "group"]).verdict
        for c in CLAIMS:
            if c.kind == "identity":
                continue
            for g, cells in OLD_CELLS.items():
                if (c.key, g) not in old.index:
                    continue
                now = "; ".join(f"{x}: {new[(c.key, x)]}" for x in cells if (c.key, x) in new.index)
                rows.append({"pair": short_pair(b), "claim": c.short, "group": g, "27 November": old[(c.key, g)],
                             "December": now})
    return pd.DataFrame(rows, columns=["pair", "claim", "group", "27 November", "December"])


def forest_figure(studies: Mapping[str, Study], metric: str = "auroc"):
    """Every comparison claim's difference with its corrected interval, one panel per cell, one
    marker per unit coloured by its verdict; the equivalence margin shaded around 0."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    us = units(studies)
    groups = [g for g in DECISION_GROUPS if any((_table(s).group == g).any() for s in us.values())]
    claims = [c for c in COMPARISONS if c.kind != "conjunction"]
    fig, axes = plt.subplots(1, len(groups), figsize=(7.6, 0.46 * len(claims) + 1.8), sharey=True,
                             constrained_layout=True, dpi=150)
    axes = np.atleast_1d(axes)
    markers = "osD^v<>p"
    for ax, g in zip(axes, groups):
        margin = None
        for j, (b, s) in enumerate(us.items()):
            v = _table(s)
            v = v[(v.metric == metric) & (v.group == g)].set_index("claim")
            for i, c in enumerate(claims):
                if c.key not in v.index or not np.isfinite(v.loc[c.key, "lo"]):
                    continue
                r = v.loc[c.key]
                margin = float(r.margin)
                y = i + (j - (len(us) - 1) / 2) * 0.16
                ax.errorbar(r.estimate, y, xerr=[[r.estimate - r.lo], [r.hi - r.estimate]], fmt=markers[j % 8],
                            ms=4, color=COLOURS[r.verdict], mec="black", mew=0.4, lw=1.3)
        if margin:
            ax.axvspan(-margin, margin, color="#e8e8e8", zorder=0)
        ax.axvline(0, color="black", lw=0.8)
        ax.set_title(g, fontsize=10)
        ax.set_xlabel(f"{metric.upper()} difference (points)", fontsize=8)
        ax.set_xscale("symlog", linthresh=2.0)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(range(len(claims)), [c.short for c in claims], fontsize=8)
    axes[0].invert_yaxis()
    handles = [Line2D([], [], ls="", marker="s", color=c, label=w, ms=7) for w, c in COLOURS.items()]
    handles += [Line2D([], [], ls="", marker=markers[j % 8], color="white", mec="black", label=short_pair(b))
                for j, b in enumerate(us)]
    fig.legend(handles=handles, loc="outside lower center", ncol=4, fontsize=7.5, frameon=False)
    return fig


def confound_grid(tables: Mapping[str, pd.DataFrame], metric: str = "auroc"):
    """Pair and variant (with the variant's ID accuracy and ID images) × cell (rows) against the
    comparison claims (columns), as :func:`verdict_grid` writes them; ``tables``:
    ``{benchmark: confounds.csv}``."""
    rows = {}
    for b, t in tables.items():
        t = t[t.metric == metric]
        for variant, v in t.groupby("variant", sort=False):
            rows.update(_by_cell(f"{short_pair(b)}, {variant} ({v.accuracy.iloc[0]:.1f} %, {int(v.n_id.iloc[0]):,} ID)", v))
    return _grid(rows)


def variant_dependent_rows(tables: Mapping[str, pd.DataFrame], metric: str = "auroc") -> pd.DataFrame:
    """Every (pair, claim, cell) whose verdict is *better* in one variant and *worse* in another."""
    from ..findings.confounds import variant_dependent

    parts = []
    for b, t in tables.items():
        d = variant_dependent(t, metric)
        if len(d):
            d.insert(0, "pair", short_pair(b))
            d["claim"] = [get_claim(k).short for k in d.claim]
            parts.append(d.rename(columns={"group": "cell"}))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["pair", "claim", "cell"])


# the two questions of the answer figure, with the difference each panel shows
ANSWER_CLAIMS = {"gradnorm_beats_msp": "GradNorm − MSP", "some_member_beats_gradnorm": "best U·V member − GradNorm"}


def answer_figure(studies: Mapping[str, Study], claims: Mapping[str, str] = ANSWER_CLAIMS, metric: str = "auroc",
                  layout: str = "wide"):
    """The answer at a glance: each unit × cell of each claim a square coloured by its verdict,
    carrying its symbol and the difference in points. ``layout="wide"``: a panel per claim side by
    side, a row per cell and a column per unit (short enough to share a first screen with the text);
    ``"narrow"``: the panels stacked, a row per unit and a column per cell (readable on a phone)."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    if layout not in ("wide", "narrow"):
        raise OODInputError(f"layout must be 'wide' or 'narrow', got {layout!r}")
    us = units(studies)
    groups = [g for g in DECISION_GROUPS if any((_table(s).group == g).any() for s in us.values())]
    wide = layout == "wide"
    rows, cols = (groups, list(us)) if wide else (list(us), groups)
    size = (7.0, 0.3 * len(rows) * len(claims) + 1.2) if wide else (3.9, (0.36 * len(rows) + 0.55) * len(claims) + 0.9)
    fig, axes = plt.subplots(len(claims), 1, figsize=size, dpi=150, sharex=True, constrained_layout=True)
    for ax, (key, title) in zip(np.atleast_1d(axes), claims.items()):
        for b, s in us.items():
            v = _table(s)
            v = v[(v.metric == metric) & (v.claim == key)].set_index("group")
            for g in groups:
                if g not in v.index:
                    continue
                word, est = v.loc[g, "verdict"], v.loc[g, "estimate"]
                i, j = (groups.index(g), cols.index(b)) if wide else (rows.index(b), groups.index(g))
                ax.add_patch(plt.Rectangle((j - 0.48, i - 0.45), 0.96, 0.9, color=COLOURS.get(word, "white"), lw=0))
                ax.text(j, i, verdict_mark(word, est), ha="center", va="center", fontsize=8.5,
                        color="black" if word == "inconclusive" else "white")
        ax.set_xlim(-0.5, len(cols) - 0.5)
        ax.set_ylim(len(rows) - 0.5, -0.5)
        ax.set_yticks(range(len(rows)), [CELL_SHORT.get(r, r) if wide else f"{model_name(r)}\n{BENCHMARK_NAMES.get(r, r)}"
                                         for r in rows], fontsize=8.5 if wide else 8)
        ax.set_title(title, fontsize=9.5, pad=3, loc="left")
        ax.tick_params(length=0, labelbottom=False)
        for side in ax.spines.values():
            side.set_visible(False)
    top = np.atleast_1d(axes)[0]
    top.xaxis.tick_top()
    top.set_xticks(range(len(cols)), [UNIT_SHORT.get(c, model_name(c)) if wide else CELL_SHORT.get(c, c) for c in cols],
                   fontsize=8.5)
    top.tick_params(axis="x", labeltop=True)
    handles = [Patch(color=c, label=f"{SYMBOLS[w]} {w}") for w, c in COLOURS.items()]
    fig.legend(handles=handles, loc="outside lower center", ncol=4 if wide else 2, fontsize=8.5, frameon=False,
               handlelength=1.2, columnspacing=1.0, title_fontsize=8.5,
               title=f"{metric.upper()} difference in points;{' ' if wide else chr(10)}colour: the pre-registered verdict")
    return fig
