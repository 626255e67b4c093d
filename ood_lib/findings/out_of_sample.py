"""The pre-registered mechanism tested out of sample (page *Pre-registration*, rule of 6 December 2026).

The rule (:func:`ood_lib.findings.mechanism.predict_feature_norm_effect`, threshold
:data:`~ood_lib.findings.mechanism.TAU`) predicts, per (model, OOD set), that multiplying the output
score by ‖h‖₁ helps exactly when AUROC(‖h‖₁) > τ. Its threshold was chosen on the 20 pairs of
:data:`IN_SAMPLE`; every other pair a study scores tests it. :func:`out_of_sample_table` puts the
prediction beside the outcome — the sign of AUROC(‖h‖₁·MSP) − AUROC(MSP) (or of GradNorm −
AUROC(‖p − u‖₁)) read off each study's ``factors`` table — and :func:`hit_rates` scores it against
the best constant guess (the majority sign of those pairs themselves) and against "always helps".
This module applies the rule; it does not change it.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import pandas as pd

from .._checks import OODInputError
from .mechanism import TAU

__all__ = ["IN_SAMPLE", "hit_rates", "out_of_sample_table"]

# the 20 (benchmark, OOD set) pairs τ was chosen on: the factors tables recorded on 6 December 2026
IN_SAMPLE: frozenset[tuple[str, str]] = frozenset(
    [("mnist", s) for s in ("fashion_mnist", "notmnist", "textures", "noise")]
    + [(b, s) for b in ("cifar10", "cifar10_densenet")
       for s in ("tiny_imagenet", "textures", "mnist", "notmnist", "fashion_mnist", "noise")]
    + [("imagenet_lite", s) for s in ("textures", "notmnist", "fashion_mnist", "noise")]
)
V_TERMS = {"msp": "‖h‖₁·MSP − MSP", "pu_l1": "GradNorm − ‖p − u‖₁"}


def _model_of(benchmark: str, study: Any) -> str:
    from ..data.benchmarks import BENCHMARKS

    b = BENCHMARKS.get(benchmark)
    return b.model.arch if b is not None else str(getattr(study, "meta", {}).get("model", benchmark))


def out_of_sample_table(studies: Mapping[str, Any] | Iterable[Any], v_term: str = "msp", tau: float = TAU,
                        include_in_sample: bool = False) -> pd.DataFrame:
    """One row per (benchmark, OOD set) of the studies' ``factors`` tables that is not among the 20
    of :data:`IN_SAMPLE` (all rows with ``include_in_sample``, marked ``in_sample``).

    ``studies``: studies (anything with ``benchmark`` and a ``factors`` table, as
    :class:`~ood_lib.findings.study.Study`), or a mapping benchmark → study. ``v_term``: ``"msp"``
    (the outcome is AUROC(‖h‖₁·MSP) − AUROC(MSP)) or ``"pu_l1"`` (GradNorm − AUROC(‖p − u‖₁)).
    Columns: benchmark, model, ood, group, auroc_u, predicted_helps (auroc_u > tau), difference
    (points), helps (difference > 0; a tie does not help, as the rule states), hit, in_sample.
    """
    if v_term not in V_TERMS:
        raise OODInputError(f"v_term must be one of {', '.join(V_TERMS)}, got {v_term!r}")
    items = list(studies.items()) if isinstance(studies, Mapping) else [(s.benchmark, s) for s in studies]
    rows = []
    for bench, study in items:
        f = study["factors"]
        missing = {"ood", "group", "auroc_u", "uv_minus_v", "v_term"} - set(f.columns)
        if missing:
            raise OODInputError(f"study {bench!r}: its factors table lacks {', '.join(sorted(missing))}")
        for r in f[f.v_term == v_term].itertuples():
            inside = (bench, r.ood) in IN_SAMPLE
            if inside and not include_in_sample:
                continue
            pred, diff = bool(r.auroc_u > tau), float(r.uv_minus_v)
            rows.append({"benchmark": bench, "model": _model_of(bench, study), "ood": r.ood, "group": r.group,
                         "auroc_u": float(r.auroc_u), "predicted_helps": pred, "difference": diff,
                         "helps": diff > 0, "hit": pred == (diff > 0), "in_sample": inside})
    cols = ["benchmark", "model", "ood", "group", "auroc_u", "predicted_helps", "difference", "helps", "hit",
            "in_sample"]
    return pd.DataFrame(rows, columns=cols)


def hit_rates(table: pd.DataFrame) -> dict[str, Any]:
    """The rule's hit rate over the rows of :func:`out_of_sample_table` (its out-of-sample rows
    only), beside two constant guesses: the majority sign of those rows themselves (the best
    constant guess, known only after the fact) and "always helps". Keys: n, hits, hit_rate,
    majority ("helps" or "does not help"; a tie counts as "helps"), base_rate, always_helps_rate,
    beats_base_rate (hit_rate > base_rate). Rates are NaN for no rows."""
    t = table[~table.in_sample] if "in_sample" in table else table
    n = len(t)
    helps = int(t.helps.sum()) if n else 0
    hits = int(t.hit.sum()) if n else 0
    rate = lambda k: k / n if n else float("nan")  # noqa: E731
    majority = "helps" if helps >= n - helps else "does not help"
    base = rate(max(helps, n - helps))
    return {"n": n, "hits": hits, "hit_rate": rate(hits), "majority": majority, "base_rate": base,
            "always_helps_rate": rate(helps), "beats_base_rate": bool(n and rate(hits) > base)}
