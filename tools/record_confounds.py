"""Record the confound controls of the CIFAR-10 verdicts beside their studies.

    python tools/record_confounds.py --data-root ../shared/data              # every CIFAR-10 unit
    python tools/record_confounds.py --data-root DIR --only cifar10

Writes ``results/recorded/<benchmark>/confounds.csv`` and ``confounds.json`` (how each adapted
model was made: method, images, settings, seed, wall time, the model file and its fingerprint,
the commit and vector unit) (:func:`ood_lib.findings.confounds.confound_table`):
the recorded verdicts ("as is") beside the same claims decided with the ID test set restricted to
the correctly classified images ("correct ID only") and, where :data:`ADAPT` says, with the model
adapted to the JPEG training images ("AdaBN", "fine-tuned"; :mod:`ood_lib.models.adapt`, kept in
the model cache), on the recorded study's configuration, cells and resamples. The features come from the cache (or are extracted again). Run it after
``tools/record_results.py``; ``make reproduce`` recomputes it (``tests/test_recorded.py``).
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

from ood_lib.findings.study import git_state  # noqa: E402
from ood_lib.models import weights_fingerprint  # noqa: E402
from ood_lib.run.envinfo import vector_unit  # noqa: E402
from record_results import OUT, STUDIES, _config  # noqa: E402

CONFOUNDED = ("cifar10", "cifar10_densenet")  # the units whose classifiers the JPEG copy weakens
# the models adapted to the JPEG copy (model cache entries, rebuilt by this command): AdaBN on a
# seeded 10,000 of the 50,000 JPEG training images; ResNet-20 fine-tuned for 2 epochs on all 50,000
# (SGD, cosine from lr 0.01, crops and flips; seed = the study's). DenseNet-BC-100 gets AdaBN only:
# on a 2-core CPU it scores about 40 images a second forward (its AdaBN pass took 242 s), so two
# epochs of fine-tuning would take about two hours; add ``"fine-tuned": FINE_TUNE`` on a GPU.
FINE_TUNE = ("finetune", None, {"epochs": 2, "lr": 0.01})
ADAPT = {"cifar10": {"AdaBN": ("adabn", 10_000, {}), "fine-tuned": FINE_TUNE},
         "cifar10_densenet": {"AdaBN": ("adabn", 10_000, {})}}


def _decided(bench, cfg, rec, prep, scores):
    """The verdicts table of one variant's scores, on the recorded study's cells and resamples."""
    from ood_lib.findings import verdicts as four
    from ood_lib.scores.closed_forms import uv_members

    keys = [k for k in prep.ood_keys if prep.splits[k].group != "covariate"]
    names = [m for m in four.decided_methods(uv_members()) if m in scores]
    reps = four.replicates({cfg.seed: ({m: scores[m]["id_test"] for m in names},
                                       {k: {m: scores[m][k] for m in names} for k in keys})},
                           n_boot=rec.meta["decision"]["n_boot"], seed=cfg.seed)
    groups = four.decision_groups({o.key: o.decision_group for o in bench.ood if o.key in keys})
    return four.verdict_table(reps, groups, uv_members(), cells=rec.meta["decision"]["cells"])


def adapted(benchmark: str, root: str, method: str, n: int | None, settings: dict, rec):
    """(accuracy, ID images, verdicts) of the benchmark's model adapted to its JPEG training images."""
    from ood_lib.cache import default_cache_dir
    from ood_lib.data.benchmarks import get_benchmark
    from ood_lib.data.files import data_root
    from ood_lib.data.sources import cifar10_train_full
    from ood_lib.findings import verdicts as four
    from ood_lib.models.adapt import cached_adaptation
    from ood_lib.run.evaluate import prepare, score_methods
    from ood_lib.scores.closed_forms import uv_members

    bench = get_benchmark(benchmark)
    cfg = _config(benchmark, root, STUDIES[benchmark])
    base = bench.load_model(data_root(root))
    data = cifar10_train_full(data_root(root), bench.preprocessing, n=n, seed=cfg.seed)
    t0 = time.perf_counter()
    cached = _cache_entries()
    model, path = cached_adaptation(base, data, method, tag=benchmark, cache_dir=default_cache_dir(), progress=True,
                                    **settings)
    seconds = round(time.perf_counter() - t0, 1)
    print(f"{benchmark}: {method} ({len(data):,} images, {settings}) in {seconds:.0f} s "
          f"({'read from the cache' if path in cached else 'computed'}): {path}", flush=True)
    prep = prepare(bench, cfg.replace(checkpoint=str(path)), with_train=True)
    _, scores, _ = score_methods(prep, four.decided_methods(uv_members()))
    how = {"method": method, "images": len(data), "settings": settings, "seed": cfg.seed,
           "seconds": None if path in cached else seconds, "model_file": path.name,
           "weights_fingerprint": weights_fingerprint(model), "factors": _factors(prep, scores)}
    return prep.id_accuracy, len(prep.feats["id_test"].labels), _decided(bench, cfg, rec, prep, scores), how


def _factors(prep, scores) -> list[dict]:
    """What the pre-registered mechanism needs of an adapted model, per OOD set: AUROC of ‖h‖₁
    alone and AUROC(‖h‖₁·MSP) − AUROC(MSP) (an adapted model is a model scored after the rule)."""
    from ood_lib.stats.metrics import auroc

    def area(m, k):
        return auroc(scores[m]["id_test"], scores[m][k])

    return [{"ood": k, "group": prep.splits[k].group, "v_term": "msp", "auroc_u": area("l1*one", k),
             "uv_minus_v": area("l1*msp", k) - area("msp", k)} for k in prep.ood_keys]


def _cache_entries() -> set:
    from ood_lib.cache import default_cache_dir

    return set((default_cache_dir() / "models").glob("*.pt"))


def confounds(benchmark: str, root: str):
    """The confound table of ``benchmark``'s recorded study, recomputed from its configuration."""
    from ood_lib.data.benchmarks import get_benchmark
    from ood_lib.findings import confounds as cf
    from ood_lib.findings import verdicts as four
    from ood_lib.findings.study import Study
    from ood_lib.run.evaluate import prepare, score_methods
    from ood_lib.scores.closed_forms import uv_members

    rec = Study.load(OUT / benchmark)
    cfg = _config(benchmark, root, STUDIES[benchmark])
    bench = get_benchmark(benchmark)
    prep = prepare(bench, cfg, with_train=True)
    _, scores, _ = score_methods(prep, four.decided_methods(uv_members()))
    f = prep.feats["id_test"]
    correct = f.logits.argmax(1) == f.labels
    groups = four.decision_groups({o.key: o.decision_group for o in bench.ood if o.key in prep.ood_keys})
    live = Study(benchmark, {}, {"decision": rec.meta["decision"], "seed": cfg.seed}, "live", scores, None, groups,
                 correct)
    variants = {"as is": (rec.meta["id_accuracy"], len(correct), rec["verdicts"]),
                "correct ID only": (100.0, int(correct.sum()), cf.correct_only(live))}
    how = {}
    for name, (method, n, settings) in ADAPT.get(benchmark, {}).items():
        *variants[name], how[name] = adapted(benchmark, root, method, n, settings, rec)
    table = cf.confound_table(variants)
    table.attrs["adaptations"] = how
    return table


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", required=True)
    p.add_argument("--only", nargs="*", help="only these benchmarks")
    args = p.parse_args()
    for b in CONFOUNDED:
        if args.only and b not in args.only:
            continue
        t0 = time.perf_counter()
        t = confounds(b, args.data_root)
        t.to_csv(OUT / b / "confounds.csv", index=False, float_format="%.10g")
        how = t.attrs.get("adaptations", {})
        old = OUT / b / "confounds.json"
        before = json.loads(old.read_text()).get("adaptations", {}) if old.is_file() else {}
        for name, h in how.items():  # a model read from the cache keeps the wall time it was made in
            if h["seconds"] is None and before.get(name, {}).get("weights_fingerprint") == h["weights_fingerprint"]:
                h["seconds"] = before[name].get("seconds")
        meta = {"benchmark": b, "command": f"python tools/record_confounds.py --data-root DIR --only {b}",
                "adaptations": how, "vector_unit": vector_unit(), **git_state(),
                "seconds": round(time.perf_counter() - t0, 1),
                "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
        (OUT / b / "confounds.json").write_text(json.dumps(meta, indent=1, sort_keys=True, default=str))
        print(f"{b}: confounds in {time.perf_counter() - t0:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
