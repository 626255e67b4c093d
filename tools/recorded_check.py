"""The quick check of a recorded study: the same study, on a fixed seeded subset of its images.

A recorded study (``results/recorded/<benchmark>/``) takes minutes to an hour to recompute. Beside
it, :func:`save_check` records ``check/``: :func:`ood_lib.findings.study.run_study` run with the study's
own configuration (model, data root, methods, seed, detector hyper-parameters) on seeded subsets
(:func:`subset`: ``n_id`` ID test images, ``n_ood`` images per OOD set, the detectors fitted on
``n_fit`` images of the fitting split) with :data:`N_BOOT` paired-bootstrap resamples. It holds

* ``scores.csv`` — every method's oriented score of every image of the subset (one row per image);
* the study's small tables (:data:`TABLES`): AUROC and FPR95 of every method on every set and
  group, with bootstrap intervals, the verdicts, the family, the ranks, the selection, the factors;
* ``meta.json`` — the run's provenance (configuration with the subset sizes, fingerprints of the
  model and of each subset's images) and the recorded study's model fingerprint it was made with.

:func:`check_differences` recomputes it from the images (a fresh cache: every feature, fit and
score) and lists what moved beyond :data:`TOL`. A model trained here is not trained again by the
check: its weights are recorded beside the study (``model/``, the model cache's own self-checking
entry: key and weights fingerprint) and :func:`seed_model_cache` puts them in the check's cache;
``make reproduce`` trains it again and compares.
``tests/test_recorded.py`` also requires the check's model to be the recorded study's. The full
study is recomputed by ``make reproduce``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ood_lib.run.config import RunConfig
from ood_lib.findings.study import Study, differences, run_study

SUBSET = {"n_id": 64, "n_ood": 32, "n_fit": 200}
# networks fed 128 px or more (the ImageNet ones: a forward pass costs ~50 times a CIFAR one) are
# checked on fewer images; every per-image score is still compared, and the fitted detectors
# (ReAct, KNN) still fit
LARGE_INPUT, SUBSET_LARGE = 128, {"n_id": 32, "n_ood": 16, "n_fit": 100}
N_BOOT = 200
# The tables small enough to record for every benchmark; hist and roc are functions of the
# per-image scores, which are compared one by one.
TABLES = ("metrics", "verdicts", "verdicts_nov", "family", "ranks", "selection", "factors")
TOL = 1e-6
# A check recorded on one processor and recomputed on another with a different vector unit (AVX2,
# AVX-512) sums the same float32 forward pass in another order: measured on ResNet-20,
# DenseNet-BC-100 and EfficientNet-Lite0 (AVX2 record, AVX-512 check), a per-image score moved by up
# to 7e-6 of its method's largest |score| and a table's number by up to 1.2e-7 of itself, every
# AUROC, interval and verdict within TOL. The check allows that much on top of TOL, no more:
# SCORE_TOL of the method's scale per image, RTOL of each number.
SCORE_TOL, RTOL = 5e-5, 1e-6
NOT_PASSED = ("data_root", "cache_dir", "progress")  # where the run reads and writes, not what it computes


MODEL = "model"  # the recorded study's trained model, as its model-cache entry (models trained here only)


def seed_model_cache(directory: str | Path, cache_dir: str | Path) -> list[Path]:
    """Copy the recorded trained model of the study in ``directory`` (if any) into ``cache_dir``'s
    model cache, where the run finds it under its key (and checks its fingerprint) instead of training."""
    import shutil

    target = Path(cache_dir) / "models"
    out = []
    for f in sorted((Path(directory) / MODEL).glob("*.pt")):
        target.mkdir(parents=True, exist_ok=True)
        out.append(Path(shutil.copy2(f, target / f.name)))
    return out


def save_model(directory: str | Path, cache_dir: str | Path | None, fingerprint: str) -> Path | None:
    """Record the trained model of the study in ``directory``: the model-cache entry (under
    ``cache_dir``, default the user's cache) whose weights have ``fingerprint``, copied to
    ``directory/model/`` in place of any earlier one. None when no entry has it (a pretrained model)."""
    import shutil

    import torch

    from ood_lib.cache import default_cache_dir

    models = (default_cache_dir() if cache_dir is None else Path(cache_dir)) / "models"
    for f in sorted(models.glob("*.pt")):
        entry = torch.load(f, map_location="cpu", weights_only=True)
        if isinstance(entry, dict) and entry.get("fingerprint") == fingerprint:
            target = Path(directory) / MODEL
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir(parents=True)
            return Path(shutil.copy2(f, target / f.name))
    return None


def subset(benchmark: str) -> dict[str, int]:
    """The check's subset sizes for ``benchmark``: :data:`SUBSET`, or :data:`SUBSET_LARGE` for a
    network fed images of :data:`LARGE_INPUT` px or more."""
    from ood_lib.data.benchmarks import get_benchmark

    return SUBSET_LARGE if max(get_benchmark(benchmark).preprocessing.shape[1:]) >= LARGE_INPUT else SUBSET


def check_config(study_meta: dict[str, Any], data_root: str | Path, cache_dir: str | Path | bool) -> RunConfig:
    """The recorded study's configuration on the check's subsets (never larger than the study's own)."""
    fields = {f.name for f in dataclasses.fields(RunConfig)}
    kept = {k: v for k, v in study_meta["config"].items() if k in fields and k not in NOT_PASSED}
    sizes = {k: n if kept.get(k) is None else min(n, kept[k]) for k, n in subset(study_meta["benchmark"]).items()}
    return RunConfig(**{**kept, **sizes}, data_root=data_root, cache_dir=cache_dir, progress=False)


def run_check(benchmark: str, config: RunConfig) -> Study:
    """The check's study: :func:`run_study` on ``config`` with :data:`N_BOOT` resamples."""
    return run_study(benchmark, config, n_boot=N_BOOT)


def score_table(study: Study) -> pd.DataFrame:
    """The per-image oriented scores: one row per (set, position in the subset), one column per method."""
    methods = sorted(study.scores)
    sets = list(next(iter(study.scores.values()))) if methods else []
    parts = []
    for k in sets:
        n = len(study.scores[methods[0]][k])
        cols = {m: np.asarray(study.scores[m][k], dtype=np.float64) for m in methods}
        parts.append(pd.DataFrame({"set": k, "i": np.arange(n), **cols}))
    return pd.concat(parts, ignore_index=True)


def save_check(study: Study, directory: str | Path, study_meta: dict[str, Any]) -> Path:
    """Write the check of ``study`` (a :func:`run_check` result) into ``directory``."""
    d = Path(directory)
    small = Study(study.benchmark, {t: study[t] for t in TABLES}, dict(study.meta), "live")
    small.meta.update(tables=list(TABLES), check={"subset": subset(study.benchmark), "n_boot": N_BOOT,
                                                  "study_model_fingerprint": study_meta["model_fingerprint"]})
    small.save(d)
    score_table(study).to_csv(d / "scores.csv", index=False, float_format="%.10g")
    return d


def _score_differences(live: pd.DataFrame, rec: pd.DataFrame, tol: float) -> list[str]:
    """Per-image scores that differ by more than ``tol`` times the method's largest |score|."""
    if list(live.columns) != list(rec.columns) or len(live) != len(rec):
        return [f"scores: shape or methods differ ({live.shape} vs {rec.shape})"]
    if not (live[["set", "i"]].astype(str).values == rec[["set", "i"]].astype(str).values).all():
        return ["scores: the images (set, position) differ"]
    out = []
    for m in live.columns[2:]:
        a, b = live[m].to_numpy(float), rec[m].to_numpy(float)
        scale = max(float(np.nanmax(np.abs(b), initial=0.0)), 1.0)
        bad = ~((np.isnan(a) & np.isnan(b)) | (np.abs(a - b) <= tol * scale))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            out.append(f"scores.{m}: {int(bad.sum())} images differ, first {rec.set[i]}[{rec.i[i]}]: {a[i]!r} vs {b[i]!r}")
    return out


def check_differences(live: Study, directory: str | Path, tol: float = TOL, rtol: float = RTOL,
                      score_tol: float = SCORE_TOL) -> list[str]:
    """Where a recomputed check disagrees with the one recorded in ``directory``: tables (numbers
    beyond ``tol + rtol``·|number|, other values exactly), per-image scores (beyond ``score_tol`` ×
    the method's largest |score|, or 1), the model's fingerprint, and the fingerprints of the images read."""
    d = Path(directory)
    rec = Study.load(d)
    out = differences(Study(live.benchmark, {t: live[t] for t in TABLES}, live.meta), rec, tol=tol, rtol=rtol)
    out += _score_differences(score_table(live), pd.read_csv(d / "scores.csv"), score_tol)
    if live.meta["model_fingerprint"] != rec.meta["model_fingerprint"]:
        out.append("model: its weights are not those the check was recorded with")
    for k, s in rec.meta["sets"].items():
        got = live.meta["sets"].get(k, {}).get("data_fingerprint")
        if got != s["data_fingerprint"]:
            out.append(f"images of {k}: fingerprint {got} vs recorded {s['data_fingerprint']}")
    return out


def load_meta(directory: str | Path) -> dict[str, Any]:
    """A recorded study's ``meta.json``."""
    return json.loads((Path(directory) / "meta.json").read_text())
