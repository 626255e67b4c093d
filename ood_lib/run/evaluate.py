"""The evaluation runner: every detector on every OOD set of one benchmark, as one tidy table.

Every method is a detector of :mod:`ood_lib.detectors`, created by name and driven through its
protocol: it is fitted (``needs.fit``) on the ID *training* split only — the runner hands ``fit``
nothing else, so test or OOD data cannot leak into it — and then scores each set from the cached
features (float64 copies, made once per set) or, where it declares ``needs.inputs``, from the
images again. A detector that cannot be fitted honestly on the training split at hand says why,
and its rows carry ``note = "n/a: <reason>"`` instead of numbers.

``seconds`` is the time a method spends beyond the shared forward pass (whose time is recorded
in the metadata); it is the only column that differs between two runs with the same seed. The
closed-form methods of a run (:class:`~ood_lib.detectors.ClosedFormScore`) are scored together,
one fused call per set and temperature (:func:`ood_lib.scores.score_matrix`, chapter *Cost*), and
each gets an equal share of that call's time.
Each method's scores are cached with the seconds they took, keyed by the method, its
hyper-parameters, the code that computes it, the feature-cache keys of every set it read and the
device it ran on; ``from_cache`` marks rows whose scores and seconds came from that cache.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..data import files as D
from .._checks import OODInputError, unknown_name
from ..data.benchmarks import Benchmark, get_benchmark
from ..cache import default_cache_dir, read_arrays, write_arrays
from .config import RunConfig
from ..detectors import DETECTORS, ClosedFormScore, Detector, Entry, FitData, autograd_name, create
from ..detectors.base import as_numpy
from .features import Features, batch_loader, extract, resolve_device
from ..scores.registry import GRADIENT_SCORES, RUNNER_AUTOGRAD
from .results import device_label, method_rows, metadata, not_applicable_rows, write_results
from ..scores.closed_forms import score_matrix

__all__ = ["Prepared", "RunConfig", "available_methods", "default_methods", "detector_scores", "prepare",
           "run_benchmark", "score_methods", "write_results"]


def available_methods() -> dict[str, Entry]:
    """Every registered detector, in table order (see :mod:`ood_lib.detectors`)."""
    return dict(DETECTORS)


# Exact expectations over the labels by autograd take C per-sample gradients per image: run them
# by default only where C is small (the cost chapter measures them at every size).
EXPECTATION_AUTOGRAD_MAX_CLASSES = 100
C_PASS_AUTOGRAD = tuple(autograd_name(g) for g in RUNNER_AUTOGRAD if GRADIENT_SCORES[g].passes_per_image == "C")


# GAIA reads the network's inner activations (and, aggregated, their gradients), which the feature
# cache does not hold: a forward and one or two backward passes per image, through every layer.
# Evaluated when asked for by name (chapter *Gradient scores and their closed forms*).
ON_REQUEST = ("gaia_last", "gaia_z_last", "gaia", "gaia_z")


def default_methods(benchmark: str | Benchmark) -> list[str]:
    """Every method, except the C-pass autograd expectations on benchmarks with many classes and
    the GAIA detectors (:data:`ON_REQUEST`)."""
    names = [n for n in available_methods() if n not in ON_REQUEST]
    if get_benchmark(benchmark).num_classes > EXPECTATION_AUTOGRAD_MAX_CLASSES:
        names = [n for n in names if n not in C_PASS_AUTOGRAD]
    return names


@dataclass
class Prepared:
    """A benchmark ready to score: its model, splits and (cached) features."""

    benchmark: Benchmark
    model: torch.nn.Module
    splits: dict[str, D.Split]
    feats: dict[str, Features]
    device: torch.device
    root: Path | None
    batch_size: int
    config: RunConfig = field(default_factory=RunConfig)
    _as64: dict[tuple[str, str], torch.Tensor] = field(default_factory=dict, repr=False)

    @property
    def name(self) -> str:
        """The benchmark's name (in file names, tables and progress bars)."""
        return self.benchmark.name

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

    @property
    def fit_data(self) -> FitData | None:
        """The ID training split as a detector's ``fit`` sees it (None when not extracted)."""
        return FitData.of(self.feats["id_train"]) if "id_train" in self.feats else None

    def float64(self, key: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(h, logits) of set ``key`` in float64, made once: closed forms and autograd then agree
        to ~1e-15, so no pair of samples swaps order between them."""
        if (key, "h") not in self._as64:
            self._as64[key, "h"] = torch.from_numpy(self.feats[key].h).double()
            self._as64[key, "f"] = torch.from_numpy(self.feats[key].logits).double()
        return self._as64[key, "h"], self._as64[key, "f"]


def prepare(benchmark: str | Benchmark = "embedded", config: RunConfig | None = None, *, with_train: bool = True,
            **overrides: Any) -> Prepared:
    """Load a benchmark's model and splits and extract (or read from the cache) every set's features.

    ``overrides`` are :class:`RunConfig` fields (``data_root=``, ``n_id=``, …)."""
    cfg = (config or RunConfig()).replace(**overrides)
    bench = get_benchmark(benchmark)
    dev = resolve_device(cfg.device)
    root = D.data_root(cfg.data_root)
    torch.manual_seed(cfg.seed)
    splits = bench.splits(root, seed=cfg.seed, n_id=cfg.n_id, n_ood=cfg.n_ood, n_fit=cfg.n_fit)
    model = bench.load_model(root, seed=cfg.seed, checkpoint=cfg.checkpoint, cache_dir=cfg.cache_dir,
                             progress=cfg.progress, model=cfg.model)
    bs = cfg.batch_size or bench.batch_size
    feats: dict[str, Features] = {}
    for key, split in splits.items():
        if key == "id_train" and not with_train:
            continue
        feats[key] = extract(model, split.dataset, device=dev, batch_size=bs, cache_dir=cfg.cache_dir,
                             progress=cfg.progress, desc=f"{bench.name}/{key}", max_skipped=cfg.max_skipped)
    return Prepared(bench, model, splits, feats, dev, root, bs, cfg)


def detector_scores(prep: Prepared, det: Detector, sets: list[str] | None = None) -> dict[str, np.ndarray]:
    """Fit ``det`` on the ID training split if it needs a fit, then score every set (default: the
    ID test set and every OOD set) — the one dispatch the runner and the analyses share."""
    sets = ["id_test"] + prep.ood_keys if sets is None else sets
    if det.needs.fit:
        train = prep.fit_data
        if train is None:
            raise OODInputError(f"{det.name or type(det).__name__} needs the ID training split: prepare(with_train=True)")
        det.fit(train)
    out = {}
    for k in sets:
        if det.needs.inputs:
            loader = batch_loader(prep.splits[k].dataset, prep.batch_size, device_type=prep.device.type)
            out[k] = as_numpy(det.score_inputs(loader, prep.device))
        else:
            out[k] = as_numpy(det.score(*prep.float64(k)))
    return out


@functools.lru_cache(maxsize=1)
def _code_fingerprint() -> str:
    """A hash of the modules that compute scores (every module of ``scores/`` and ``detectors/``, and
    the gradient modules detectors call): editing a formula invalidates cached scores."""
    from .. import detectors, scores
    from ..gradients import autograd, gaia, reductions, signals

    files = [*sorted(Path(scores.__file__).parent.glob("*.py")), *sorted(Path(detectors.__file__).parent.glob("*.py")),
             *(Path(m.__file__) for m in (autograd, signals, reductions, gaia))]
    d = hashlib.sha256()
    for f in files:
        d.update(f.read_bytes())
    return d.hexdigest()


def _cache_entry(prep: Prepared, det: Detector, score_dir: Path | None, device: str) -> tuple[Path | None, str]:
    """The score-cache file and key of ``det``'s scores on every set (no file without a cache)."""
    if score_dir is None:
        return None, ""
    sets = ["id_test"] + prep.ood_keys
    parts = {"method": det.name, "params": det.get_params(), "code": _code_fingerprint(), "device": device,
             "sets": {k: prep.feats[k].key for k in sets}}
    if det.needs.fit:
        parts["fit"] = prep.feats["id_train"].key
    key = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]
    return score_dir / f"{key}.npz", key


def _read_cached(prep: Prepared, path: Path | None, key: str) -> tuple[dict, float, bool] | None:
    got = None if path is None else read_arrays(path, key, tuple(["id_test"] + prep.ood_keys))
    return None if got is None else (got[0], float(got[1]["seconds"]), True)


def _cached_scores(prep: Prepared, det: Detector, score_dir: Path | None, device: str) -> tuple[dict, float, bool]:
    """Scores per set, the seconds they took, and whether both came from the score cache."""
    path, key = _cache_entry(prep, det, score_dir, device)
    got = _read_cached(prep, path, key)
    if got is not None:
        return got
    t0 = time.perf_counter()
    s = detector_scores(prep, det, ["id_test"] + prep.ood_keys)
    seconds = time.perf_counter() - t0
    if path is not None:
        write_arrays(path, key, s, seconds=seconds, device=device)
    return s, seconds, False


def _fusable(det: Detector) -> bool:
    """A closed-form score whose ``score`` is the registry's: it can be a row of a fused call."""
    return isinstance(det, ClosedFormScore) and type(det).score is ClosedFormScore.score


def _fused_scores(prep: Prepared, dets: list[ClosedFormScore], score_dir: Path | None,
                  device: str) -> dict[str, tuple[dict, float, bool]]:
    """What :func:`_cached_scores` gives, for closed-form detectors scored together.

    A detector whose entry is in the score cache is read from it; the others are scored by one
    :func:`~ood_lib.scores.score_matrix` call per set and temperature, with the same values as
    ``det.score`` (bit for bit), and each is cached on its own. The fused call's time is split
    evenly across the members it scored: one member's own share of it is not measurable.
    """
    out: dict[str, tuple[dict, float, bool]] = {}
    todo: dict[float, list[tuple[ClosedFormScore, Path | None, str]]] = {}
    for det in dets:
        path, key = _cache_entry(prep, det, score_dir, device)
        got = _read_cached(prep, path, key)
        if got is not None:
            out[det.name] = got
        else:
            todo.setdefault(det.temperature, []).append((det, path, key))
    for temperature, group in todo.items():
        names = [d.score_name for d, _, _ in group]
        per: dict[str, dict[str, np.ndarray]] = {d.name: {} for d, _, _ in group}
        t0 = time.perf_counter()
        for k in ["id_test"] + prep.ood_keys:
            m, _ = score_matrix(names, *prep.float64(k), temperature)
            for (d, _, _), row in zip(group, m):
                per[d.name][k] = as_numpy(row)
        seconds = (time.perf_counter() - t0) / len(group)
        for d, path, key in group:
            if path is not None:
                write_arrays(path, key, per[d.name], seconds=seconds, device=device)
            out[d.name] = (per[d.name], seconds, False)
    return out


def run_benchmark(benchmark: str | Benchmark = "embedded", config: RunConfig | None = None, *,
                  out: str | Path | None = None, **overrides: Any) -> pd.DataFrame:
    """Evaluate the configured methods (default: :func:`default_methods`) on ``benchmark``; returns
    (and with ``out``, writes) the table.

    ``overrides`` are :class:`RunConfig` fields. Rows: one per (method, OOD set) with the set's
    ``group`` ("near" or "far"), one per group present (``ood == "near"`` / ``"far"``, the mean
    over its sets) and ``ood == "mean"`` over every set; metrics in percent. ``note`` is
    "n/a: <reason>" for a method that cannot be fitted honestly here (its metrics are empty);
    ``from_cache`` is True where scores and seconds came from the score cache. With
    ``bootstrap > 0``, AUROC and FPR95 of each set get percentile intervals for ``ci_methods``
    (default: all). The metadata (configuration, versions, device, data fingerprints, skipped
    images, forward-pass time, notes) is in ``df.attrs["meta"]`` and, with ``out``, in
    ``<out>.json`` beside the CSV.
    """
    cfg = (config or RunConfig()).replace(**overrides)
    bench = get_benchmark(benchmark)  # resolved once: the run carries the object
    names = default_methods(bench) if cfg.methods is None else list(cfg.methods)
    for n in names:
        if n not in DETECTORS:
            raise unknown_name("method", n, DETECTORS)
    if not names:
        raise OODInputError("no methods to evaluate")
    notes: dict[str, str] = {}
    if cfg.methods is None:
        for n in sorted(set(DETECTORS) - set(names)):
            notes[n] = ("not run by default: it reads every layer of the network again (ask for it in methods)"
                        if n in ON_REQUEST else
                        f"not run by default: C backward passes per image with more than "
                        f"{EXPECTATION_AUTOGRAD_MAX_CLASSES} classes (ask for it in methods)")
    needs_fit = any(DETECTORS[n].cls.needs.fit for n in names)
    prep = prepare(bench, cfg, with_train=needs_fit)
    rows, _, more = score_methods(prep, names)
    notes.update(more)
    df = pd.DataFrame(rows)
    df.attrs["meta"] = metadata(prep, notes, device_label(prep.device))
    if out is not None:
        write_results(df, out)
    return df


def _input_params(prep: Prepared, name: str, params: dict[str, Any]) -> dict[str, Any]:
    """``params``, plus the benchmark's input normalisation std for a detector that perturbs the
    input in pixel units (ODIN's ``input_std``), unless it was given."""
    cls = DETECTORS[name].cls
    if cls.needs.inputs and "input_std" in inspect.signature(cls.__init__).parameters and "input_std" not in params:
        params = {**params, "input_std": tuple(prep.benchmark.preprocessing.std)}
    return params


def score_methods(prep: Prepared, names: list[str]) -> tuple[list[dict], dict[str, dict[str, np.ndarray]], dict[str, str]]:
    """Score ``names`` on a prepared benchmark (through the score cache of ``prep.config``).

    Returns the results rows (see :func:`run_benchmark`), the oriented scores
    ``{method: {set: scores}}`` of every applicable method, and ``{method: "n/a: <reason>"}`` for
    the others.
    """
    cfg = prep.config
    score_dir = None if cfg.cache_dir is False else (
        default_cache_dir() if cfg.cache_dir is None else Path(cfg.cache_dir)) / "scores"
    device = device_label(prep.device)
    rows: list[dict] = []
    scores: dict[str, dict[str, np.ndarray]] = {}
    notes: dict[str, str] = {}
    from tqdm.auto import tqdm

    dets = {n: create(n, model=prep.model, **_input_params(prep, n, cfg.params_for(n))) for n in names}
    reasons = {n: d.not_applicable(prep.fit_data if d.needs.fit else None) for n, d in dets.items()}
    fused = _fused_scores(prep, [d for n, d in dets.items() if _fusable(d) and not reasons[n]], score_dir, device)
    for name in tqdm(names, desc=f"{prep.name}: scoring", disable=not cfg.progress, leave=False):
        det = dets[name]
        if reasons[name]:
            notes[name] = f"n/a: {reasons[name]}"
            rows += not_applicable_rows(prep, det, notes[name])
            continue
        s, seconds, from_cache = fused[name] if name in fused else _cached_scores(prep, det, score_dir, device)
        scores[name] = s
        rows += method_rows(prep, det, s, seconds=seconds, from_cache=from_cache, config=cfg)
    return rows, scores, notes
