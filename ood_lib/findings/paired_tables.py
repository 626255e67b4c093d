"""Tables of paired AUROC comparisons on a prepared benchmark (chapter *The evaluation*, section on
deciding a claim; used by the depth and GAIA tables of chapter *Gradient scores and their closed forms*).

Every score of a table is resampled together (:class:`ood_lib.stats.paired.PairedBootstrap`): per OOD
set and per group of sets, each score's AUROC with its percentile interval and the paired
differences AUROC(a) − AUROC(b), in points, that a table asks for.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .._checks import OODInputError
from ..data.benchmarks import OOD_GROUPS
from ..stats.metrics import fpr95
from ..stats.paired import PairedBootstrap, verdict

if TYPE_CHECKING:
    from ..run.evaluate import Prepared

__all__ = ["checked_reference", "paired_rows", "targets"]


def targets_of(group_of: Mapping[str, str]) -> list[tuple[str, str, list[str]]]:
    """``(row name, group, OOD sets)``: each OOD set alone, then each group present (its sets together)."""
    out = [(k, g, [k]) for k, g in group_of.items()]
    return out + [(g, g, [k for k in group_of if group_of[k] == g]) for g in OOD_GROUPS if g in group_of.values()]


def targets(prep: "Prepared") -> list[tuple[str, str, list[str]]]:
    """:func:`targets_of` the OOD sets of ``prep``."""
    return targets_of({k: prep.splits[k].group for k in prep.ood_keys})


def checked_reference(prep: "Prepared", reference: Mapping[str, Any], scores: Mapping[str, Mapping[str, Any]]
                      ) -> dict[str, np.ndarray]:
    """``reference`` (``{set: scores}``) of the ID test set and every OOD set, as float64, after
    checking that every entry of ``scores`` (``{name: {set: scores}}``) scores as many images of each set."""
    sets = ["id_test", *prep.ood_keys]
    ref = {k: np.asarray(reference[k], dtype=np.float64) for k in sets if k in reference}
    missing = [k for k in sets if k not in ref]
    if missing:
        raise OODInputError(f"reference has no scores for set(s) {missing}")
    for n, s in scores.items():
        for k in sets:
            got = len(s[k]) if k in s else 0
            if got != len(ref[k]):
                raise OODInputError(f"{n} scores {got} images of {k}, the reference {len(ref[k])}")
    return ref


def paired_rows(prep: "Prepared", table: Mapping[str, Mapping[str, Any]], members: Sequence[str], best: str,
                against: Mapping[str, Mapping[str, str]], n_boot: int, seed: int | None, level: float) -> list[dict]:
    """One row per target of :func:`targets` and per score of ``table`` (``{name: {set: oriented
    scores}}``, higher = ID, all on the same images).

    Row: ``name``, ``ood``, ``group``, ``auroc`` with its interval ``auroc_lo``/``auroc_hi``, ``fpr95``
    (mean over the target's sets); for each ``tag`` of ``against`` (``{tag: {name: other}}``, a name
    absent or mapped to itself gets NaN) ``diff_vs_<tag>`` = AUROC(name) − AUROC(other) with its
    interval ``lo_vs_<tag>``/``hi_vs_<tag>``; for ``members`` only, the verdict of each difference
    claimed > 0 (:func:`ood_lib.stats.paired.verdict`), ``verdict`` for tag ``best`` and ``verdict_vs_<tag>``
    for the others; and the members' simultaneous (max-statistic) intervals against the score ``best``,
    ``lo_family``/``hi_family``/``verdict_family``. Resamples are seeded by ``seed`` (default the run's).
    """
    pb = PairedBootstrap({n: s["id_test"] for n, s in table.items()},
                         {k: {n: s[k] for n, s in table.items()} for k in prep.ood_keys},
                         n_boot=n_boot, seed=prep.config.seed if seed is None else seed)
    rows = []
    for ood, group, ks in targets(prep):
        fam = pb.family(list(members), best, sets=ks, level=level, direction=+1).set_index("member")
        aurocs = pb.auroc(ks)
        for n, s in table.items():
            lo_a, hi_a = pb.interval(n, sets=ks, level=level)
            row = {"name": n, "ood": ood, "group": group, "auroc": float(aurocs[n]), "auroc_lo": lo_a,
                   "auroc_hi": hi_a, "fpr95": float(np.mean([fpr95(s["id_test"], s[k]) for k in ks]))}
            for tag, other in against.items():
                o = other.get(n, n)
                d = pb.difference(n, o, sets=ks, level=level) if o != n else None
                row.update({f"diff_vs_{tag}": d.estimate if d else np.nan, f"lo_vs_{tag}": d.lo if d else np.nan,
                            f"hi_vs_{tag}": d.hi if d else np.nan})
            for tag in against:
                ok = n in members and np.isfinite(row[f"lo_vs_{tag}"])
                row["verdict" if tag == "best" else f"verdict_vs_{tag}"] = (
                    verdict(row[f"lo_vs_{tag}"], row[f"hi_vs_{tag}"], +1) if ok else "")
            f = fam.loc[n] if n in fam.index else None
            row.update(lo_family=f.lo if f is not None else np.nan, hi_family=f.hi if f is not None else np.nan,
                       verdict_family=f.verdict if f is not None else "")
            rows.append(row)
    return rows
