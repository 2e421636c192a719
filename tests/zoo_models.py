"""Models as the libraries users build on write them (timm), for the front-door tests.

timm imports torchvision, whose registry build is a CUDA wheel whose C operators do not load
beside this CPU torch; defining the schemas of the two operators its import registers fake
kernels for lets the import proceed (the classification models use neither). A test-only
concern: ringlet itself imports neither timm nor torchvision.
"""

from __future__ import annotations

import functools

import pytest
import torch

_LIBRARIES: list = []  # the schema fragment must outlive the import


@functools.cache
def timm():
    """The timm package, or a skip when it is not installed (``make setup`` installs it)."""
    try:
        lib = torch.library.Library("torchvision", "FRAGMENT")
        lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        _LIBRARIES.append(lib)
    except RuntimeError:  # defined already (by torchvision's own ops, or an earlier call)
        pass
    return pytest.importorskip("timm")


def calibrated(model: torch.nn.Module, shape=(3, 32, 32), seed: int = 0) -> torch.nn.Module:
    """``model`` with BatchNorm statistics calibrated on random images, in eval mode."""
    gen = torch.Generator().manual_seed(seed)  # test data, not a secret
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(16, *shape, generator=gen))
    return model.eval()
