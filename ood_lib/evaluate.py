"""The evaluation runner: every method on every OOD set of one benchmark, as one tidy table.

Each method declares what it needs, and gets exactly that:

* ``features`` — a pure function of (h, logits): the U·V grid, MSP, MaxLogit, Energy and the
  closed forms of the gradient scores (:mod:`ood_lib.scores`);
* ``autograd`` — a gradient score computed by autograd w.r.t. the head, from the cached h;
* ``fit`` — fitted on the ID *training* split only (Mahalanobis, ReAct, KNN): the runner hands
  ``fit`` nothing else, so test or OOD data cannot leak into it;
* ``model`` — needs the network and the images again (ODIN's input perturbation).

``seconds`` is the time a method spends beyond the shared forward pass (whose time is recorded
in the metadata); it is the only column that differs between two runs with the same seed.
Each method's scores are cached with the seconds they took (keyed by the method, its
hyper-parameters and the feature-cache keys of every set it read), so a re-run reproduces the
same table, timings included, in seconds.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from . import __version__
from . import data as D
from ._checks import OODInputError, unknown_name
from .baselines import KNN, Mahalanobis, ReAct, odin_scores
from .benchmarks import get_benchmark
from .features import (
    Features,
    _atomic_write_bytes,
    batch_loader,
    default_cache_dir,
    extract,
    read_arrays,
    resolve_device,
    write_arrays,
)
from .gradients import head_gradient_score
from .metrics import METRICS, bootstrap_ci, evaluate_scores
from .scores import SCORES, scores as closed_scores

AUTOGRAD = ("gradnorm", "gradnorm_official", "exgrad", "fisher", "ce_pred")


@dataclass(frozen=True)
class Method:
    name: str
    family: str  # "uv", "baseline", "gradient" (closed form), "autograd", "fit", "model"
    needs: str  # "features", "autograd", "fit", "model"


def available_methods() -> dict[str, Method]:
    out = {n: Method(n, s.family, "features") for n, s in SCORES.items()}
    for g in AUTOGRAD:
        out[f"{g}_autograd"] = Method(f"{g}_autograd", "autograd", "autograd")
    for n in ("mahalanobis", "react", "knn"):
        out[n] = Method(n, "baseline", "fit")
    out["odin"] = Method("odin", "baseline", "model")
    return out


# Exact expectations over the labels by autograd take C per-sample gradients per image: run them
# by default only where C is small (the cost chapter measures them at every size).
EXPECTATION_AUTOGRAD_MAX_CLASSES = 100


def default_methods(benchmark: str) -> list[str]:
    """Every method, except the C-pass autograd expectations on benchmarks with many classes."""
    names = list(available_methods())
    if get_benchmark(benchmark).num_classes > EXPECTATION_AUTOGRAD_MAX_CLASSES:
        names = [n for n in names if n not in ("exgrad_autograd", "fisher_autograd")]
    return names


def _make_fitted(name: str, head: torch.nn.Linear, knn_k: int):
    if name == "mahalanobis":
        return Mahalanobis()
    if name == "react":
        return ReAct(head.weight.detach().cpu().numpy(), head.bias.detach().cpu().numpy())
    return KNN(k=knn_k)


@dataclass
class Prepared:
    """A benchmark ready to score: its model, splits and (cached) features."""

    benchmark: str
    model: torch.nn.Module
    splits: dict[str, D.Split]
    feats: dict[str, Features]
    device: torch.device
    root: Path | None
    batch_size: int

    @property
    def ood_keys(self) -> list[str]:
        return [k for k in self.splits if k not in ("id_train", "id_test")]

    @property
    def id_accuracy(self) -> float:
        """Top-1 accuracy (percent) on the labelled ID test images."""
        f = self.feats["id_test"]
        labelled = f.labels >= 0
        if not labelled.any():
            return float("nan")
        return float(100.0 * (f.logits[labelled].argmax(1) == f.labels[labelled]).mean())


def prepare(
    benchmark: str = "embedded",
    *,
    data_root: str | Path | None = None,
    device: str = "auto",
    seed: int = 0,
    cache_dir: str | Path | None | bool = None,
    progress: bool = True,
    n_id: int | None = None,
    n_ood: int | None = None,
    n_fit: int | None = None,
    checkpoint: str | None = None,
    batch_size: int | None = None,
    with_train: bool = True,
) -> Prepared:
    """Load a benchmark's model and splits and extract (or read from the cache) every set's features."""
    bench = get_benchmark(benchmark)
    dev = resolve_device(device)
    root = D.data_root(data_root)
    torch.manual_seed(seed)
    splits = bench.splits(root, seed=seed, n_id=n_id, n_ood=n_ood, n_fit=n_fit)
    model = bench.load_model(root, seed=seed, checkpoint=checkpoint, cache_dir=cache_dir, progress=progress)
    bs = batch_size or bench.fit_batch_size
    feats: dict[str, Features] = {}
    for key, split in splits.items():
        if key == "id_train" and not with_train:
            continue
        feats[key] = extract(model, split.dataset, device=dev, batch_size=bs, cache_dir=cache_dir,
                             progress=progress, desc=f"{benchmark}/{key}")
    return Prepared(benchmark, model, splits, feats, dev, root, bs)


def run_benchmark(
    benchmark: str = "embedded",
    *,
    data_root: str | Path | None = None,
    device: str = "auto",
    seed: int = 0,
    out: str | Path | None = None,
    cache_dir: str | Path | None | bool = None,
    methods: list[str] | None = None,
    progress: bool = True,
    n_id: int | None = None,
    n_ood: int | None = None,
    n_fit: int | None = None,
    checkpoint: str | None = None,
    batch_size: int | None = None,
    bootstrap: int = 0,
    ci_methods: list[str] | None = None,
    knn_k: int = 50,
) -> pd.DataFrame:
    """Evaluate ``methods`` (default: :func:`default_methods`) on ``benchmark``; returns (and optionally
    writes) the table.

    Rows: one per (method, OOD set) plus ``ood == "mean"``; metrics in percent. With
    ``bootstrap > 0``, AUROC and FPR95 get percentile intervals for ``ci_methods`` (default: all).
    The metadata (versions, device, seed, data fingerprints, skipped images, forward-pass time)
    is in ``df.attrs["meta"]`` and, with ``out``, in ``<out>.json`` beside the CSV.
    """
    registry = available_methods()
    names = default_methods(benchmark) if methods is None else list(methods)
    for n in names:
        if n not in registry:
            raise unknown_name("method", n, registry)
    if not names:
        raise OODInputError("no methods to evaluate")
    prep = prepare(
        benchmark, data_root=data_root, device=device, seed=seed, cache_dir=cache_dir, progress=progress,
        n_id=n_id, n_ood=n_ood, n_fit=n_fit, checkpoint=checkpoint, batch_size=batch_size,
        with_train=any(registry[n].needs == "fit" for n in names),
    )
    model, splits, feats, dev, root, bs = prep.model, prep.splits, prep.feats, prep.device, prep.root, prep.batch_size
    ood_keys = prep.ood_keys
    accuracy = prep.id_accuracy
    head = model.head
    cpu_head = torch.nn.Linear(head.in_features, head.out_features).eval()
    cpu_head.load_state_dict({k: v.detach().cpu() for k, v in head.state_dict().items()})
    head64 = copy.deepcopy(cpu_head).double()
    notes: dict[str, str] = {}

    as64: dict[tuple[str, str], torch.Tensor] = {}  # float64 copies, made once per set, not per method

    def h64(k: str) -> torch.Tensor:
        if (k, "h") not in as64:
            as64[k, "h"] = torch.from_numpy(feats[k].h).double()
        return as64[k, "h"]

    def f64(k: str) -> torch.Tensor:
        if (k, "f") not in as64:
            as64[k, "f"] = torch.from_numpy(feats[k].logits).double()
        return as64[k, "f"]

    def run(method: Method) -> dict[str, np.ndarray] | None:
        sets = ["id_test"] + ood_keys
        # float64 from the cached float32 features: closed forms and autograd then agree to
        # ~1e-15, so no pair of samples swaps order between them
        if method.needs == "features":
            return {k: closed_scores([method.name], h64(k), f64(k))[method.name].numpy() for k in sets}
        if method.needs == "autograd":
            g = method.name.removesuffix("_autograd")
            # per-sample gradients are (C, D) each: keep a chunk of them near 512 MB
            chunk = max(1, int(5e8 // (8 * head64.weight.numel())))
            return {k: head_gradient_score(g, head64, h64(k), batch_size=chunk).numpy() for k in sets}
        if method.needs == "fit":
            if "id_train" not in feats:
                notes[method.name] = "skipped: the benchmark has no ID training split to fit on"
                return None
            tr = feats["id_train"]
            det = _make_fitted(method.name, cpu_head, min(knn_k, len(tr.h))).fit(tr.h, tr.logits, tr.labels)
            return {k: det.score(feats[k].h, feats[k].logits) for k in sets}
        loaders = {k: batch_loader(splits[k].dataset, bs, device_type=dev.type) for k in sets}
        return {k: odin_scores(model.to(dev), loaders[k], device=dev) for k in sets}

    score_dir = None if cache_dir is False else (default_cache_dir() if cache_dir is None else Path(cache_dir)) / "scores"
    sets = ["id_test"] + ood_keys

    def cached_run(method: Method) -> tuple[dict[str, np.ndarray] | None, float]:
        """Scores per set and the seconds they took, from the score cache when possible."""
        path = key = None
        if score_dir is not None:
            parts = {"method": method.name, "knn_k": knn_k, "code": _code_fingerprint(),
                     "sets": {k: feats[k].key for k in sets}}
            if method.needs == "fit" and "id_train" in feats:
                parts["fit"] = feats["id_train"].key
            key = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]
            path = score_dir / f"{key}.npz"
            got = read_arrays(path, key, tuple(sets))
            if got is not None:
                return got[0], float(got[1]["seconds"])
        t0 = time.perf_counter()
        s = run(method)
        seconds = time.perf_counter() - t0
        if s is not None and path is not None:
            write_arrays(path, key, s, seconds=seconds)
        return s, seconds

    rows = []
    from tqdm.auto import tqdm

    for name in tqdm(names, desc=f"{benchmark}: scoring", disable=not progress, leave=False):
        method = registry[name]
        s, seconds = cached_run(method)
        if s is None:
            continue
        per_set = []
        for k in ood_keys:
            m = evaluate_scores(s["id_test"], s[k])
            row = {"benchmark": benchmark, "method": name, "family": method.family, "ood": k, **m,
                   "n_id": len(s["id_test"]), "n_ood": len(s[k])}
            if bootstrap and (ci_methods is None or name in ci_methods):
                for metric in ("auroc", "fpr95"):
                    lo, hi = bootstrap_ci(s["id_test"], s[k], metric, n_boot=bootstrap, seed=seed)
                    row[f"{metric}_lo"], row[f"{metric}_hi"] = lo, hi
            per_set.append(row)
        mean = {"benchmark": benchmark, "method": name, "family": method.family, "ood": "mean",
                **{m: float(np.mean([r[m] for r in per_set])) for m in METRICS},
                "n_id": len(s["id_test"]), "n_ood": int(sum(r["n_ood"] for r in per_set))}
        for r in per_set + [mean]:
            r["id_accuracy"] = accuracy
            r["seconds"] = seconds
        rows += per_set + [mean]
    df = pd.DataFrame(rows)
    df.attrs["meta"] = _metadata(benchmark, root, seed, dev, splits, feats, accuracy, notes, model)
    if out is not None:
        write_results(df, out)
    return df


def _code_fingerprint() -> str:
    """A hash of the modules that compute scores: editing a formula invalidates cached scores."""
    from . import baselines, gradients, scores

    d = hashlib.sha256()
    for mod in (scores, gradients, baselines):
        d.update(Path(mod.__file__).read_bytes())
    return d.hexdigest()


def _metadata(benchmark, root, seed, dev, splits, feats, accuracy, notes, model) -> dict:
    import sklearn

    from .models import weights_fingerprint

    return {
        "benchmark": benchmark,
        "data_root": None if root is None else str(root),
        "seed": seed,
        "device": str(dev) if dev.type == "cpu" else f"{dev} ({torch.cuda.get_device_name(dev)})",
        "id_accuracy": accuracy,
        "model_fingerprint": weights_fingerprint(model),
        "sets": {
            k: {"name": splits[k].name, "n": int(len(f.h)), "n_skipped": f.n_skipped,
                "data_fingerprint": f.data_fingerprint,
                "feature_key": f.key, "forward_seconds": f.seconds, "from_cache": f.from_cache}
            for k, f in feats.items()
        },
        "notes": notes,
        "versions": {"ood_lib": __version__, "torch": torch.__version__, "numpy": np.__version__,
                     "pandas": pd.__version__, "sklearn": sklearn.__version__, "python": platform.python_version()},
    }


def write_results(df: pd.DataFrame, out: str | Path) -> None:
    """Write the CSV and ``<out>.json`` (metadata) atomically."""
    out = Path(out)
    buf = io.StringIO()
    df.to_csv(buf, index=False, float_format="%.10g")
    _atomic_write_bytes(buf.getvalue().encode(), out)
    meta = df.attrs.get("meta", {})
    _atomic_write_bytes(json.dumps(meta, indent=2, sort_keys=True, default=str).encode(), out.with_suffix(out.suffix + ".json"))
