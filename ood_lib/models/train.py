"""Deterministic CPU training of the small CNNs used by the ``embedded`` and ``mnist`` benchmarks."""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from .._checks import OODInputError
from . import FeatureModel, build_model, load_state_strict, weights_fingerprint


def train_classifier(
    model: FeatureModel,
    dataset: Dataset,
    *,
    epochs: int = 1,
    seed: int = 0,
    batch_size: int = 64,
    lr: float = 1e-3,
    progress: bool = False,
    desc: str = "training",
) -> FeatureModel:
    """Adam on cross-entropy; the same seed gives the same weights on the same machine."""
    from tqdm.auto import tqdm

    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=g, num_workers=0)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    with tqdm(total=epochs * len(loader), desc=desc, disable=not progress, leave=False) as bar:
        for _ in range(epochs):
            for x, y, _ok in loader:
                opt.zero_grad(set_to_none=True)
                F.cross_entropy(model(x), y).backward()
                opt.step()
                bar.update()
    return model.eval()


def _cached_problem(model: FeatureModel, path: Path, spec: str) -> str | None:
    """Load the cached model at ``path`` into ``model``; None if it is the one ``spec`` describes,
    else why not. The file holds the weights, the key they were trained under and their
    fingerprint: a file replaced by other weights (another model's, or edited) is caught here."""
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged file
        return f"not a readable checkpoint ({exc})"
    if not isinstance(ck, dict) or not {"state_dict", "key", "fingerprint"} <= set(ck):
        return "it holds no key and fingerprint (written by another version, or replaced)"
    if ck["key"] != spec:
        return "it was trained under another key (another data set, seed or architecture)"
    try:
        load_state_strict(model, ck["state_dict"], path)
    except OODInputError as exc:
        return str(exc)
    if weights_fingerprint(model) != ck["fingerprint"]:
        return "its weights do not match the fingerprint written with them (edited or replaced)"
    return None


def cached_classifier(
    arch: str,
    train: Dataset,
    *,
    tag: str,
    epochs: int,
    seed: int = 0,
    cache_dir: Path | None | bool = None,
    progress: bool = False,
) -> FeatureModel:
    """A model ``arch`` trained on ``train`` (see :func:`train_classifier`), cached on disk.

    The cache entry is keyed by the architecture, the training data's fingerprint, the seed and the
    epochs (and a version, raised whenever :func:`train_classifier` changes), and holds the key and
    the weights' fingerprint beside the weights; a cached file that does not load, or whose key or
    fingerprint does not match, is reported and the model retrained (to the same weights).
    ``cache_dir=False`` trains without caching.
    """
    from ..cache import atomic_save_torch, default_cache_dir

    spec = f"{arch}:{tag}:{train.fingerprint()}:{seed}:{epochs}:v3"  # bump the version when training changes
    key = hashlib.sha256(spec.encode()).hexdigest()[:16]
    folder = None if cache_dir is False else default_cache_dir() if cache_dir is None else Path(cache_dir)
    path = None if folder is None else folder / "models" / f"{tag}-cnn-{key}.pt"
    if path is not None and path.is_file():
        torch.manual_seed(seed)
        model = build_model(arch)
        problem = _cached_problem(model, path, spec)
        if problem is None:
            return model
        warnings.warn(f"cached model {path} is unusable ({problem}); retraining it", stacklevel=2)
    torch.manual_seed(seed)  # the initial weights, too, come from the seed
    model = build_model(arch)
    train_classifier(model, train, epochs=epochs, seed=seed, progress=progress, desc=f"training {tag} CNN")
    if path is not None:
        atomic_save_torch({"state_dict": model.state_dict(), "key": spec, "fingerprint": weights_fingerprint(model)},
                          path)
    return model
