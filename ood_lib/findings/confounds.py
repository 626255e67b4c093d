"""Confound controls of a study's verdicts: is an effect the method's, or the classifier's?

A classifier that misclassifies many ID test images gives them low confidence, and every score
built on the softmax output pays for it; a gain of the feature norm there may come from separating
*misclassified ID* images rather than OOD ones. :func:`correct_only` decides every claim again with
the ID test set restricted to the images the model classifies correctly (the OOD sets unchanged),
on the same rule, cells and resamples as the study's own verdicts (:mod:`.verdicts`).
:func:`confound_table` puts the variants of one unit side by side, and :func:`variant_dependent`
lists the claims whose verdict is *better* in one variant and *worse* in another — a classifier
artefact, not a property of the method.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path

import pandas as pd

from .._checks import OODInputError
from ..scores.closed_forms import uv_members
from . import verdicts as four
from .decide import min_resamples
from .study import Study

COLUMNS = ("variant", "accuracy", "n_id", "claim", "group", "metric", "estimate", "lo", "hi", "verdict", "cause",
           "supports")


def correct_only(study: Study, *, cells: int | None = None, n_boot: int | None = None) -> pd.DataFrame:
    """The verdicts table of a live ``study`` with its ID test images restricted to the correctly
    classified ones (``cells`` and resamples default to the study's own decision)."""
    if study.id_correct is None or not study.scores:
        raise OODInputError("correct_only needs a live study of labelled ID images (a recorded one keeps no scores)")
    mask = study.id_correct
    if mask.sum() < 2:
        raise OODInputError(f"only {int(mask.sum())} ID test image(s) are classified correctly: nothing to decide on")
    d = study.meta["decision"]
    cells = int(cells or d["cells"])
    members = uv_members()
    names = [m for m in four.decided_methods(members) if m in study.scores]
    sets = [k for v in study.decision_groups.values() for k in v]
    ids = {m: study.scores[m]["id_test"][mask] for m in names}
    oods = {k: {m: study.scores[m][k] for m in names} for k in sets}
    reps = four.replicates({0: (ids, oods)}, n_boot=int(n_boot or max(d["n_boot"], min_resamples(cells))),
                           seed=int(study.meta.get("seed", 0)))
    return four.verdict_table(reps, study.decision_groups, members, cells=cells)


def confound_table(variants: Mapping[str, tuple[float, int, pd.DataFrame]]) -> pd.DataFrame:
    """``{variant: (ID accuracy %, ID test images, verdicts table)}`` as one long table of the
    comparison claims' rows (the identities left out)."""
    parts = []
    for name, (acc, n, v) in variants.items():
        rows = v[v.metric != "identity"].assign(variant=name, accuracy=float(acc), n_id=int(n))
        parts.append(rows[list(COLUMNS)])
    if not parts:
        raise OODInputError("no variant to tabulate")
    return pd.concat(parts, ignore_index=True)


def variant_dependent(table: pd.DataFrame, metric: str = "auroc") -> pd.DataFrame:
    """The (claim, cell) pairs whose verdict is *better* in one variant and *worse* in another,
    with each variant's verdict."""
    t = table[table.metric == metric]
    wide = t.pivot_table(index=["claim", "group"], columns="variant", values="verdict", aggfunc="first", sort=False)
    flips = wide.apply(lambda r: {"better", "worse"} <= set(r.dropna()), axis=1)
    return wide[flips].reset_index()


def adapted_units(recorded: str | Path, benchmarks: Iterable[str]) -> dict[str, Study]:
    """The models adapted to a shifted copy of their training data (``<recorded>/<b>/confounds.json``,
    written by ``tools/record_confounds.py``) as studies holding what the pre-registered mechanism
    reads: a ``factors`` table (per OOD set, AUROC of ‖h‖₁ and AUROC(‖h‖₁·MSP) − AUROC(MSP)). Keyed
    ``"<benchmark>:<variant>"``; ``meta`` names the base benchmark, the variant and the model. An
    adapted model was scored after the rule was fixed, so every one of its pairs tests it."""
    from .labels import model_name

    out = {}
    for b in benchmarks:
        path = Path(recorded) / b / "confounds.json"
        if not path.is_file():
            continue
        for variant, how in json.loads(path.read_text()).get("adaptations", {}).items():
            rows = how.get("factors")
            if not rows:
                raise OODInputError(f"{path}: the {variant!r} model has no factors (record it again with "
                                    f"tools/record_confounds.py)")
            out[f"{b}:{variant}"] = Study(f"{b}:{variant}", {"factors": pd.DataFrame(rows)},
                                          {"base": b, "variant": variant, "model": f"{model_name(b)}, {variant}"},
                                          "recorded")
    return out
