"""Classifiers in one interface: ``features(x) -> h``, a linear ``head``, ``forward = head ∘ features``.

Every score in the study needs exactly this split (chapter *Gradient scores and their closed
forms*): h is the penultimate embedding and the head is the last linear layer f = W h + b.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ._checks import OODInputError, unknown_name


class FeatureModel(nn.Module):
    """Base class: subclasses define ``features`` and the attribute named by ``head_name``."""

    head_name = "head"

    @property
    def head(self) -> nn.Linear:
        return getattr(self, self.head_name)

    def features(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(h, logits) from one pass."""
        h = self.features(x)
        return h, self.head(h)


# --- CIFAR ResNet-20 (He et al. 2016, "option A" shortcuts) -------------------------------
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
        if (depth - 2) % 6:
            raise OODInputError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
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


# --- small MNIST CNN ------------------------------------------------------------------------
class MnistCNN(FeatureModel):
    """Two conv layers and a 128-d ReLU embedding; trains to ~98 % on MNIST in one CPU epoch."""

    head_name = "fc2"

    def __init__(self, num_classes: int = 10, width: int = 32, embed: int = 128) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1)
        self.fc1 = nn.Linear(2 * width * 7 * 7, embed)
        self.fc2 = nn.Linear(embed, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return F.relu(self.fc1(x.flatten(1)))


# --- ImageNet models -------------------------------------------------------------------------
class TorchvisionResNet(FeatureModel):
    """A torchvision ResNet (default ResNet-50): h = the pooled features, head ``fc``.

    The submodules keep torchvision's names, so torchvision's own state dicts load strictly.
    """

    head_name = "fc"
    _body = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool")

    def __init__(self, arch: str = "resnet50", num_classes: int = 1000) -> None:
        super().__init__()
        import torchvision

        net = getattr(torchvision.models, arch)(weights=None, num_classes=num_classes)
        for name in self._body + ("fc",):
            setattr(self, name, getattr(net, name))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        for name in self._body:
            x = getattr(self, name)(x)
        return x.flatten(1)


class TimmBiT(FeatureModel):
    """BiT-S-R101x1 (timm ``resnetv2_101x1_bit``): h = pre-logits features, head = 1x1 conv as linear."""

    head_name = "fc"

    def __init__(self, model_name: str = "resnetv2_101x1_bit.goog_in21k_ft_in1k", num_classes: int = 1000) -> None:
        super().__init__()
        try:
            import timm
        except ImportError as exc:
            raise OODInputError("the BiT model needs timm: pip install timm") from exc
        self.net = timm.create_model(model_name, pretrained=False, num_classes=num_classes)
        dim = self.net.num_features
        self.fc = nn.Linear(dim, num_classes)
        self.net.reset_classifier(0)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


MODELS: dict[str, Callable[..., FeatureModel]] = {
    "resnet20": lambda num_classes=10: CifarResNet(20, num_classes),
    "mnist_cnn": lambda num_classes=10: MnistCNN(num_classes),
    "resnet50": lambda num_classes=1000: TorchvisionResNet("resnet50", num_classes),
    "resnet18": lambda num_classes=1000: TorchvisionResNet("resnet18", num_classes),
    "bit_r101x1": lambda num_classes=1000: TimmBiT(num_classes=num_classes),
}


def build_model(name: str, num_classes: int | None = None) -> FeatureModel:
    """An untrained model from :data:`MODELS`."""
    if name not in MODELS:
        raise unknown_name("model", name, MODELS)
    return MODELS[name]() if num_classes is None else MODELS[name](num_classes)


def _strip_prefix(state: dict, prefix: str = "module.") -> dict:
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix):]: v for k, v in state.items()}
    return state


def load_checkpoint(model: FeatureModel, path: str | Path) -> FeatureModel:
    """Load weights into ``model`` with ``strict=True``; the error says what did not match.

    Accepts a bare state dict or ``{"state_dict": ...}``, with or without the ``module.`` prefix
    that DataParallel adds.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"checkpoint not found: {path.resolve()} — pass the path of a saved state dict "
            "(for the CIFAR-10 ResNet-20: resnet20-12fca82f.th from akamaster/pytorch_resnet_cifar10)"
        )
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise OODInputError(f"{path}: not a readable PyTorch checkpoint ({exc})") from exc
    state = ck.get("state_dict", ck) if isinstance(ck, dict) else None
    if not isinstance(state, dict):
        raise OODInputError(f"{path}: expected a state dict or {{'state_dict': ...}}")
    state = _strip_prefix(state)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise OODInputError(
            f"{path}: does not match the {type(model).__name__} architecture ({first}; "
            f"{str(exc).count(',') + 1} key problems in all)"
        ) from exc
    return model


def weights_fingerprint(model: nn.Module) -> str:
    """A SHA-256 of every parameter and buffer (names, shapes, dtypes, values)."""
    d = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        d.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        d.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return d.hexdigest()
