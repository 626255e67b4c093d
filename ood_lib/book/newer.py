"""Detectors published after the GradNorm paper, read through the U·V lens (chapter *The evaluation*).

For each: whether it needs a backward pass (from the detector's family in the registry: an
``autograd`` detector does, a ``gradient`` detector is scored from its closed form, a baseline never
differentiates), how it relates to U·V (its formula, derived in chapter *Gradient scores and their
closed forms* and in :mod:`ood_lib.gradients.reductions` / :mod:`ood_lib.gradients.gaia`), and its AUROC in every study.
GAIA, which differentiates every layer, is recorded apart (``gaia.csv`` beside ``depth.csv``,
:func:`ood_lib.findings.depth.gaia_table`) and summarised by :func:`gaia_rows`; ODIN's input-gradient step
against its first-order term (``depth_odin.csv``) by :func:`odin_rows`.
"""

from __future__ import annotations

from typing import Mapping

import pandas as pd

from .._checks import OODInputError
from ..detectors.base import DETECTORS
from ..findings.labels import method_label, short_pair
from ..findings.study import Study
from .tables import interval_text

__all__ = ["NEWER", "RELATION", "backward_pass", "best_by_kind", "gaia_rows", "group_aurocs", "group_summaries",
           "newer_table", "odin_rows"]

# the detectors, in the order the chapter lists them: gradient-based first, then the baselines
# (GAIA differentiates every layer and is recorded apart: :func:`gaia_rows`)
NEWER = ("gradorth", "kfac_natgrad", "gradunc_l2", "gradunc_max",
         "vim", "ash", "scale", "dice", "gen", "fdbd", "nnguide")

# one line each: what the score is, in the terms of the U·V family
RELATION = {
    "gradorth": "U·V: U = ‖S_kᵀh‖₂ (h inside the ID principal subspace), V = ‖p − u‖₂",
    "kfac_natgrad": "U·V: U = hᵀA⁻¹h (Mahalanobis-type), V = (p − u)ᵀG⁻¹(p − u)",
    "gradunc_l2": "U·V: ‖h‖₂ · ‖p − e_ŷ‖₂",
    "gradunc_max": "the largest of four products of extreme entries of h and of p − e_ŷ",
    "gaia_last": "a sum over channels of products: last feature map × head weights × p",
    "gaia": "gradients of inner feature maps: no closed form",
    "vim": "energy minus α × the norm of h outside the ID principal subspace",
    "ash": "energy of a pruned h rescaled by exp(sum of h ÷ sum kept)",
    "scale": "energy of the logits scaled by exp(sum of h ÷ sum of the top of h)",
    "dice": "energy of a sparsified head; no feature-norm factor",
    "gen": "an output term alone: generalised entropy of the top of p",
    "fdbd": "distance to the decision boundaries ÷ the distance of h to the ID mean",
    "nnguide": "energy × nearest-neighbour similarity of h to ID features: V × a feature term",
}


def backward_pass(name: str) -> str:
    """``"needed"`` for a detector that differentiates through the network, ``"closed form"`` for
    a gradient score computed without one, ``"none"`` for a forward-only detector."""
    entry = DETECTORS.get(name)
    if entry is None:
        raise OODInputError(f"unknown detector {name!r}")
    return {"autograd": "needed", "gradient": "closed form"}.get(entry.cls.family, "none")


def group_aurocs(studies: Mapping[str, Study], group: str) -> dict[str, pd.Series]:
    """``{benchmark: AUROC per method}`` over ``group`` (its summary row), for each study that has
    that group."""
    out = {}
    for b, s in studies.items():
        if group in s.groups:
            m = s["metrics"]
            out[b] = m[m.ood == group].set_index("method").auroc
    return out


def newer_table(studies: Mapping[str, Study], group: str = "far",
                names: tuple[str, ...] = NEWER) -> pd.DataFrame:
    """Detectors (rows, display names) × [backward pass, relation to U·V, mean AUROC over ``group``
    per benchmark × model]. A detector a study did not run is left empty (GAIA: see
    :func:`gaia_rows`)."""
    rows = pd.DataFrame({"backward pass": [backward_pass(n) for n in names],
                         "relation to U·V": [RELATION.get(n, "") for n in names]}, index=list(names))
    for b, m in group_aurocs(studies, group).items():
        rows[short_pair(b)] = m.reindex(list(names)).to_numpy(dtype=float)
    rows.index = [method_label(n) for n in names]
    return rows


def best_by_kind(studies: Mapping[str, Study], group: str = "far",
                 names: tuple[str, ...] = NEWER) -> pd.DataFrame:
    """Per benchmark × model: the best newer detector scored from a gradient closed form and the
    best newer forward-only detector, each with its mean AUROC over ``group``."""
    rows = []
    for b, m in group_aurocs(studies, group).items():
        row = {"pair": short_pair(b)}
        for kind, label in (("closed form", "gradient"), ("none", "forward-only")):
            got = m.reindex([n for n in names if backward_pass(n) == kind]).dropna()
            if len(got):
                row[label], row[f"{label} AUROC"] = method_label(got.idxmax()), float(got.max())
        rows.append(row)
    return pd.DataFrame(rows).set_index("pair")


def group_summaries(table: pd.DataFrame) -> pd.DataFrame:
    """The rows of a recorded paired table that summarise a group (near, far) rather than one set."""
    return table[(table.ood == table.group) & table.group.isin(["near", "far"])]


def odin_rows(tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Per benchmark × model and group (near, far), from ``depth_odin.csv``
    (:func:`ood_lib.findings.depth.odin_first_order`): the AUROC of S_T (ODIN's temperature, no step) and of
    ODIN, ODIN's gain over S_T and the gain of its first-order term ε‖∇_pixel log S_T‖₁ alone, each
    with its 95 % interval, and the share of the gain that term explains — shown only where the
    gain's interval clears 0 (a share of a gain that may be 0 means nothing)."""
    need = {"ood", "group", "auroc_msp_t", "auroc_odin", "gain", "gain_lo", "gain_hi", "gain_first_order",
            "gain_first_order_lo", "gain_first_order_hi", "explained"}
    out = []
    for b, t in tables.items():
        missing = need - set(t.columns)
        if missing:
            raise OODInputError(f"{b}: ODIN table lacks columns {sorted(missing)}")
        for r in group_summaries(t).itertuples():
            clear = r.gain_lo > 0 or r.gain_hi < 0
            out.append({"pair": short_pair(b), "group": r.group, "S_T": round(float(r.auroc_msp_t), 1),
                        "ODIN": round(float(r.auroc_odin), 1),
                        "ODIN − S_T": interval_text(r.gain, r.gain_lo, r.gain_hi),
                        "first order − S_T": interval_text(r.gain_first_order, r.gain_first_order_lo,
                                                           r.gain_first_order_hi),
                        "share explained": f"{r.explained:.2f}" if clear else "—"})
    if not out:
        return pd.DataFrame()
    return pd.DataFrame(out).set_index(["pair", "group"])


def gaia_rows(tables: Mapping[str, pd.DataFrame], variant: str = "A") -> pd.DataFrame:
    """Per benchmark × model and group (near, far): GAIA's AUROC with all its layers, its last-layer
    part alone, and the two paired differences (all layers − last layer; all layers − the best
    forward-only score) with their 95 % intervals, as "+1.10 [−0.20, +1.40]" (two decimals: whether an interval
    clears 0 must be readable; a true minus sign, and no line break inside the brackets)."""
    out = []
    for b, t in tables.items():
        need = {"method", "variant", "part", "ood", "group", "auroc", "diff_vs_last", "lo_vs_last",
                "hi_vs_last", "diff_vs_best", "lo_vs_best", "hi_vs_best"}
        missing = need - set(t.columns)
        if missing:
            raise OODInputError(f"{b}: GAIA table lacks columns {sorted(missing)}")
        t = group_summaries(t)
        ref = t[t.part == "reference"].set_index("group")
        t = t[t.variant == variant]
        for g in dict.fromkeys(t.group):
            full = t[(t.group == g) & (t.part == "all_layers")].iloc[0]
            last = t[(t.group == g) & (t.part == "last_layer")].iloc[0]
            out.append({
                "pair": short_pair(b), "group": g,
                f"GAIA-{variant}": round(float(full.auroc), 1),
                "last layer": round(float(last.auroc), 1),
                "all − last": interval_text(full.diff_vs_last, full.lo_vs_last, full.hi_vs_last),
                "best forward-only": (f"{method_label(ref.loc[g, 'method'])} "
                                      f"{ref.loc[g, 'auroc']:.1f}" if g in ref.index else ""),
                "all − best": interval_text(full.diff_vs_best, full.lo_vs_best, full.hi_vs_best),
            })
    if not out:
        return pd.DataFrame()
    return pd.DataFrame(out).set_index(["pair", "group"])


def increment_rows(tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Per benchmark × model and group (near, far), from ``increment.csv``
    (:func:`ood_lib.findings.increment.increment_table`): how many layers' gradients beat / tie / lose
    to the same layer's forward statistic, how many add to / leave / lower the best forward score when
    fused with it, and the positive control (ODIN's step − S_T) with its simultaneous interval."""
    from ..findings.increment import increment_summary

    s = increment_summary(tables)
    if not len(s):
        return pd.DataFrame()

    def tally(r: pd.Series, tag: str) -> str:
        n, up, down = r[f"{tag}_n"], r[f"{tag}_supported"], r[f"{tag}_refuted"]
        return f"{up} / {n - up - down} / {down}"

    return pd.DataFrame({
        "pair": s.benchmark.map(short_pair), "group": s.group,
        "layers": s.fused_n,
        "gradient vs same layer (above / tie / below)": [tally(r, "same") for _, r in s.iterrows()],
        "fused vs best forward (adds / tie / lowers)": [tally(r, "fused") for _, r in s.iterrows()],
        "control: ODIN's step − S_T": [interval_text(r.control_diff, r.control_lo, r.control_hi, 1)
                                      for _, r in s.iterrows()],
    }).set_index(["pair", "group"])
