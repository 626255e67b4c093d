"""Deciding a comparison by the rule of 6 December 2026 (page *Pre-registration*): four verdicts
with an equivalence margin, training seeds in the interval, per-set signs, Bonferroni across cells.

**Replicates.** :class:`Replicates` holds, for one model, each method's AUROC and FPR95 (percent)
on every OOD set, on the original samples (``point``: ``(metric, set, method)``) and on ``n_boot``
resamples (``draws``: ``(metric, replicate, set, method)``). For a pretrained model the resamples
are the paired image bootstrap of :class:`ood_lib.stats.paired.PairedBootstrap` (one draw of the ID
images and of each OOD set per replicate, shared by every method), and FPR95 is read off the very
same draws. For a model trained here with several seeds, :meth:`Replicates.hierarchical` draws the
seeds with replacement and, for each drawn seed, one image resample of that seed's scores; the
replicate is the mean over the drawn seeds (the point estimate: the mean over all seeds).

**FPR95 of a resample without re-sorting.** With ``w`` the multiplicities of the ID samples sorted
by decreasing score, the threshold is the score at the first position where ``Σw / n ≥ 0.95`` (the
first point of the ROC curve with TPR ≥ 95 %, as :func:`ood_lib.stats.metrics.fpr95` reads it: ties
are one point of the curve), and FPR95 is the weighted share of OOD samples scoring at least that.

**Verdict** (:func:`four_way`): *equivalent* if the interval lies inside ``(−δ, δ)``; else *better*
if it lies above 0; else *worse* if below 0; else *inconclusive*, "too wide" when it is at least
2δ wide and "crosses the margin" otherwise. FPR95 differences are oriented so that positive is
the claim's direction (lower FPR95 is better).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .._checks import OODInputError, unknown_name
from .claims import MARGINS, MIN_SEEDS
from ..stats.paired import PairedBootstrap

__all__ = ["FOUR_VERDICTS", "Decision", "Replicates", "bonferroni_level", "conjunction", "decisions_table",
           "family_verdict", "four_way", "min_resamples"]

FOUR_VERDICTS = ("better", "equivalent", "worse", "inconclusive")
DECIDED_METRICS = ("auroc", "fpr95")
LOWER_IS_BETTER = {"auroc": False, "fpr95": True}
ALPHA = 0.05


def four_way(lo: float, hi: float, margin: float) -> tuple[str, str]:
    """``(verdict, cause)`` of an interval ``[lo, hi]`` of a difference claimed > 0; ``cause`` is
    "" except for "inconclusive": "too wide" (``hi − lo ≥ 2·margin``) or "crosses the margin"."""
    lo, hi, margin = float(lo), float(hi), float(margin)
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
        raise OODInputError(f"an interval needs finite lo <= hi, got [{lo}, {hi}]")
    if not (math.isfinite(margin) and margin > 0):
        raise OODInputError(f"the equivalence margin must be finite and > 0, got {margin}")
    if -margin < lo and hi < margin:
        return "equivalent", ""
    if lo > 0:
        return "better", ""
    if hi < 0:
        return "worse", ""
    return "inconclusive", "too wide" if hi - lo >= 2 * margin else "crosses the margin"


def bonferroni_level(cells: int, alpha: float = ALPHA) -> float:
    """The level of each of ``cells`` simultaneous intervals: ``1 − alpha / cells``."""
    if isinstance(cells, bool) or not isinstance(cells, (int, np.integer)) or cells < 1:
        raise OODInputError(f"the number of cells must be an integer >= 1, got {cells!r}")
    return 1.0 - alpha / int(cells)


def min_resamples(cells: int, alpha: float = ALPHA) -> int:
    """Resamples the corrected intervals need: ``max(2000, ⌈20·cells/alpha⌉)`` (ten in each tail)."""
    bonferroni_level(cells, alpha)
    return max(2000, math.ceil(20 * int(cells) / alpha - 1e-9))


def _fpr95_weighted(ids: np.ndarray, ood: np.ndarray, w: np.ndarray, v: np.ndarray) -> np.ndarray:
    """FPR95 (percent) of each replicate: ``ids`` (n,) and ``ood`` (m,) scores of one method, ``w``
    (B, n) and ``v`` (B, m) multiplicities (module docstring)."""
    n, m = len(ids), len(ood)
    down = np.argsort(-ids, kind="stable")
    reached = np.cumsum(w[:, down], axis=1) / n >= 0.95
    thr = ids[down][reached.argmax(axis=1)]  # (B,)
    up = np.argsort(ood, kind="stable")
    ranked = ood[up]
    c = np.concatenate([np.zeros((len(v), 1)), np.cumsum(v[:, up], axis=1)], axis=1)
    at = np.searchsorted(ranked, thr, side="left")  # OOD samples below the threshold
    return 100.0 * (m - c[np.arange(len(v)), at]) / m


def _fpr95_resampled(ids: np.ndarray, oods: Sequence[np.ndarray], id_idx: np.ndarray,
                     ood_idx: Sequence[np.ndarray]) -> np.ndarray:
    """FPR95 (percent) of every method on every set for resamples given by their indices:
    ``ids`` (M, n), ``oods`` [(M, m_s)], ``id_idx`` (B, n), ``ood_idx`` [(B, m_s)] → (B, S, M).

    The same numbers as :func:`_fpr95_weighted` (module docstring): the threshold is the k-th
    largest resampled ID score, k the first count with k / n ≥ 0.95, and FPR95 the share of the
    resampled OOD scores at or above it."""
    n = ids.shape[1]
    k = int(np.argmax(np.arange(1, n + 1) / n >= 0.95)) + 1
    out = np.empty((len(id_idx), len(oods), len(ids)))
    for j in range(len(ids)):
        thr = np.partition(ids[j][id_idx], n - k, axis=1)[:, n - k]  # (B,)
        for s, (o, idx) in enumerate(zip(oods, ood_idx)):
            out[:, s, j] = 100.0 * (o[j][idx] >= thr[:, None]).sum(axis=1) / o.shape[1]
    return out


@dataclass(frozen=True)
class Decision:
    """One decided difference (claimed direction positive): estimate, interval, verdict and the
    per-set evidence beside it."""

    metric: str
    estimate: float
    lo: float
    hi: float
    level: float
    margin: float
    verdict: str
    cause: str
    per_set: dict[str, float]
    agree: int  # sets whose difference has the sign of the estimate (0 counts as agreeing with 0)
    leave_one_out: tuple[float, float]  # range of the estimate with each set left out

    def as_row(self) -> dict[str, Any]:
        """A flat record for a verdicts table."""
        return {"metric": self.metric, "estimate": self.estimate, "lo": self.lo, "hi": self.hi, "level": self.level,
                "margin": self.margin, "verdict": self.verdict, "cause": self.cause, "n_sets": len(self.per_set),
                "sets_agree": self.agree, "loo_lo": self.leave_one_out[0], "loo_hi": self.leave_one_out[1],
                "per_set": "; ".join(f"{k} {v:+.2f}" for k, v in self.per_set.items())}


class Replicates:
    """Point values and bootstrap draws of AUROC and FPR95 for one model (module docstring)."""

    def __init__(self, methods: Sequence[str], sets: Sequence[str], point: np.ndarray, draws: np.ndarray,
                 kind: str) -> None:
        self.methods, self.sets, self.kind = list(methods), list(sets), kind
        self.point, self.draws = point, draws  # (2, S, M), (2, B, S, M)

    @property
    def n_boot(self) -> int:
        return int(self.draws.shape[1])

    @classmethod
    def paired(cls, id_scores: Mapping[str, Any], ood_scores: Mapping[str, Mapping[str, Any]], *,
               n_boot: int, seed: int = 0) -> "Replicates":
        """The paired image bootstrap of one set of weights (``id_scores``: method → scores;
        ``ood_scores``: set → method → scores; higher = ID)."""
        pb = PairedBootstrap(id_scores, ood_scores, n_boot=n_boot, seed=seed)
        ids = np.stack([np.asarray(id_scores[k], np.float64) for k in pb.methods])
        oods = [np.stack([np.asarray(ood_scores[s][k], np.float64) for k in pb.methods]) for s in pb.sets]
        fpr_point = np.array([[_fpr95_weighted(ids[j], o[j], np.ones((1, ids.shape[1])), np.ones((1, o.shape[1])))[0]
                               for j in range(len(pb.methods))] for o in oods])
        fpr = np.empty_like(pb.replicates)
        for b0 in range(0, n_boot, 256):
            b1 = min(b0 + 256, n_boot)
            draws = [pb.resample(b) for b in range(b0, b1)]
            id_idx = np.stack([d[0] for d in draws])
            ood_idx = [np.stack([d[1][s] for d in draws]) for s in pb.sets]
            fpr[b0:b1] = _fpr95_resampled(ids, oods, id_idx, ood_idx)
        return cls(pb.methods, pb.sets, np.stack([pb.point, fpr_point]), np.stack([pb.replicates, fpr]), "images")

    @classmethod
    def hierarchical(cls, per_seed: Mapping[int, tuple[Mapping[str, Any], Mapping[str, Mapping[str, Any]]]], *,
                     n_boot: int, seed: int = 0, min_seeds: int = MIN_SEEDS) -> "Replicates":
        """Training seeds × images: ``per_seed`` maps a training seed to its ``(id_scores,
        ood_scores)``; each replicate draws the seeds with replacement and, per drawn seed, one of
        that seed's image resamples; the statistic is the mean over the drawn seeds."""
        if len(per_seed) < min_seeds:
            raise OODInputError(f"a hierarchical bootstrap needs at least {min_seeds} training seeds, "
                                f"got {len(per_seed)}: {sorted(per_seed)}")
        reps = [cls.paired(i, o, n_boot=n_boot, seed=seed * 7919 + 1 + k) for k, (i, o) in enumerate(per_seed.values())]
        first = reps[0]
        for s, r in zip(per_seed, reps):
            if r.methods != first.methods or r.sets != first.sets:
                raise OODInputError(f"training seed {s} scores other methods or sets than seed {next(iter(per_seed))}")
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(2**31 - 1,)))
        K = len(reps)
        pick_seed = rng.integers(0, K, (n_boot, K))
        pick_rep = rng.integers(0, n_boot, (n_boot, K))
        pool = np.stack([r.draws for r in reps])  # (K, 2, B, S, M)
        draws = pool[pick_seed, :, pick_rep].mean(axis=1)  # (B, 2, S, M)
        point = np.stack([r.point for r in reps]).mean(axis=0)
        return cls(first.methods, first.sets, point, np.moveaxis(draws, 1, 0), "seeds × images")

    def _index(self, names: Sequence[str], known: list[str], what: str) -> list[int]:
        for n in names:
            if n not in known:
                raise unknown_name(what, n, known)
        return [known.index(n) for n in names]

    def difference(self, a: str, b: str, metric: str = "auroc", sets: Sequence[str] | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
        """Per-set point differences (S,) and replicate differences of the set mean (B,), oriented
        so that positive favours ``a`` (for FPR95: FPR95(b) − FPR95(a))."""
        if metric not in DECIDED_METRICS:
            raise unknown_name("metric", metric, DECIDED_METRICS)
        mi = DECIDED_METRICS.index(metric)
        ia, ib = self._index([a, b], self.methods, "method")
        si = self._index(self.sets if sets is None else list(sets), self.sets, "OOD set")
        if not si:
            raise OODInputError("no OOD set to decide on")
        sign = -1.0 if LOWER_IS_BETTER[metric] else 1.0
        per = sign * (self.point[mi, si, ia] - self.point[mi, si, ib])
        reps = sign * (self.draws[mi][:, si, ia] - self.draws[mi][:, si, ib]).mean(axis=1)
        return per, reps

    def decide(self, a: str, b: str, metric: str = "auroc", sets: Sequence[str] | None = None, *,
               direction: int = +1, cells: int = 1, margin: float | None = None) -> Decision:
        """The four-way verdict of "``a`` is better than ``b``" (``direction=-1``: worse) on the
        mean over ``sets``, at the Bonferroni level for ``cells`` simultaneous intervals."""
        if direction not in (1, -1):
            raise OODInputError(f"direction must be +1 or -1, got {direction!r}")
        level = bonferroni_level(cells)
        if self.n_boot < min_resamples(cells):
            raise OODInputError(f"{cells} simultaneous interval(s) need at least {min_resamples(cells):,} "
                                f"resamples, got {self.n_boot:,}: no verdict is given")
        per, reps = self.difference(a, b, metric, sets)
        per, reps = direction * per, direction * reps
        est = float(per.mean())
        lo, hi = (float(x) for x in np.quantile(reps, [(1 - level) / 2, 1 - (1 - level) / 2]))
        m = MARGINS[metric] if margin is None else float(margin)
        verdict, cause = four_way(lo, hi, m)
        names = self.sets if sets is None else list(sets)
        agree = int(np.sum(np.sign(per) == np.sign(est)))
        loo = [float(np.delete(per, i).mean()) for i in range(len(per))] if len(per) > 1 else [est]
        return Decision(metric, est, lo, hi, level, m, verdict, cause, dict(zip(names, per.tolist())),
                        agree, (min(loo), max(loo)))

    def family(self, members: Sequence[str], b: str, metric: str = "auroc", sets: Sequence[str] | None = None, *,
               cells: int = 1, margin: float | None = None) -> tuple[str, pd.DataFrame]:
        """Every member against ``b`` with intervals simultaneous over the members (max-statistic:
        each replicate difference standardised by its bootstrap s.d., the ``level`` quantile of the
        largest absolute standardised deviation sets a common width), at the Bonferroni level for
        ``cells``; returns the family's verdict (:func:`family_verdict`) and one row per member."""
        members = list(members)
        if not members or len(set(members)) != len(members) or b in members:
            raise OODInputError(f"members must be distinct, non-empty and exclude {b!r}: {members}")
        level = bonferroni_level(cells)
        if self.n_boot < min_resamples(cells):
            raise OODInputError(f"{cells} simultaneous interval(s) need at least {min_resamples(cells):,} "
                                f"resamples, got {self.n_boot:,}: no verdict is given")
        diffs = [self.difference(mem, b, metric, sets) for mem in members]
        d = np.array([per.mean() for per, _ in diffs])
        draws = np.stack([reps for _, reps in diffs])  # (K, B)
        sd = draws.std(axis=1)
        live = sd > 0
        q = float(np.quantile((np.abs(draws[live] - d[live, None]) / sd[live, None]).max(axis=0), level)) if live.any() else 0.0
        m = MARGINS[metric] if margin is None else float(margin)
        rows = []
        for name, est, s in zip(members, d, sd):
            v, cause = four_way(est - q * s, est + q * s, m)
            rows.append({"member": name, "estimate": float(est), "lo": float(est - q * s), "hi": float(est + q * s),
                         "verdict": v, "cause": cause})
        table = pd.DataFrame(rows)
        return family_verdict(table.verdict), table


def family_verdict(verdicts: Sequence[str]) -> str:
    """The family claim (rule of 7 December 2026): *better* if some member is better, else
    *equivalent* if some member is equivalent, *worse* if every member is worse, else *inconclusive*."""
    vs = list(verdicts)
    for v in vs:
        if v not in FOUR_VERDICTS:
            raise unknown_name("verdict", v, FOUR_VERDICTS)
    if not vs:
        raise OODInputError("a family needs at least one member")
    if "better" in vs:
        return "better"
    if "equivalent" in vs:
        return "equivalent"
    return "worse" if all(v == "worse" for v in vs) else "inconclusive"


def conjunction(first: str, second: str) -> str:
    """Claim 4 as stated (both comparisons in one cell): *better* if both are better, *worse* if
    either is worse, *equivalent* if both are better or equivalent, else *inconclusive*."""
    for v in (first, second):
        if v not in FOUR_VERDICTS:
            raise unknown_name("verdict", v, FOUR_VERDICTS)
    if first == second == "better":
        return "better"
    if "worse" in (first, second):
        return "worse"
    if {first, second} <= {"better", "equivalent"}:
        return "equivalent"
    return "inconclusive"


def decisions_table(decisions: Mapping[str, Decision]) -> pd.DataFrame:
    """One row per named decision (e.g. ``"near"``, ``"far-natural"``), with its evidence."""
    return pd.DataFrame([{"cell": k, **d.as_row()} for k, d in decisions.items()])
