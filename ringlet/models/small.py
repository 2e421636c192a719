"""The small networks of the ReLU-sharing paper and VGG-16 (BatchNorm, average pooling) of ESPN.

Layer sizes follow the papers' tables for their native inputs; the classifier's input size is derived
from the input shape, so every model also runs on 1×28×28 and 3×32×32.
"""

from __future__ import annotations

import torch
from torch import nn


def _flat_size(features: nn.Module, input_shape: tuple[int, int, int]) -> int:
    with torch.no_grad():
        return int(features(torch.zeros(1, *input_shape)).numel())


class MiniONN(nn.Module):
    """The ReLU-sharing paper's CIFAR-10 net (its Table 2, after MiniONN; average pooling)."""

    def __init__(self, input_shape, num_classes=10):
        super().__init__()
        c = input_shape[0]
        self.features = nn.Sequential(
            nn.Conv2d(c, 64, 3, padding=1), nn.ReLU(),
            nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(),
            nn.AvgPool2d(2),
            nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(),
            nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(),
            nn.AvgPool2d(2),
            nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(),
            nn.Conv2d(64, 64, 1), nn.ReLU(),
            nn.Conv2d(64, 16, 1), nn.ReLU(),
        )
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(_flat_size(self.features, input_shape), num_classes)

    def forward(self, x):
        return self.fc(self.flatten(self.features(x)))


class FMNISTNet(nn.Module):
    """The ReLU-sharing paper's Fashion-MNIST net (its Table 4)."""

    def __init__(self, input_shape, num_classes=10):
        super().__init__()
        c = input_shape[0]
        self.features = nn.Sequential(
            nn.Conv2d(c, 32, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2),
        )
        self.flatten = nn.Flatten()
        self.dropout = nn.Dropout(0.5)
        self.fc1 = nn.Linear(_flat_size(self.features, input_shape), 128)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(128, num_classes)

    def forward(self, x):
        x = self.dropout(self.flatten(self.features(x)))
        return self.fc2(self.relu(self.fc1(x)))


class SVHNNet(nn.Module):
    """The ReLU-sharing paper's SVHN net (its Table 3): 4×4 convs without padding."""

    def __init__(self, input_shape, num_classes=10):
        super().__init__()
        c = input_shape[0]
        self.features = nn.Sequential(
            nn.Conv2d(c, 32, 4), nn.ReLU(), nn.AvgPool2d(3),
            nn.Conv2d(32, 64, 4), nn.ReLU(),
        )
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(_flat_size(self.features, input_shape), num_classes)

    def forward(self, x):
        return self.fc(self.flatten(self.features(x)))


_VGG16 = [64, 64, "P", 128, 128, "P", 256, 256, 256, "P", 512, 512, 512, "P", 512, 512, 512, "P"]


class VGG16(nn.Module):
    """VGG-16 with BatchNorm and average pooling (as in ESPN); a pool is skipped once the map is 1×1."""

    def __init__(self, input_shape, num_classes=10):
        super().__init__()
        layers: list[nn.Module] = []
        c, size = input_shape[0], input_shape[1]
        for item in _VGG16:
            if item == "P":
                if size >= 2:
                    layers.append(nn.AvgPool2d(2))
                    size //= 2
                continue
            layers += [nn.Conv2d(c, item, 3, padding=1, bias=False), nn.BatchNorm2d(item), nn.ReLU()]
            c = item
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x):
        return self.fc(self.flatten(self.pool(self.features(x))))
