"""Record the confound controls of the CIFAR-10 verdicts beside their studies.

    python tools/record_confounds.py --data-root ../shared/data              # every CIFAR-10 unit
    python tools/record_confounds.py --data-root DIR --only cifar10

Writes ``results/recorded/<benchmark>/confounds.csv`` (:func:`ood_lib.findings.confounds.confound_table`):
the recorded verdicts ("as is") beside the same claims decided with the ID test set restricted to
the correctly classified images ("correct ID only"), on the recorded study's configuration, cells
and resamples. The features come from the cache (or are extracted again). Run it after
``tools/record_results.py``; ``make reproduce`` recomputes it (``tests/test_recorded.py``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tools"))

from record_results import OUT, STUDIES, _config  # noqa: E402

CONFOUNDED = ("cifar10", "cifar10_densenet")  # the units whose classifiers the JPEG copy weakens


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
    return cf.confound_table({
        "as is": (rec.meta["id_accuracy"], len(correct), rec["verdicts"]),
        "correct ID only": (100.0, int(correct.sum()), cf.correct_only(live)),
    })


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
        print(f"{b}: confounds in {time.perf_counter() - t0:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
