"""Reading image data: IDX files, image folders, and the data shipped in PyPI packages.

Nothing here downloads anything. A missing file raises :class:`DataNotFoundError`, whose
message names the path tried, the layout expected and where to get the data.

Unreadable image files (corrupt, truncated, not an image) are **skipped and counted** by
default: :class:`ImageFiles` marks them, feature extraction drops them, says so on stderr and
records how many and which; a run stops when more than ``max_skipped`` of a set is lost
(``on_error="raise"`` fails on the first instead). A data set with a few broken files should not
cost a whole benchmark run, and the report keeps the skip visible. Which files are data at all
(no hidden files, no links to folders, the benchmark's class folders) is :mod:`ood_lib.data.folders`.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import os
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from .._checks import DataNotFoundError, OODInputError  # noqa: F401  (public here)
from .folders import (  # noqa: F401  (public here)
    IMAGE_EXTENSIONS,
    check_classes,
    class_folders,
    first_names,
    list_images,
)

DATA_ROOT_ENV = "OOD_DATA_ROOT"

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def missing(what: str, path: Path, layout: str, how: str) -> DataNotFoundError:
    return DataNotFoundError(
        f"{what} not found at {Path(path).resolve()}\n  expected layout: {layout}\n  how to get it: {how}"
    )


def data_root(explicit: str | os.PathLike | None = None, beside: str | os.PathLike | None = None) -> Path | None:
    """The data root: the explicit argument, else $OOD_DATA_ROOT, else — when ``beside`` is a file in
    a data root's ``weights/`` folder (a checkpoint shipped with the data) — that data root, else
    None (embedded data)."""
    value = explicit if explicit not in (None, "") else os.environ.get(DATA_ROOT_ENV) or None
    if value is None and beside not in (None, "", "random"):
        folder = Path(beside).expanduser().resolve().parent
        if folder.name == "weights" and any(p.is_dir() for p in folder.parent.iterdir() if p != folder):
            value = folder.parent
    if value is None:
        return None
    root = Path(value).expanduser()
    if not root.is_dir():
        raise missing(
            "data root", root, "a folder holding data sets (e.g. MNIST/raw, CIFAR10-JPEG/test)",
            f"pass an existing folder as --data-root / DATA_ROOT or set ${DATA_ROOT_ENV}",
        )
    return root


# --- IDX (MNIST-format) files ------------------------------------------------------------
def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (optionally gzip-compressed) into a uint8 array, checking its header;
    every error names the file."""
    path = Path(path)
    if not path.is_file():
        raise missing("IDX file", path, "an IDX file as distributed with MNIST", "see the data set's page")
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        raise OODInputError(f"{path}: cannot be read or decompressed ({exc})") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise OODInputError(f"{path}: not an unsigned-byte IDX file (bad magic {raw[:4]!r})")
    ndim = raw[3]
    start = 4 + 4 * ndim
    if ndim == 0 or len(raw) < start:
        raise OODInputError(f"{path}: truncated or corrupt IDX header ({len(raw)} bytes, {ndim} dimensions)")
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if dims[0] == 0:
        raise OODInputError(f"{path}: an IDX file of 0 items (dimensions {dims})")
    expected = int(np.prod(dims))
    if len(raw) - start != expected:
        raise OODInputError(
            f"{path}: truncated or corrupt IDX file ({len(raw) - start} data bytes, header says {expected})"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=start).reshape(dims)


# --- image files -------------------------------------------------------------------------
def image_folder(root: str | os.PathLike, what: str = "image folder", how: str = "",
                 classes: Sequence[str] | None = None, all_required: bool = True) -> tuple[list[Path], np.ndarray, list[str]]:
    """An ImageFolder layout ``root/<class>/<image>``: (paths, labels, class names).

    With ``classes`` (the benchmark's class list, in label order) each folder's label is its
    class's position there and the folders are checked against it (:func:`check_classes`);
    without, the labels are the positions of the sorted folder names. A class folder without
    images is an error."""
    root = Path(root)
    layout = f"{root}/<class>/<image>.jpg, one folder per class"
    if not root.is_dir():
        raise missing(what, root, layout, how or "place the images in that layout")
    found = class_folders(root)
    if classes is None:
        classes = found
    else:
        check_classes(root, what, found, classes, all_required)
    present, paths, labels, empty = set(found), [], [], []
    for i, c in enumerate(classes):
        files = list_images(root / c) if c in present else []
        paths += files
        labels += [i] * len(files)
        empty += [c] * (c in present and not files)
    if not paths:
        raise missing(f"{what} (no images)", root, layout, how or "place the images in that layout")
    if empty:
        raise OODInputError(f"{what}: class folders without images under {root}: {first_names(empty)}")
    return paths, np.asarray(labels, dtype=np.int64), list(classes)


SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


def as_mode(im, mode: str):
    """The opened PIL image ``im`` in ``mode`` ("RGB" or "L"). 16-bit gray (and a PNG's gray "I",
    which can only be 16-bit) is scaled to 8 bits, v / 257 rounded — PIL's ``convert`` would clip
    it at 255 and make it all white. Other 32-bit integer and float images have no fixed range:
    refused, not guessed."""
    from PIL import Image

    if im.mode in SIXTEEN_BIT_MODES or (im.mode == "I" and im.format == "PNG"):
        a = np.asarray(im).astype(np.float64)
        return Image.fromarray(np.rint(np.clip(a, 0, 65535) / 257.0).astype(np.uint8), "L").convert(mode)
    if im.mode in ("I", "F"):
        raise OODInputError(f"a {'32-bit integer' if im.mode == 'I' else 'floating-point'} image (PIL mode "
                            f"{im.mode!r}) has no fixed range to scale to 8 bits; save it as an 8- or 16-bit image")
    return im.convert(mode)


def jpeg_roundtrip(img, quality: int = 75):
    """Re-encode a PIL image as JPEG at ``quality`` (to match ID images that went through JPEG)."""
    from PIL import Image

    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def _decode_jpegs(raw: list[torch.Tensor]) -> list[torch.Tensor]:
    """Decode JPEG byte tensors to uint8 RGB (C, H, W) with libjpeg-turbo, all in one call.

    torchvision 0.29 marks its image codecs deprecated in favour of TorchCodec; the pinned
    version still ships them, so the notice is silenced here, for this call only.
    """
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from torchvision.io import ImageReadMode, decode_jpeg

        return decode_jpeg(raw, mode=ImageReadMode.RGB)


# Digests of unchanged files are reused within a process. A file's (device, inode, size, mtime,
# ctime) changes with any write or rename (ctime cannot be set back by a user); a file modified in
# the last few seconds is hashed again every time, as a timestamp may not have ticked yet.
_RECENT_NS = 3_000_000_000
_DIGEST_CACHE_SIZE = 1 << 18


@functools.lru_cache(maxsize=_DIGEST_CACHE_SIZE)
def _stable_digest(path: str, dev: int, ino: int, size: int, mtime_ns: int, ctime_ns: int) -> str:
    return _hash_file(path)


def _hash_file(path: str, chunk: int = 1 << 20) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def file_digest(path: str | os.PathLike) -> str:
    """blake2b-128 of a file's bytes (read in chunks), or ``"unreadable:<errno>"`` if it cannot be
    read — such a file is skipped when the images are loaded, and the fingerprint records that."""
    path = os.fspath(path)
    try:
        st = os.stat(path)
        if time.time_ns() - max(st.st_mtime_ns, st.st_ctime_ns) < _RECENT_NS:
            return _hash_file(path)
        return _stable_digest(path, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    except OSError as exc:
        return f"unreadable:{exc.errno}"


class ImageFiles(Dataset):
    """Images read from files with PIL (16-bit gray scaled to 8 bits: :func:`as_mode`); each item
    is ``(tensor, label, ok)``.

    An unreadable file gives ``ok = False`` and a zero tensor with ``on_error="skip"`` (the
    caller drops and counts it), or raises with ``on_error="raise"``.
    """

    def __init__(
        self,
        paths: Sequence[Path],
        labels: Sequence[int] | None,
        transform: Callable,
        shape: tuple[int, ...],
        mode: str = "RGB",
        on_error: str = "skip",
    ) -> None:
        if on_error not in ("skip", "raise"):
            raise OODInputError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
        if len(paths) == 0:
            raise OODInputError("ImageFiles: no image paths given")
        self.paths = list(paths)
        self.labels = np.full(len(self.paths), -1, np.int64) if labels is None else np.asarray(labels, np.int64)
        self.transform, self.shape, self.mode, self.on_error = transform, shape, mode, on_error

    def __len__(self) -> int:
        return len(self.paths)

    def _from_bytes(self, data: bytes, i: int) -> tuple[torch.Tensor, bool]:
        """Decode one image with PIL and apply the transform (the reference path)."""
        from PIL import Image

        try:
            with Image.open(io.BytesIO(data)) as im:
                img = as_mode(im, self.mode)
            return self.transform(img), True
        except Exception as exc:
            if self.on_error == "raise":
                raise OODInputError(f"{self.paths[i]}: cannot be read as an image ({exc})") from exc
            return torch.zeros(self.shape), False

    def _read(self, i: int) -> bytes | None:
        try:
            return self.paths[i].read_bytes()
        except OSError as exc:
            if self.on_error == "raise":
                raise OODInputError(f"{self.paths[i]}: cannot be read ({exc})") from exc
            return None

    def __getitem__(self, i: int):
        data = self._read(i)
        x, ok = (torch.zeros(self.shape), False) if data is None else self._from_bytes(data, i)
        return x, int(self.labels[i]), ok

    def load_batch(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Items ``indices`` as one batch ``(x, labels, ok)``, equal to stacking ``self[i]``.

        JPEG files whose decoded size needs no resampling are decoded together by libjpeg-turbo
        (``torchvision.io.decode_jpeg``) and normalised as one tensor, with no per-image Python
        work beyond reading the bytes; every other file takes the per-image PIL path.
        """
        n = len(indices)
        x = torch.zeros((n, *self.shape))
        ok = torch.ones(n, dtype=torch.bool)
        fast = getattr(self.transform, "batch_fast_path", None)
        raw, where = [], []
        for j, i in enumerate(indices):
            data = self._read(i)
            if data is None:
                ok[j] = False
            elif fast is not None and self.mode == "RGB" and data[:2] == b"\xff\xd8":
                raw.append(torch.frombuffer(bytearray(data), dtype=torch.uint8))
                where.append((j, i, data))
            else:
                x[j], ok[j] = self._from_bytes(data, i)
        if raw:
            try:
                decoded = _decode_jpegs(raw)
            except RuntimeError:  # one bad file fails the batch: find it via the PIL path
                decoded = [None] * len(raw)
            same = [k for k, img in enumerate(decoded) if img is not None and fast(img.shape) is not None]
            if same:
                x[[where[k][0] for k in same]] = fast(decoded[same[0]].shape)(torch.stack([decoded[k] for k in same]))
            for k in set(range(len(raw))) - set(same):
                j, i, data = where[k]
                x[j], ok[j] = self._from_bytes(data, i)
        return x, torch.as_tensor(self.labels[list(indices)]), ok

    def fingerprint(self) -> str:
        """sha256 over the preprocessing and, per file, its path relative to the files' common
        folder, its label and :func:`file_digest` of its bytes: an edited image, or one moved to
        another class, changes it; the same tree under another root does not."""
        d = hashlib.sha256(f"images-v2|{self.transform!r}|{self.mode}".encode())
        paths = [os.path.abspath(p) for p in self.paths]
        root = os.path.commonpath([os.path.dirname(p) for p in paths])
        for p, y in zip(paths, self.labels):
            rel = p[len(root):].lstrip(os.sep).replace(os.sep, "/")
            d.update(f"{rel}|{int(y)}|{file_digest(p)}\n".encode())
        return d.hexdigest()


class ArrayImages(Dataset):
    """Images held in memory as a uint8 array (N, H, W) or (N, H, W, 3); items ``(tensor, label, ok)``."""

    def __init__(self, images: np.ndarray, labels: np.ndarray | None, transform: Callable) -> None:
        if images.ndim not in (3, 4) or len(images) == 0:
            raise OODInputError(f"ArrayImages: expected (N, H, W[, 3]) images, got shape {images.shape}")
        self.images = np.ascontiguousarray(images)
        self.labels = np.full(len(images), -1, np.int64) if labels is None else np.asarray(labels, np.int64)
        if len(self.labels) != len(self.images):
            raise OODInputError(f"ArrayImages: {len(self.images)} images but {len(self.labels)} labels")
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.transform(self.images[i]), int(self.labels[i]), True

    def fingerprint(self) -> str:
        d = hashlib.sha256(repr(self.transform).encode())
        d.update(self.images.tobytes())
        d.update(self.labels.tobytes())
        return d.hexdigest()


@dataclass
class Split:
    """A named set of images for one role (ID train, ID test or an OOD set)."""

    name: str
    dataset: Dataset
    note: str = ""
    group: str = "far"  # OOD sets: "near" (semantically close), "far" or "covariate" (same classes, shifted); ID splits: "id"


def subsample(n_total: int, n: int | None, seed: int) -> np.ndarray:
    """Indices of a seeded random subset of size ``n`` (all, in order, if n is None or >= total)."""
    if n is None or n >= n_total:
        return np.arange(n_total)
    if n <= 0:
        raise OODInputError(f"subset size must be positive, got {n}")
    return np.sort(np.random.default_rng(seed).choice(n_total, size=n, replace=False))


def item_paths(dataset: Dataset, positions: list[int]) -> tuple[list[Path], list[Path]]:
    """(the files behind dataset items ``positions``, all the set's files), through a ``Subset``;
    both empty for sets not read from files."""
    base, index = dataset, None
    if isinstance(dataset, Subset):
        base, index = dataset.dataset, list(dataset.indices)
    paths = getattr(base, "paths", None)
    if paths is None or not positions:
        return [], []
    return [Path(paths[i if index is None else index[i]]) for i in positions], list(paths)


def first_items(dataset: Dataset, positions: list[int], k: int = 3) -> str:
    """The files behind the first ``k`` of ``positions`` (``item N`` where the set has no files),
    then "…" if there are more: how an error or warning names unreadable images."""
    names = item_paths(dataset, positions[:k])[0] or [f"item {i}" for i in positions[:k]]
    return ", ".join(map(str, names)) + (", …" if len(positions) > k else "")


def stack_images(dataset: Dataset, n: int | None = None, seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    """A seeded subset of ``n`` readable images of ``dataset`` as one tensor, with their labels."""
    idx = subsample(len(dataset), n, seed)
    items = [dataset[int(i)] for i in idx]
    unreadable = [int(i) for i, (_, _, ok) in zip(idx, items) if not ok]
    items = [(x, y) for x, y, ok in items if ok]
    if not items:
        raise OODInputError("no readable images in the requested subset")
    if unreadable:  # said out loud, like the runner's skipped files
        print(f"warning: {len(unreadable)} of {len(idx)} images could not be read and were left out: "
              f"{first_items(dataset, unreadable)}", file=sys.stderr)
    return torch.stack([x for x, _ in items]), np.asarray([y for _, y in items])
