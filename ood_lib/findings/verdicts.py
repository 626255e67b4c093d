"""The verdicts of one study under the rules of 6 and 7 December 2026 (page *Pre-registration*).

:func:`replicates` draws the resamples a study is decided on — the paired image bootstrap of one
set of weights, or, for a model trained here with several training seeds, the hierarchical
bootstrap over seeds × images (:class:`ood_lib.findings.decide.Replicates`). :func:`verdict_table`
decides every claim on it, per cell (near, far-natural, far-synthetic) and per metric (AUROC and
FPR95), at the Bonferroni level of ``cells`` simultaneous intervals; each row carries the interval,
the margin, the four-way verdict and its cause, whether that verdict supports the claim, and the
per-set evidence (differences with their signs, leave-one-set-out range). Claim 4 is decided as
stated, the conjunction of its halves (:data:`ood_lib.findings.claims.CONJUNCTION`).

:func:`n_cells` counts a study's cells, and :func:`unit_counts` turns the tables of several units
into the headline: per claim and cell, the units on which the claim holds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from .._checks import OODInputError
from ..data.benchmarks import DECISION_GROUPS
from ..data.benchmarks import Benchmark
from ..run.config import RunConfig
from ..run.evaluate import prepare, score_methods
from .claims import CLAIMS, CONJUNCTION, MARGINS, Claim, get_claim
from .decide import DECIDED_METRICS, Replicates, bonferroni_level, conjunction, min_resamples

SEEDS_X_IMAGES, IMAGES = "seeds × images", "images"
# runs that are not units of evidence: the embedded benchmark is MNIST's task and architecture again
SANITY_RUNS = ("embedded",)
COLUMNS = ("claim", "source", "statement", "supported_by", "group", "metric", "estimate", "lo", "hi", "level",
           "margin", "verdict", "cause", "supports", "n_sets", "sets_agree", "loo_lo", "loo_hi", "per_set",
           "best_member", "interval", "n_boot", "cells")


def decision_groups(group_of: Mapping[str, str]) -> dict[str, list[str]]:
    """Decision cell → its OOD sets, from each set's decision group (near, far-natural,
    far-synthetic; covariate sets are not decided), in :data:`DECISION_GROUPS` order."""
    out = {g: [k for k, v in group_of.items() if v == g] for g in DECISION_GROUPS}
    return {g: v for g, v in out.items() if v}


def n_cells(groups: Mapping[str, Sequence[str]]) -> int:
    """The cells of one unit: decision groups holding at least one set."""
    return sum(1 for g, v in groups.items() if g in DECISION_GROUPS and len(v))


def decided_methods(members: Sequence[str]) -> list[str]:
    """Every method a verdict compares: the claims' pairs and the family's members."""
    pairs = [m for c in CLAIMS if c.kind == "difference" for m in (c.a, c.b)]
    return list(dict.fromkeys([*pairs, "gradnorm", *members]))


def replicates(per_seed: Mapping[int, tuple[Mapping[str, Any], Mapping[str, Mapping[str, Any]]]], *, n_boot: int,
               seed: int = 0) -> Replicates:
    """The paired image bootstrap for one set of weights (one entry), or the hierarchical
    bootstrap over the training seeds × images (several: at least ``MIN_SEEDS``)."""
    if not per_seed:
        raise OODInputError("no scores to decide on")
    if len(per_seed) == 1:
        ids, oods = next(iter(per_seed.values()))
        return Replicates.paired(ids, oods, n_boot=n_boot, seed=seed)
    return Replicates.hierarchical(per_seed, n_boot=n_boot, seed=seed)


def _row(claim: Claim, group: str, metric: str, reps: Replicates, cells: int, **values: Any) -> dict[str, Any]:
    v = values.get("verdict")
    return {"claim": claim.key, "source": claim.source, "statement": claim.statement,
            "supported_by": " or ".join(claim.supported_by), "group": group, "metric": metric,
            "supports": v in claim.supported_by, "best_member": "",
            "interval": SEEDS_X_IMAGES if reps.kind == "seeds × images" else IMAGES, "n_boot": reps.n_boot,
            "cells": cells, **values}


def verdict_table(reps: Replicates, groups: Mapping[str, Sequence[str]], members: Sequence[str], *, cells: int,
                  identities: Sequence[dict[str, Any]] = ()) -> pd.DataFrame:
    """Every claim decided on ``reps`` per decision group and metric (module docstring).
    ``identities``: the identity claims' rows (decided by their tolerance, not here)."""
    if reps.n_boot < min_resamples(cells):
        raise OODInputError(f"{cells} cells need at least {min_resamples(cells):,} resamples, got {reps.n_boot:,}")
    rows = [dict(r) for r in identities]
    members = [m for m in members if m in reps.methods]
    for group, sets in groups.items():
        for metric in DECIDED_METRICS:
            half = {}
            for claim in CLAIMS:
                if claim.kind == "identity":
                    continue
                if claim.kind == "family":
                    verdict, fam = reps.family(members, claim.b, metric, sets, cells=cells)
                    best = fam.loc[fam.estimate.idxmax()]
                    rows.append(_row(claim, group, metric, reps, cells, estimate=float(best.estimate),
                                     lo=float(best.lo), hi=float(best.hi), verdict=verdict,
                                     cause=best.cause if verdict == "inconclusive" else "",
                                     best_member=str(best.member), n_sets=len(sets),
                                     level=bonferroni_level(cells), margin=MARGINS[metric], sets_agree=np.nan, loo_lo=np.nan,
                                     loo_hi=np.nan, per_set=f"{int((fam.verdict == 'better').sum())} of {len(fam)} "
                                                            "members better"))
                    continue
                d = reps.decide(claim.a, claim.b, metric, sets, direction=claim.direction, cells=cells)
                half[claim.key] = d
                rows.append(_row(claim, group, metric, reps, cells, **{k: v for k, v in d.as_row().items()
                                                                        if k != "metric"}))
            a, b = (half[CONJUNCTION.a], half[CONJUNCTION.b])
            rows.append(_row(CONJUNCTION, group, metric, reps, cells, estimate=min(a.estimate, b.estimate),
                             lo=np.nan, hi=np.nan, level=a.level, margin=a.margin,
                             verdict=conjunction(a.verdict, b.verdict),
                             cause=f"GradNorm − V: {a.verdict}; GradNorm − U: {b.verdict}", n_sets=len(sets),
                             sets_agree=np.nan, loo_lo=np.nan, loo_hi=np.nan, per_set=""))
    t = pd.DataFrame(rows)
    for c in COLUMNS:
        if c not in t:
            t[c] = np.nan
    return t[list(COLUMNS)]


def identity_rows(old: pd.DataFrame, decision: dict[str, Any]) -> list[dict[str, Any]]:
    """The identity claims' rows of the verdicts table (decided by their tolerance)."""
    out = []
    for r in old[old.group == "all"].itertuples():
        c = get_claim(r.claim)
        out.append({"claim": c.key, "source": c.source, "statement": c.statement, "supported_by": "supported",
                    "group": "all", "metric": "identity", "estimate": r.estimate, "verdict": r.verdict,
                    "cause": r.rule, "supports": r.verdict == "supported", "interval": "", "n_boot": 0,
                    "cells": decision["cells"]})
    return out


def study_replicates(bench: Benchmark, cfg: RunConfig, prep, scores, members, seeds, cells: int, decide_boot: int | None):
    """The resamples the verdicts are decided on: the run's own scores, and for a model trained
    here with ``seeds``, the same methods on a model trained with each other seed."""
    names = [m for m in decided_methods(members) if m in scores]
    keys = [k for k in prep.ood_keys if prep.splits[k].group != "covariate"]
    own = ({m: scores[m]["id_test"] for m in names}, {k: {m: scores[m][k] for m in names} for k in keys})
    seeds = [cfg.seed] if not seeds else [int(s) for s in seeds]
    if seeds[0] != cfg.seed:
        raise OODInputError(f"the seeds {seeds} must start with the run's seed {cfg.seed}")
    if len(seeds) > 1 and bench.model.train_epochs is None:
        raise OODInputError(f"{bench.name!r} uses a pretrained checkpoint: one set of weights, no training seeds")
    per_seed = {seeds[0]: own}
    for s in seeds[1:]:
        _, sc, _ = score_methods(prepare(bench, cfg.replace(seed=s), with_train=True), names)
        per_seed[s] = ({m: sc[m]["id_test"] for m in names}, {k: {m: sc[m][k] for m in names} for k in keys})
    n = decide_boot or min_resamples(cells)
    reps = replicates(per_seed, n_boot=n, seed=cfg.seed)
    return reps, {"cells": int(cells), "n_boot": int(n), "interval": reps.kind, "seeds": seeds}


def unit_counts(tables: Mapping[str, pd.DataFrame], metric: str = "auroc") -> pd.DataFrame:
    """Per claim and cell, over the units (``{unit: verdict table}``): how many units have the
    cell, and on how many the claim holds (its verdict supports it), with the verdicts spelled
    out. A unit supported only on far-synthetic is counted in ``only_synthetic``, never as support."""
    rows = []
    keys = [c.key for c in CLAIMS if c.kind != "identity"] + [CONJUNCTION.key]
    for key in keys:
        per_unit = {u: t[(t.claim == key) & (t.metric == metric)].set_index("group") for u, t in tables.items()}
        only = sum(1 for t in per_unit.values() if "far-synthetic" in t.index and bool(t.loc["far-synthetic", "supports"])
                   and not any(bool(t.loc[g, "supports"]) for g in ("near", "far-natural") if g in t.index))
        for group in DECISION_GROUPS:
            have = {u: t.loc[group] for u, t in per_unit.items() if group in t.index}
            if not have:
                continue
            rows.append({"claim": key, "group": group, "metric": metric, "units": len(have),
                         "holds": sum(bool(r.supports) for r in have.values()),
                         **{v: sum(r.verdict == v for r in have.values())
                            for v in ("better", "equivalent", "worse", "inconclusive")},
                         "only_synthetic": only})
    return pd.DataFrame(rows)
