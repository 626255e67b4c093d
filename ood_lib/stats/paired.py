"""Paired bootstrap of AUROC differences between detectors (chapter *The evaluation*, section on
deciding a claim).

**One resample for every detector.** Replicate ``b`` draws the ID test set once with replacement
(shared by every OOD set and every method) and each OOD set once (shared by every method), from
seeded streams that depend only on ``(seed, b, set)``, so any replicate can be replayed
(:meth:`PairedBootstrap.resample`). A difference of two detectors' AUROC is then computed on the
same samples in every replicate: what the two scores share cancels.

**AUROC of a resample without sorting.** With ``w_i`` the multiplicity of ID sample ``i`` and
``v_j`` that of OOD sample ``j`` in the resample (``n`` ID and ``m`` OOD samples, ``Σw = n``,
``Σv = m``), ID positive and ties counting one half (the Mann–Whitney form of the area),

    AUROC = 100 · Σ_i w_i (Σ_j v_j [t_j < s_i] + ½ Σ_j v_j [t_j = s_i]) / (n m).

Sort each method's OOD scores once and locate each ID score with ``searchsorted``:
``l_i = #{t < s_i}``, ``r_i = #{t ≤ s_i}``. For a replicate, let ``c`` be the cumulative sums of
``v`` in sorted OOD order (``c_0 = 0``); the bracket above is ``(c_{l_i} + c_{r_i}) / 2``. A
replicate therefore costs one gather, one cumulative sum and one dot product per method and set,
in exact integer arithmetic, vectorised over a chunk of replicates.

**Decisions.** :func:`verdict` reads an interval of a difference claimed to be > 0
(``direction=+1``) or < 0 (``-1``). For a claim over a family of members,
:meth:`PairedBootstrap.family` reports two corrections for the number of members ``K``:

* max-statistic (simultaneous) intervals: ``t*_k = (D*_k − d_k) / sd_k`` with ``D*_k`` the
  replicate differences, ``d_k`` the estimate and ``sd_k`` the bootstrap s.d.; ``q`` is the
  ``level`` quantile of ``max_k |t*_k|`` and the interval is ``d_k ± q · sd_k``; all ``K``
  intervals hold together with probability ``level``. The verdicts come from these intervals.
* Holm's step-down adjustment of the bootstrap p-values
  ``p_k = 2 · min(P*(D_k ≤ 0), P*(D_k ≥ 0))``, floored at ``1 / (n_boot + 1)``: the ``j``-th
  smallest is multiplied by ``K − j + 1``, then made monotone. The floor limits its resolution:
  no member can reach ``p_holm < α`` unless ``n_boot + 1 > K / α``.

With clear effects and enough replicates the two agree on which differences exclude 0; near the
boundary they may not (one is single-step and studentised, the other step-down on percentile
p-values).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .._checks import OODInputError, check_scores, unknown_name

VERDICTS = ("supported", "refuted", "inconclusive")


def verdict(lo: float, hi: float, direction: int = +1) -> str:
    """'supported' if ``[lo, hi]`` excludes 0 on the side of ``direction`` (+1: the difference is
    claimed > 0, -1: < 0), 'refuted' if it excludes 0 on the other side, else 'inconclusive'."""
    if direction not in (1, -1):
        raise OODInputError(f"direction must be +1 or -1, got {direction!r}")
    lo, hi = float(lo), float(hi)
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
        raise OODInputError(f"an interval needs finite lo <= hi, got [{lo}, {hi}]")
    if lo > 0:
        return VERDICTS[0] if direction == 1 else VERDICTS[1]
    if hi < 0:
        return VERDICTS[1] if direction == 1 else VERDICTS[0]
    return VERDICTS[2]


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjustment: sorted ascending, ``p_(j) · (K − j + 1)``, running max, cap 1."""
    p = np.asarray(p_values, dtype=np.float64)
    order = np.argsort(p, kind="stable")
    adj = np.minimum(1.0, np.maximum.accumulate((len(p) - np.arange(len(p))) * p[order]))
    out = np.empty_like(adj)
    out[order] = adj
    return out


@dataclass(frozen=True)
class Difference:
    """A paired difference of mean AUROC (percentage points) with its bootstrap interval."""

    estimate: float  # point difference on the original samples
    lo: float
    hi: float
    p_value: float  # two-sided: 2·min(P*(d ≤ 0), P*(d ≥ 0)), floored at 1/(n_boot+1)


def _check_level(level: float) -> float:
    if not (isinstance(level, numbers.Real) and 0.0 < float(level) < 1.0):
        raise OODInputError(f"level must be in (0, 1), got {level!r}")
    return float(level)


def _percentile(x: np.ndarray, level: float) -> tuple[float, float]:
    a = (1.0 - level) / 2.0
    lo, hi = np.quantile(x, [a, 1.0 - a])
    return float(lo), float(hi)


def _p_value(d: np.ndarray) -> float:
    p = 2.0 * min(np.mean(d <= 0), np.mean(d >= 0))
    return float(min(1.0, max(p, 1.0 / (len(d) + 1))))


class PairedBootstrap:
    """AUROC (percent) of every method on every OOD set, on the original samples (:attr:`point`,
    shape ``(n_sets, n_methods)``) and on ``n_boot`` shared resamples (:attr:`replicates`, shape
    ``(n_boot, n_sets, n_methods)``).

    ``id_scores``: method -> oriented scores (higher = ID) on the ID test set; ``ood_scores``:
    OOD set -> method -> oriented scores, every method present for every set. All methods score
    the same samples. ``max_bytes`` bounds the working memory of one chunk of replicates.
    """

    def __init__(
        self,
        id_scores: Mapping[str, Any],
        ood_scores: Mapping[str, Mapping[str, Any]],
        *,
        n_boot: int = 1000,
        seed: int = 0,
        max_bytes: int = 200 * 2**20,
    ) -> None:
        if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 1:
            raise OODInputError(f"n_boot must be an integer >= 1, got {n_boot!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise OODInputError(f"seed must be an integer >= 0, got {seed!r}")
        if not isinstance(id_scores, Mapping) or not id_scores:
            raise OODInputError("id_scores is empty: give at least one method")
        if not isinstance(ood_scores, Mapping) or not ood_scores:
            raise OODInputError("ood_scores is empty: give at least one OOD set")
        self.methods: list[str] = list(id_scores)
        self.sets: list[str] = list(ood_scores)
        self.n_boot, self.seed, self._max_bytes = int(n_boot), int(seed), int(max_bytes)
        ids = self._stack({k: id_scores[k] for k in self.methods}, "id_scores")
        oods = []
        for s in self.sets:
            per = ood_scores[s]
            if not isinstance(per, Mapping):
                raise OODInputError(f"ood_scores[{s!r}] must map method -> scores")
            missing = [k for k in self.methods if k not in per]
            extra = [k for k in per if k not in id_scores]
            if missing:
                raise OODInputError(f"OOD set {s!r} has no scores for method(s) {missing}")
            if extra:
                raise OODInputError(f"OOD set {s!r} has method(s) {extra} that id_scores lacks")
            oods.append(self._stack({k: per[k] for k in self.methods}, f"ood_scores[{s!r}]"))
        self._n_id = ids.shape[1]
        self._n_ood = [t.shape[1] for t in oods]
        self.point = np.empty((len(self.sets), len(self.methods)))
        self.replicates = np.empty((self.n_boot, len(self.sets), len(self.methods)))
        for k, t in enumerate(oods):
            self._bootstrap_set(k, ids, t)

    @staticmethod
    def _stack(scores: Mapping[str, Any], where: str) -> np.ndarray:
        """(n_methods, n_samples) float64; every method must score the same number of samples."""
        rows = [check_scores(x, f"{where}[{k!r}]") for k, x in scores.items()]
        sizes = {len(r) for r in rows}
        if len(sizes) > 1:
            got = {k: len(r) for k, r in zip(scores, rows)}
            raise OODInputError(f"{where}: methods score different numbers of samples {got}; "
                                "they must score the same samples")
        return np.stack(rows)

    def _rng(self, b: int, j: int) -> np.random.Generator:
        """The stream of replicate ``b``: ``j = 0`` draws the ID set, ``j = 1 + k`` OOD set ``k``."""
        return np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(b, j)))

    def _draw(self, b: int, j: int, size: int) -> np.ndarray:
        return self._rng(b, j).integers(0, size, size)

    def resample(self, i: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The indices of replicate ``i``: ``(id_idx, {set: ood_idx})``, replayed from its streams."""
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not 0 <= i < self.n_boot:
            raise OODInputError(f"replicate index must be in [0, {self.n_boot}), got {i!r}")
        return self._draw(i, 0, self._n_id), {
            s: self._draw(i, 1 + k, m) for k, (s, m) in enumerate(zip(self.sets, self._n_ood))
        }

    def _counts(self, b0: int, b1: int, j: int, size: int, dtype: type) -> np.ndarray:
        """Multiplicities (b1 − b0, size) of stream ``j`` in replicates b0..b1−1."""
        idx = np.stack([self._draw(b, j, size) for b in range(b0, b1)])
        idx += np.arange(b1 - b0)[:, None] * size
        return np.bincount(idx.ravel(), minlength=(b1 - b0) * size).reshape(b1 - b0, size).astype(dtype)

    def _bootstrap_set(self, k: int, ids: np.ndarray, ood: np.ndarray) -> None:
        """Fill ``point[k]`` and ``replicates[:, k]`` by the weighted Mann–Whitney sum (module doc)."""
        n, m = ids.shape[1], ood.shape[1]
        dtype = np.int32 if 2 * n * m < 2**31 else np.int64  # the sums below are exact integers
        order = np.argsort(ood, axis=1, kind="stable")
        ranked = np.take_along_axis(ood, order, axis=1)
        left = [np.searchsorted(ranked[j], ids[j], "left") for j in range(len(ids))]
        right = [np.searchsorted(ranked[j], ids[j], "right") for j in range(len(ids))]
        tied = [np.flatnonzero(r != l) for l, r in zip(left, right)]  # ID samples tied with OOD ones
        self.point[k] = [100.0 * (l.sum() + r.sum()) / (2 * n * m) for l, r in zip(left, right)]
        per_rep = np.dtype(dtype).itemsize * (4 * n + 3 * m) + 16 * (n + m)
        chunk = int(max(1, min(64, self._max_bytes // per_rep)))
        for b0 in range(0, self.n_boot, chunk):
            b1 = min(b0 + chunk, self.n_boot)
            w = self._counts(b0, b1, 0, n, dtype)
            v = self._counts(b0, b1, 1 + k, m, dtype)
            c = np.zeros((b1 - b0, m + 1), dtype)
            for j in range(len(ids)):  # every index is in range: mode="clip" only skips a check
                np.cumsum(np.take(v, order[j], axis=1, mode="clip"), axis=1, dtype=dtype, out=c[:, 1:])
                at_left = np.take(c, left[j], axis=1, mode="clip")
                num = 2 * np.einsum("bi,bi->b", w, at_left).astype(np.int64)
                if tied[j].size:  # ties count one half: add (c_r − c_l) where they differ
                    gap = np.take(c, right[j][tied[j]], axis=1) - np.take(c, left[j][tied[j]], axis=1)
                    num += np.einsum("bi,bi->b", w[:, tied[j]], gap).astype(np.int64)
                self.replicates[b0:b1, k, j] = 100.0 * num / (2 * n * m)

    def _set_index(self, sets: Sequence[str] | None) -> np.ndarray:
        if sets is None:
            return np.arange(len(self.sets))
        names = [sets] if isinstance(sets, str) else list(sets)
        if not names:
            raise OODInputError("sets is empty: name at least one OOD set (or None for all)")
        if len(set(names)) != len(names):
            raise OODInputError(f"sets names an OOD set twice: {names}")
        for s in names:
            if s not in self.sets:
                raise unknown_name("OOD set", s, self.sets)
        return np.array([self.sets.index(s) for s in names])

    def _method_index(self, method: str) -> int:
        if method not in self.methods:
            raise unknown_name("method", method, self.methods)
        return self.methods.index(method)

    def auroc(self, sets: Sequence[str] | None = None) -> pd.Series:
        """Mean AUROC (percent) over ``sets`` (default all) per method, on the original samples."""
        return pd.Series(self.point[self._set_index(sets)].mean(axis=0), index=self.methods, name="auroc")

    def interval(self, method: str, sets: Sequence[str] | None = None, level: float = 0.95) -> tuple[float, float]:
        """Percentile bootstrap interval of ``method``'s mean AUROC over ``sets``."""
        idx, j = self._set_index(sets), self._method_index(method)
        return _percentile(self.replicates[:, idx, j].mean(axis=1), _check_level(level))

    def _diff(self, a: str, b: str, idx: np.ndarray) -> tuple[float, np.ndarray]:
        ia, ib = self._method_index(a), self._method_index(b)
        est = float((self.point[idx, ia] - self.point[idx, ib]).mean())
        return est, (self.replicates[:, idx, ia] - self.replicates[:, idx, ib]).mean(axis=1)

    def difference(self, a: str, b: str, sets: Sequence[str] | None = None, level: float = 0.95) -> Difference:
        """Mean over ``sets`` of AUROC(a) − AUROC(b), with the percentile interval of the paired
        replicate differences and the two-sided bootstrap p-value of "difference = 0"."""
        level = _check_level(level)
        est, d = self._diff(a, b, self._set_index(sets))
        return Difference(est, *_percentile(d, level), _p_value(d))

    def family(
        self,
        members: Sequence[str],
        reference: str,
        sets: Sequence[str] | None = None,
        level: float = 0.95,
        direction: int = +1,
    ) -> pd.DataFrame:
        """One row per member: ``estimate`` = AUROC(member) − AUROC(reference) (mean over
        ``sets``), simultaneous max-statistic interval ``[lo, hi]``, raw ``p`` and Holm-adjusted
        ``p_holm`` bootstrap p-values, and the ``verdict`` of the simultaneous interval for a
        difference claimed in ``direction`` (both corrections: module docstring)."""
        members = [members] if isinstance(members, str) else list(members)
        if not members:
            raise OODInputError("members is empty: name at least one method")
        if len(set(members)) != len(members):
            raise OODInputError(f"members names a method twice: {members}")
        if reference in members:
            raise OODInputError(f"the reference {reference!r} is also a member")
        out = self.pairs_family([(m, reference) for m in members], sets, level, direction)
        return out.drop(columns="b").rename(columns={"a": "member"})

    def pairs_family(
        self,
        pairs: Sequence[tuple[str, str]],
        sets: Sequence[str] | None = None,
        level: float = 0.95,
        direction: int = +1,
    ) -> pd.DataFrame:
        """:meth:`family` for any pairs ``(a, b)``, each with its own reference: one row per pair with
        ``a``, ``b``, ``estimate`` = AUROC(a) − AUROC(b), the interval ``[lo, hi]`` simultaneous over
        all pairs (max-statistic), ``p``, ``p_holm`` and ``verdict``."""
        level = _check_level(level)
        pairs = [tuple(p) for p in pairs]
        if not pairs:
            raise OODInputError("pairs is empty: name at least one pair of methods")
        if len(set(pairs)) != len(pairs) or any(a == b for a, b in pairs):
            raise OODInputError(f"pairs must be distinct pairs of two different methods, got {pairs}")
        verdict(0.0, 0.0, direction)  # validates direction before any work
        idx = self._set_index(sets)
        est, reps = zip(*(self._diff(a, b, idx) for a, b in pairs))
        d, draws = np.array(est), np.stack(reps)  # (K,), (K, n_boot)
        sd = draws.std(axis=1)
        live = sd > 0  # pairs whose difference never varies keep the interval [d, d]
        q = 0.0
        if live.any():
            t = np.abs(draws[live] - d[live, None]) / sd[live, None]
            q = float(np.quantile(t.max(axis=0), level))
        lo, hi = d - q * sd, d + q * sd
        p = np.array([_p_value(x) for x in draws])
        return pd.DataFrame({
            "a": [a for a, _ in pairs], "b": [b for _, b in pairs], "estimate": d, "lo": lo, "hi": hi, "p": p,
            "p_holm": holm(p), "verdict": [verdict(a, b, direction) for a, b in zip(lo, hi)],
        })
