"""What each benchmark's images look like: a few seeded samples of the ID test split and of every
OOD set (chapter *The benchmarks*).

The samples are the model's inputs — after the benchmark's resize, crop and any JPEG round trip
(:mod:`ood_lib.data.sources`) — with the normalisation undone, ``x · std + mean``, so the reader sees
what the detectors saw. Any benchmark of the registry works: its splits are read through
:meth:`ood_lib.data.benchmarks.Benchmark.splits`, so the embedded one needs no data root. Images larger
than ``max_side`` pixels are shrunk (area-averaged), so that :func:`save_gallery` writes a small
file from which the book draws :func:`gallery_figure` without the data.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, NamedTuple

import numpy as np
import torch

from .._checks import OODInputError
from ..data.benchmarks import get_benchmark
from ..data import files as D
from ..findings.labels import group_label, set_label

if TYPE_CHECKING:
    from matplotlib.figure import Figure


class Thumbnails(NamedTuple):
    """A set's sample images, uint8 (n, H, W) for gray or (n, H, W, 3) for colour, and its group
    ("id", "near", "far" or "covariate")."""

    images: np.ndarray
    group: str


def to_uint8(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...], max_side: int = 64) -> np.ndarray:
    """Normalised model inputs (n, C, H, W) → uint8 images (n, H, W) for C = 1 or (n, H, W, 3):
    round(255 · clip(x · std + mean, 0, 1)), shrunk by area averaging to at most ``max_side``
    pixels on the longer side."""
    if x.ndim != 4 or x.shape[1] not in (1, 3) or len(mean) != x.shape[1] or len(std) != x.shape[1]:
        raise OODInputError(f"expected (n, 1 or 3, H, W) inputs with one mean and std per channel, got shape "
                            f"{tuple(x.shape)}, {len(mean)} mean(s), {len(std)} std(s)")
    if max_side < 1:
        raise OODInputError(f"max_side must be a positive number of pixels, got {max_side}")
    m = torch.tensor(mean, dtype=x.dtype).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype).view(1, -1, 1, 1)
    img = (x * s + m).clamp(0, 1)
    h, w = img.shape[-2:]
    if max(h, w) > max_side:
        scale = max_side / max(h, w)
        img = torch.nn.functional.interpolate(img, size=(max(1, round(h * scale)), max(1, round(w * scale))),
                                              mode="area")
    out = (img * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return out[..., 0] if out.shape[-1] == 1 else out


def sample_images(benchmark: str, data_root: str | Path | None = None, n: int = 8, seed: int = 0,
                  max_side: int = 64) -> dict[str, Thumbnails]:
    """``n`` seeded images (fewer where a set has fewer readable ones) of the ID test split and of
    every OOD set the data root holds, in the benchmark's order: ``{"id_test": ..., <ood key>: ...}``.

    ``data_root`` is the data root (default ``$OOD_DATA_ROOT``; none for the embedded benchmark)."""
    if n < 1:
        raise OODInputError(f"n must be a positive number of images, got {n}")
    bench = get_benchmark(benchmark)
    prep = bench.preprocessing
    splits = bench.splits(D.data_root(data_root), seed=seed)
    out = {}
    for key, split in splits.items():
        if key == "id_train":
            continue
        x, _ = D.stack_images(split.dataset, n, seed)
        out[key] = Thumbnails(to_uint8(x, prep.mean, prep.std, max_side), split.group)
    return out


def save_gallery(samples: Mapping[str, Thumbnails], path: str | Path) -> Path:
    """Write ``samples`` (as :func:`sample_images` returns them) to a compressed ``.npz`` file."""
    if not samples:
        raise OODInputError("save_gallery: no sets to save")
    arrays = {"keys": np.array(list(samples)), "groups": np.array([t.group for t in samples.values()])}
    for i, t in enumerate(samples.values()):
        a = np.asarray(t.images)
        if a.dtype != np.uint8 or a.ndim not in (3, 4):
            raise OODInputError(f"save_gallery: set {list(samples)[i]!r} needs uint8 (n, H, W[, 3]) images, "
                                f"got {a.dtype} {a.shape}")
        arrays[f"images_{i}"] = a
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:  # a file object: numpy would otherwise append ".npz" to another suffix
        np.savez_compressed(fh, **arrays)
    return path


def load_gallery(path: str | Path) -> dict[str, Thumbnails]:
    """The samples :func:`save_gallery` wrote to ``path``."""
    path = Path(path)
    if not path.is_file():
        raise OODInputError(f"no gallery at {path} (write one with save_gallery)")
    try:
        with np.load(path, allow_pickle=False) as z:
            keys, groups = [str(k) for k in z["keys"]], [str(g) for g in z["groups"]]
            return {k: Thumbnails(z[f"images_{i}"], g) for i, (k, g) in enumerate(zip(keys, groups))}
    except (KeyError, ValueError, OSError) as exc:
        raise OODInputError(f"{path} is not a gallery written by save_gallery ({exc})") from exc


def samples_or_recorded(benchmark: str, data_root: str | Path | None, recorded: str | Path,
                        live: bool) -> dict[str, Thumbnails] | None:
    """The sample images a page shows for ``benchmark``: drawn from the data when the page runs it
    ``live`` (or it needs no data), else the thumbnails recorded in ``<recorded>/<benchmark>/
    gallery.npz``; None when neither is there."""
    if live or not get_benchmark(benchmark).needs_root:
        return sample_images(benchmark, data_root or None)
    path = Path(recorded) / benchmark / "gallery.npz"
    return load_gallery(path) if path.is_file() else None


def row_label(key: str, group: str, benchmark: str | None = None) -> str:
    """A row's label: the set's display name (wrapped) over its group."""
    name = "\n".join(textwrap.wrap(set_label(key, benchmark), 20))
    return f"{name}\n({group_label(group)})"


def gallery_figure(samples: Mapping[str, Thumbnails], benchmark: str | None = None) -> Figure:
    """One row per set of ``samples``: its images side by side, labelled on the left with the
    set's display name (the benchmark's own name where ``benchmark`` is given) and its group."""
    import matplotlib.pyplot as plt  # imported here: importing ood_lib must not load a plotting backend

    from .plots import DPI

    if not samples:
        raise OODInputError("gallery_figure: no sets to draw")
    ncols = max(len(t.images) for t in samples.values())
    h, w = np.asarray(next(iter(samples.values()))[0]).shape[1:3]
    side = 0.62
    fig, axes = plt.subplots(len(samples), ncols, squeeze=False, dpi=DPI, layout="constrained",
                             figsize=(1.6 + side * ncols * max(1.0, w / h), 0.1 + side * len(samples)))
    fig.get_layout_engine().set(w_pad=0.01, h_pad=0.01, wspace=0.02, hspace=0.02)
    for row, (key, (images, group)) in zip(axes, samples.items()):
        images = np.asarray(images)
        for j, ax in enumerate(row):
            ax.set_xticks([])
            ax.set_yticks([])
            ax.spines[:].set_visible(False)
            if j < len(images):
                gray = images.ndim == 3
                ax.imshow(images[j], cmap="gray" if gray else None, vmin=0, vmax=255, interpolation="nearest")
        row[0].set_ylabel(row_label(key, group, benchmark), rotation=0, ha="right", va="center",
                          multialignment="right", fontsize=8)
    return fig
