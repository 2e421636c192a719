"""BatchNorm statistics from public data (a zoo model with random weights gets a realistic scale)."""

from __future__ import annotations

import torch
from torch import nn

BATCH = 32  # images per calibration forward


def calibrate_batchnorm(model: nn.Module, x: torch.Tensor) -> None:
    """Set every BatchNorm's running statistics from one forward pass over ``x`` (zoo models with
    random weights, so that activations have a realistic scale). ``x`` must be public data."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average: one pass gives the batch statistics
    model.train()
    with torch.no_grad():  # in chunks (ImageNet-size activations): the cumulative average of
        for start in range(0, x.shape[0], BATCH):  # the chunks' statistics
            model(x[start:start + BATCH])
    model.eval()
