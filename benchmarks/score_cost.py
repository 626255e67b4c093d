"""What gradients cost: every way of scoring, side by side on the same model, inputs and device.

    .venv/bin/python benchmarks/score_cost.py [--device auto] [--data-root DIR] [--out results/score_cost.csv]
                                              [--ops-out results/score_ops.csv] [--compile]

Prints median milliseconds per image and the ratio of each path to the bare batched forward
pass, for the CIFAR ResNet-20 (32×32) and torchvision's ResNet-50 (224×224), random weights;
every closed form both fused (one call for all members) and one member at a time, with
``--compile`` also the fused call through torch.compile; then the operator calls and host syncs of
one scoring call, fused and per member, for ten members and for all (written to ``--ops-out``)
(for the ``--per-layer`` models, default ResNet-20, also the per-sample gradient norms of every
parameter tensor, against one batched forward + backward and the batch-1 loop); then the time to
score the whole closed-form family from cached features of 100,000 samples × 1,000 classes; then (with a data root holding CIFAR10-JPEG) the evaluation runner's feature
extraction throughput against the bare forward pass over the same images. Writes the first
table as CSV for the book's cost chapter (`notebooks/04_cost.py`, parameter COST_CSV).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import pandas as pd
import torch

from ood_lib import data as D
from ood_lib.run.cost import (COMPILE_PATHS, LAYER_COST_AIM, LAYER_LOOP_PATHS, LAYER_PATHS, PATHS, grid_cost,
                          layer_ratios, median_seconds, score_cost, scoring_ops)
from ood_lib.run.features import extract, resolve_device
from ood_lib.models import build_model


def runner_throughput(root: Path, device: torch.device, repeats: int) -> dict:
    """Images per second: the runner's extraction (decode + transform + forward) vs the bare forward."""
    from ood_lib.data.benchmarks import get_benchmark

    bench = get_benchmark("cifar10")
    ds = bench.splits(root)["id_test"].dataset
    model = bench.load_model(root).to(device)
    x = torch.stack([ds[i][0] for i in range(len(ds))]).to(device)

    def bare():
        with torch.inference_mode():
            for i in range(0, len(x), 256):
                model.forward_features(x[i : i + 256])

    def runner():
        extract(model, ds, device=device, cache_dir=False, progress=False, batch_size=256)

    bare(), runner()  # warm-up
    t_bare, t_run = [], []
    for _ in range(repeats):  # interleaved, so that drift in the machine's speed hits both alike
        t_bare.append(median_seconds(bare, repeats=1, warmup=0, device=device))
        t_run.append(median_seconds(runner, repeats=1, warmup=0, device=device))
    t_bare, t_run = statistics.median(t_bare), statistics.median(t_run)
    return {"images": len(x), "bare_img_per_s": len(x) / t_bare, "runner_img_per_s": len(x) / t_run,
            "runner_over_bare": t_bare / t_run}


def time_model(name: str, shape: tuple[int, ...], batch: int, a: argparse.Namespace, dev: torch.device,
               env: dict) -> pd.DataFrame:
    """Every path on one model (random weights and inputs): the table, printed with its ratios."""
    model = build_model(name).to(dev).eval()
    x = torch.randn(batch, *shape, device=dev)
    paths = PATHS + (COMPILE_PATHS if a.compile else ()) + (
        LAYER_PATHS + LAYER_LOOP_PATHS if name in a.per_layer else ())
    t = score_cost(model, x, label=name, repeats=a.repeats, loop_images=a.loop_images,
                   exgrad_images=a.exgrad_images, paths=paths)
    t = t.assign(device_name=env["device_name"], torch=env["torch"], cuda=env["cuda"])
    print(t[["model", "path", "images_timed", "ms_per_image", "ratio_to_forward"]].to_string(index=False,
          float_format=lambda v: f"{v:.3f}"))
    fwd = t.set_index("path").ms_per_image
    print(f"  closed-form overhead on the forward pass: {100 * fwd['closed_form_scoring_only'] / fwd['forward']:.2f} %"
          f"   fastest gradient path (vmap_head) / forward: {fwd['vmap_head'] / fwd['forward']:.2f}x")
    print(f"  ÷ forward: forward + all members fused {fwd['closed_form'] / fwd['forward']:.2f}x, "
          f"one at a time {fwd['closed_form_per_member'] / fwd['forward']:.2f}x; all members alone fused "
          f"{fwd['closed_form_scoring_only'] / fwd['forward']:.3f}x, one at a time "
          f"{fwd['closed_form_per_member_scoring_only'] / fwd['forward']:.3f}x")
    if name in a.per_layer:
        r = layer_ratios(t).iloc[0]
        print(f"  every layer, per sample: per_layer_hooks {r.hooks_over_fb:.2f}x forward + backward "
              f"(spread {r.hooks_over_fb_lo:.2f}-{r.hooks_over_fb_hi:.2f}; aim <= {LAYER_COST_AIM:g}x: {r.aim}), "
              f"per_layer_all {r.all_over_fb:.2f}x; batch-1 loop / hooks {r.loop_over_hooks:.1f}x, "
              f"/ per_layer_all {r.loop_over_all:.1f}x")
    print()
    return t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--batch-resnet20", type=int, default=256)
    p.add_argument("--batch-resnet50", type=int, default=32)
    p.add_argument("--models", nargs="*", default=["resnet20", "resnet50"], choices=["resnet20", "resnet50"])
    p.add_argument("--loop-images", type=int, default=8, help="images timed on the one-at-a-time paths")
    p.add_argument("--exgrad-images", type=int, default=2, help="images timed on the C-pass ExGrad path")
    p.add_argument("--per-layer", nargs="*", default=["resnet20"], choices=["resnet20", "resnet50"],
                   help="models also timed on the per-layer paths (all parameters' per-sample gradient norms)")
    p.add_argument("--no-grid", action="store_true", help="skip the cached-features grid timing")
    p.add_argument("--grid-n", type=int, default=100_000)
    p.add_argument("--grid-classes", type=int, default=1000)
    p.add_argument("--grid-dim", type=int, default=2048)
    p.add_argument("--data-root", help="folder with CIFAR10-JPEG/ and weights/ (default: $OOD_DATA_ROOT)")
    p.add_argument("--out", default="results/score_cost.csv")
    p.add_argument("--ops-out", default="results/score_ops.csv", help="operator calls per scoring call (CSV)")
    p.add_argument("--compile", action="store_true", help="also time the fused scorer through torch.compile")
    a = p.parse_args()
    dev = resolve_device(a.device)
    torch.manual_seed(0)
    print(f"device: {dev}{' (' + torch.cuda.get_device_name(dev) + ')' if dev.type == 'cuda' else ''}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    tables = []
    from ood_lib.run.envinfo import environment

    env = environment(str(dev))
    for name, shape, batch in (("resnet20", (3, 32, 32), a.batch_resnet20), ("resnet50", (3, 224, 224), a.batch_resnet50)):
        if name not in a.models:
            continue
        tables.append(time_model(name, shape, batch, a, dev, env))
        print()
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    pd.concat(tables).to_csv(out, index=False)
    print(f"wrote {out}\n")
    operator_calls(a, dev, env)
    if not a.no_grid:
        grid_and_runner(a, dev)


def operator_calls(a: argparse.Namespace, dev: torch.device, env: dict) -> None:
    """Operator calls and host syncs of one scoring call from ResNet-20 features: printed and written."""
    model = build_model("resnet20").to(dev).eval()
    with torch.inference_mode():
        h, f = model.forward_features(torch.randn(a.batch_resnet20, 3, 32, 32, device=dev))
    ops = scoring_ops(h, f).assign(device_name=env["device_name"], torch=env["torch"])
    print(f"one scoring call, ResNet-20 features, batch {a.batch_resnet20}:")
    print(ops[["path", "members", "operator_calls", "host_syncs"]].to_string(index=False))
    ops_out = Path(a.ops_out)
    ops_out.parent.mkdir(parents=True, exist_ok=True)
    ops.to_csv(ops_out, index=False)
    print(f"wrote {ops_out}\n")


def grid_and_runner(a: argparse.Namespace, dev: torch.device) -> None:
    """The closed-form family from large cached features, and the runner's extraction throughput."""
    for dtype in (torch.float32, torch.float64):
        g = grid_cost(a.grid_n, a.grid_classes, a.grid_dim, repeats=3, dtype=dtype)
        print(f"closed-form family ({g['members']} scores) from cached features, {g['n']:,} × {g['classes']:,} "
              f"(D = {g['dim']}), {str(dtype).removeprefix('torch.')}: {g['seconds']:.2f} s (median of 3)")
    root = D.data_root(a.data_root) if (a.data_root or D.DATA_ROOT_ENV in __import__("os").environ) else None
    if root is not None and (root / "CIFAR10-JPEG").is_dir():
        r = runner_throughput(root, dev, repeats=5)
        print(f"\nrunner throughput on CIFAR-10 ({r['images']:,} JPEG images): {r['runner_img_per_s']:.0f} img/s "
              f"vs bare forward {r['bare_img_per_s']:.0f} img/s = {100 * r['runner_over_bare']:.0f} %")
    else:
        print("\nrunner throughput: skipped (pass --data-root DIR holding CIFAR10-JPEG/ and weights/)")


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")
