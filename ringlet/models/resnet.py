"""ResNets in the CIFAR form: 3×3 stride-1 stem, no stem pooling, global average pooling.

``resnet18`` / ``resnet50`` follow the layout the HummingBird numbers use (64-128-256-512 channels;
557,056 ReLUs per 3×32×32 image for ResNet-18). ``resnet20/32/110`` are the CIFAR family of He et al.
(16-32-64 channels, 3 stages of n blocks) with 1×1 projection shortcuts where the shape changes.
Every ReLU is its own module so that each has a stable name for per-activation configuration.
"""

from __future__ import annotations

import torch
from torch import nn


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


def _shortcut(cin: int, cout: int, stride: int) -> nn.Module:
    if stride == 1 and cin == cout:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = _conv3x3(cin, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU()
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = _shortcut(cin, planes, stride)
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1):
        super().__init__()
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU()
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU()
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.shortcut = _shortcut(cin, out, stride)
        self.relu3 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.relu2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu3(out + self.shortcut(x))


class ResNet(nn.Module):
    """Stem conv + BN + ReLU, ``len(widths)`` stages (``layer1``…), global average pool, linear."""

    def __init__(self, block: type[BasicBlock | Bottleneck], depths: list[int], widths: list[int],
                 input_shape: tuple[int, int, int], num_classes: int = 10):
        super().__init__()
        channels = input_shape[0]
        self.conv1 = _conv3x3(channels, widths[0])
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU()
        cin = widths[0]
        for i, (depth, width) in enumerate(zip(depths, widths)):
            blocks = []
            for j in range(depth):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(block(cin, width, stride))
                cin = width * block.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.num_stages = len(depths)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        for i in range(self.num_stages):
            x = getattr(self, f"layer{i + 1}")(x)
        return self.fc(self.flatten(self.pool(x)))


def resnet18(input_shape, num_classes=10) -> ResNet:
    return ResNet(BasicBlock, [2, 2, 2, 2], [64, 128, 256, 512], input_shape, num_classes)


def resnet50(input_shape, num_classes=10) -> ResNet:
    return ResNet(Bottleneck, [3, 4, 6, 3], [64, 128, 256, 512], input_shape, num_classes)


def _cifar_resnet(n: int):
    def build(input_shape, num_classes=10) -> ResNet:
        return ResNet(BasicBlock, [n, n, n], [16, 32, 64], input_shape, num_classes)
    build.__doc__ = f"ResNet-{6 * n + 2} of the CIFAR family (3 stages of {n} basic blocks)."
    return build


resnet20 = _cifar_resnet(3)
resnet32 = _cifar_resnet(5)
resnet110 = _cifar_resnet(18)
