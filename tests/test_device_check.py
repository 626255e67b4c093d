"""The prepared GPU check (benchmarks/device_check.sh) keeps working: its --dry-run runs every step on the CPU."""

import csv
import subprocess
import sys
from pathlib import Path

import pandas as pd

from ood_lib.gradients.verify import recorded_checks

REPO = Path(__file__).resolve().parents[1]


def test_device_check_dry_run_writes_every_result(tmp_path):
    out = tmp_path / "device"
    r = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "device_check.sh"), "--dry-run", "--python", sys.executable,
         "--benchmarks", "embedded", "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    runs = list(csv.DictReader(open(out / "runs.csv")))
    assert [(x["benchmark"], x["device"], x["status"]) for x in runs] == [("embedded", "cpu", "ok")]
    steps = list(csv.DictReader(open(out / "steps.csv")))
    assert len(steps) == 5 and all(x["status"] == "ok" and float(x["seconds"]) > 0 for x in steps), steps
    env = next(csv.DictReader(open(out / "environment.csv")))
    assert env["device"] == "cpu" and env["torch"]
    for name in ("embedded.csv", "embedded_warm.csv"):
        df = pd.read_csv(out / name)
        assert {"near", "far", "mean"} <= set(df.ood)
    warm = pd.read_csv(out / "embedded_warm.csv")
    fitted = warm.note.isna()  # n/a rows (too few ID samples for a fit in the dry run) have no scores
    assert fitted.any() and warm[fitted].from_cache.all()  # the warm pass reads every score from the cache
    v = pd.read_csv(out / "verify_embedded.csv")
    last = v[v.wrt.isin(["W", "W,b"])]
    assert (last.filter(like="v_diff").to_numpy() <= 1e-10).all()
    layers = pd.read_csv(out / "verify_layers_embedded.csv")
    assert len(layers) >= 4 and (layers[["rel_diff_l1", "rel_diff_l2sq"]].to_numpy() <= 1e-10).all()
    checks = recorded_checks(out)  # what the cost chapter reads back
    assert sorted(checks.check) == ["every layer", "last layer"] and (checks.worst <= 1e-10).all()
    for b in (8, 1):
        cost = pd.read_csv(out / f"score_cost_b{b}.csv")
        assert set(cost.batch) == {b} and (cost.ms_min <= cost.ms_per_image).all()
        assert {"forward", "gradnorm_published", "vmap_head", "closed_form_per_member"} <= set(cost.path)
        ops = pd.read_csv(out / f"score_ops_b{b}.csv").pivot(index="members", columns="path", values="operator_calls")
        assert ops.fused.nunique() == 1 and (ops.per_member > ops.fused).all()  # fused: one count for any member set
