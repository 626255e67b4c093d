"""CIFAR classifiers: the ResNet-6n+2 family (He et al. 2016) and DenseNet-BC (Huang et al. 2017).

Both keep the parameter names of their public checkpoints, so those load with ``strict=True``:
``resnet20-12fca82f.th`` (and its 32/44/56/110 siblings) from the ResNet family, and the DICE
repository's DenseNet-BC-100 (growth 12). The depth of either is read off a checkpoint's keys.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import OODInputError
from .base import FeatureModel
from .checkpoint import load_checkpoint, read_state_dict

# Each checkpoint's input normalisation is part of its benchmark's preprocessing
# (ood_lib.data.benchmarks; constants in ood_lib.data.transforms).


# --- CIFAR ResNet-6n+2 ("option A" shortcuts) ----------------------------------------------
class _PadShortcut(nn.Module):
    """Parameter-free shortcut: subsample by 2 and zero-pad the new channels."""

    def __init__(self, pad: int) -> None:
        super().__init__()
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = _PadShortcut(cout // 4) if stride != 1 or cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(FeatureModel):
    """CIFAR ResNet-6n+2 with option-A shortcuts; parameter names match the public
    ``resnet20-12fca82f.th`` checkpoint (head ``linear``, 64-d features)."""

    head_name = "linear"

    def __init__(self, depth: int = 20, num_classes: int = 10) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise OODInputError(f"CIFAR ResNet depth must be 6n+2 with n >= 1, got {depth}")
        n = (depth - 2) // 6
        self.depth = depth
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        cin = 16
        for i, (cout, stride) in enumerate([(16, 1), (32, 2), (64, 2)], start=1):
            blocks = []
            for j in range(n):
                blocks.append(_BasicBlock(cin, cout, stride if j == 0 else 1))
                cin = cout
            setattr(self, f"layer{i}", nn.Sequential(*blocks))
        self.linear = nn.Linear(64, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return out.mean(dim=(2, 3))


def _count_indices(state: dict, prefix: str) -> int:
    """How many consecutive ``prefix{i}.`` indices (0, 1, …) the keys hold."""
    found = {int(k[len(prefix):].split(".")[0]) for k in state if k.startswith(prefix) and k[len(prefix):].split(".")[0].isdigit()}
    n = 0
    while n in found:
        n += 1
    return n


def _head_rows(state: dict, key: str, path: Path) -> int:
    if key not in state or state[key].ndim != 2:
        raise OODInputError(f"{path}: no 2-d {key!r} in the checkpoint, so it is not this architecture")
    return int(state[key].shape[0])


def cifar_resnet_depth(state: dict[str, torch.Tensor]) -> int:
    """Depth 6n+2 of a CIFAR ResNet state dict, n = the number of ``layer1.{i}.`` blocks."""
    n = _count_indices(state, "layer1.")
    if n == 0:
        raise OODInputError("no 'layer1.0.' keys: not a CIFAR ResNet state dict")
    return 6 * n + 2


def cifar_resnet_from_checkpoint(path: str | Path) -> CifarResNet:
    """A CIFAR ResNet of the depth and class count the checkpoint holds, loaded strictly."""
    state = read_state_dict(path)
    depth = cifar_resnet_depth(state)
    return load_checkpoint(CifarResNet(depth, _head_rows(state, "linear.weight", Path(path))), path)


# --- DenseNet-BC ----------------------------------------------------------------------------
class _Bottleneck(nn.Module):
    """BN → ReLU → 1×1 conv (4k) → BN → ReLU → 3×3 conv (k); output = [input, new k channels]."""

    def __init__(self, cin: int, growth: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, 4 * growth, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(4 * growth)
        self.conv2 = nn.Conv2d(4 * growth, growth, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.bn1(x)))
        out = self.conv2(F.relu(self.bn2(out)))
        return torch.cat([x, out], 1)


class _DenseBlock(nn.Module):
    def __init__(self, n: int, cin: int, growth: int) -> None:
        super().__init__()
        self.layer = nn.Sequential(*[_Bottleneck(cin + i * growth, growth) for i in range(n)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class _Transition(nn.Module):
    """BN → ReLU → 1×1 conv → 2×2 average pool."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(self.conv1(F.relu(self.bn1(x))), 2)


class DenseNetBC(FeatureModel):
    """DenseNet-BC for 32×32 input: 3 dense blocks of (depth − 4)/6 bottleneck layers, growth k,
    compression ``reduction``, no dropout; h = the globally pooled ReLU(BN(·)) of block 3.

    DenseNet-BC-100 (k = 12) has 342-d features; parameter names follow the DICE repository's
    ``DenseNet3`` (``conv1``, ``block{b}.layer.{i}``, ``trans{b}``, ``bn1``, head ``fc``).
    """

    head_name = "fc"

    def __init__(self, depth: int = 100, growth: int = 12, reduction: float = 0.5, num_classes: int = 10) -> None:
        super().__init__()
        if depth < 10 or (depth - 4) % 6:
            raise OODInputError(f"DenseNet-BC depth must be 6n+4 with n >= 1, got {depth}")
        if growth < 1 or not 0 < reduction <= 1:
            raise OODInputError(f"DenseNet-BC needs growth >= 1 and 0 < reduction <= 1, got {growth}, {reduction}")
        n = (depth - 4) // 6
        self.depth, self.growth, self.reduction = depth, growth, reduction
        c = 2 * growth
        self.conv1 = nn.Conv2d(3, c, 3, padding=1, bias=False)
        for b in (1, 2, 3):
            setattr(self, f"block{b}", _DenseBlock(n, c, growth))
            c += n * growth
            if b < 3:
                out = math.floor(c * reduction + 1e-9)  # +eps: a ratio read off a checkpoint
                setattr(self, f"trans{b}", _Transition(c, out))
                c = out
        self.bn1 = nn.BatchNorm2d(c)
        self.fc = nn.Linear(c, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        out = self.trans1(self.block1(self.conv1(x)))
        out = self.trans2(self.block2(out))
        out = F.relu(self.bn1(self.block3(out)))
        return out.mean(dim=(2, 3))


def densenet_config(state: dict[str, torch.Tensor]) -> dict[str, float | int]:
    """``depth``, ``growth``, ``reduction``, ``num_classes`` of a DenseNet-BC state dict.

    depth = 6n + 4 with n = the number of ``block1.layer.{i}.`` layers; k = the output channels of
    a layer's 3×3 conv; reduction = out/in channels of ``trans1``.
    """
    n = _count_indices(state, "block1.layer.")
    need = ("block1.layer.0.conv2.weight", "trans1.conv1.weight", "fc.weight")
    if n == 0 or any(k not in state for k in need):
        raise OODInputError(f"not a DenseNet-BC state dict (needs block1.layer.0.* and {', '.join(need[1:])})")
    t = state["trans1.conv1.weight"]
    return {
        "depth": 6 * n + 4,
        "growth": int(state["block1.layer.0.conv2.weight"].shape[0]),
        "reduction": int(t.shape[0]) / int(t.shape[1]),
        "num_classes": int(state["fc.weight"].shape[0]),
    }


def densenet_from_checkpoint(path: str | Path) -> DenseNetBC:
    """A DenseNet-BC of the depth, growth, compression and classes the checkpoint holds, loaded strictly."""
    return load_checkpoint(DenseNetBC(**densenet_config(read_state_dict(path))), path)
