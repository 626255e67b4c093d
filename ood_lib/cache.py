"""The on-disk cache: atomic writes and self-checking array entries.

Writes are atomic (a temporary file, then ``os.replace``): an interrupted run leaves no file that
a later run could take for complete, and two runs writing the same entry at once each write whole
files. An entry holds its key and format version; one that is unreadable, truncated, written
under another key or holding non-finite values is reported and treated as absent — never used.
"""

from __future__ import annotations

import io
import json
import os
import uuid
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

CACHE_ENV = "OOD_CACHE_DIR"
FORMAT_VERSION = "features-v1"


def default_cache_dir() -> Path:
    """$OOD_CACHE_DIR, else ~/.cache/ood_lib."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "ood_lib")


def atomic_write_bytes(data: bytes, path: Path) -> None:
    """Write ``data`` to ``path`` whole or not at all: a uniquely named temporary file beside it,
    flushed to disk, then renamed over ``path`` (``os.replace`` is atomic on one file system)."""
    path = Path(path)
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
    """``torch.save`` made atomic (see :func:`atomic_write_bytes`)."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(buf.getvalue(), Path(path))


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
    """Write a cache entry atomically: arrays plus metadata (JSON) holding its key and format
    version. The bytes depend only on the arguments (zip members carry a fixed date), so equal
    entries written by different processes are byte-identical."""
    buf = io.BytesIO()
    info = {"key": key, "version": FORMAT_VERSION, **meta}
    np.savez(buf, meta=np.array(json.dumps(info)), **arrays)
    atomic_write_bytes(buf.getvalue(), path)
