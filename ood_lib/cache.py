"""The on-disk cache: atomic writes and self-checking array entries.

Writes are atomic (a temporary file, then ``os.replace``): an interrupted run leaves no file that
a later run could take for complete, and two runs writing the same entry at once each write whole
files. An entry holds its key, its format version and a SHA-256 of every array; one that is
unreadable, truncated, written under another key, edited (an array whose checksum differs) or
holding non-finite values is reported and treated as absent — never used. A write that fails
(full disk, read-only folder) names the entry's path, not the temporary file's.
"""

from __future__ import annotations

import hashlib
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
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:  # the user knows the path asked for, not our temporary name
        raise OSError(exc.errno, f"cannot write {path}: {exc.strerror or exc}", str(path)) from exc
    finally:
        if tmp.exists():
            tmp.unlink()


def check_writable(folder: str | Path, what: str) -> Path:
    """Make sure ``folder`` exists (created if needed) and a file can be written in it, before any
    work whose results would go there; the error names ``what`` and the folder."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test.{os.getpid()}.{uuid.uuid4().hex}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise OSError(exc.errno, f"{what} {folder} is not writable: {exc.strerror or exc}", str(folder)) from exc
    return folder


def check_cache_dir(cache_dir: str | Path | bool | None) -> None:
    """:func:`check_writable` for a run's cache folder (``None``: the default one; ``False``: none)."""
    if cache_dir is not False:
        check_writable(default_cache_dir() if cache_dir is None else Path(cache_dir), "cache folder")


def array_digest(a: np.ndarray) -> str:
    """SHA-256 of an array's dtype, shape and bytes (C order)."""
    a = np.ascontiguousarray(a)
    d = hashlib.sha256(f"{a.dtype.str}:{a.shape}".encode())
    d.update(a.tobytes())
    return d.hexdigest()


def atomic_save_torch(obj: Any, path: Path) -> None:
    """``torch.save`` made atomic (see :func:`atomic_write_bytes`)."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(buf.getvalue(), Path(path))


def read_arrays(path: Path, key: str, names: tuple[str, ...]) -> tuple[dict[str, np.ndarray], dict] | None:
    """Arrays ``names`` and the metadata of a cache entry, or None if absent or unusable.

    Unusable means unreadable, truncated, written under another key or format version, without
    checksums or with an array whose SHA-256 differs from the one written with it (edited by hand,
    damaged or planted), or holding non-finite values; such an entry is reported (a warning that
    says why) and must be rebuilt.
    """
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            arrays = {n: z[n] for n in names}
        if meta.get("key") != key or meta.get("version") != FORMAT_VERSION:
            raise ValueError("written under another key")
        sums = meta.get("sha256")
        if not isinstance(sums, dict):
            raise ValueError("written without checksums")
        for n, a in arrays.items():
            if sums.get(n) != array_digest(a):
                raise ValueError(f"the checksum of {n} does not match: edited or damaged since it was written")
            if a.dtype.kind == "f" and not np.isfinite(a).all():
                raise ValueError(f"non-finite values in {n}")
    except Exception as exc:
        warnings.warn(f"cache entry {path} is unusable ({exc}); rebuilding it", stacklevel=3)
        return None
    return arrays, meta


def write_arrays(path: Path, key: str, arrays: dict[str, np.ndarray], **meta: Any) -> None:
    """Write a cache entry atomically: arrays plus metadata (JSON) holding its key, format version
    and each array's SHA-256 (:func:`array_digest`). The bytes depend only on the arguments (zip members carry a fixed date), so equal
    entries written by different processes are byte-identical."""
    buf = io.BytesIO()
    info = {"key": key, "version": FORMAT_VERSION, **meta, "sha256": {n: array_digest(a) for n, a in arrays.items()}}
    np.savez(buf, meta=np.array(json.dumps(info)), **arrays)
    atomic_write_bytes(buf.getvalue(), path)
