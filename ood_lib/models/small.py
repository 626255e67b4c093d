"""A small MNIST CNN, trained on the fly by the embedded and MNIST benchmarks."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import FeatureModel


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
