"""Finetuning with the approximate ReLUs in place (HummingBird §4.1.3).

The module is traced with the compiler's own tracer and every configured ReLU-like call site
(ReLU modules, a reused ``self.relu`` once per call, ``F.relu``, ``x.relu()``, LeakyReLU) is
replaced by :class:`ApproxAct`, which applies the online rule on fresh random shares in the
forward pass (the shares protect nothing here) and passes gradients straight through its decision:
out = a·x + (1 − a)·x·d, ∂out/∂x = a + (1 − a)·d. The traced module shares its parameters and
buffers with the original, so training it trains the user's module (BatchNorm in training mode).
Recipe (the authors' code): SGD with Nesterov momentum, lr 1e-3, weight decay 5e-4, cosine
schedule with warm-up, 10 epochs.
"""

from __future__ import annotations

import time

import torch
from torch import nn

from ringlet.compiler.capture import trace
from ringlet.compiler.graph import LoweredGraph
from ringlet.compiler.interpret import FracPlan
from ringlet.compiler.ops import registry
from ringlet.data import Dataset
from ringlet.protocols.base import input_bits
from ringlet.protocols.relu import ReluSpec
from ringlet.search.simulator import EXACT, fused_keep
from ringlet.train.trainer import TrainConfig, fit


class ApproxAct(nn.Module):
    """ReLU (slope 0) or LeakyReLU whose decision is the reduced-ring rule on random shares."""

    def __init__(self, k: int, m: int, shift: int, frac: int = 16, parties: int = 2, seed: int = 0,
                 slope: float = 0.0):
        super().__init__()
        self.k, self.m, self.shift, self.frac, self.parties = k, m, shift, frac, parties
        self.slope = float(slope)
        self.gen = torch.Generator().manual_seed(seed)

    def _keep(self, x: torch.Tensor) -> torch.Tensor:
        if (self.k, self.m) == EXACT:
            return (x >= 0).to(x.dtype)
        if self.k == self.m:
            return torch.ones_like(x)
        with torch.no_grad():
            k, m = input_bits(ReluSpec(self.k, self.m), self.shift)
            if m > 31:
                raise ValueError(f"finetuning supports m + shift <= 31, got {m}")
            lows = [torch.randint(0, 2 ** 31, x.shape, generator=self.gen, dtype=torch.int32)
                    for _ in range(self.parties - 1)]
            return fused_keep(x.detach().float(), lows, self.frac + self.shift, k, m).to(x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = self._keep(x)
        return x * d if self.slope == 0 else x * (self.slope + (1 - self.slope) * d)


def approximate(module: nn.Module, graph: LoweredGraph, bits: dict, frac_bits: int = 16,
                parties: int = 2, seed: int = 0) -> torch.fx.GraphModule:
    """``module`` traced, with every configured ReLU-like call site an :class:`ApproxAct`."""
    gm = trace(module)
    fx_nodes = {n.name: n for n in gm.graph.nodes}
    fracs = FracPlan(graph, frac_bits).plan()
    ops = registry()
    for i, node in enumerate(n for n in graph.nodes if ops[n.kind].bits == "relu" and ops[n.kind].finetunes):
        k, m = bits.get(node.label, EXACT)
        fx = fx_nodes.get(node.name)
        if fx is None:  # pragma: no cover - the same tracer gives the same names
            raise RuntimeError(f"finetuning: no call site {node.name!r} in the traced module")
        shift = fracs[node.inputs[0]] - frac_bits
        slope = node.params.get("slope", 0.0)
        name = f"_ringlet_approx_{i}"
        gm.add_submodule(name, ApproxAct(k, m, shift, frac_bits, parties, seed + i, slope))
        with gm.graph.inserting_after(fx):
            new = gm.graph.call_module(name, (fx.args[0],))
        fx.replace_all_uses_with(new)
        gm.graph.erase_node(fx)
    gm.recompile()
    return gm


def finetune_module(module: nn.Module, graph: LoweredGraph, bits: dict, train: Dataset, epochs: int,
                    *, lr: float = 1e-3, batch: int = 128, parties: int = 2, seed: int = 0,
                    frac_bits: int = 16, augment: bool = True, progress: bool = True) -> dict:
    """Train ``module`` in place with the approximate activations of ``bits``; returns a record."""
    if epochs < 1:
        raise ValueError(f"--epochs must be at least 1, got {epochs}")
    gm = approximate(module, graph, bits, frac_bits, parties, seed)
    cfg = TrainConfig(epochs=epochs, batch=batch, lr=lr, nesterov=True, weight_decay=5e-4,
                      warmup_epochs=min(1.0, epochs / 10), seed=seed,
                      augment=augment and len(train.input_shape) == 3)
    t0 = time.time()
    result = fit(gm, train, None, cfg, progress=progress,
                 log=None if progress else (lambda line: None))
    module.eval()
    return {"finetune_epochs": epochs, "finetune_lr": lr, "finetune_seconds": round(time.time() - t0, 1),
            "history": result["history"]}
