"""The model zoo: every model by name, built for a given input shape."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ringlet.models import resnet, small, vit

_REGISTRY: dict[str, Callable[..., nn.Module]] = {
    "resnet18": resnet.resnet18,
    "resnet20": resnet.resnet20,
    "resnet32": resnet.resnet32,
    "resnet50": resnet.resnet50,
    "resnet110": resnet.resnet110,
    "vgg16": small.VGG16,
    "minionn": small.MiniONN,
    "fmnist-net": small.FMNISTNet,
    "svhn-net": small.SVHNNet,
    "vit": vit.vit,
    "vit2": vit.vit2,
}

MODEL_NAMES = tuple(_REGISTRY)


def build_model(name: str, input_shape=(3, 32, 32), num_classes: int = 10) -> nn.Module:
    """Build a zoo model with freshly initialised weights (torch's default init)."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(MODEL_NAMES)}")
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"input shape must be C×H×W, got {input_shape}")
    return _REGISTRY[name](shape, num_classes)


def count_relus(model: nn.Module, input_shape) -> dict[str, int]:
    """Number of ReLU outputs per ReLU module for one input of ``input_shape`` (plaintext hook count)."""
    counts: dict[str, int] = {}
    hooks = []
    for name, mod in model.named_modules():
        if isinstance(mod, nn.ReLU):
            hooks.append(mod.register_forward_hook(
                lambda m, i, o, name=name: counts.__setitem__(name, counts.get(name, 0) + o[0].numel())))
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, *input_shape))
    finally:
        for m, training in modes.items():
            m.training = training
        for h in hooks:
            h.remove()
    return counts


__all__ = ["MODEL_NAMES", "build_model", "count_relus"]
