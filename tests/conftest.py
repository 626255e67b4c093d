"""Shared fixtures. Tests import the *installed* ood_lib (see test_package.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from torch import nn

from ood_lib.models import FeatureModel

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("OOD_TEST_DATA", REPO.parent / "shared" / "data"))
RESNET20 = SHARED_DATA / "weights" / "resnet20-12fca82f.th"


def needs_shared_data(*parts: str):
    path = SHARED_DATA.joinpath(*parts)
    return pytest.mark.skipif(
        not path.exists(),
        reason=f"real test data not found at {path} (set OOD_TEST_DATA to a folder laid out like shared/data)",
    )


class TinyNet(FeatureModel):
    """A random conv net whose features may be negative (no final ReLU) — the general case."""

    head_name = "head_layer"

    def __init__(self, classes: int = 5, dim: int = 7, relu_features: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.body = nn.Linear(4 * 4 * 4, dim)
        self.head_layer = nn.Linear(dim, classes)
        self.relu_features = relu_features

    def features(self, x: torch.Tensor) -> torch.Tensor:
        h = self.body(torch.tanh(self.conv(x)).flatten(1))
        return torch.relu(h) if self.relu_features else h


@pytest.fixture
def tiny_model():
    def make(classes: int = 5, dim: int = 7, seed: int = 0, relu_features: bool = False):
        torch.manual_seed(seed)
        return TinyNet(classes, dim, relu_features).double().eval()

    return make


@pytest.fixture
def tiny_images():
    def make(n: int = 6, seed: int = 1):
        g = torch.Generator().manual_seed(seed)
        return torch.randn(n, 2, 4, 4, generator=g, dtype=torch.float64)

    return make


@pytest.fixture
def cache_dir(tmp_path):
    return tmp_path / "cache"


# --- the reliability matrix: every bad input tried and fault injected, with its outcome ---
RELIABILITY: list[tuple[str, str, str]] = []


@pytest.fixture
def record():
    """record(kind, case, outcome): one row of the reliability matrix printed after the run."""

    def add(kind: str, case: str, outcome: str) -> None:
        RELIABILITY.append((kind, case, outcome))

    return add


def pytest_terminal_summary(terminalreporter):
    if not RELIABILITY:
        return
    tr = terminalreporter
    tr.section("reliability matrix")
    width = max(len(c) for _, c, _ in RELIABILITY)
    for kind, case, outcome in RELIABILITY:
        tr.write_line(f"{kind:10s} {case:{width}s}  {outcome}")
    kinds = sorted({k for k, _, _ in RELIABILITY})
    counts = ", ".join(f"{sum(1 for k, _, _ in RELIABILITY if k == kind)} {kind}" for kind in kinds)
    tr.write_line(f"{counts}: all handled (each row above is a passing test)")
