"""Baselines in their regime: each baseline at its published setting ("before") beside a setting that
fits the model ("after"), with Energy on the same images for reference.

* ReAct, ASH-S/-P/-B, DICE: the setting chosen on the ID training features alone
  (:func:`ood_lib.detectors.regime.choose_in_regime`: the most aggressive grid value whose shaped
  head keeps the unshaped head's prediction on ≥ 99 % of them);
* KNN: the bank of the whole ID training set where the data has one larger than the fitting split,
  k by the paper's bank-size rule (:func:`ood_lib.detectors.settings.knn_k_for_bank`);
* ODIN (optional): at its published setting on seeded subsets, where the recorded study leaves it
  out for cost (no "before"; the subsets' Energy is the reference).

One row per (method, OOD set) and per (method, decision group: near, far-natural, far-synthetic —
the mean over its sets, as the study averages); AUROC and FPR95 in percent.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch

from .._checks import OODInputError
from ..data.benchmarks import DECISION_GROUPS
from ..data.files import subsample
from ..detectors import FitData, create
from ..detectors.base import as_numpy
from ..detectors.regime import PARAMETER
from ..stats.metrics import evaluate_scores

__all__ = ["COLUMNS", "SHAPING_ROWS", "regime_table"]

# table id -> (registered detector, its fixed arguments); "ash" is the study's ASH-S
SHAPING_ROWS = {"react": ("react", {}), "ash": ("ash", {"variant": "s"}), "ash-p": ("ash", {"variant": "p"}),
                "ash-b": ("ash", {"variant": "b"}), "dice": ("dice", {})}
ODIN_PUBLISHED = {"temperature": 1000.0, "epsilon": 0.0014}  # Liang et al. 2018; ε in [0, 1]-pixel units
COLUMNS = ("benchmark", "method", "ood", "level", "group", "n_sets", "setting_before", "setting_after", "rule",
           "auroc_before", "auroc_after", "fpr95_before", "fpr95_after", "energy_auroc", "energy_fpr95",
           "n_id", "n_ood", "note")


def _metrics(s: dict[str, np.ndarray], k: str) -> tuple[float, float]:
    m = evaluate_scores(s["id_test"], s[k])
    return m["auroc"], m["fpr95"]


def _score(prep, det, sets: list[str]) -> dict[str, np.ndarray]:
    return {k: as_numpy(det.score(*prep.float64(k))) for k in sets}


def _shaping(prep, row: str, sets: list[str]) -> dict[str, Any]:
    name, fixed = SHAPING_ROWS[row]
    param = PARAMETER[name]
    before = create(name, model=prep.model, **fixed).fit(prep.fit_data)
    after = create(name, model=prep.model, **fixed, **{param: "id"}).fit(prep.fit_data)
    regime = after.regime_
    return {"before": _score(prep, before, sets), "after": _score(prep, after, sets),
            "setting_before": f"{param} {getattr(before, param):g}", "setting_after": f"{param} {regime.value:g}",
            "rule": regime.rule, "grid": regime.table.to_dict("records"), "value_before": getattr(before, param),
            "value_after": regime.value}


def _knn(prep, sets: list[str], bank: Any, bank_note: str) -> dict[str, Any]:
    before = create("knn").fit(prep.fit_data)
    n_fit = len(prep.fit_data)
    out = {"before": _score(prep, before, sets), "setting_before": f"bank {n_fit:,} · k {before.k_}",
           "k_before": before.k_, "bank_before": n_fit}
    if bank is None:
        return {**out, "after": out["before"], "setting_after": out["setting_before"], "k_after": before.k_,
                "bank_after": n_fit, "rule": bank_note or "the fitting split is all the ID training data there is"}
    after = create("knn").fit(FitData.of(bank))
    n = len(FitData.of(bank))
    rule = (f"bank = the whole ID training set ({n:,} features), k = round(N · 50 / 50,000) by the paper's "
            f"bank-size rule (Sun et al. 2022, knn_k_for_bank)" + (f"; {bank_note}" if bank_note else ""))
    return {**out, "after": _score(prep, after, sets), "setting_after": f"bank {n:,} · k {after.k_}",
            "k_after": after.k_, "bank_after": n, "rule": rule}


def _odin(prep, sets: list[str], n_id: int, n_ood: int, seed: int) -> tuple[dict, dict, dict]:
    """ODIN's and Energy's scores on seeded subsets of every set, and the subsets' sizes."""
    from ..run.features import batch_loader

    det = create("odin", model=prep.model, input_std=tuple(prep.benchmark.preprocessing.std), **ODIN_PUBLISHED)
    energy = create("energy")
    odin, ref, sizes = {}, {}, {}
    for k in sets:
        ds = prep.splits[k].dataset
        if len(ds) != len(prep.feats[k].h):
            raise OODInputError(f"{k}: {len(ds) - len(prep.feats[k].h)} images were unreadable; the ODIN subset "
                                "cannot be matched to the cached features")
        idx = subsample(len(ds), n_id if k == "id_test" else n_ood, seed)
        loader = batch_loader(torch.utils.data.Subset(ds, idx.tolist()), prep.batch_size, device_type=prep.device.type)
        odin[k] = as_numpy(det.score_inputs(loader, prep.device))
        h, f = prep.float64(k)
        ref[k] = as_numpy(energy.score(h[idx], f[idx]))
        sizes[k] = len(idx)
    return odin, ref, sizes


def _rows(prep, method: str, r: dict, energy: dict, sets: list[str], groups: dict[str, str], note: str) -> list[dict]:
    base = {"benchmark": prep.name, "method": method, "setting_before": r.get("setting_before", ""),
            "setting_after": r["setting_after"], "rule": r["rule"], "note": note}
    rows = []
    for k in sets:
        if k == "id_test":
            continue
        ab, fb = _metrics(r["before"], k) if r.get("before") is not None else (float("nan"),) * 2
        aa, fa = _metrics(r["after"], k)
        ea, ef = _metrics(energy, k)
        rows.append({**base, "ood": k, "level": "set", "group": groups[k], "n_sets": 1, "auroc_before": ab,
                     "auroc_after": aa, "fpr95_before": fb, "fpr95_after": fa, "energy_auroc": ea, "energy_fpr95": ef,
                     "n_id": len(r["after"]["id_test"]), "n_ood": len(r["after"][k])})
    per_set = pd.DataFrame(rows)
    for g in DECISION_GROUPS:
        sub = per_set[per_set.group == g]
        if len(sub):
            means = sub[["auroc_before", "auroc_after", "fpr95_before", "fpr95_after", "energy_auroc",
                         "energy_fpr95"]].mean()
            rows.append({**base, "ood": g, "level": "group", "group": g, "n_sets": len(sub), **means.to_dict(),
                         "n_id": int(sub.n_id.iloc[0]), "n_ood": int(sub.n_ood.sum())})
    return rows


def regime_table(prep, *, methods: tuple[str, ...] = (*SHAPING_ROWS, "knn"), bank: Any = None, bank_note: str = "",
                 odin: dict[str, int] | None = None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The before/after table of a prepared benchmark (``prepare(..., with_train=True)``) and what
    chose each setting (``{method: {"rule", "grid", settings…}}``).

    ``methods``: ids of :data:`SHAPING_ROWS` and ``"knn"``. ``bank``: the whole ID training set's
    features (a ``Features`` or ``FitData``) for KNN's "after" (None: the fitting split, with
    ``bank_note`` saying why). ``odin``: ``{"n_id", "n_ood", "seed"}`` adds ODIN at its published
    setting on seeded subsets of that size (no "before"). Columns: :data:`COLUMNS`.
    """
    if prep.fit_data is None:
        raise OODInputError("the before/after table needs the ID training split: prepare(..., with_train=True)")
    unknown = [m for m in methods if m not in (*SHAPING_ROWS, "knn")]
    if unknown:
        raise OODInputError(f"unknown method id(s) {unknown}; valid: {', '.join((*SHAPING_ROWS, 'knn'))}")
    if odin is not None and set(odin) != {"n_id", "n_ood", "seed"}:
        raise OODInputError(f"odin must give n_id, n_ood and seed, got {sorted(odin)}")
    sets = ["id_test", *prep.ood_keys]
    groups = {o.key: o.decision_group for o in prep.benchmark.ood}
    energy = _score(prep, create("energy"), sets)
    rows, info = [], {}
    for m in methods:
        r = _knn(prep, sets, bank, bank_note) if m == "knn" else _shaping(prep, m, sets)
        rows += _rows(prep, m, r, energy, sets, groups, "")
        info[m] = {k: v for k, v in r.items() if k not in ("before", "after")}
    if odin is not None:
        scores, ref, sizes = _odin(prep, sets, odin["n_id"], odin["n_ood"], odin["seed"])
        r = {"before": None, "after": scores, "setting_after": "T 1000 · ε 0.0014",
             "rule": "published setting (Liang et al. 2018), on seeded subsets"}
        rows += _rows(prep, "odin", r, ref, sets, groups, "not in the recorded study (left out for cost): "
                      "no before; Energy on the same subsets")
        info["odin"] = {"setting": ODIN_PUBLISHED, "subsets": sizes, "seed": odin["seed"]}
    return pd.DataFrame(rows, columns=list(COLUMNS)), info
