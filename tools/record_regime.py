"""Record the baselines in their regime: published setting against a setting that fits the model.

    python tools/record_regime.py --data-root ../shared/data                    # every benchmark below
    python tools/record_regime.py --data-root DIR --only cifar10 mnist          # these
    python tools/record_regime.py --data-root DIR --no-odin                     # without ODIN's rows

Writes ``results/recorded/<benchmark>/regime.csv`` (:func:`ood_lib.findings.regime.regime_table`) and
``regime.json`` (commit, configuration, the settings chosen with their rules and grid tables, KNN's
banks, ODIN's subsets, the check that "before" repeats the recorded study's numbers, wall times).
Each benchmark runs on the recorded study's images (``tools/record_results.py`` STUDIES, seed 0).
KNN's "after" bank is the whole JPEG CIFAR-10 training set where the benchmark reads CIFAR-10
(``CIFAR10-JPEG/train-full``; :data:`BANK_N` caps it). ODIN, which the DenseNet and ImageNet studies
leave out for cost, is added on seeded subsets (:data:`ODIN_SUBSETS`); a benchmark whose ODIN run
is projected, from a timed probe, to take over :data:`ODIN_MAX_SECONDS` is skipped and says so.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tools"))

from ood_lib.findings.regime import ODIN_PUBLISHED, regime_table  # noqa: E402
from ood_lib.findings.study import git_state  # noqa: E402
from ood_lib.run.envinfo import environment  # noqa: E402
from ood_lib.run.evaluate import prepare  # noqa: E402
from record_results import OUT, STUDIES, _config  # noqa: E402

BENCHMARKS = ("cifar10", "cifar10_densenet", "mnist", "imagenet_lite", "imagenet_lite1", "imagenet_lite2",
              "imagenet_vit")
CIFAR_BANK = ("cifar10", "cifar10_densenet")  # ID = the JPEG CIFAR-10 copy, whose full training set exists
# benchmark -> seeded subset of the 50,000 (none: all of them). DenseNet-BC-100 forwards about 40
# images a second on a 2-core CPU: the whole set would take over 20 minutes, 10,000 about 4
BANK_N = {"cifar10_densenet": 10_000}
NO_BANK = {"mnist": "the fitting split is already the whole MNIST training set",
           "imagenet": "no ImageNet training images in the data: the fitting split (520 of the 1,300 "
                       "validation images) is the only bank"}
# ODIN where the recorded study leaves it out; seeded subsets of the ID test and each OOD set
ODIN_SUBSETS = {"cifar10_densenet": {"n_id": 500, "n_ood": 200, "seed": 0},
                **{b: {"n_id": 200, "n_ood": 100, "seed": 0} for b in BENCHMARKS if b.startswith("imagenet")}}
ODIN_MAX_SECONDS = 300
PROBE = 32  # images timed to project ODIN's run
COMPARED = ("react", "ash", "dice", "knn")  # the study's own baselines: "before" must repeat them


def _bank(benchmark: str, prep, root: str) -> tuple[object, str, dict]:
    """KNN's "after" bank: features of the whole JPEG CIFAR-10 training set, or None and why."""
    if benchmark not in CIFAR_BANK:
        return None, NO_BANK["mnist" if benchmark == "mnist" else "imagenet"], {}
    from ood_lib.data.files import data_root
    from ood_lib.data.sources import cifar10_train_full
    from ood_lib.run.features import extract

    n = BANK_N.get(benchmark)
    data = cifar10_train_full(data_root(root), prep.benchmark.preprocessing, n=n, seed=prep.config.seed)
    t0 = time.perf_counter()
    f = extract(prep.model, data, device=prep.device, batch_size=prep.batch_size, cache_dir=prep.config.cache_dir,
                progress=True, desc=f"{benchmark}/train-full")
    note = "" if n is None else f"a seeded {n:,} of the 50,000 (the whole set was too slow here)"
    return f, note, {"source": "CIFAR10-JPEG/train-full", "n": len(f.h), "subset": n, "from_cache": f.from_cache,
                     "extract_seconds": round(f.seconds, 1), "seconds": round(time.perf_counter() - t0, 1)}


def _odin_plan(benchmark: str, prep, skip: bool) -> tuple[dict | None, dict]:
    """ODIN's subsets for this benchmark, or None with the reason, from a timed probe."""
    if skip or benchmark not in ODIN_SUBSETS:
        return None, {"run": False, "why": "not asked" if skip else "ODIN is in the recorded study"}
    import torch

    from ood_lib.detectors import create
    from ood_lib.run.features import batch_loader

    sub = ODIN_SUBSETS[benchmark]
    n_images = sum(min(len(prep.splits[k].dataset), sub["n_id"] if k == "id_test" else sub["n_ood"])
                   for k in ["id_test", *prep.ood_keys])
    det = create("odin", model=prep.model, input_std=tuple(prep.benchmark.preprocessing.std), **ODIN_PUBLISHED)
    probe = torch.utils.data.Subset(prep.splits["id_test"].dataset, list(range(PROBE)))
    t0 = time.perf_counter()
    det.score_inputs(batch_loader(probe, PROBE), prep.device)
    projected = (time.perf_counter() - t0) / PROBE * n_images
    plan = {"images": n_images, "probe_images": PROBE, "projected_seconds": round(projected, 1), **sub}
    if projected > ODIN_MAX_SECONDS:
        return None, {**plan, "run": False, "why": f"projected {projected:.0f} s > {ODIN_MAX_SECONDS} s"}
    return sub, {**plan, "run": True}


def _check_before(benchmark: str, table) -> dict:
    """Largest |before − recorded| over the study's baselines and Energy, per set (AUROC, FPR95)."""
    import pandas as pd

    rec = pd.read_csv(OUT / benchmark / "metrics.csv")
    rec = rec.set_index(["method", "ood"])
    sets = table[table.level == "set"]
    diffs = {"auroc": 0.0, "fpr95": 0.0}
    n = 0
    for r in sets.itertuples():
        if r.method == "odin":  # its Energy column is on the subsets, not the study's images
            continue
        pairs = [(r.method, "before")] if r.method in COMPARED else []
        pairs += [("energy", "energy")]
        for method, col in pairs:
            if (method, r.ood) not in rec.index:
                continue
            got = rec.loc[(method, r.ood)]
            a = getattr(r, f"auroc_{col}" if col == "before" else "energy_auroc")
            f = getattr(r, f"fpr95_{col}" if col == "before" else "energy_fpr95")
            diffs["auroc"] = max(diffs["auroc"], abs(a - got.auroc))
            diffs["fpr95"] = max(diffs["fpr95"], abs(f - got.fpr95))
            n += 1
    return {"compared": n, "max_abs_diff": {k: float(v) for k, v in diffs.items()}, "methods": [*COMPARED, "energy"],
            "matches": bool(n > 0 and max(diffs.values()) < 1e-6)}


def record(benchmark: str, root: str, odin: bool = True) -> dict:
    """Compute and write ``regime.csv`` and ``regime.json`` of one benchmark; returns the json."""
    import torch

    t = {"start": time.perf_counter()}
    cfg = _config(benchmark, root, STUDIES[benchmark])
    prep = prepare(benchmark, cfg, with_train=True)
    t["prepare"] = time.perf_counter()
    bank, note, bank_meta = _bank(benchmark, prep, root)
    t["bank"] = time.perf_counter()
    sub, odin_meta = _odin_plan(benchmark, prep, not odin)
    t["odin_probe"] = time.perf_counter()
    table, info = regime_table(prep, bank=bank, bank_note=note, odin=sub)
    t["table"] = time.perf_counter()
    d = OUT / benchmark
    d.mkdir(parents=True, exist_ok=True)
    table.to_csv(d / "regime.csv", index=False, float_format="%.10g")
    stages = list(t)
    meta = {
        "benchmark": benchmark, **git_state(), "config": cfg.as_dict(),
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "environment": environment(str(prep.device)), "threads": torch.get_num_threads(),
        "sizes": {k: len(prep.feats[k].h) for k in prep.feats},
        "features_from_cache": {k: prep.feats[k].from_cache for k in prep.feats},
        "settings": info, "knn_bank": bank_meta, "odin": odin_meta,
        "before_repeats_recorded": _check_before(benchmark, table),
        "seconds": {s: round(t[s] - t[p], 1) for p, s in zip(stages, stages[1:])},
        "wall_seconds": round(t["table"] - t["start"], 1),
    }
    (d / "regime.json").write_text(json.dumps(meta, indent=1, sort_keys=True, default=str))
    return meta


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", required=True)
    p.add_argument("--only", nargs="*", choices=list(BENCHMARKS), help="these benchmarks (default: all)")
    p.add_argument("--no-odin", action="store_true", help="leave out ODIN's rows")
    args = p.parse_args()
    for b in args.only or BENCHMARKS:
        meta = record(b, args.data_root, odin=not args.no_odin)
        chosen = {m: s.get("setting_after") for m, s in meta["settings"].items()}
        print(f"{b}: {chosen}; before repeats the study: {meta['before_repeats_recorded']['matches']}; "
              f"odin {meta['odin'].get('run')}; seconds {meta['seconds']}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
