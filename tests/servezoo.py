"""A small model written the way PyTorch users write them, for the serving tests
(``servezoo:TinyNet`` with --weights, importable with this folder on the path)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class TinyNet(nn.Module):
    def __init__(self, width: int = 4, classes: int = 10):
        super().__init__()
        self.conv = nn.Conv2d(1, width, 3, padding=1)
        self.bn = nn.BatchNorm2d(width)
        self.pool = nn.AvgPool2d(2)
        self.head = nn.Linear(width * 4 * 4, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(F.relu(self.bn(self.conv(x))))
        return self.head(x.flatten(1))


def tiny_net() -> TinyNet:
    return TinyNet()


def wide_net() -> TinyNet:
    return TinyNet(width=6)
