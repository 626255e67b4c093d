"""The rows and metadata of a results table, and writing them (chapter *The evaluation*).

Per method: one row per OOD set (with its ``group``, "near", "far" or "covariate"), one row per group present
(``ood == "near"`` / ``"far"``: the mean of the metrics over the group's sets, ``n_ood`` their
sum) and one row ``ood == "mean"`` over the OOD sets (:func:`in_mean`: covariate-shift sets hold the
ID classes and are never in it). ``canonical`` names the detector a method
repeats (itself unless it is an alias: :func:`ood_lib.detectors.canonical`), so that a count or a
ranking of methods can leave aliases out.
"""

from __future__ import annotations

import io
import json
import platform
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from .._version import __version__
from ..data.benchmarks import OOD_GROUPS
from ..cache import atomic_write_bytes
from .config import RunConfig
from ..detectors import Detector, canonical
from ..stats.metrics import METRICS, bootstrap_ci, evaluate_scores

GROUPS = OOD_GROUPS  # the order of the group rows; "covariate": the same classes under a shift
SUMMARY_ROWS = GROUPS + ("mean",)  # values of ``ood`` that are not an OOD set
NOT_IN_MEAN = ("covariate",)  # the same classes under a shift: not OOD, so never averaged with OOD sets


def in_mean(group_of: dict[str, str]) -> list[str]:
    """The sets (of ``{set: group}``) that the ``mean`` row averages: every set not in :data:`NOT_IN_MEAN`.
    The one definition of the mean row, for the runner, the study's intervals and the chapters' tables."""
    return [k for k, g in group_of.items() if g not in NOT_IN_MEAN]


def device_label(dev: torch.device) -> str:
    """The device as results and the score cache name it: ``cpu``, or ``cuda:0 (<GPU name>)``."""
    return str(dev) if dev.type != "cuda" else f"{dev} ({torch.cuda.get_device_name(dev)})"


def _summary(base: dict, ood: str, group: str, per_set: list[dict]) -> dict:
    return {**base, "ood": ood, **{m: float(np.mean([r[m] for r in per_set])) for m in METRICS},
            "n_id": per_set[0]["n_id"], "n_ood": int(sum(r["n_ood"] for r in per_set)), "_group": group}


def _with_summaries(base: dict, per_set: list[dict]) -> list[dict]:
    groups = [g for g in dict.fromkeys([*GROUPS, *(r["_group"] for r in per_set)])
              if any(r["_group"] == g for r in per_set)]
    summaries = [_summary(base, g, g, [r for r in per_set if r["_group"] == g]) for g in groups]
    counted = set(in_mean({r["ood"]: r["_group"] for r in per_set}))
    mean = [r for r in per_set if r["ood"] in counted]
    return per_set + summaries + ([_summary(base, "mean", "all", mean)] if mean else [])


def _finish(rows: list[dict], prep, det: Detector, seconds: float, from_cache: bool, note: str) -> list[dict]:
    for r in rows:
        r["id_accuracy"] = prep.id_accuracy
        r["seconds"] = seconds
        r["group"] = r.pop("_group")
        r["canonical"] = canonical(det.name)
        r["note"] = note
        r["from_cache"] = from_cache
    return rows


def method_rows(prep, det: Detector, s: dict[str, np.ndarray], *, seconds: float, from_cache: bool,
                config: RunConfig) -> list[dict]:
    """The rows of one scored method: per set, per group, mean."""
    base = {"benchmark": prep.name, "method": det.name, "family": det.family}
    per_set = []
    for k in prep.ood_keys:
        row = {**base, "ood": k, **evaluate_scores(s["id_test"], s[k]), "n_id": len(s["id_test"]), "n_ood": len(s[k])}
        if config.bootstrap and (config.ci_methods is None or det.name in config.ci_methods):
            for metric in ("auroc", "fpr95"):
                lo, hi = bootstrap_ci(s["id_test"], s[k], metric, n_boot=config.bootstrap, seed=config.seed)
                row[f"{metric}_lo"], row[f"{metric}_hi"] = lo, hi
        row["_group"] = prep.splits[k].group
        per_set.append(row)
    return _finish(_with_summaries(base, per_set), prep, det, seconds, from_cache, "")


def not_applicable_rows(prep, det: Detector, note: str) -> list[dict]:
    """The rows of a method that is not applicable: the same rows, metrics empty, ``note`` saying why."""
    base = {"benchmark": prep.name, "method": det.name, "family": det.family}
    n_id = len(prep.feats["id_test"].h)
    per_set = [{**base, "ood": k, **{m: float("nan") for m in METRICS}, "n_id": n_id,
                "n_ood": len(prep.feats[k].h), "_group": prep.splits[k].group} for k in prep.ood_keys]
    return _finish(_with_summaries(base, per_set), prep, det, float("nan"), False, note)


def metadata(prep, notes: dict[str, str], device: str) -> dict[str, Any]:
    """Configuration, versions, device, data fingerprints, skipped images (``skipped_files``: relative
    to the data root), forward-pass times, notes."""
    import sklearn

    from .features import item_files
    from ..models import weights_fingerprint

    return {
        "benchmark": prep.name,
        "data_root": None if prep.root is None else str(prep.root),
        "seed": prep.config.seed,
        "device": device,
        "config": prep.config.as_dict(),
        "id_accuracy": prep.id_accuracy,
        "model_fingerprint": weights_fingerprint(prep.model),
        "sets": {
            k: {"name": prep.splits[k].name, "group": prep.splits[k].group, "n": int(len(f.h)),
                "n_skipped": f.n_skipped, "skipped_files": item_files(prep.splits[k].dataset, f.skipped, prep.root),
                "data_fingerprint": f.data_fingerprint,
                "feature_key": f.key, "forward_seconds": f.seconds, "from_cache": f.from_cache}
            for k, f in prep.feats.items()
        },
        "notes": notes,
        "versions": {"ood_lib": __version__, "torch": torch.__version__, "numpy": np.__version__,
                     "pandas": pd.__version__, "sklearn": sklearn.__version__, "python": platform.python_version()},
    }


def write_results(df: pd.DataFrame, out: str | Path) -> None:
    """Write the CSV and ``<out>.json`` (metadata) atomically."""
    out = Path(out)
    buf = io.StringIO()
    df.to_csv(buf, index=False, float_format="%.10g")
    atomic_write_bytes(buf.getvalue().encode(), out)
    meta = df.attrs.get("meta", {})
    atomic_write_bytes(json.dumps(meta, indent=2, sort_keys=True, default=str).encode(),
                       out.with_suffix(out.suffix + ".json"))
