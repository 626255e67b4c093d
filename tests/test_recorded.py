"""The recorded results the book shows without a data root must still come out of the code.

For every benchmark recorded under ``results/recorded/``, the study is recomputed from the real
data, in a fresh cache, with the recorded configuration, and every table must match the committed
one to 1e-6 (numbers) or exactly (names, verdicts). Recorded seed runs are checked on their last
``SEED_CHECKS`` seeds (each is a full training and evaluation; seed 0 is the study itself).
"""

from __future__ import annotations

import dataclasses

import pytest

from ood_lib.config import RunConfig
from ood_lib.study import Study, differences, run_study, seed_table
from conftest import REPO, SHARED_DATA, needs_shared_data

RECORDED = REPO / "results" / "recorded"
STUDIES = sorted(p.name for p in RECORDED.iterdir() if (p / "meta.json").is_file()) if RECORDED.is_dir() else []
SEEDS = sorted(p.name for p in RECORDED.iterdir() if (p / "seeds.csv").is_file()) if RECORDED.is_dir() else []
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


@needs_shared_data()
@pytest.mark.parametrize("benchmark", STUDIES)
def test_recorded_study_reproduces(benchmark, tmp_path):
    rec = Study.load(RECORDED / benchmark)
    live = run_study(benchmark, _config(rec.meta, tmp_path / "cache"), n_boot=rec.meta["n_boot"])
    again = Study.load(live.save(tmp_path / "live"))
    assert differences(again, rec, tol=TOL) == []


@needs_shared_data()
@pytest.mark.parametrize("benchmark", SEEDS)
def test_recorded_seeds_reproduce(benchmark, tmp_path):
    import numpy as np

    rec = Study.load(RECORDED / benchmark) if (RECORDED / benchmark / "meta.json").is_file() else None
    import pandas as pd

    want = pd.read_csv(RECORDED / benchmark / "seeds.csv")
    seeds = tuple(int(s) for s in sorted(want.seed.unique()))[-SEED_CHECKS:]
    meta = rec.meta if rec is not None else {"config": {}}
    got = seed_table(benchmark, seeds, _config(meta, tmp_path / "cache"))
    want = want[want.seed.isin(seeds)].reset_index(drop=True)
    assert list(got.columns) == list(want.columns)
    assert (got[["seed", "group", "quantity"]].astype(str).values == want[["seed", "group", "quantity"]].astype(str).values).all()
    np.testing.assert_allclose(got.value.to_numpy(float), want.value.to_numpy(float), rtol=0, atol=TOL)


@needs_shared_data()
@pytest.mark.parametrize("benchmark", STUDIES)
def test_recorded_gallery_reproduces(benchmark):
    """The sample images the evaluation chapter shows without data are the ones the data give."""
    import numpy as np

    from ood_lib.gallery import load_gallery, sample_images

    path = RECORDED / benchmark / "gallery.npz"
    assert path.is_file(), f"{benchmark}: no recorded gallery (tools/record_results.py writes it)"
    rec = load_gallery(path)
    live = sample_images(benchmark, SHARED_DATA, n=len(rec["id_test"].images))
    assert list(live) == list(rec)
    for key, thumbs in rec.items():
        assert live[key].group == thumbs.group, key
        np.testing.assert_array_equal(live[key].images, thumbs.images, err_msg=key)
