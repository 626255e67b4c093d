"""Image preprocessing: how an image (a PIL image or a uint8 array) becomes a model's input tensor.

Each transform has a ``repr`` that states every setting: it is part of the feature-cache key, so
changing a preprocessing step invalidates the cached features (chapter *Cost* explains why the
conversion is written out instead of composed from torchvision's transforms).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from .files import IMAGENET_MEAN, IMAGENET_STD, jpeg_roundtrip

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
# EfficientNet-Lite (TensorFlow Lite export): (x·255 − 127) / 128 for x in [0, 1]
LITE_MEAN, LITE_STD = (127.0 / 255.0,) * 3, (128.0 / 255.0,) * 3
# DenseNet-BC-100 CIFAR-10 checkpoint: the normalisation of its repository's evaluation script
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)


class GrayArray:
    """uint8 (28, 28) array → normalised (1, 28, 28) float tensor."""

    def __call__(self, a: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.asarray(a, dtype=np.float32) / 255.0)[None]
        return (x - MNIST_MEAN) / MNIST_STD

    def __repr__(self) -> str:
        return f"GrayArray(mean={MNIST_MEAN}, std={MNIST_STD})"


INTERPOLATIONS = ("bilinear", "bicubic")


def presize_like_subset(img, size: tuple[int, int]):
    """A PIL image → exactly ``size`` (width, height), bilinear without antialiasing, aspect not
    kept: how the ImageNet validation subset (and NINCO's copy) were brought to 227×227, so that
    OOD photographs shown beside them have been through the same resampling."""
    from PIL import Image

    if img.size == tuple(size):
        return img
    a = torch.from_numpy(np.array(img.convert("RGB"), dtype=np.float32)).permute(2, 0, 1)[None]
    a = torch.nn.functional.interpolate(a, size=(size[1], size[0]), mode="bilinear", align_corners=False,
                                        antialias=False)
    return Image.fromarray(a[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy())


class ImageToInput:
    """A PIL image → (optionally, ``presize``: :func:`presize_like_subset`) → resized (``resize``:
    the shorter side, or an exact (width, height); ``interpolation`` bilinear or bicubic) →
    centre-cropped to ``crop`` → optional JPEG round trip → normalised float tensor.

    The same arithmetic as torchvision's Resize / CenterCrop / ToTensor / Normalize, but steps
    that would not change the image are skipped and the conversion is a few array operations,
    so that decoding stays cheap beside the forward pass (chapter *Cost*).
    """

    def __init__(self, resize: int | tuple[int, int], crop: int | None, mean: tuple[float, ...],
                 std: tuple[float, ...], jpeg_quality: int | None = None, interpolation: str = "bilinear",
                 presize: tuple[int, int] | None = None) -> None:
        if interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}")
        self.resize, self.crop, self.jpeg_quality = resize, crop, jpeg_quality
        self.interpolation, self.presize = interpolation, presize
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)

    @property
    def channels(self) -> int:
        return self.mean.shape[0]

    def __call__(self, img) -> torch.Tensor:
        from PIL import Image

        if self.presize is not None:
            img = presize_like_subset(img, self.presize)
        w, h = img.size
        if isinstance(self.resize, tuple):
            size = self.resize
        else:
            s = self.resize
            size = (s, int(s * h / w)) if w <= h else (int(s * w / h), s)
        if size != (w, h):
            img = img.resize(size, Image.BICUBIC if self.interpolation == "bicubic" else Image.BILINEAR)
            w, h = size
        c = self.crop
        if c is not None and (w, h) != (c, c):
            left, top = int(round((w - c) / 2.0)), int(round((h - c) / 2.0))
            img = img.crop((left, top, left + c, top + c))
        if self.jpeg_quality is not None:
            img = jpeg_roundtrip(img, self.jpeg_quality)
        a = np.array(img, dtype=np.uint8)
        x = torch.from_numpy(a).permute(2, 0, 1) if a.ndim == 3 else torch.from_numpy(a)[None]
        return (x.float().div_(255.0) - self.mean) / self.std

    def batch_fast_path(self, shape: tuple[int, ...]) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """For decoded uint8 images of ``shape`` (C, H, W) that this transform would not resample,
        the batched equivalent of the conversion; None otherwise."""
        if self.jpeg_quality is not None or self.presize is not None or len(shape) != 3:
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
        # the settings added later are written only where they are not the default, so that the
        # feature-cache keys of the earlier benchmarks stay what they were
        extra = "" if self.interpolation == "bilinear" else f", interpolation={self.interpolation!r}"
        extra += "" if self.presize is None else f", presize={tuple(self.presize)}"
        return (f"ImageToInput(resize={self.resize}, crop={self.crop}, mean={self.mean.flatten().tolist()}, "
                f"std={self.std.flatten().tolist()}, jpeg_quality={self.jpeg_quality}{extra})")


class ArrayAsImage:
    """A uint8 array (H, W) or (H, W, 3) → a PIL image in ``mode`` → ``then`` (e.g. an :class:`ImageToInput`).

    Used where a gray data set is shown to an RGB model (MNIST-type sets as far-OOD for CIFAR-10
    and ImageNet, the way OpenOOD uses them): the digit is replicated over three channels.
    """

    def __init__(self, mode: str, then: Callable) -> None:
        self.mode, self.then = mode, then

    def __call__(self, a: np.ndarray) -> torch.Tensor:
        from PIL import Image

        return self.then(Image.fromarray(np.asarray(a, dtype=np.uint8)).convert(self.mode))

    def __repr__(self) -> str:
        return f"ArrayAsImage({self.mode!r}, {self.then!r})"


def mnist_array_transform() -> Callable:
    return GrayArray()


def mnist_image_transform() -> Callable:
    """A grayscale PIL image → 28×28 (shorter side resized, centre crop) → normalised tensor."""
    return ImageToInput(28, 28, (MNIST_MEAN,), (MNIST_STD,))


def cifar_eval_transform(jpeg_quality: int | None = None, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> ImageToInput:
    """A PIL image → 32×32 (shorter side, centre crop) → optional JPEG round trip → normalised tensor.

    The ResNet-20 checkpoint expects ImageNet mean/std; the DenseNet-BC-100 one :data:`CIFAR_MEAN`/:data:`CIFAR_STD`.
    """
    return ImageToInput(32, 32, mean, std, jpeg_quality)


def cifar_array_transform(mean=IMAGENET_MEAN, std=IMAGENET_STD) -> Callable:
    """uint8 (32, 32, 3) array → normalised tensor."""
    from torchvision import transforms as T

    return T.Compose([T.ToTensor(), T.Normalize(mean, std)])


def imagenet_transform(model: str) -> ImageToInput:
    """Each ImageNet model's own preprocessing: ResNet-50 resize 256 / crop 224; BiT 480×480 with
    mean = std = 0.5; EfficientNet-Lite0 shorter side 224 and centre crop 224, (x·255 − 127)/128."""
    if model == "bit_r101x1":
        return ImageToInput((480, 480), None, (0.5,) * 3, (0.5,) * 3)
    if model == "efficientnet_lite0":
        return ImageToInput(224, 224, LITE_MEAN, LITE_STD)
    return ImageToInput(256, 224, IMAGENET_MEAN, IMAGENET_STD)
