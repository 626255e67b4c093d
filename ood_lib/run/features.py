"""Feature extraction: (h, logits, labels) for every readable image of a data set, cached.

The forward pass is the only expensive step of the study; everything after it is a pure
function of these arrays (chapter *The evaluation*). The cache key is made of the
model's code (:func:`~ood_lib.models.model_code_fingerprint`), architecture and weights, the data and its
preprocessing (the dataset's ``fingerprint()`` and its transform) and the cache format, so a re-run
costs nothing and any change invalidates it; the entry itself is written and checked (a SHA-256 of
every array) by :mod:`ood_lib.cache`. Images are batched at fixed boundaries — batch k holds items
``[k·B, (k+1)·B)`` — so that a run sharded over processes by whole batches
(:mod:`ood_lib.run.distributed`) computes every batch exactly as one process does.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from .._checks import OODInputError, check_max_skipped
from ..cache import FORMAT_VERSION, default_cache_dir, read_arrays, write_arrays
from ..data.files import first_items, item_paths
from ..models import model_code_fingerprint, weights_fingerprint

__all__ = [
    "Features", "assemble", "batch_loader", "cache_key", "check_skipped", "dataset_fingerprint",
    "extract", "features_path", "forward_batches", "item_files", "read_features", "resolve_device", "write_features",
]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' → CUDA when present, else CPU; anything else is checked."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise OODInputError(f"unknown device {device!r}; use 'auto', 'cpu' or 'cuda[:N]'") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise OODInputError("device 'cuda' was asked for but no CUDA device is available")
    return dev


@dataclass
class Features:
    """Everything the scores need for one set of images."""

    h: np.ndarray  # (N, D) float32 penultimate features
    logits: np.ndarray  # (N, C) float32
    labels: np.ndarray  # (N,) int64, -1 where unknown
    n_skipped: int  # unreadable images dropped
    seconds: float  # extraction time (0 when read from the cache)
    from_cache: bool
    key: str
    data_fingerprint: str = ""  # of the images and their preprocessing (part of ``key``)
    skipped: list[int] = field(default_factory=list)  # positions in the dataset of the dropped images
    skipped_files: list[str] = field(default_factory=list)  # their files, relative to the set's folder


# --- keys and entries ----------------------------------------------------------------------
def dataset_fingerprint(dataset: Dataset) -> str:
    fp = getattr(dataset, "fingerprint", None)
    if fp is None:
        raise OODInputError(f"{type(dataset).__name__} has no fingerprint(); cannot cache its features")
    return fp()


def _transform_repr(dataset: Dataset) -> str:
    base = dataset.dataset if isinstance(dataset, Subset) else dataset
    return repr(getattr(base, "transform", None))


def cache_key(model: torch.nn.Module, dataset: Dataset, data_fp: str | None = None) -> str:
    """The cache key of (model code, architecture and weights, data and preprocessing, format version).

    The architecture enters as the model's class and ``repr`` (layer types, padding, BN eps, …):
    two models that share a state dict's names and shapes but compute differently get other keys;
    the code of its classes (:func:`model_code_fingerprint`) as well, so an edited ``features``
    does not reuse the features of the old one. The preprocessing enters as the dataset's
    fingerprint and its transform's ``repr``."""
    d = hashlib.sha256(FORMAT_VERSION.encode())
    d.update(f"{type(model).__module__}.{type(model).__qualname__}\n{model!r}".encode())
    d.update(model_code_fingerprint(model).encode())
    d.update(weights_fingerprint(model).encode())
    d.update((data_fp if data_fp is not None else dataset_fingerprint(dataset)).encode())
    d.update(_transform_repr(dataset).encode())
    return d.hexdigest()[:32]


def features_path(cache_dir: str | Path | None, key: str) -> Path:
    """Where the entry of ``key`` lives (``cache_dir=None``: the default cache folder)."""
    return (default_cache_dir() if cache_dir is None else Path(cache_dir)) / "features" / f"{key}.npz"


def read_features(path: Path, key: str) -> Features | None:
    """The cached features of ``key`` at ``path``, or None (absent, or unusable and reported)."""
    got = read_arrays(path, key, ("h", "logits", "labels"))
    if got is None:
        return None
    a, meta = got
    h, f, y = a["h"], a["logits"], a["labels"]
    skipped = meta.get("skipped")
    problem = None
    if not (h.ndim == 2 and f.ndim == 2 and y.ndim == 1 and len(h) == len(f) == len(y) == meta.get("n")):
        problem = "inconsistent shapes"
    elif skipped is None and meta.get("n_skipped"):
        problem = "it does not say which images were skipped"
    if problem:
        warnings.warn(f"cache entry {path} is unusable ({problem}); rebuilding it", stacklevel=2)
        return None
    return Features(h, f, y, int(meta["n_skipped"]), 0.0, True, key, "", list(skipped or []),
                    list(meta.get("skipped_files", [])))


def write_features(path: Path, feats: Features) -> None:
    """Write ``feats`` as the cache entry of ``feats.key`` (atomically; no timings, so equal
    features give equal bytes)."""
    write_arrays(path, feats.key, {"h": feats.h, "logits": feats.logits, "labels": feats.labels},
                 n=len(feats.h), n_skipped=feats.n_skipped, skipped=feats.skipped, skipped_files=feats.skipped_files)



def item_files(dataset: Dataset, positions: list[int], root: Path | None = None) -> list[str]:
    """The files behind dataset items ``positions``: relative to ``root`` where they lie under it
    (absolute where not), or, without ``root``, to the folder all the set's files share; ``[]``
    for sets not read from files."""
    chosen, paths = item_paths(dataset, positions)
    if root is None:
        top = Path(os.path.commonpath([str(Path(p).parent) for p in paths])) if paths else Path()
        return [p.relative_to(top).as_posix() for p in chosen]
    top = Path(os.path.abspath(root))
    chosen = [Path(os.path.abspath(p)) for p in chosen]
    return [(p.relative_to(top) if p.is_relative_to(top) else p).as_posix() for p in chosen]


def check_skipped(feats: Features, dataset: Dataset, desc: str, max_skipped: float | None) -> None:
    """Say on stderr how many images of a set were unreadable and which (the first few); stop with
    an error when more than the fraction ``max_skipped`` of the set was (None: no limit). Skipped
    images change the set a detector is measured on, so they are never dropped silently."""
    if not feats.n_skipped:
        return
    total = len(feats.h) + feats.n_skipped
    text = (f"{desc}: {feats.n_skipped} of {total} images ({feats.n_skipped / total:.1%}) could not be read: "
            f"{first_items(dataset, feats.skipped)}")
    if max_skipped is not None and feats.n_skipped > max_skipped * total:
        raise OODInputError(f"{text} — more than max_skipped = {max_skipped:g} of the set; repair or remove "
                            "those files, or allow more with --max-skipped")
    print(f"warning: {text} (skipped; the results' .json lists them)", file=sys.stderr)



# --- the forward pass ----------------------------------------------------------------------
class _Batches(Dataset):
    """Item k is batch k of a dataset with ``load_batch`` (decoded together, in a worker)."""

    def __init__(self, base: Dataset, batches: list[list[int]]) -> None:
        self.base, self.batches = base, batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, k: int):
        return self.base.load_batch(self.batches[k])


def batch_loader(dataset: Dataset, batch_size: int, num_workers: int | None = None,
                 device_type: str = "cpu", batches: range | None = None) -> DataLoader:
    """A loader of ``(x, labels, ok)`` batches in order: batch k holds items ``[k·B, (k+1)·B)``;
    ``batches`` keeps only those batch numbers (a contiguous range). Datasets of image files
    (also inside a ``Subset``) are decoded a batch at a time in worker processes; in-memory
    arrays are read in the main process, where workers would only add copying.

    Default workers: up to 8 when the model runs on a GPU (the CPU only feeds it); none when it
    runs on the CPU, whose forward pass already keeps every core busy — a worker process would
    compete with it, while decoding a batch in between costs a few percent of the forward pass.
    """
    n = len(dataset)
    batches = range((n + batch_size - 1) // batch_size) if batches is None else batches
    lo, hi = min(batches.start * batch_size, n), min(batches.stop * batch_size, n)
    pin_memory = device_type == "cuda"
    base, index = dataset, list(range(n))
    if isinstance(dataset, Subset):
        base, index = dataset.dataset, list(dataset.indices)
    files = hasattr(base, "load_batch")
    if num_workers is None:
        num_workers = min(8, os.cpu_count() or 1) if files and pin_memory else 0
    if files:
        order = index[lo:hi]
        chunks = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
        return DataLoader(_Batches(base, chunks), batch_size=None, shuffle=False, num_workers=num_workers,
                          pin_memory=pin_memory)
    part = dataset if (lo, hi) == (0, n) else Subset(dataset, range(lo, hi))
    return DataLoader(part, batch_size=batch_size, shuffle=False, num_workers=num_workers, pin_memory=pin_memory)


def forward_batches(
    model: torch.nn.Module, dataset: Dataset, device: torch.device, batch_size: int, *,
    batches: range | None = None, num_workers: int | None = None, progress: bool = True, desc: str = "features",
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[int], float]:
    """``(h, logits, labels, skipped, seconds)`` over batches ``batches`` (default: all) of ``dataset``.

    ``skipped`` holds the dataset positions of unreadable images (``ok = False``), which are
    dropped; with no readable image, h and logits have shape (0, 0).
    """
    from tqdm.auto import tqdm

    loader = batch_loader(dataset, batch_size, num_workers, device.type, batches)
    start = 0 if batches is None else batches.start * batch_size
    model = model.eval().to(device)
    hs, fs, ys, skipped = [], [], [], []
    t0 = time.perf_counter()
    with torch.inference_mode():
        for x, y, ok in tqdm(loader, desc=desc, disable=not progress, leave=False):
            first, start = start, start + len(ok)
            if not bool(ok.all()):
                skipped += [first + int(j) for j in torch.nonzero(~ok).flatten()]
                x, y = x[ok], y[ok]
                if len(x) == 0:
                    continue
            h, f = model.forward_features(x.to(device, non_blocking=True))
            hs.append(h.float().cpu())
            fs.append(f.float().cpu())
            ys.append(y)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - t0
    if not hs:
        empty = np.zeros((0, 0), np.float32)
        return empty, empty.copy(), np.zeros(0, np.int64), skipped, seconds
    return (torch.cat(hs).numpy(), torch.cat(fs).numpy(), torch.cat(ys).numpy().astype(np.int64), skipped,
            seconds)


def extract(
    model: torch.nn.Module,
    dataset: Dataset,
    *,
    device: str | torch.device = "auto",
    batch_size: int = 256,
    num_workers: int | None = None,
    cache_dir: Path | None | bool = None,
    progress: bool = True,
    desc: str = "features",
    max_skipped: float | None = None,
) -> Features:
    """(h, logits, labels) for every readable image of ``dataset`` (items ``(x, label, ok)``).

    ``cache_dir=False`` disables the cache. Unreadable images (``ok = False``) are dropped,
    recorded (``n_skipped``, ``skipped`` positions and ``skipped_files``) and reported on stderr;
    more than the fraction ``max_skipped`` of the set (None: no limit), or every image, is an error.
    """
    check_max_skipped(max_skipped)
    dev = resolve_device(device)
    key = path = None
    data_fp = dataset_fingerprint(dataset)  # computed once: the key and the results' metadata use it
    if cache_dir is not False:
        key = cache_key(model, dataset, data_fp)
        path = features_path(cache_dir, key)
        cached = read_features(path, key)
        if cached is not None:
            cached.data_fingerprint = data_fp
            check_skipped(cached, dataset, desc, max_skipped)
            return cached
    h, f, y, skipped, seconds = forward_batches(model, dataset, dev, batch_size, num_workers=num_workers,
                                                progress=progress, desc=desc)
    feats = assemble(h, f, y, skipped, dataset, key or "", data_fp, seconds, desc)
    if path is not None:
        write_features(path, feats)  # before the check: the entry is right, only this run's limit is not
    check_skipped(feats, dataset, desc, max_skipped)
    return feats


def assemble(h: np.ndarray, logits: np.ndarray, labels: np.ndarray, skipped: list[int], dataset: Dataset,
             key: str, data_fp: str, seconds: float, desc: str) -> Features:
    """Check a finished forward pass and wrap it as :class:`Features` (skipped files named)."""
    if len(h) == 0:
        raise OODInputError(f"{desc}: none of the {len(dataset)} images could be read")
    if not (np.isfinite(h).all() and np.isfinite(logits).all()):
        raise OODInputError(f"{desc}: the model produced non-finite features or logits")
    if len(h) + len(skipped) != len(dataset):
        raise OODInputError(f"{desc}: {len(h)} features + {len(skipped)} skipped ≠ {len(dataset)} images")
    return Features(h, logits, labels, len(skipped), seconds, False, key, data_fp, skipped,
                    item_files(dataset, skipped))
