"""Record GradNorm's gradient by depth, ODIN's first-order term and GAIA's aggregation on the real benchmarks.

    python tools/record_depth.py --data-root ../shared/data                    # mnist, cifar10 (both models)
    python tools/record_depth.py --data-root DIR --only mnist imagenet_lite    # these
    python tools/record_depth.py --data-root DIR --tables gaia                 # only GAIA's table
    python tools/record_depth.py --data-root DIR --tables increment            # only the increment test

Writes ``results/recorded/<benchmark>/depth.csv`` (:func:`ood_lib.findings.depth.depth_table`),
``depth_odin.csv`` (:func:`ood_lib.findings.depth.odin_first_order`) — together, ``--tables depth`` —,
``gaia.csv`` (:func:`ood_lib.findings.depth.gaia_table`, ``--tables gaia``), ``increment.csv``
(:func:`ood_lib.findings.increment.increment_table`, ``--tables increment``: each block's gradient
against the same block's forward statistics and fused with the best forward score, ODIN's input
gradient as the positive control) and ``depth.json`` (commit, versions, configuration, the chosen
gradient-free reference, blocks, timings; GAIA's and the increment test's under the keys ``gaia``
and ``increment``). Recording only GAIA's table or the increment test keeps the rest of
``depth.json`` as it is and requires the recorded configuration and reference to be the ones
computed now. Every image is
back-propagated through the whole network, so the ID test and OOD sets are subsampled (seeded,
``SUBSETS``) to keep each benchmark to a few minutes on a 2-core CPU; the fitting split is not.
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

from ood_lib.findings import depth as D  # noqa: E402
from ood_lib.findings import increment as I  # noqa: E402
from ood_lib.run.config import RunConfig  # noqa: E402
from ood_lib.run.cost import LAYER_CHUNK  # noqa: E402
from ood_lib.run.envinfo import environment  # noqa: E402
from ood_lib.run.evaluate import prepare  # noqa: E402
from ood_lib.run.features import batch_loader  # noqa: E402
from ood_lib.gradients.gaia import hooked_modules  # noqa: E402
from ood_lib.gradients.layers import fastest_method  # noqa: E402
from ood_lib.findings.study import git_state  # noqa: E402
from ood_lib.models.anatomy import default_deeper  # noqa: E402

OUT = REPO / "results" / "recorded"
# benchmark -> RunConfig overrides: the seeded subsets each recorded run uses
SUBSETS = {
    "mnist": {"n_id": 2000, "n_ood": 1000},
    "cifar10": {"n_id": 2000, "n_ood": 1000},
    "cifar10_densenet": {"n_id": 1000, "n_ood": 500},  # ~10× ResNet-20's cost per image
    "imagenet_lite": {"n_id": 300, "n_ood": 150},  # EfficientNet-Lite0 at 224 px: only with --only
}
# EfficientNet-Lite0's per-sample gradients of every layer take 1.5–2 s per image on the 2-core CPU
# this was recorded on (torch.func or the batch-1 loop): its run is ~25 min, so it is not recorded
# by default
DEFAULT = ("mnist", "cifar10", "cifar10_densenet")
# timm's EfficientNet pads inside its convolutions and fuses BatchNorm with the activation, so the
# hooks cannot rebuild its layers (torch.func's vmap then); 16 images of per-sample gradients of its
# 4.65 M parameters at a time bound the memory
CHUNK = {"imagenet_lite": 16}
ODIN = {"temperature": 1000.0, "epsilon": 0.0014}  # ODIN's published setting; ε in [0, 1]-pixel units
TABLES = ("depth", "gaia", "increment")  # depth: depth.csv and depth_odin.csv; gaia: gaia.csv; increment.csv
UNRECORDED = ("data_root", "cache_dir", "progress")  # configuration fields that do not change the numbers


def _provenance(prep, cfg: RunConfig, n_boot: int) -> dict:
    import torch

    return {**git_state(), "config": cfg.as_dict(), "n_boot": n_boot,
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "environment": environment(str(prep.device)), "threads": torch.get_num_threads()}


def _check_recorded(old: dict | None, cfg: RunConfig, best: str, benchmark: str) -> None:
    """GAIA's table alone joins a recorded depth run only on the same configuration and reference."""
    if old is None:
        raise SystemExit(f"{benchmark}: no depth.json to add GAIA's table to: record --tables depth gaia")
    # a field added to RunConfig after the recording counts as recorded at its default
    defaults = RunConfig().as_dict()
    now = {k: v for k, v in cfg.as_dict().items() if k not in UNRECORDED}
    was = {k: old["config"].get(k, defaults[k]) for k in now}
    was.update({k: v for k, v in old["config"].items() if k not in UNRECORDED and k not in now})
    if now != was or old.get("reference") != best:
        raise SystemExit(f"{benchmark}: the recorded depth run (config {was}, reference {old.get('reference')}) "
                         f"differs from this one (config {now}, reference {best}): record --tables depth gaia")


def _gaia(prep, best: str, ref: dict, n_boot: int) -> tuple:
    """GAIA's table and its provenance (hooked modules, seconds per method)."""
    scores, seconds = D.gaia_scores(prep, D.GAIA_MAIN)
    seconds = {n: round(t, 1) for n, t in seconds.items()}
    hooks = {v: hooked_modules(prep.model, prep.config.params_for(v).get("stages")) for v in D.GAIA_MAIN}
    table = D.gaia_table(prep, ref, best, variants=D.GAIA_MAIN, scores=scores, n_boot=n_boot)
    meta = {"variants": {v: D.GAIA_LAST[v] for v in D.GAIA_MAIN}, "reference": best,
            "hooked": hooks, "last_map": default_deeper(prep.model), "seconds": seconds,
            "images": {k: len(next(iter(scores.values()))[k]) for k in ["id_test", *prep.ood_keys]}}
    return table, meta


def record(benchmark: str, root: str, over: dict, n_boot: int, tables: tuple[str, ...] = TABLES) -> dict:
    """Compute and write the asked tables of one benchmark; returns its provenance (``depth.json``)."""
    t = {"start": time.perf_counter()}
    cfg = RunConfig(data_root=root, progress=False, **over)
    prep = prepare(benchmark, cfg, with_train=True)
    t["prepare"] = time.perf_counter()
    best, ref = D.best_forward_only(prep)
    t["reference"] = time.perf_counter()
    d = OUT / benchmark
    d.mkdir(parents=True, exist_ok=True)
    old = json.loads((d / "depth.json").read_text()) if (d / "depth.json").is_file() else None
    kept = {x: old[x] for x in ("gaia", "increment") if old is not None and x in old and x not in tables}
    for x, k in kept.items():
        if k.get("reference") != best:
            raise SystemExit(f"{benchmark}: {x}.csv was recorded against {k.get('reference')}, the reference is "
                             f"now {best}: record --tables {' '.join(TABLES)}")
    computed: dict = {}
    if "depth" in tables:
        meta = _depth(prep, cfg, benchmark, best, ref, n_boot, t, d, computed)
        for x, k in kept.items():  # a side table recorded before stays, with its provenance
            meta[x], meta["tables"] = k, [*meta["tables"], x]
    else:
        _check_recorded(old, cfg, best, benchmark)
        meta = old
    if "gaia" in tables:
        t0 = time.perf_counter()
        table, gaia = _gaia(prep, best, ref, n_boot)
        table.to_csv(d / "gaia.csv", index=False, float_format="%.10g")
        gaia["seconds"]["total"] = round(time.perf_counter() - t0, 1)
        meta["gaia"] = {**_provenance(prep, cfg, n_boot), **gaia}
        meta["tables"] = [*[x for x in meta.get("tables", []) if x != "gaia"], "gaia"]
    if "increment" in tables:
        t0 = time.perf_counter()
        table, inc = _increment(prep, benchmark, best, ref, n_boot, computed)
        table.to_csv(d / "increment.csv", index=False, float_format="%.10g")
        inc["seconds"]["total"] = round(time.perf_counter() - t0, 1)
        meta["increment"] = {**_provenance(prep, cfg, n_boot), **inc}
        meta["tables"] = [*[x for x in meta.get("tables", []) if x != "increment"], "increment"]
    (d / "depth.json").write_text(json.dumps(meta, indent=1, sort_keys=True, default=str))
    return meta


def _increment(prep, benchmark: str, best: str, ref: dict, n_boot: int, computed: dict) -> tuple:
    """The increment test's table and its provenance; gradients and ODIN's terms reused from ``computed``."""
    seconds = {}
    t0 = time.perf_counter()
    if "scores" not in computed:
        computed["scores"] = D.depth_scores(prep, method=fastest_method(prep.model),
                                            chunk_size=CHUNK.get(benchmark, LAYER_CHUNK))
        seconds["gradients"] = round(time.perf_counter() - t0, 1)
    if "odin" not in computed:
        t1 = time.perf_counter()
        computed["odin"] = D.odin_terms(prep, **ODIN)
        seconds["odin"] = round(time.perf_counter() - t1, 1)
    t2 = time.perf_counter()
    forward = I.block_forward_scores(prep, list(computed["scores"]))
    seconds["forward"] = round(time.perf_counter() - t2, 1)
    table = I.increment_table(prep, computed["scores"], forward, ref, odin=computed["odin"], n_boot=n_boot)
    heads = I.head_blocks(prep.model, D.layer_blocks(prep.model))
    return table, {"reference": best, "head_blocks_left_out": heads, "n_fit_max": I.MAX_FIT,
                   "n_calibration": table.attrs["n_calibration"], "n_evaluation": table.attrs["n_evaluation"],
                   "odin": ODIN, "seconds": seconds,
                   "rule": "same block: gradient norm vs the better of the block's activation l1 norm and its "
                           "Mahalanobis score (fitted on ID train); fusion: z(reference) + z(gradient), z fitted on "
                           "a seeded half of the ID test images, AUROC on the other half; simultaneous "
                           "max-statistic intervals over every comparison of a target"}


def _depth(prep, cfg: RunConfig, benchmark: str, best: str, ref: dict, n_boot: int, t: dict, d: Path,
           computed: dict) -> dict:
    """GradNorm by depth and ODIN's first-order term: the two tables and the run's provenance
    (the gradients and ODIN's terms kept in ``computed`` for the increment test)."""
    method = fastest_method(prep.model)
    chunk = CHUNK.get(benchmark, LAYER_CHUNK)
    scores = computed["scores"] = D.depth_scores(prep, method=method, chunk_size=chunk)
    t["gradients"] = time.perf_counter()
    table = D.depth_table(prep, ref, best, scores=scores, n_boot=n_boot)
    t["bootstrap"] = time.perf_counter()
    terms = computed["odin"] = D.odin_terms(prep, **ODIN)
    odin = D.odin_first_order(prep, terms=terms, n_boot=n_boot, **ODIN)
    t["odin"] = time.perf_counter()
    table.to_csv(d / "depth.csv", index=False, float_format="%.10g")
    odin.to_csv(d / "depth_odin.csv", index=False, float_format="%.10g")
    x = next(iter(batch_loader(prep.splits["id_test"].dataset, 1)))[0]
    blocks = D.layer_blocks(prep.model, x)
    params = dict(prep.model.named_parameters())
    stages = list(t)
    return {
        "benchmark": benchmark, **_provenance(prep, cfg, n_boot),
        "sizes": {k: len(prep.splits[k].dataset) for k in prep.splits}, "reference": best,
        "reference_rule": "best mean AUROC over the near and far sets among gradient-free detectors, "
                          "chosen on these data",
        "method": method, "chunk_size": chunk,
        "loss": "KL(u || p) at T = 1, L1 norm, read as published (larger = ID)",
        "input_units": "pixels in [0, 1]: gradient divided by the normalisation std",
        "blocks": {b: int(sum(params[p].numel() for p in ps)) for b, ps in blocks.items()},
        "odin": ODIN, "seconds": {s: round(t[s] - t[p], 1) for p, s in zip(stages, stages[1:])},
        "tables": ["depth", "depth_odin"],
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", required=True)
    p.add_argument("--only", nargs="*", choices=list(SUBSETS), help=f"these benchmarks (default: {', '.join(DEFAULT)})")
    p.add_argument("--n-boot", type=int, default=1000)
    p.add_argument("--tables", nargs="+", choices=TABLES, default=list(TABLES),
                   help="depth: depth.csv and depth_odin.csv; gaia: gaia.csv; increment: increment.csv (default: all)")
    args = p.parse_args()
    for b in args.only or DEFAULT:
        meta = record(b, args.data_root, SUBSETS[b], args.n_boot, tuple(args.tables))
        print(f"{b}: {meta['sizes']}, reference {meta['reference']}, seconds {meta['seconds']}"
              + (f", GAIA seconds {meta['gaia']['seconds']}" if "gaia" in args.tables else ""), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
