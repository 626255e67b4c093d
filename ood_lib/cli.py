"""Command line: ``python -m ood_lib verify | evaluate | study | extract``.

Every option is checked, and every output folder found writable, before any work starts. Exit
status: 0 done, 1 a check failed (``verify``) or the disk refused a write, 2 bad input.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

from ._checks import OODInputError
from .cache import check_cache_dir, check_writable
from .run.config import MIN_BOOT, RunConfig, check_device


def check_out_file(out: str | None, what: str = "--out") -> None:
    """An output file must not be a folder, and its folder must be writable (checked before the run)."""
    if out is None:
        return
    path = Path(out)
    if path.is_dir():
        raise OODInputError(f"{what} {path} is a folder; give the name of a file to write")
    check_writable(path.parent, f"the folder of {what}")


def _check_verify_options(args) -> None:
    if not (math.isfinite(args.tol) and args.tol >= 0):
        raise OODInputError(f"--tol must be a finite number >= 0, got {args.tol}")
    if args.n < 1 or args.seed < 0:
        raise OODInputError(f"need --n >= 1 and --seed >= 0, got {args.n} and {args.seed}")
    check_device(args.device)
    check_out_file(args.csv, "--csv")
    check_cache_dir(None)  # the benchmark's model may be trained and cached


def _benchmark(args, need_ood: bool = True):
    """The registered benchmark ``--benchmark`` names (default ``embedded``), or with ``--id`` the
    one made of the model and folders given (:func:`ood_lib.data.own.own_benchmark`)."""
    from .data.benchmarks import get_benchmark

    own = {k: getattr(args, k, None) for k in ("id", "ood", "fit", "size", "mean", "std")}
    if own["id"] is None:
        given = [f"--{k}" for k, v in own.items() if v]
        if given:
            raise OODInputError(f"{', '.join(given)}: need --id DIR (they describe your own data)")
        return get_benchmark(args.benchmark or "embedded")
    if args.benchmark:
        raise OODInputError("give --benchmark NAME or --id DIR (your own data), not both")
    if need_ood and not own["ood"]:
        raise OODInputError("--id needs at least one --ood NAME=DIR")
    from .data.own import own_benchmark, own_model, parse_ood, preprocessing_for

    ood = parse_ood(own["ood"] or [])  # the options first, then the model
    model = own_model(args.model, args.checkpoint, args.id, args.seed)
    prep, source = preprocessing_for(model, args.size, args.mean, args.std)
    arch = args.model or Path(args.checkpoint).name
    return own_benchmark(model, args.id, ood, args.fit, preprocessing=prep, source=source,
                         batch_size=args.batch_size or 64, arch=arch, require_ood=need_ood)


def _verify_inputs(args) -> tuple[torch.nn.Module, torch.Tensor, str]:
    """The model and real ID test images ``verify`` runs on: a benchmark's (default ``embedded``, or
    ``cifar10`` when a checkpoint is given), optionally with another architecture and weights, or
    with ``--id`` the images of that folder."""
    from .data import files as data

    if args.id is None and not args.benchmark:
        args.benchmark = "cifar10" if args.checkpoint else "embedded"
    bench = _benchmark(args, need_ood=False)
    name = bench.name
    root = data.data_root(args.data_root, beside=args.checkpoint if bench.needs_root else None)
    if root is None and bench.needs_root:
        raise OODInputError(
            f"verify on {name!r} needs its real images: pass --data-root DIR (or set ${data.DATA_ROOT_ENV}), "
            "or --benchmark embedded"
        )
    model = bench.load_model(root, seed=args.seed, checkpoint=args.checkpoint, model=args.model,
                             progress=not args.quiet)
    x, _ = data.stack_images(bench.splits(root, seed=args.seed)["id_test"].dataset, args.n, args.seed)
    arch = args.model or (bench.model.arch if not args.checkpoint else  # else: the architecture read off the file
                          f"{type(model).__name__}" + (f"-{model.depth}" if hasattr(model, "depth") else ""))
    what = f"{arch}{' from ' + Path(args.checkpoint).name if args.checkpoint else ''} on {len(x)} {bench.name} ID test images"
    return model, x, what


def _verify_layers(args, model, x, what, dev) -> int:
    """``verify --layers``: every parameter tensor's batched per-sample gradient norms vs the loop."""
    from .gradients.verify import verify_layers

    layers = None if args.layers == "all" else [s.strip() for s in args.layers.split(",") if s.strip()]
    with torch.autocast(dev.type, enabled=False):
        table = verify_layers(model.to(dev), x.to(dev), layers=layers, loss=args.loss,
                              temperature=args.temperature, progress=not args.quiet)
    print(f"Per-sample gradient norms of every parameter tensor, batched (torch.func) vs batch-1 loop, "
          f"float64 on {dev}, loss {args.loss}, T = {args.temperature}: {what}")
    print(table.to_string(index=False, na_rep="", float_format=lambda v: f"{v:.2e}"))
    if args.csv:
        Path(args.csv).parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(args.csv, index=False)
    diffs = table[["rel_diff_l1", "rel_diff_l2sq", "rel_diff_hooks", "rel_diff_closed"]]
    worst = {c: float(diffs[c].max()) for c in diffs.columns}  # NaN (no closed form) is skipped
    s = table.attrs
    print(f"\n{len(table)} parameter tensors: worst relative difference batched vs loop "
          f"L1 {worst['rel_diff_l1']:.2e}, L2² {worst['rel_diff_l2sq']:.2e}, layer hooks {worst['rel_diff_hooks']:.2e}; closed forms "
          f"({int(table.closed_form.ne('').sum())} tensors) {worst['rel_diff_closed']:.2e} (tolerance {args.tol:.0e}); "
          f"seconds: loop {s['seconds_loop']:.1f}, batched {s['seconds_batched']:.1f}, hooks {s['seconds_hooks']:.1f}, "
          f"closed forms {s['seconds_closed']:.1f}")
    for form, why in table.attrs.get("closed_forms_not_applied", {}).items():
        print(f"closed form not applied — {form}: {why}")
    closed_ok = table.closed_form.eq("").all() or worst["rel_diff_closed"] <= args.tol
    hooks_ok = table.rel_diff_hooks.isna().all() or worst["rel_diff_hooks"] <= args.tol
    if not (worst["rel_diff_l1"] <= args.tol and worst["rel_diff_l2sq"] <= args.tol and closed_ok and hooks_ok):
        print("FAILED: a per-layer gradient norm differs between the paths", file=sys.stderr)
        return 1
    return 0


def cmd_verify(args) -> int:
    from .run.features import resolve_device
    from .gradients.verify import verify

    from ._checks import check_temperature

    check_temperature(args.temperature)  # before any model is built or trained
    _check_verify_options(args)
    torch.manual_seed(args.seed)
    dev = resolve_device(args.device)
    model, x, what = _verify_inputs(args)
    if args.layers:
        return _verify_layers(args, model, x, what, dev)
    # float64 throughout and autocast off: the identities are checked at full precision on any device
    with torch.autocast(dev.type, enabled=False):
        table = verify(model.to(dev), x.to(dev), temperature=args.temperature, loop=not args.no_loop,
                       progress=not args.quiet)
    print(f"Autograd vs closed form, float64 on {dev}, T = {args.temperature}: {what}")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.2e}"))
    if args.csv:
        from .run.envinfo import environment

        out = table.assign(**{k: v for k, v in environment(str(dev)).items() if k in ("device_name", "torch")})
        Path(args.csv).parent.mkdir(parents=True, exist_ok=True)
        out.to_csv(args.csv, index=False)
    exact = table[table.wrt.isin(["W", "W,b"])]
    # NaN-skipping maxima: a path that ran only below the head (a transformer's loop) has no last-layer value
    worst = float(exact[[c for c in table.columns if c.startswith("v_diff")]].max().max())
    worst_rel = float(exact[[c for c in table.columns if c.startswith("rel_diff")]].max().max())
    from .scores.closed_forms import v_term

    with torch.no_grad():
        logits = model.double().to(dev)(x.double().to(dev)).cpu()
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
    from .run.evaluate import run_benchmark

    cfg = RunConfig.from_args(args)
    check_out_file(args.out)
    check_cache_dir(cfg.cache_dir)
    df = run_benchmark(_benchmark(args), cfg, out=args.out)
    summary = df[df.ood == "mean"].sort_values("auroc", ascending=False)
    print(summary[["method", "auroc", "fpr95", "aupr_in", "aupr_out", "seconds"]].head(25).to_string(index=False))
    na = summary[summary.note != ""]
    for method, note in zip(na.method, na.note):
        print(f"{method}: {note}")
    if args.out:
        print(f"\nwrote {len(df)} rows to {args.out}")
    return 0


def _check_study_options(args, cfg: RunConfig, bench) -> None:
    """``study``'s own options, before the study runs: resamples, seeds, the output folder."""
    if args.n_boot < MIN_BOOT:
        raise OODInputError(f"--n-boot must be >= {MIN_BOOT} (fewer give intervals too coarse to read; verdicts "
                            f"need the pre-registered count), got {args.n_boot}")
    if args.seeds < 0:
        raise OODInputError(f"--seeds is the number of training seeds to add (0: none), got {args.seeds}")
    if args.seeds and bench.model.train_epochs is None:
        raise OODInputError(f"--seeds: {bench.name!r} uses a pretrained checkpoint, there is no training "
                            "seed to vary")
    if args.out is not None:
        if Path(args.out).is_file():
            raise OODInputError(f"--out {args.out} is a file; give a folder for the tables")
        check_writable(args.out, "--out")
    check_cache_dir(cfg.cache_dir)


def withhold_verdicts(v, n_boot: int):
    """The verdicts table with the bootstrap's verdicts replaced by "not decided" when ``n_boot`` is
    below the pre-registered :data:`ood_lib.findings.claims.N_BOOT` (identities rest on a tolerance and stay)."""
    from .findings.claims import N_BOOT, NOT_RUN

    if n_boot >= N_BOOT:
        return v
    by_boot = v.verdict.ne(NOT_RUN) & v.lo.notna()
    return v.assign(verdict=v.verdict.where(~by_boot, f"not decided ({n_boot} < {N_BOOT} resamples)"))


def cmd_study(args) -> int:
    from .findings.claims import N_BOOT
    from .findings.study import run_study

    cfg = RunConfig.from_args(args)
    bench = _benchmark(args)  # resolved once, carried through the run
    _check_study_options(args, cfg, bench)
    if args.id is not None:
        return _own_study(args, cfg, bench)
    from .findings.claims import MIN_SEEDS

    trained = bench.model.train_epochs is not None and args.seeds >= MIN_SEEDS  # fewer: the image bootstrap of one
    study = run_study(bench, cfg, n_boot=args.n_boot,  # a model trained here: its seeds in the verdicts' interval
                      seeds=tuple(cfg.seed + i for i in range(args.seeds)) if trained else None)
    study.tables["verdicts_nov"] = withhold_verdicts(study["verdicts_nov"], args.n_boot)
    v = study["verdicts"]
    print(v[["claim", "group", "metric", "estimate", "lo", "hi", "verdict", "cause"]]
          .to_string(index=False, float_format="%.3g"))
    d = study.meta["decision"]
    print(f"interval: {d['interval']} bootstrap, {d['n_boot']:,} resamples, Bonferroni over {d['cells']} cell(s)")
    if args.n_boot < N_BOOT:
        print(f"the rule of 27 November's verdicts (verdicts_nov) withheld: {args.n_boot} resamples, fewer than "
              f"its {N_BOOT}", file=sys.stderr)
    if args.out:
        print(f"\nwrote the tables and their provenance to {study.save(args.out)}")
    if args.seeds:
        from .findings.study import seed_summary, seed_table

        t = seed_table(bench, tuple(range(args.seeds)), cfg)
        print(seed_summary(t).to_string(index=False, float_format="%.2f"))
        if args.out:
            from .cache import atomic_write_bytes

            atomic_write_bytes(t.to_csv(index=False, float_format="%.10g").encode(), Path(args.out) / "seeds.csv")
    return 0


def _own_study(args, cfg: RunConfig, bench) -> int:
    """``study --id``: the study on your own model and folders; ``--out`` gets the tables, ``report.html``
    and ``report.md``."""
    from .book.own import OwnStudy
    from .findings.own import own_study

    result = OwnStudy(own_study(bench, cfg, n_boot=args.n_boot))
    print(result.answer()[["statement", "group", "estimate", "lo", "hi", "verdict"]]
          .to_string(index=False, float_format="%.3g"))
    print("\n".join(result.sentences()))
    if args.out:
        print(f"\nwrote the tables, report.html and report.md to {result.save(args.out)}")
    return 0


# --- every option, declared once ---------------------------------------------------------
# The run's options are RunConfig's fields (``RunConfig.add_arguments``); these are the others. A
# command takes the ones it lists; a command's own default is set with ``set_defaults``.
OPTIONS: dict[str, tuple[tuple[str, ...], dict]] = {
    "benchmark": (("--benchmark",), dict(default=None, help="a registered benchmark (default: embedded; verify's: "
                                                           "cifar10 with --checkpoint)")),
    "id": (("--id",), dict(help="your own ID images: a folder (class sub-folders give labels), instead of --benchmark; "
                                "the model from --checkpoint (architecture read off it) or --model")),
    "ood": (("--ood",), dict(action="append", metavar="NAME[:MARK]=DIR",
                             help="an OOD folder of your own (repeat for several); MARK: near, far-natural (default), "
                                  "far-synthetic or covariate")),
    "fit": (("--fit",), dict(help="ID training images of your own, to fit the fitted baselines on")),
    "size": (("--size",), dict(type=int, help="input size for your folders (default: the model library's)")),
    "mean": (("--mean",), dict(type=float, nargs="+", help="per-channel mean for your folders")),
    "std": (("--std",), dict(type=float, nargs="+", help="per-channel std for your folders")),
    "out": (("--out",), dict(help="where to write: evaluate's CSV file, study's folder of tables and meta.json")),
    "csv": (("--csv",), dict(help="also write the table to this CSV file")),
    "n": (("--n",), dict(type=int, default=64, help="number of images")),
    "temperature": (("--temperature",), dict(type=float, default=1.0)),
    "tol": (("--tol",), dict(type=float, default=1e-10, help="fail above this last-layer difference")),
    "no_loop": (("--no-loop",), dict(action="store_true", help="skip the one-image-at-a-time path")),
    "layers": (("--layers",), dict(help="instead: per-sample gradient norms of every parameter tensor ('all', or "
                                        "comma-separated name prefixes), batched vs the batch-1 loop; fail above --tol")),
    "loss": (("--loss",), dict(default="uniform_kl", choices=["uniform_kl", "ones", "pred"],
                               help="the loss differentiated with --layers (uniform_kl: GradNorm's KL to uniform)")),
    "n_boot": (("--n-boot",), dict(type=int, default=1000, help="paired bootstrap resamples (>= 100; verdicts only "
                                                                "from the pre-registered 1000 up)")),
    "seeds": (("--seeds",), dict(type=int, default=0, help="also train and evaluate N seeds (models trained here) "
                                                          "and write seeds.csv; with 5 or more, the verdicts' "
                                                          "interval is over seeds × images")),
    "timeout_min": (("--timeout-min",), dict(type=float, default=60.0, help="how long a rank waits for the others")),
}
# RunConfig fields each command takes (None: all of them)
VERIFY_RUN = ("data_root", "device", "seed", "model", "checkpoint", "progress")
EXTRACT_RUN = ("data_root", "device", "seed", "cache_dir", "n_id", "n_ood", "n_fit", "model", "checkpoint",
               "batch_size", "progress")


def _command(sub, name: str, func, options: tuple[str, ...], run: tuple[str, ...] | None, **kw):
    p = sub.add_parser(name, **kw)
    for o in options:
        flags, spec = OPTIONS[o]
        p.add_argument(*flags, dest=o, **spec)
    RunConfig.add_arguments(p, only=run)
    p.set_defaults(func=func)
    return p


def cmd_extract(args) -> int:
    """``extract``: every split's features in the cache (sharded over the ranks under torchrun)."""
    from .run.distributed import run_extract

    cfg = RunConfig.from_args(args)  # every option checked, and the cache found writable, before any work
    check_cache_dir(cfg.cache_dir)
    run_extract(args.benchmark or "embedded", cfg, args.timeout_min)
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ood_lib", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    own = ("id", "ood", "fit", "size", "mean", "std")
    v = _command(sub, "verify", cmd_verify, ("benchmark", "csv", "n", "temperature", "tol", "no_loop", "layers", "loss",
                                             *own), VERIFY_RUN + ("batch_size",),
                 help="autograd gradient scores vs their closed forms")
    v.set_defaults(benchmark=None, device="cpu")  # float64 either way
    _command(sub, "evaluate", cmd_evaluate, ("benchmark", "out", *own), None,
             help="every score on one benchmark (or your own model and folders), as a CSV")
    _command(sub, "study", cmd_study, ("benchmark", "out", "n_boot", "seeds", *own), None,
             help="the pre-registered verdicts and the tables behind them (a folder of CSVs; with --id, "
                  "your own model and folders, and a one-page report.html)")
    _command(sub, "extract", cmd_extract, ("benchmark", "timeout_min"), EXTRACT_RUN,
             help="extract and cache every split's features (under torchrun: sharded over the ranks)",
             description="Extract and cache every split's features. Under torchrun each rank takes a slice of "
                         "every split (device 'auto'/'cuda': cuda:$LOCAL_RANK) and rank 0 joins the slices.")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except (OODInputError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a write the disk refused (full, read-only): the error names the path
        print(f"error: {exc}", file=sys.stderr)
        return 1
