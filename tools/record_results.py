"""Recompute the recorded results the book shows when it is built without a data root.

    python tools/record_results.py --data-root ../shared/data            # every study and seed run
    python tools/record_results.py --data-root DIR --only mnist cifar10  # some of them
    python tools/record_results.py --data-root DIR --check-only          # only the quick checks
    python tools/record_results.py --data-root DIR --seeds-here embedded  # seed 0 on this vector unit

Writes ``results/recorded/<benchmark>/`` (the study's tables, ``meta.json`` and the sample images ``gallery.npz``) for every benchmark
in ``STUDIES`` with its stated configuration, its quick check ``check/`` (the same study on a
seeded subset of the images: ``tools/recorded_check.py``), and ``seeds.csv`` + ``seeds.json`` for
the models trained here. ``make test`` recomputes every quick check and ``make reproduce`` every
study and seed run (``tests/test_recorded.py``); both fail if a number moved.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tools"))

from ood_lib.run.config import RunConfig  # noqa: E402
from ood_lib.book.gallery import sample_images, save_gallery  # noqa: E402
from ood_lib.data.benchmarks import get_benchmark  # noqa: E402
from ood_lib.findings import verdicts as four  # noqa: E402
from ood_lib.findings.decide import min_resamples  # noqa: E402
from ood_lib.findings.study import git_state, run_study, seed_summary, seed_table  # noqa: E402
from recorded_check import check_config, load_meta, run_check, save_check, save_model, seed_model_cache  # noqa: E402

OUT = REPO / "results" / "recorded"
# benchmark -> RunConfig overrides of its recorded run (and why, where it is not the default)
STUDIES = {
    "mnist": {},
    "cifar10": {},
    # Without ODIN on DenseNet-BC-100 and the ImageNet models: it needs a backward pass through the
    # network per image, most of an hour on this 2-core CPU. The ImageNet units sample 300 images
    # of each OOD set (NINCO included) and leave out the extra autograd readings of the 1,000-class
    # head (GradNorm by autograd stays, for the identity claim).
    "cifar10_densenet": {"exclude": ("odin",)},
    "imagenet_lite": {"n_ood": 300, "exclude": ("odin", "gradnorm_official_autograd", "ce_pred_autograd")},
    "imagenet_lite1": {"n_ood": 300, "exclude": ("odin", "gradnorm_official_autograd", "ce_pred_autograd")},
    "imagenet_lite2": {"n_ood": 300, "exclude": ("odin", "gradnorm_official_autograd", "ce_pred_autograd")},
    "imagenet_vit": {"n_ood": 300, "exclude": ("odin", "gradnorm_official_autograd", "ce_pred_autograd")},
}
# the sample images each chapter shows (``gallery.npz``, beside the study's tables)
GALLERY = {"n": 8, "seed": 0}
SEEDS = {"embedded": (0, 1, 2, 3, 4), "mnist": (0, 1, 2, 3, 4)}
# units of evidence (rule of 6 December 2026): every study but the sanity runs (four.SANITY_RUNS).
# Their cells are counted together for the Bonferroni level.
SANITY = four.SANITY_RUNS


# EfficientNet-Lite clips its features with ReLU6: ‖h‖₁ before and after the clip, measured on
# CLIPPING_N seeded images of every set (``clipping.csv``)
CLIPPING, CLIPPING_N = ("imagenet_lite", "imagenet_lite1", "imagenet_lite2"), 128


def record_feature_size(benchmark: str, study, root: str) -> None:
    """``feature_norm.csv``: the spread of ‖h‖₁ on every set of the study (its own scores); and
    for the models of :data:`CLIPPING`, ``clipping.csv``."""
    from ood_lib.findings.feature_size import feature_norm_spread, measure_sets

    u = study.scores["l1*one"]  # ‖h‖₁ of every image
    sets = ["id_test", *(s for v in study.decision_groups.values() for s in v)]
    feature_norm_spread({k: u[k] for k in sets}).to_csv(OUT / benchmark / "feature_norm.csv", index=False,
                                                       float_format="%.10g")
    if benchmark in CLIPPING:
        measure_sets(benchmark, root, n=CLIPPING_N, clipping=True).to_csv(OUT / benchmark / "clipping.csv", index=False,
                                                                           float_format="%.10g")


def joint_cells(studies: dict, recorded: Path = OUT) -> int:
    """The cells of every unit in :data:`STUDIES`: the live studies' own, the others' from their
    recorded ``meta.json`` (rule of 7 December 2026)."""
    n = 0
    for b in STUDIES:
        if b in SANITY:
            continue
        if b in studies:
            n += four.n_cells(studies[b].decision_groups)
        else:
            n += json.loads((recorded / b / "meta.json").read_text())["decision"]["own_cells"]
    return n


def _config(benchmark: str, root: str, overrides: dict) -> RunConfig:
    from ood_lib.run.evaluate import default_methods

    over = dict(overrides)
    exclude = over.pop("exclude", ())
    methods = tuple(m for m in default_methods(benchmark) if m not in exclude) if exclude else None
    return RunConfig(data_root=root, progress=False, methods=methods, **over)


def record_check(benchmark: str, root: str) -> None:
    """The quick check of the study recorded for ``benchmark`` (its configuration, on the check's
    subsets), computed in a fresh cache and written to ``<benchmark>/check/``."""
    meta = load_meta(OUT / benchmark)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ood-check-") as cache:
        seed_model_cache(OUT / benchmark, cache)  # a model trained here: the recorded study's weights
        study = run_check(benchmark, check_config(meta, root, cache))
    if study.meta["model_fingerprint"] != meta["model_fingerprint"]:
        print(f"{benchmark}: WARNING: the model is not the recorded study's (record the study again)", flush=True)
    print(f"{benchmark}: {save_check(study, OUT / benchmark / 'check', meta)} in {time.perf_counter() - t0:.0f} s",
          flush=True)


def record_seeds_here(benchmark: str, root: str) -> None:
    """The first recorded seed of ``benchmark`` trained on this machine's vector unit, its rows put
    in ``seeds_by_vector_unit.csv`` (replacing this vector unit's earlier ones): the quick check of
    the seed runs compares with them on processors like this one."""
    from ood_lib.run.envinfo import vector_unit

    here = vector_unit()
    main_unit = json.loads((OUT / benchmark / "seeds.json").read_text()).get("vector_unit")
    if here == main_unit:
        raise SystemExit(f"{benchmark}: seeds.csv was recorded on {here} processors like this one; nothing to add")
    seed = int(pd.read_csv(OUT / benchmark / "seeds.csv").seed.min())
    t0 = time.perf_counter()
    t = seed_table(benchmark, (seed,), _config(benchmark, root, {})).assign(vector_unit=here)
    path = OUT / benchmark / "seeds_by_vector_unit.csv"
    old = pd.read_csv(path) if path.is_file() else t.iloc[:0]
    rows = pd.concat([old[old.vector_unit != here], t], ignore_index=True)
    rows[["vector_unit", *[c for c in rows.columns if c != "vector_unit"]]].to_csv(path, index=False, float_format="%.10g")
    print(f"{benchmark}: seed {seed} on {here} into {path} in {time.perf_counter() - t0:.0f} s", flush=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", required=True)
    p.add_argument("--only", nargs="*", help="only these benchmarks")
    p.add_argument("--no-seeds", action="store_true")
    p.add_argument("--check-only", action="store_true", help="only the quick checks of the recorded studies")
    p.add_argument("--seeds-here", nargs="+", metavar="BENCHMARK",
                   help="only the first recorded seed run of these benchmarks, trained on this machine's vector "
                        "unit, into seeds_by_vector_unit.csv (where seeds.csv was recorded on another)")
    args = p.parse_args()
    if args.seeds_here:
        for b in args.seeds_here:
            record_seeds_here(b, args.data_root)
        return 0
    chosen = [b for b in STUDIES if not args.only or b in args.only]
    studies = {}
    if not args.check_only:
        upper = min_resamples(3 * sum(b not in SANITY for b in STUDIES))  # enough for every cell a unit can have
        for b in chosen:
            t0 = time.perf_counter()
            studies[b] = run_study(b, _config(b, args.data_root, STUDIES[b]), seeds=SEEDS.get(b), decide_boot=upper)
            print(f"{b}: studied in {time.perf_counter() - t0:.0f} s", flush=True)
        cells = joint_cells(studies)
        for b, study in studies.items():
            own = four.n_cells(study.decision_groups)
            study.redecide(cells)
            study.meta["decision"]["own_cells"] = own
            print(f"{b}: {study.save(OUT / b)} ({cells} cells)", flush=True)
            if get_benchmark(b).model.train_epochs is not None:  # trained here: its weights beside the study
                print(f"{b}: model {save_model(OUT / b, study.meta['config'].get('cache_dir'), study.meta['model_fingerprint'])}")
            save_gallery(sample_images(b, args.data_root, **GALLERY), OUT / b / "gallery.npz")
            record_feature_size(b, study, args.data_root)
    for b in chosen:
        record_check(b, args.data_root)
    if args.no_seeds or args.check_only:
        return 0
    for b, seeds in SEEDS.items():
        if args.only and b not in args.only:
            continue
        t0 = time.perf_counter()
        cfg = _config(b, args.data_root, {})
        t = seed_table(b, seeds, cfg)
        (OUT / b).mkdir(parents=True, exist_ok=True)
        t.to_csv(OUT / b / "seeds.csv", index=False, float_format="%.10g")
        import torch

        from ood_lib.run.envinfo import vector_unit

        meta = {"benchmark": b, "seeds": list(seeds), "config": cfg.as_dict(), **git_state(), "torch": torch.__version__,
                "vector_unit": vector_unit(),
                "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
        (OUT / b / "seeds.json").write_text(json.dumps(meta, indent=1, sort_keys=True, default=str))
        print(seed_summary(t).to_string(index=False), f"\n{b}: seeds in {time.perf_counter() - t0:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
