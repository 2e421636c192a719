"""Finetuning with the approximate ReLUs in place (HummingBird §4.1.3).

Each configured ReLU module is swapped for :class:`ApproxReLU`, which applies the online rule on
fresh random shares in the forward pass (the shares protect nothing here) and passes gradients
straight through its decision: out = x·d, ∂out/∂x = d. After training the plain ReLUs are put back,
so the checkpoint loads into the zoo model and the configuration is applied at inference.
Recipe (the authors' code): SGD with Nesterov momentum, lr 1e-3, weight decay 5e-4, cosine schedule
with warm-up, 10 epochs.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from torch import nn

from ringlet.data import load_dataset
from ringlet.nn.compiler import compile_model
from ringlet.nn.config import ReluConfig
from ringlet.nn.secure import CompiledModel
from ringlet.protocols.compare import ReluSpec, input_bits
from ringlet.search.simulator import Simulator, fused_keep
from ringlet.train.checkpoint import save_checkpoint
from ringlet.train.trainer import TrainConfig, fit


class ApproxReLU(nn.Module):
    """ReLU whose decision is the reduced-ring rule on random shares (training only)."""

    def __init__(self, k: int, m: int, shift: int, frac: int = 16, parties: int = 2, seed: int = 0):
        super().__init__()
        self.k, self.m, self.shift, self.frac, self.parties = k, m, shift, frac, parties
        self.gen = torch.Generator().manual_seed(seed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (self.k, self.m) == (64, 0):
            return torch.relu(x)
        if self.k == self.m:
            return x
        with torch.no_grad():
            k, m = input_bits(ReluSpec(self.k, self.m), self.shift)
            if m > 31:
                raise ValueError(f"finetuning supports m + shift <= 31, got {m}")
            lows = [torch.randint(0, 2 ** 31, x.shape, generator=self.gen, dtype=torch.int32)
                    for _ in range(self.parties - 1)]
            keep = fused_keep(x.detach().float(), lows, self.frac + self.shift, k, m).to(x.dtype)
        return x * keep


def _swap(model: nn.Module, replacements: dict[str, nn.Module]) -> dict[str, nn.Module]:
    """Replace submodules by dotted path; returns the originals."""
    originals = {}
    for path, new in replacements.items():
        parent_path, _, attr = path.rpartition(".")
        parent = model.get_submodule(parent_path) if parent_path else model
        originals[path] = getattr(parent, attr)
        setattr(parent, attr, new)
    return originals


def finetune(model_path: str, relu_config: str, epochs: int, out: str, *, lr: float = 1e-3,
             batch: int = 128, dataset: str | None = None, parties: int = 2, data_dir=None,
             progress: bool = True, seed: int = 0, train_samples: int | None = None,
             test_samples: int | None = None, command: str = "") -> dict:
    from ringlet.train.api import resolve_model
    net, meta = resolve_model(model_path)
    dataset = dataset or meta.get("dataset")
    if dataset is None:
        raise ValueError("give --dataset (the checkpoint names none)")
    train = load_dataset(dataset, "train", data_dir)
    if train_samples:
        train = train.subset(torch.arange(min(train_samples, len(train))))
    test = load_dataset(dataset, "test", data_dir)
    if test_samples:
        test = test.subset(torch.arange(min(test_samples, len(test))))
    graph = compile_model(net, train.input_shape)
    bits = ReluConfig.load(relu_config).resolve(graph.relu_names, relu_config)
    modules = dict(net.named_modules())
    functional = [lbl for lbl in bits if lbl not in modules or not isinstance(modules[lbl], nn.ReLU)]
    if functional:
        raise ValueError(f"finetuning swaps ReLU modules; {functional[:3]} are functional ReLUs")
    cm = CompiledModel(graph, bits)
    f = cm.fixed.frac_bits
    shifts = {n.label: cm.fracs[n.inputs[0]] - f for n in graph.relus}

    def simulated_test_accuracy(model) -> float:
        g = compile_model(model, train.input_shape)
        tx, ty = test.tensors()
        return Simulator(CompiledModel(g, bits), tx, ty, parties, cache_shares=False,
                         batch=1000).accuracy(bits)

    before = simulated_test_accuracy(net)
    approx = {lbl: ApproxReLU(k, m, shifts[lbl], f, parties, seed + i)
              for i, (lbl, (k, m)) in enumerate(bits.items())}
    originals = _swap(net, approx)
    cfg = TrainConfig(epochs=epochs, batch=batch, lr=lr, nesterov=True, weight_decay=5e-4,
                      warmup_epochs=min(1.0, epochs / 10), seed=seed)
    t0 = time.time()
    try:
        fit(net, train, None, cfg, progress=progress)
    finally:
        _swap(net, originals)
    net.eval()
    after = simulated_test_accuracy(net)
    from ringlet.train.trainer import evaluate
    plain = evaluate(net, test)
    record = {**{k: v for k, v in meta.items() if k in ("model", "dataset", "input_shape",
                                                       "num_classes", "normalization")},
              "accuracy": after, "accuracy_exact_relu": plain, "relu_config": str(relu_config),
              "base_checkpoint": meta.get("checkpoint"), "finetune_epochs": epochs,
              "finetune_lr": lr, "finetune_seconds": round(time.time() - t0, 1), "command": command}
    path = save_checkpoint(Path(out), net, record)
    return {"checkpoint": str(path), "accuracy_before": before, "accuracy_after": after,
            "accuracy_exact_relu_after": plain, "epochs": epochs,
            "seconds": round(time.time() - t0, 1)}
