"""The baselines before and after their settings are fitted to the model (appendix *Reference
tables*), and every forward-only baseline that scores below chance on a cell, with its reason."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from .._checks import OODInputError
from ..data.benchmarks import DECISION_GROUPS, get_benchmark
from ..findings.labels import method_label, short_pair
from ..findings.study import Study

__all__ = ["BASELINES", "REASONS", "below_chance", "regime_grid"]

# the forward-only detectors of the field the study holds its scores against
BASELINES = ("msp", "maxlogit", "energy", "mahalanobis", "knn", "react", "ash", "scale", "dice", "vim", "gen",
             "fdbd", "nnguide")
# why a baseline stays below chance where the regime table has no row for it ({n_fit}: the unit's
# ID fitting images)
REASONS: dict[str, str] = {
    "nnguide": "its guidance bank is the {n_fit} ID fitting images, where the authors draw 1 % of "
               "ImageNet-1k's training set (12,812 images); the data here hold no larger ID training set",
}
_FALLBACK = re.compile(r"none reaches it: the highest agreement, ([\d.]+) \(([\d.]+) %\)")
_NEED = {"method", "level", "group", "setting_before", "setting_after", "auroc_before", "auroc_after"}


def _checked(b: str, t: pd.DataFrame) -> pd.DataFrame:
    missing = _NEED - set(t.columns)
    if missing:
        raise OODInputError(f"{b}: the regime table lacks columns {sorted(missing)}")
    return t[t.level == "group"]


def _change(before: object, after: str) -> str:
    """ "percentile 90 → 75" (the parameter named once), "— → T 1000" where there was no setting."""
    if not isinstance(before, str):
        return f"— → {after}"
    b, a = before.split(" ", 1), after.split(" ", 1)
    return f"{b[0]} {b[1]} → {a[1]}" if len(b) == len(a) == 2 and b[0] == a[0] else f"{before} → {after}"


def regime_grid(tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Per unit × baseline: its setting before → after and, per cell (near, far-natural,
    far-synthetic), AUROC before → after ("36.2 → 83.3")."""
    rows = []
    for b, t in tables.items():
        t = _checked(b, t)
        for m, r in t.groupby("method", sort=False):
            row = {"unit": short_pair(b), "baseline": method_label(m) if m in BASELINES else m.upper(),
                   "setting": _change(r.setting_before.iloc[0], r.setting_after.iloc[0])}
            for g in DECISION_GROUPS:
                x = r[r.group == g]
                if len(x):
                    before, after = x.auroc_before.iloc[0], x.auroc_after.iloc[0]
                    row[g] = f"{before:.1f} → {after:.1f}" if np.isfinite(before) else f"{after:.1f}"
            rows.append(row)
    if not rows:
        return pd.DataFrame()
    return pd.DataFrame(rows).set_index(["unit", "baseline"]).fillna("")


def below_chance(studies: Mapping[str, Study], regime: Mapping[str, pd.DataFrame],
                 methods: Sequence[str] = BASELINES) -> pd.DataFrame:
    """Every baseline whose AUROC, averaged over a cell's OOD sets, is below 50, with the AUROC at
    the setting fitted to the model (where the regime table has it) and the reason.

    A recorded study's row without a reason is an error (the book must say why); a live study runs
    on other images than the recorded regime tables describe, so its row says that instead."""
    rows = []
    for b, s in studies.items():
        m = s["metrics"]
        groups = {o.key: o.decision_group for o in get_benchmark(b).ood}
        m = m[m.method.isin(methods) & m.ood.isin(groups)].assign(cell=lambda d: d.ood.map(groups))
        cells = m.groupby(["method", "cell"], sort=False).auroc.mean()
        reg = _checked(b, regime[b]).set_index(["method", "group"]) if b in regime else None
        for (method, cell), a in cells.items():
            if not a < 50:  # at or above chance, or not applicable (NaN)
                continue
            after = reg.loc[(method, cell)] if reg is not None and (method, cell) in reg.index else None
            if after is not None and after.auroc_after >= 50:
                why = (f"outside its regime at {after.setting_before}: fitted on ID training features "
                       f"({after.setting_after}) it scores {after.auroc_after:.1f}")
            elif after is not None and _FALLBACK.search(str(after.get("rule", ""))):
                pct = _FALLBACK.search(str(after.rule)).group(2)
                why = (f"no setting keeps the ID decisions it assumes: at best the shaped head keeps "
                       f"{pct} % of the ID training predictions ({after.setting_after}; the rule asks 99 %) "
                       f"and scores {after.auroc_after:.1f}")
            elif method in REASONS:
                why = REASONS[method].format(n_fit=f"{s.meta['sets']['id_train']['n']:,}")
            elif s.source != "recorded":
                why = "not explained for this run's images: record its regime table (tools/record_regime.py)"
            else:
                raise OODInputError(f"{b}: {method} scores {a:.1f} on {cell} and the book has no reason for it")
            rows.append({"unit": short_pair(b), "baseline": method_label(method), "cell": cell,
                         "AUROC": round(float(a), 1),
                         "fitted setting": round(float(after.auroc_after), 1) if after is not None else np.nan,
                         "why": why})
    return pd.DataFrame(rows, columns=["unit", "baseline", "cell", "AUROC", "fitted setting", "why"])
