"""Deterministic CPU training of the small CNNs used by the ``embedded`` and ``mnist`` benchmarks."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from .models import FeatureModel


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
