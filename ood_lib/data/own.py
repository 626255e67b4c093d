"""Your own model and data as a benchmark: the study's whole pipeline, on what you pass it
(chapter *Your model*; :func:`ood_lib.study`).

Each data argument is a ``Dataset`` (items ``x``, ``(x, label)`` or ``(x, label, ok)``), a
``DataLoader`` (its dataset is read, in order), a tensor of model inputs (N, C, H, W) — or a pair
``(inputs, labels)`` — or the path of an image folder. A folder of class sub-folders gives labels
(the ID set's classes must then be the model's outputs); any other folder is read recursively,
unlabelled. Images read from folders are preprocessed by :func:`preprocessing_for` (the flags,
else the model library's own configuration); datasets and tensors are taken as model inputs.

An OOD set is *far-natural* unless marked: ``ood={"name": (data, "near")}``, ``"far-synthetic"``
(noise, renderings, a gray set shown to a colour model), ``"far"`` (= far-natural) or
``"covariate"`` (the ID classes under a shift: reported, never decided).
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from . import files as D
from .._checks import OODInputError
from ..models import FeatureModel, wrap_model
from .benchmarks import DENSENET_PREP, LITE0_PREP, MNIST_PREP, RESNET20_PREP, Benchmark, ModelSpec, OODSet
from .sources import IdData, Preprocessing

__all__ = ["MARKS", "OwnBenchmark", "TensorImages", "UserDataset", "as_dataset", "inputs", "own_benchmark", "own_model",
           "parse_ood", "preprocessing_for"]

MARKS = {"near": ("near", "natural"), "far": ("far", "natural"), "far-natural": ("far", "natural"),
         "far-synthetic": ("far", "synthetic"), "covariate": ("covariate", "natural")}
MIN_IMAGES = 2  # fewer give no ranking to measure
RESERVED = ("id_train", "id_test", "near", "far", "covariate", "mean", "all")
IMAGENET_PREP = Preprocessing(256, 224, D.IMAGENET_MEAN, D.IMAGENET_STD)
CROP_PCT = 0.875  # ImageNet evaluation: shorter side to size / 0.875, centre crop


# --- preprocessing ----------------------------------------------------------------------------
def _timm_net(model: nn.Module) -> nn.Module | None:
    for m in (model, getattr(model, "net", None)):
        if m is not None and getattr(m, "pretrained_cfg", None) is not None:
            return m
    return None


def _library_preprocessing(model: nn.Module) -> tuple[Preprocessing, str]:
    from ..models import CifarResNet, DenseNetBC, EfficientNetLite0, MnistCNN

    known = ((EfficientNetLite0, LITE0_PREP), (CifarResNet, RESNET20_PREP), (DenseNetBC, DENSENET_PREP),
             (MnistCNN, MNIST_PREP))
    for cls, prep in known:
        if isinstance(model, cls):
            return prep, f"{cls.__name__}'s checkpoints"
    net = _timm_net(model)
    if net is not None:
        from timm.data import resolve_data_config

        cfg = resolve_data_config({}, model=net)
        c, h, w = cfg["input_size"]
        crop = cfg.get("crop_pct") or 1.0
        return (Preprocessing(int(math.floor(h / crop)), h, tuple(cfg["mean"]), tuple(cfg["std"]), "L" if c == 1 else "RGB"),
                "timm's pretrained configuration (timm.data.resolve_data_config)")
    return IMAGENET_PREP, "ImageNet's (no library configuration found: pass size, mean and std)"


def preprocessing_for(model: nn.Module, size: int | None = None, mean: Any = None, std: Any = None) -> tuple[Preprocessing, str]:
    """How image files become ``model``'s inputs, and where that came from: ``size`` (shorter side
    to size / 0.875 and a centre crop above 64 px; resized to size at 64 px or less), ``mean`` and
    ``std`` where given, else the model library's (timm's pretrained configuration, the registered
    checkpoints'), else ImageNet's 256 / 224."""
    base, source = _library_preprocessing(model)
    if size is None and mean is None and std is None:
        return base, source
    if size is not None and (not isinstance(size, int) or size < 1):
        raise OODInputError(f"size must be a positive integer (pixels), got {size!r}")
    mean = tuple(float(v) for v in mean) if mean is not None else base.mean
    std = tuple(float(v) for v in std) if std is not None else base.std
    if len(mean) != len(std) or len(mean) not in (1, 3) or min(std) <= 0:
        raise OODInputError(f"mean and std need 1 or 3 values each, std > 0; got mean {mean}, std {std}")
    resize, crop = (base.resize, base.crop) if size is None else (
        (size, size) if size <= 64 else (int(math.floor(size / CROP_PCT)), size))
    return Preprocessing(resize, crop, mean, std, "L" if len(mean) == 1 else "RGB"), "the arguments given"


# --- data -------------------------------------------------------------------------------------
def _label(y: Any) -> int:
    if isinstance(y, (int, np.integer)) and not isinstance(y, bool):
        return int(y)
    if isinstance(y, torch.Tensor) and y.numel() == 1 and not y.is_floating_point():
        return int(y)
    return -1


class TensorImages(Dataset):
    """Model inputs held as one tensor (N, C, H, W), optional labels; items ``(x, label, True)``."""

    transform = None

    def __init__(self, x: Any, labels: Any = None, what: str = "inputs") -> None:
        x = torch.as_tensor(x)
        if x.ndim != 4 or not x.is_floating_point():
            raise OODInputError(f"{what}: a tensor of model inputs must be floating point (N, C, H, W), got "
                                f"{x.dtype} {tuple(x.shape)}")
        self.x = x.detach().cpu().contiguous()
        self.labels = (np.full(len(x), -1, np.int64) if labels is None
                       else np.asarray(torch.as_tensor(labels).cpu(), np.int64).reshape(-1))
        if len(self.labels) != len(self.x):
            raise OODInputError(f"{what}: {len(self.x)} inputs but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        return self.x[i], int(self.labels[i]), True

    def fingerprint(self) -> str:
        d = hashlib.sha256(f"tensor|{self.x.dtype}|{tuple(self.x.shape)}".encode())
        d.update(self.x.float().numpy().tobytes())
        d.update(self.labels.tobytes())
        return d.hexdigest()


class UserDataset(Dataset):
    """A map-style dataset of model inputs as the pipeline reads it: items ``(x, label, ok)``; its
    fingerprint hashes every item (one pass over the data, without the model)."""

    def __init__(self, base: Dataset, what: str = "dataset") -> None:
        self.base, self.what = base, what
        self.transform = getattr(base, "transform", None)
        self._fp: str | None = None
        self._labels: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        item = self.base[i]
        if isinstance(item, torch.Tensor):
            return item, -1, True
        if isinstance(item, (tuple, list)) and item and isinstance(item[0], torch.Tensor):
            ok = bool(item[2]) if len(item) >= 3 and isinstance(item[2], (bool, np.bool_)) else True
            return item[0], _label(item[1]) if len(item) > 1 else -1, ok
        raise OODInputError(f"{self.what}: item {i} is a {type(item).__name__}; expected a tensor or "
                            "(tensor, label) — preprocess the images in the dataset, or pass a folder")

    def _scan(self) -> None:
        d, labels = hashlib.sha256(f"dataset|{type(self.base).__qualname__}|{self.transform!r}".encode()), []
        for i in range(len(self)):
            x, y, ok = self[i]
            d.update(f"{tuple(x.shape)}|{y}|{ok}|".encode())
            d.update(x.detach().cpu().float().contiguous().numpy().tobytes())
            labels.append(y)
        self._fp, self._labels = d.hexdigest(), np.asarray(labels, np.int64)

    def fingerprint(self) -> str:
        if self._fp is None:
            self._scan()
        return self._fp

    @property
    def labels(self) -> np.ndarray:
        if self._labels is None:
            self._scan()
        return self._labels


def _folder(path: Path, prep: Preprocessing, what: str, classes: bool) -> tuple[Dataset, int | None]:
    """An image folder as files (class sub-folders → labels where ``classes``), and its class count."""
    if not path.is_dir():
        raise D.missing(what, path, "a folder of images (for the ID set: optionally one sub-folder per class)",
                        "pass the folder that holds the images")
    subs = [c for c in D.class_folders(path) if D.list_images(path / c)] if classes else []
    loose = [p for p in D.list_images(path) if p.parent == path]
    if subs and not loose:
        paths, labels, names = D.image_folder(path, what)
        return D.ImageFiles(paths, labels, prep.image(), prep.shape, prep.mode), len(names)
    paths = D.list_images(path)
    if not paths:
        raise OODInputError(f"{what}: no images under {path} (looked for {', '.join(D.IMAGE_EXTENSIONS)}, "
                            "in sub-folders too)")
    return D.ImageFiles(paths, None, prep.image(), prep.shape, prep.mode), None


def as_dataset(data: Any, prep: Preprocessing, what: str, classes: bool = False) -> tuple[Dataset, int | None]:
    """``data`` (module docstring) as a dataset of ``(x, label, ok)`` items with a ``fingerprint()``,
    and the number of classes its folders name (None where it has no class folders)."""
    if isinstance(data, (str, os.PathLike)):
        return _folder(Path(data).expanduser(), prep, what, classes)
    if isinstance(data, (torch.Tensor, np.ndarray)):
        return TensorImages(data, None, what), None
    if isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], (torch.Tensor, np.ndarray)):
        return TensorImages(data[0], data[1], what), None
    if isinstance(data, DataLoader):
        base = data.dataset
        if hasattr(base, "__getitem__") and hasattr(base, "__len__"):
            return as_dataset(base, prep, what, classes)
        xs, ys = [], []
        for batch in data:  # an iterable-style dataset: read once, kept in memory
            x, y = (batch, None) if isinstance(batch, torch.Tensor) else (batch[0], batch[1] if len(batch) > 1 else None)
            xs.append(x)
            ys.append(torch.full((len(x),), -1) if y is None else torch.as_tensor(y))
        if not xs:
            raise OODInputError(f"{what}: the data loader gave no batches")
        return TensorImages(torch.cat(xs), torch.cat(ys), what), None
    if isinstance(data, Dataset) or (hasattr(data, "__getitem__") and hasattr(data, "__len__")):
        if callable(getattr(data, "fingerprint", None)) and len(data) and len(data[0]) == 3:
            return data, None  # already one of ours (ImageFiles, ArrayImages, a benchmark's split)
        return UserDataset(data, what), None
    raise OODInputError(f"{what}: expected a Dataset, a DataLoader, a tensor or a folder path, got {type(data).__name__}")


# --- the benchmark ----------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class OwnBenchmark(Benchmark):
    """A :class:`Benchmark` over data passed in, whose model is the one passed in."""

    network: nn.Module | None = None
    preprocessing_source: str = ""

    def load_model(self, root=None, seed: int = 0, checkpoint=None, cache_dir=None, progress: bool = False,
                   model=None) -> FeatureModel:
        return self.network.eval()


def _mark(name: str, value: Any) -> tuple[Any, str, str]:
    """(data, group, kind) of one OOD entry: ``data`` or ``(data, mark)``."""
    if not isinstance(name, str) or not name.strip() or name in RESERVED or not name.replace("-", "_").isidentifier():
        raise OODInputError(f"OOD set name {name!r}: use a short identifier (letters, digits, _ or -), not one of "
                            f"{', '.join(RESERVED)}")
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], str) and value[1] in MARKS:
        return (value[0], *MARKS[value[1]])
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], str) and not isinstance(value[0], str):
        raise OODInputError(f"OOD set {name!r}: unknown mark {value[1]!r}; valid: {', '.join(MARKS)}")
    return (value, *MARKS["far"])


def _first(ds: Dataset, what: str) -> torch.Tensor:
    if len(ds) < MIN_IMAGES:
        raise OODInputError(f"{what}: {len(ds)} image(s); the metrics need at least {MIN_IMAGES} (and a few "
                            "hundred for intervals worth reading)")
    for i in range(min(len(ds), 16)):
        x, _, ok = ds[i]
        if ok:
            return torch.as_tensor(x)
    raise OODInputError(f"{what}: none of its first images can be read")


def _probe(model: FeatureModel, xs: dict[str, torch.Tensor], what: dict[str, str]) -> None:
    """Every set's first input through the model: one shape for all, finite logits, before any
    feature is extracted (so that nothing is cached for a run that cannot finish)."""
    ref = next(iter(xs))
    for k, x in xs.items():
        if x.shape != xs[ref].shape:
            raise OODInputError(f"{what[k]}: inputs of shape {tuple(x.shape)}, but {what[ref]} has "
                                f"{tuple(xs[ref].shape)}: preprocess every set the same way")
    for k, x in xs.items():
        try:
            with torch.no_grad():
                h, f = model.forward_features(x[None].to(next(model.parameters()).device))
        except (RuntimeError, ValueError) as exc:
            raise OODInputError(f"{what[k]}: the model cannot take inputs of shape {tuple(x.shape)} "
                                f"({type(exc).__name__}: {str(exc).splitlines()[0]}); check the preprocessing "
                                "(size, mean, std)") from exc
        if not (bool(torch.isfinite(f).all()) and bool(torch.isfinite(h).all())):
            raise OODInputError(f"{what[k]}: the model gives non-finite (NaN or Inf) logits or features on its "
                                "first image; check the weights and the preprocessing")


def _classes(ds: Dataset, folder_classes: int | None, c: int, what: str) -> None:
    if folder_classes is not None and folder_classes != c:
        raise OODInputError(f"{what}: {folder_classes} class folders, but the model has {c} outputs; the ID "
                            "set's classes must be the model's (or pass a folder without class sub-folders)")
    labels = getattr(ds, "labels", None)
    if labels is not None and len(labels) and int(np.max(labels)) >= c:
        raise OODInputError(f"{what}: label {int(np.max(labels))}, but the model has {c} outputs")


def own_benchmark(model: nn.Module, id: Any, ood: Mapping[str, Any], fit: Any = None, *,
                  preprocessing: Preprocessing | None = None, source: str = "the preprocessing given",
                  name: str = "own", batch_size: int = 64, arch: str | None = None,
                  require_ood: bool = True) -> OwnBenchmark:
    """Your classifier and data as a :class:`Benchmark` that :func:`ood_lib.run.evaluate.prepare`,
    the runner and :func:`ood_lib.findings.study.run_study` take as they take a registered one.

    ``model``: any ``nn.Module`` whose output is the output of one ``nn.Linear`` (found by
    :func:`ood_lib.models.wrap_model`'s tracing; another head is an error). ``preprocessing``
    (default :func:`preprocessing_for`) applies to image folders only; ``source`` says where it came from. Every set is checked before
    anything is extracted: at least two images, one input shape, finite logits, the ID classes
    the model's outputs. ``require_ood=False`` allows no OOD set (``verify`` reads the ID set only)."""
    if not isinstance(model, nn.Module):
        raise OODInputError(f"model: expected an nn.Module classifier, got {type(model).__name__}")
    if not isinstance(ood, Mapping) or (require_ood and not ood):
        raise OODInputError("ood: give at least one OOD set, as {name: data} or {name: (data, mark)}")
    prep, source = (preprocessing, source) if preprocessing is not None else preprocessing_for(model)
    id_ds, n_folders = as_dataset(id, prep, "ID set", classes=True)
    sets = {"id_test": id_ds}
    what = {"id_test": "ID set"}
    marks = {}
    if fit is not None:
        sets["id_train"], _ = as_dataset(fit, prep, "fitting set", classes=True)
        what["id_train"] = "fitting set"
    for k, v in ood.items():
        data, group, kind = _mark(k, v)
        sets[k], _ = as_dataset(data, prep, f"OOD set {k!r}")
        what[k], marks[k] = f"OOD set {k!r}", (group, kind)
    firsts = {k: _first(ds, what[k]) for k, ds in sets.items()}
    dev = next(model.parameters()).device
    net = model if isinstance(model, FeatureModel) else wrap_model(model.eval(), example=firsts["id_test"][None].to(dev))
    net.eval()
    _probe(net, firsts, what)
    c = net.head.out_features
    _classes(id_ds, n_folders, c, "ID set")
    if "id_train" in sets:
        _classes(sets["id_train"], None, c, "fitting set")
    label = arch or getattr(net, "arch", None) or getattr(net, "model_name", None) or type(getattr(net, "net", net)).__name__
    idd = IdData(sets.get("id_train"), id_ds, "fitting set", "ID set")
    oods = tuple(OODSet(k, k, g, (lambda ctx, d=sets[k]: d), kind=kd) for k, (g, kd) in marks.items())
    return OwnBenchmark(name, f"{label} on the data given", c, lambda ctx: idd, oods, ModelSpec(str(label)), prep,
                        needs_root=False, batch_size=batch_size, network=net, preprocessing_source=source)



# --- from names: the command line and the chapter's parameters --------------------------------
def parse_ood(items: str | list[str]) -> dict[str, tuple[str, str]]:
    """``NAME=DIR`` or ``NAME:MARK=DIR`` items (a list, or one comma-separated string) →
    ``{name: (folder, mark)}``; MARK is one of :data:`MARKS` (default far-natural)."""
    items = [i.strip() for i in items.split(",") if i.strip()] if isinstance(items, str) else list(items)
    out = {}
    for item in items:
        name, eq, folder = item.partition("=")
        name, _, mark = name.partition(":")
        if not eq or not name or not folder:
            raise OODInputError(f"OOD set {item!r}: expected NAME=DIR or NAME:MARK=DIR")
        if mark and mark not in MARKS:
            raise OODInputError(f"OOD set {item!r}: unknown mark {mark!r}; valid: {', '.join(MARKS)}")
        if name in out:
            raise OODInputError(f"OOD set {name!r} is given twice")
        out[name] = (folder, mark or "far-natural")
    return out


def own_model(model: str | None, checkpoint: str | None, id_dir: str | None = None, seed: int = 0) -> FeatureModel:
    """The classifier named by ``model`` (:func:`ood_lib.models.resolve_model`) with ``checkpoint``
    (a weights file, or "random": seeded random weights with one output per class folder of
    ``id_dir``), or with ``model`` None the architecture read off ``checkpoint``."""
    from ..models import resolve_model
    from ..models.infer import model_from_checkpoint

    if not checkpoint:
        raise OODInputError("your own model needs its weights: a checkpoint file (its architecture read off the "
                            "file), or a model name with a checkpoint file or 'random'")
    if not model:
        if checkpoint == "random":
            raise OODInputError("random weights need a model name: there is no architecture to read off")
        return model_from_checkpoint(checkpoint)
    if checkpoint != "random":
        return resolve_model(model, checkpoint)
    root = Path(id_dir) if id_dir else None
    n = len([c for c in D.class_folders(root) if D.list_images(root / c)]) if root and root.is_dir() else 0
    torch.manual_seed(seed)
    return resolve_model(model, checkpoint, n or None)


EMBEDDED_MARKS = {"sklearn_digits": "covariate", "font_letters": "near", "textures": "far-natural",
                  "photos": "far-natural", "noise": "far-synthetic"}


def inputs(model: str = "", checkpoint: str = "", id_dir: str = "", ood_dirs: str = "", fit_dir: str = "",
           seed: int = 0, cache_dir=None) -> tuple[nn.Module, Any, dict[str, Any], Any]:
    """``(model, id, ood, fit)`` for :func:`ood_lib.study` from names (chapter *Your model*'s
    parameters): your classifier and folders, or with every name empty the embedded benchmark's
    CNN (trained here and cached) and its sets, marked as that benchmark marks them."""
    if not (model or checkpoint or id_dir or ood_dirs or fit_dir):
        from .benchmarks import get_benchmark

        b = get_benchmark("embedded")
        sp = b.splits(None, seed)
        net = b.load_model(None, seed, cache_dir=cache_dir)
        return net, sp["id_test"].dataset, {k: (sp[k].dataset, EMBEDDED_MARKS[k]) for k in EMBEDDED_MARKS}, sp["id_train"].dataset
    if not (id_dir and ood_dirs):
        raise OODInputError("your own data needs an ID folder and at least one OOD folder (NAME=DIR, comma-separated)")
    return own_model(model, checkpoint, id_dir, seed), id_dir, parse_ood(ood_dirs), fit_dir or None
