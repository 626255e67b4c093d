"""How long the paired bootstrap takes at the study's size.

    .venv/bin/python benchmarks/paired_speed.py [--methods 60] [--n-id 10000] [--n-boot 1000] [--repeats 3]

Synthetic oriented scores: 60 methods (one in six with heavy ties, as saturated softmax scores
have), 10,000 ID samples, five OOD sets of 2,000 to 10,000 samples, 1,000 shared resamples.
Prints the median wall time of building :class:`ood_lib.stats.paired.PairedBootstrap` and its ratio to
the sort-per-replicate route (``ood_lib.stats.metrics.auroc`` on each resampled pair, timed on a few
replicates and extrapolated).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from ood_lib.stats.metrics import auroc
from ood_lib.stats.paired import PairedBootstrap


def scores(n_methods: int, n_id: int, ood_sizes: list[int], seed: int = 0) -> tuple[dict, dict]:
    rng = np.random.default_rng(seed)
    shift = rng.uniform(0.2, 2.0, n_methods)
    tied = np.arange(n_methods) % 6 == 0  # rounded to a coarse grid: many ID/OOD ties

    def make(size: int, mean: np.ndarray) -> dict[str, np.ndarray]:
        out = {}
        for j in range(n_methods):
            x = rng.normal(mean[j], 1.0, size)
            out[f"m{j:02d}"] = np.minimum(np.round(x, 1), 1.0) if tied[j] else x
        return out

    ids = make(n_id, shift)
    oods = {f"ood{k}": make(m, np.zeros(n_methods)) for k, m in enumerate(ood_sizes)}
    return ids, oods


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", type=int, default=60)
    ap.add_argument("--n-id", type=int, default=10_000)
    ap.add_argument("--ood-sizes", type=int, nargs="+", default=[2000, 4000, 6000, 8000, 10_000])
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    ids, oods = scores(a.methods, a.n_id, a.ood_sizes)
    times = []
    for _ in range(a.repeats):
        t0 = time.perf_counter()
        pb = PairedBootstrap(ids, oods, n_boot=a.n_boot, seed=0)
        times.append(time.perf_counter() - t0)
    fast = statistics.median(times)
    # the route it replaces: sort every resampled pair (a few replicates, extrapolated)
    probe = 3
    t0 = time.perf_counter()
    for i in range(probe):
        id_idx, ood_idx = pb.resample(i)
        for s in pb.sets:
            for m in pb.methods:
                auroc(ids[m][id_idx], oods[s][m][ood_idx[s]])
    naive = (time.perf_counter() - t0) / probe * a.n_boot
    print(f"{a.methods} methods x {len(a.ood_sizes)} OOD sets {a.ood_sizes} x {a.n_id} ID x {a.n_boot} resamples")
    print(f"PairedBootstrap: median {fast:.2f} s of {a.repeats} (runs: {', '.join(f'{t:.2f}' for t in times)})")
    print(f"sort per replicate (metrics.auroc, extrapolated from {probe} replicates): {naive:.1f} s")
    print(f"ratio sort / PairedBootstrap: {naive / fast:.1f}x")


if __name__ == "__main__":
    main()
