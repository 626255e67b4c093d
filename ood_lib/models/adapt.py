"""A pretrained classifier adapted to a shifted copy of its training data (the confound controls).

* :func:`recalibrate_bn` — AdaBN (Li et al. 2016): every BatchNorm's running mean and variance
  re-estimated on images of the new domain (a cumulative average over one pass, no gradient),
  nothing else changed;
* :func:`fine_tune` — every weight trained further on the new domain's training images with SGD
  (momentum 0.9, weight decay 5e-4, cosine schedule from ``lr``), random crops (4-pixel zero
  padding) and horizontal flips on the normalised tensors;
* :func:`cached_adaptation` — either one, kept in the model cache as a self-checking entry (the
  key names the base weights, the data, the method and its settings; the weights' fingerprint is
  stored beside them), so one command rebuilds it and a stale or edited file is rebuilt, not used.

Both are written here because they are a dozen lines each around PyTorch's own BatchNorm and SGD;
no library offers them for an arbitrary ``nn.Module`` with the project's cache semantics.
"""

from __future__ import annotations

import copy
import hashlib
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .._checks import OODInputError
from . import load_state_strict, weights_fingerprint

METHODS = ("adabn", "finetune")


def _loader(data: Dataset, batch_size: int, seed: int, shuffle: bool) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    return DataLoader(data, batch_size=batch_size, shuffle=shuffle, generator=g, num_workers=0)


def recalibrate_bn(model: nn.Module, data: Dataset, *, batch_size: int = 256, progress: bool = False) -> nn.Module:
    """AdaBN: the BatchNorm statistics of ``model`` re-estimated on ``data`` (in place; eval mode after)."""
    from tqdm.auto import tqdm

    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        raise OODInputError("AdaBN needs BatchNorm layers; the model has none")
    model.eval()
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the pass
        m.train()
    with torch.no_grad():
        for x, _y, _ok in tqdm(_loader(data, batch_size, 0, False), desc="AdaBN", disable=not progress, leave=False):
            model(x)
    for m in bns:
        m.momentum = 0.1
    return model.eval()


def _augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Random 4-pixel-padded crops and horizontal flips of a batch of images (N, C, H, W)."""
    n, _, h, w = x.shape
    padded = F.pad(x, (4, 4, 4, 4))
    dy, dx = torch.randint(0, 9, (2, n), generator=g)
    out = torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])
    flip = torch.rand(n, generator=g) < 0.5
    out[flip] = out[flip].flip(-1)
    return out


def fine_tune(model: nn.Module, data: Dataset, *, epochs: int = 2, lr: float = 0.01, seed: int = 0,
              batch_size: int = 128, progress: bool = False) -> nn.Module:
    """Every weight of ``model`` trained further on ``data`` (module docstring); eval mode after."""
    from tqdm.auto import tqdm

    if epochs < 1:
        raise OODInputError(f"fine-tuning needs at least one epoch, got {epochs}")
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    loader = _loader(data, batch_size, seed, True)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * len(loader))
    model.train()
    with tqdm(total=epochs * len(loader), desc="fine-tuning", disable=not progress, leave=False) as bar:
        for _ in range(epochs):
            for x, y, _ok in loader:
                opt.zero_grad(set_to_none=True)
                F.cross_entropy(model(_augment(x, g)), y).backward()
                opt.step()
                sched.step()
                bar.update()
    return model.eval()


def cached_adaptation(model: nn.Module, data: Dataset, method: str, *, tag: str, cache_dir: Path,
                      progress: bool = False, **settings) -> tuple[nn.Module, Path]:
    """``model`` adapted by ``method`` ("adabn" or "finetune", with its ``settings``) on ``data``,
    from the cache when a valid entry exists; returns the model and its cache file."""
    from ..cache import atomic_save_torch

    if method not in METHODS:
        raise OODInputError(f"unknown adaptation {method!r}; known: {', '.join(METHODS)}")
    spec = f"{tag}:{weights_fingerprint(model)}:{data.fingerprint()}:{method}:{sorted(settings.items())}:v1"
    path = Path(cache_dir) / "models" / f"{tag}-{method}-{hashlib.sha256(spec.encode()).hexdigest()[:16]}.pt"
    if path.is_file():
        entry = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(entry, dict) and entry.get("key") == spec:
            trial = copy.deepcopy(model)
            load_state_strict(trial, entry["state_dict"], path)
            if weights_fingerprint(trial) == entry.get("fingerprint"):
                return trial.eval(), path
        warnings.warn(f"cached adaptation {path} is stale or edited; computing it again", stacklevel=2)
    if method == "adabn":
        recalibrate_bn(model, data, progress=progress, **settings)
    else:
        fine_tune(model, data, progress=progress, **settings)
    atomic_save_torch({"state_dict": model.state_dict(), "key": spec, "fingerprint": weights_fingerprint(model)}, path)
    return model.eval(), path
