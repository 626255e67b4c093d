"""Feature extraction (h, logits, labels) with an on-disk cache.

The forward pass is the only expensive step of the study; everything after it is a pure
function of these arrays (DESIGN: "features are the hinge"). The cache key is made of the
model's weights, the data (file names and sizes, or the bytes of in-memory arrays), the
preprocessing and the format version, so a re-run costs nothing and any change invalidates
it. Writes are atomic (a temporary file, then ``os.replace``): an interrupted run leaves no
file that a later run could take for complete, and two runs writing the same entry at once
each write whole files. A cache entry that is unreadable, truncated, from another key or
with non-finite values is detected, reported and rebuilt — never used.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ._checks import OODInputError
from .models import weights_fingerprint

CACHE_ENV = "OOD_CACHE_DIR"
FORMAT_VERSION = "features-v1"


def default_cache_dir() -> Path:
    """$OOD_CACHE_DIR, else ~/.cache/ood_lib."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "ood_lib")


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


def _atomic_write_bytes(data: bytes, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_save_torch(obj: Any, path: Path) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    _atomic_write_bytes(buf.getvalue(), Path(path))


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


def dataset_fingerprint(dataset: Dataset) -> str:
    fp = getattr(dataset, "fingerprint", None)
    if fp is None:
        raise OODInputError(f"{type(dataset).__name__} has no fingerprint(); cannot cache its features")
    return fp()


def cache_key(model: torch.nn.Module, dataset: Dataset, data_fp: str | None = None) -> str:
    """The cache key of (model weights, data and preprocessing, format version)."""
    d = hashlib.sha256(FORMAT_VERSION.encode())
    d.update(weights_fingerprint(model).encode())
    d.update((data_fp if data_fp is not None else dataset_fingerprint(dataset)).encode())
    return d.hexdigest()[:32]


def read_arrays(path: Path, key: str, names: tuple[str, ...]) -> tuple[dict[str, np.ndarray], dict] | None:
    """Arrays ``names`` and the metadata of a cache entry, or None if absent or unusable.

    Unusable means unreadable, truncated, written under another key or format version, or
    holding non-finite values; such an entry is reported (a warning) and must be rebuilt.
    """
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            arrays = {n: z[n] for n in names}
        if meta.get("key") != key or meta.get("version") != FORMAT_VERSION:
            raise ValueError("written under another key")
        for n, a in arrays.items():
            if a.dtype.kind == "f" and not np.isfinite(a).all():
                raise ValueError(f"non-finite values in {n}")
    except Exception as exc:
        warnings.warn(f"cache entry {path} is unusable ({exc}); rebuilding it", stacklevel=3)
        return None
    return arrays, meta


def write_arrays(path: Path, key: str, arrays: dict[str, np.ndarray], **meta: Any) -> None:
    """Write a cache entry atomically: arrays plus metadata holding its key and format version."""
    buf = io.BytesIO()
    info = {"key": key, "version": FORMAT_VERSION, **meta}
    np.savez(buf, meta=np.array(json.dumps(info)), **arrays)
    _atomic_write_bytes(buf.getvalue(), path)


def _read_cache(path: Path, key: str) -> Features | None:
    got = read_arrays(path, key, ("h", "logits", "labels"))
    if got is None:
        return None
    a, meta = got
    h, f, y = a["h"], a["logits"], a["labels"]
    if not (h.ndim == 2 and f.ndim == 2 and y.ndim == 1 and len(h) == len(f) == len(y) == meta.get("n")):
        warnings.warn(f"cache entry {path} is unusable (inconsistent shapes); rebuilding it", stacklevel=2)
        return None
    return Features(h, f, y, int(meta["n_skipped"]), 0.0, True, key)


def _write_cache(path: Path, feats: Features) -> None:
    write_arrays(path, feats.key, {"h": feats.h, "logits": feats.logits, "labels": feats.labels},
                 n=len(feats.h), n_skipped=feats.n_skipped)


class _Batches(Dataset):
    """Item k is batch k of a dataset with ``load_batch`` (decoded together, in a worker)."""

    def __init__(self, base: Dataset, batches: list[list[int]]) -> None:
        self.base, self.batches = base, batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, k: int):
        return self.base.load_batch(self.batches[k])


def batch_loader(dataset: Dataset, batch_size: int, num_workers: int | None = None,
                 device_type: str = "cpu") -> DataLoader:
    """A loader of ``(x, labels, ok)`` batches in order. Datasets of image files (also inside a
    ``Subset``) are decoded a batch at a time in worker processes; in-memory arrays are read in
    the main process, where workers would only add copying.

    Default workers: up to 8 when the model runs on a GPU (the CPU only feeds it); none when it
    runs on the CPU, whose forward pass already keeps every core busy — a worker process would
    compete with it, while decoding a batch in between costs a few percent of the forward pass.
    """
    pin_memory = device_type == "cuda"
    base, index = dataset, None
    if isinstance(dataset, torch.utils.data.Subset):
        base, index = dataset.dataset, list(dataset.indices)
    files = hasattr(base, "load_batch")
    if num_workers is None:
        cores = os.cpu_count() or 1
        num_workers = min(8, cores) if files and pin_memory else 0
    if files:
        order = index if index is not None else list(range(len(base)))
        batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
        return DataLoader(_Batches(base, batches), batch_size=None, shuffle=False, num_workers=num_workers,
                          pin_memory=pin_memory)
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers, pin_memory=pin_memory)


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
) -> Features:
    """(h, logits, labels) for every readable image of ``dataset`` (items ``(x, label, ok)``).

    ``cache_dir=False`` disables the cache. Unreadable images (``ok = False``) are dropped and
    counted in ``n_skipped``; if every image is unreadable the error says so.
    """
    from tqdm.auto import tqdm

    dev = resolve_device(device)
    model = model.eval()
    key = path = None
    data_fp = dataset_fingerprint(dataset)  # computed once: the key and the results' metadata use it
    if cache_dir is not False:
        key = cache_key(model, dataset, data_fp)
        path = (default_cache_dir() if cache_dir is None else Path(cache_dir)) / "features" / f"{key}.npz"
        cached = _read_cache(path, key)
        if cached is not None:
            cached.data_fingerprint = data_fp
            return cached
    loader = batch_loader(dataset, batch_size, num_workers, device_type=dev.type)
    model = model.to(dev)
    hs, fs, ys, skipped = [], [], [], 0
    t0 = time.perf_counter()
    with torch.inference_mode():
        for x, y, ok in tqdm(loader, desc=desc, disable=not progress, leave=False):
            if not bool(ok.all()):
                skipped += int((~ok).sum())
                x, y = x[ok], y[ok]
                if len(x) == 0:
                    continue
            h, f = model.forward_features(x.to(dev, non_blocking=True))
            hs.append(h.float().cpu())
            fs.append(f.float().cpu())
            ys.append(y)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    if not hs:
        raise OODInputError(f"{desc}: none of the {len(dataset)} images could be read")
    feats = Features(
        torch.cat(hs).numpy(), torch.cat(fs).numpy(), torch.cat(ys).numpy().astype(np.int64),
        skipped, seconds, False, key or "", data_fp,
    )
    if not (np.isfinite(feats.h).all() and np.isfinite(feats.logits).all()):
        raise OODInputError(f"{desc}: the model produced non-finite features or logits")
    if path is not None:
        _write_cache(path, feats)
    return feats
