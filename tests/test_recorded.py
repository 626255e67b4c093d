"""The recorded results the book shows without a data root must still come out of the code.

Every ``make test`` (data root present) runs the **quick check** of each benchmark recorded under
``results/recorded/``: its study recomputed, with the recorded configuration, on a fixed seeded
subset of its images (``check/``, written with the study by ``tools/record_results.py``; what it
holds is in ``tools/recorded_check.py``), from the images, in a fresh cache — the model must be the
one the study was computed with, and every per-image score, AUROC, interval and verdict of the
subset must match to 1e-6 (plus the float32 reordering another processor's vector unit brings:
``recorded_check.SCORE_TOL``, ``RTOL``). The embedded benchmark's recorded seed runs are recomputed
on seed 0: a CNN trained here depends on the vector unit, so they are compared with the run recorded
on a processor like this one (``seeds.json``'s ``vector_unit``, or ``seeds_by_vector_unit.csv``).

``make reproduce`` (tests marked ``reproduce``, deselected by ``make test``) recomputes every
recorded study in full and compares every table to 1e-6 (numbers) or exactly (names, verdicts),
and the recorded seed runs of each benchmark on their last ``SEED_CHECKS`` seeds (each a full
training and evaluation; seed 0 is the study itself).
"""

from __future__ import annotations

import dataclasses
import json
import sys

import numpy as np
import pandas as pd
import torch
import pytest

from ood_lib.run.config import RunConfig
from ood_lib.findings.study import Study, differences, run_study, seed_table
from ood_lib.run.envinfo import vector_unit
from conftest import REPO, SHARED_DATA, needs_shared_data

sys.path.insert(0, str(REPO / "tools"))
import recorded_check as check  # noqa: E402

RECORDED = REPO / "results" / "recorded"
STUDIES = sorted(p.name for p in RECORDED.iterdir() if (p / "meta.json").is_file()) if RECORDED.is_dir() else []
SEEDS = sorted(p.name for p in RECORDED.iterdir() if (p / "seeds.csv").is_file()) if RECORDED.is_dir() else []
QUICK_SEEDS = ("embedded",)  # its seed-0 CNN is trained once per session for other tests as well
SEED_CHECKS = 1
TOL = 1e-6


def _config(meta: dict, cache) -> RunConfig:
    fields = {f.name for f in dataclasses.fields(RunConfig)}
    kept = {k: v for k, v in meta["config"].items() if k in fields and k not in ("data_root", "cache_dir", "progress")}
    return RunConfig(**kept, data_root=SHARED_DATA, cache_dir=cache, progress=False)


def test_the_book_has_recorded_real_benchmarks():
    assert len(STUDIES) >= 4, f"recorded studies: {STUDIES}"
    for name in STUDIES:
        s = Study.load(RECORDED / name)
        assert s.meta["n_boot"] >= 1000 and s.meta["commit"] != "unknown", name
        assert {"near", "far"} & set(s.groups), name


@pytest.mark.parametrize("benchmark", STUDIES)
def test_every_recorded_study_has_its_quick_check(benchmark):
    """The check was recorded with the study's model and configuration, on the subset it states."""
    meta = check.load_meta(RECORDED / benchmark)
    rec = Study.load(RECORDED / benchmark / "check")
    assert rec.meta["check"]["study_model_fingerprint"] == meta["model_fingerprint"], "record the check again"
    assert rec.meta["model_fingerprint"] == meta["model_fingerprint"], \
        "the code gives another model than the recorded study's: record the study and its check again"
    want = check.check_config(meta, SHARED_DATA, False).as_dict()
    assert {k: v for k, v in rec.meta["config"].items() if k not in check.NOT_PASSED} == \
        {k: v for k, v in want.items() if k not in check.NOT_PASSED}
    assert rec.meta["n_boot"] == check.N_BOOT and set(rec.meta["sets"]) == set(meta["sets"])
    scores = pd.read_csv(RECORDED / benchmark / "check" / "scores.csv")
    assert set(scores.columns[2:]) == set(rec["metrics"].dropna(subset=["auroc"]).method)


@needs_shared_data()
@pytest.mark.parametrize("benchmark", STUDIES)
def test_recorded_study_quick_check(benchmark, tmp_path):
    meta = check.load_meta(RECORDED / benchmark)
    check.seed_model_cache(RECORDED / benchmark, tmp_path / "cache")  # a model trained here: its recorded weights
    live = check.run_check(benchmark, check.check_config(meta, SHARED_DATA, tmp_path / "cache"))
    assert check.check_differences(live, RECORDED / benchmark / "check", tol=TOL) == []


@pytest.mark.reproduce
@needs_shared_data()
@pytest.mark.parametrize("benchmark", STUDIES)
def test_recorded_study_reproduces(benchmark, tmp_path):
    rec = Study.load(RECORDED / benchmark)
    d = rec.meta["decision"]  # the verdicts' seeds, cells (counted with the other units) and resamples
    live = run_study(benchmark, _config(rec.meta, tmp_path / "cache"), n_boot=rec.meta["n_boot"],
                     seeds=tuple(d["seeds"]), cells=d["cells"], decide_boot=d["n_boot"])
    again = Study.load(live.save(tmp_path / "live"))
    assert differences(again, rec, tol=TOL) == []


@pytest.mark.parametrize("benchmark", STUDIES)
def test_a_model_trained_here_is_recorded_with_its_study(benchmark):
    """The quick check reads a trained model's recorded weights: they must be the study's model (the
    fingerprint of the weights themselves, not only the one the cache entry states)."""
    from ood_lib.data.benchmarks import get_benchmark
    from ood_lib.models import build_model, weights_fingerprint

    files = sorted((RECORDED / benchmark / check.MODEL).glob("*.pt"))
    spec = get_benchmark(benchmark).model
    assert len(files) == (spec.train_epochs is not None)
    for f in files:
        entry = torch.load(f, map_location="cpu", weights_only=True)
        model = build_model(spec.arch)
        model.load_state_dict(entry["state_dict"])
        assert weights_fingerprint(model) == entry["fingerprint"] == check.load_meta(RECORDED / benchmark)["model_fingerprint"]


def _recorded_seeds(benchmark: str) -> tuple[int, ...]:
    return tuple(int(s) for s in sorted(pd.read_csv(RECORDED / benchmark / "seeds.csv").seed.unique()))


def _recorded_seed_rows(benchmark: str, seeds: tuple[int, ...]) -> pd.DataFrame:
    """The recorded rows of ``seeds`` trained on this machine's vector unit: ``seeds.csv`` where it was
    recorded on one like it, else ``seeds_by_vector_unit.csv`` (other vector units' runs of the
    first seed). A CNN trained here depends on the vector unit, so no other record is comparable:
    a machine with none fails and is told how to record one."""
    here = vector_unit()
    main = json.loads((RECORDED / benchmark / "seeds.json").read_text()).get("vector_unit")
    want = pd.read_csv(RECORDED / benchmark / "seeds.csv")
    if here != main:
        other = RECORDED / benchmark / "seeds_by_vector_unit.csv"
        want = pd.read_csv(other) if other.is_file() else pd.DataFrame(columns=["vector_unit", *want.columns])
        want = want[want.vector_unit == here].drop(columns="vector_unit")
        if not set(seeds) <= set(want.seed):
            pytest.fail(f"{benchmark}: seeds {list(seeds)} were recorded on {main} processors, not on {here} ones "
                        f"(this machine): record them with `python tools/record_results.py --data-root DIR "
                        f"--seeds-here {benchmark}`")
    return want[want.seed.isin(seeds)].reset_index(drop=True)


def _seeds_reproduce(benchmark: str, seeds: tuple[int, ...], cache) -> None:
    """The recorded seed runs ``seeds`` of ``benchmark`` trained and evaluated again, to TOL."""
    rec = Study.load(RECORDED / benchmark) if (RECORDED / benchmark / "meta.json").is_file() else None
    meta = rec.meta if rec is not None else {"config": {}}
    want = _recorded_seed_rows(benchmark, seeds)
    got = seed_table(benchmark, seeds, _config(meta, cache))
    assert len(want) > 0 and list(got.columns) == list(want.columns)
    assert (got[["seed", "group", "quantity"]].astype(str).values == want[["seed", "group", "quantity"]].astype(str).values).all()
    np.testing.assert_allclose(got.value.to_numpy(float), want.value.to_numpy(float), rtol=0, atol=TOL)


@needs_shared_data()
@pytest.mark.parametrize("benchmark", [b for b in SEEDS if b in QUICK_SEEDS])
def test_recorded_seeds_quick_check(benchmark, tmp_path):
    """The first recorded seed (the CNN the other tests of the session train too)."""
    _seeds_reproduce(benchmark, _recorded_seeds(benchmark)[:1], tmp_path / "cache")


@pytest.mark.reproduce
@needs_shared_data()
@pytest.mark.parametrize("benchmark", SEEDS)
def test_recorded_seeds_reproduce(benchmark, tmp_path):
    _seeds_reproduce(benchmark, _recorded_seeds(benchmark)[-SEED_CHECKS:], tmp_path / "cache")


@needs_shared_data()
@pytest.mark.parametrize("benchmark", STUDIES)
def test_recorded_gallery_reproduces(benchmark):
    """The sample images the evaluation chapter shows without data are the ones the data give."""
    from ood_lib.book.gallery import load_gallery, sample_images

    path = RECORDED / benchmark / "gallery.npz"
    assert path.is_file(), f"{benchmark}: no recorded gallery (tools/record_results.py writes it)"
    rec = load_gallery(path)
    live = sample_images(benchmark, SHARED_DATA, n=len(rec["id_test"].images))
    assert list(live) == list(rec)
    for key, thumbs in rec.items():
        assert live[key].group == thumbs.group, key
        # equal up to one level of rounding: a resize's float sums depend on the thread count
        np.testing.assert_allclose(live[key].images.astype(int), thumbs.images.astype(int), atol=1, rtol=0, err_msg=key)


@pytest.mark.parametrize("benchmark", [b for b in STUDIES if b in SEEDS])
def test_no_recorded_verdict_disagrees_with_a_majority_of_training_seeds(benchmark):
    """A model trained here is decided over its training seeds × images: a *better* or *worse*
    AUROC verdict must have the sign of most seeds' own differences in that cell."""
    v = Study.load(RECORDED / benchmark)["verdicts"]
    assert Study.load(RECORDED / benchmark).meta["decision"]["interval"] == "seeds × images"
    seeds = pd.read_csv(RECORDED / benchmark / "seeds.csv")
    decided = v[(v.metric == "auroc") & v.verdict.isin(["better", "worse"]) & (v.claim != "some_member_beats_gradnorm")
                & (v.claim != "u_and_v_weaker")]
    assert len(decided)
    for r in decided.itertuples():
        per_seed = seeds[(seeds.group == r.group) & (seeds.quantity == f"diff:{r.claim}")].value
        assert len(per_seed) >= 5, (r.claim, r.group)
        sign = 1 if r.verdict == "better" else -1
        assert (np.sign(per_seed) == sign).sum() > len(per_seed) / 2, (r.claim, r.group, per_seed.tolist())


CONFOUNDED = [b for b in STUDIES if (RECORDED / b / "confounds.csv").is_file()]


@pytest.mark.reproduce
@needs_shared_data()
@pytest.mark.parametrize("benchmark", CONFOUNDED)
def test_recorded_confounds_reproduce(benchmark):
    """The confound controls (tools/record_confounds.py) recomputed from the data root, the adapted
    models rebuilt or read from the model cache."""
    import record_confounds

    got = record_confounds.confounds(benchmark, str(SHARED_DATA)).reset_index(drop=True)
    want = pd.read_csv(RECORDED / benchmark / "confounds.csv", keep_default_na=False, na_values=[""])
    assert list(got.columns) == list(want.columns) and len(got) == len(want)
    for c in got.columns:
        if pd.api.types.is_numeric_dtype(want[c]):
            np.testing.assert_allclose(got[c].astype(float), want[c].astype(float), atol=TOL, err_msg=c)
        else:
            assert (got[c].astype(str) == want[c].astype(str)).all(), c


@pytest.mark.parametrize("benchmark", CONFOUNDED)
def test_recorded_confounds_cover_every_claim_cell_and_variant(benchmark):
    t = pd.read_csv(RECORDED / benchmark / "confounds.csv")
    rec = Study.load(RECORDED / benchmark)["verdicts"]
    want = rec[rec.metric != "identity"][["claim", "group", "metric"]].drop_duplicates()
    for variant, v in t.groupby("variant"):
        assert len(v) == len(want), variant
    assert {"as is", "correct ID only"} <= set(t.variant)
    assert (t[t.variant == "correct ID only"].accuracy == 100.0).all()
