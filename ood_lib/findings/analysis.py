"""Small analyses the chapters run on prepared features (chapter *Feature norm × output distribution*)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from .._checks import OODInputError, check_scores
from ..detectors import create
from ..run.evaluate import Prepared, detector_scores
from ..run.results import in_mean
from ..stats.metrics import auroc, evaluate_scores


def set_scores(prep: Prepared, methods: list[str], temperature: float = 1.0) -> dict[str, dict[str, np.ndarray]]:
    """``{set: {method: oriented scores}}`` for the ID test set and every OOD set.

    ``methods`` are detector names (:data:`ood_lib.detectors.DETECTORS`: the closed-form scores,
    ``"<gradient>_autograd"`` for a head gradient by autograd from the cached features, the fitted
    detectors where ``prep`` holds the ID training split, …), scored through the same dispatch as
    the runner (:func:`ood_lib.run.evaluate.detector_scores`). ``temperature`` other than 1 is handed
    to every method, each of which must take it.
    """
    sets = ["id_test"] + prep.ood_keys
    out: dict[str, dict[str, np.ndarray]] = {k: {} for k in sets}
    params = {} if temperature == 1.0 else {"temperature": temperature}
    for m in methods:
        det = create(m, model=prep.model, **params)
        reason = det.not_applicable(prep.fit_data if det.needs.fit else None)
        if reason:
            raise OODInputError(f"{m} is not applicable here: {reason}")
        for k, v in detector_scores(prep, det, sets).items():
            out[k][m] = v
    return out


def metric_table(s: dict[str, dict[str, np.ndarray]], metric: str = "auroc",
                 groups: dict[str, str] | None = None) -> pd.DataFrame:
    """OOD set × method table of one metric (percent), with a ``mean`` row.

    With ``groups`` (set → "near", "far" or "covariate"), the ``mean`` row leaves the covariate-shift
    sets out — they hold the ID classes, so they are not averaged with OOD sets — and a
    ``covariate`` row gives their own mean."""
    rows = {}
    for key, per in s.items():
        if key == "id_test":
            continue
        rows[key] = {m: evaluate_scores(s["id_test"][m], v)[metric] for m, v in per.items()}
    t = pd.DataFrame(rows).T
    counted = in_mean({k: (groups or {}).get(k, "") for k in t.index})
    cov = [k for k in t.index if k not in counted]
    t.loc["mean"] = t.loc[counted].mean()
    if cov:
        t.loc["covariate"] = t.loc[cov].mean()
    return t


def log_variance_shares(u, v) -> dict[str, float]:
    """Shares of var(log U·V) carried by log U, by log V and by twice their covariance."""
    lu, lv = np.log(check_scores(u, "u")), np.log(check_scores(v, "v"))
    if len(lu) != len(lv):
        raise OODInputError(f"u and v have different lengths ({len(lu)} vs {len(lv)})")
    total = np.var(lu + lv)
    if not total > 0:
        raise OODInputError("log U·V is constant: no variance to share")
    cov = np.cov(lu, lv, bias=True)[0, 1]
    return {"u": float(np.var(lu) / total), "v": float(np.var(lv) / total), "cov": float(2 * cov / total)}


def rank_agreement(a, b) -> dict[str, float]:
    """Spearman and Kendall rank correlations and the fraction of exactly equal ranks."""
    a, b = check_scores(a, "a"), check_scores(b, "b")
    if len(a) != len(b):
        raise OODInputError(f"a and b have different lengths ({len(a)} vs {len(b)})")
    same = float(np.mean(stats.rankdata(a) == stats.rankdata(b)))
    return {"spearman": float(stats.spearmanr(a, b).statistic), "kendall": float(stats.kendalltau(a, b).statistic),
            "same_rank": same}


def auroc_difference(s: dict[str, dict[str, np.ndarray]], a: str, b: str) -> float:
    """Largest |AUROC(a) − AUROC(b)| over the OOD sets (percentage points)."""
    return max(abs(auroc(s["id_test"][a], per[a]) - auroc(s["id_test"][b], per[b]))
               for key, per in s.items() if key != "id_test")
