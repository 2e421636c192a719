"""PILLAR training: keep polynomial-layer inputs inside [−r, r] (Diaa et al.).

Loss = cross-entropy + c · Σ_layers Σ_elements (x / r)^p per sample, p even. The exponent warms up
4 → 6 → 8 → 10 over the first epochs (one step per epoch), so that far-out inputs are pulled in before
the penalty becomes flat inside the range. Inputs are clipped to ±r in training only (PolyAct). The
out-of-range fraction and the largest |x| of every layer are recorded per epoch on the training inputs
(before clipping), and on the test split at the end (``measure``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ringlet.poly.layers import PolyAct

SCHEDULE = (4, 6, 8, 10)


def penalty(x: torch.Tensor, r: float, p: int) -> torch.Tensor:
    """Σ (x / r)^p over all elements, divided by the batch size."""
    return ((x / r) ** p).sum() / x.shape[0]


@dataclass
class Pillar:
    """The regulariser and its per-epoch out-of-range record for one model's PolyAct layers."""

    model: nn.Module
    coefficient: float = 5e-5
    schedule: tuple = SCHEDULE
    history: list = field(default_factory=list)

    def layers(self) -> dict[str, PolyAct]:
        return {n: m for n, m in self.model.named_modules() if isinstance(m, PolyAct)}

    def exponent(self, epoch: int) -> int:
        return self.schedule[min(epoch, len(self.schedule) - 1)]

    def loss(self, model: nn.Module, epoch: int) -> torch.Tensor:
        """The penalty for the last forward pass (pass as ``extra_loss`` to the trainer)."""
        p = self.exponent(epoch)
        total = torch.zeros(())
        for layer in self.layers().values():
            if layer.last_input is not None:
                total = total + penalty(layer.last_input, layer.range, p)
                layer.last_input = None
        return self.coefficient * total

    def end_epoch(self, epoch: int, record: dict) -> None:
        """Collect and reset each layer's statistics (call after every epoch)."""
        stats = {name: layer.reset_stats() for name, layer in self.layers().items()}
        row = {"epoch": epoch + 1, "exponent": self.exponent(epoch), "layers": {
            name: {"out_of_range_fraction": s["out_of_range"] / max(1, s["count"]),
                   "max_abs": s["max_abs"]} for name, s in stats.items()}}
        row["out_of_range_fraction"] = (sum(s["out_of_range"] for s in stats.values()) /
                                        max(1, sum(s["count"] for s in stats.values())))
        self.history.append(row)
        record["out_of_range_fraction"] = row["out_of_range_fraction"]
        record["max_abs_poly_input"] = max((s["max_abs"] for s in stats.values()), default=0.0)

    def measure(self, data, samples: int | None = None) -> dict:
        """Out-of-range fraction and max |x| per layer on a dataset (eval mode, no clipping)."""
        for layer in self.layers().values():
            layer.reset_stats()
            layer.track_eval = True
        x, _ = data.tensors(samples)
        self.model.eval()
        try:
            with torch.no_grad():
                for start in range(0, x.shape[0], 512):
                    self.model(x[start:start + 512])
        finally:
            for layer in self.layers().values():
                layer.track_eval = False
        stats = {name: layer.reset_stats() for name, layer in self.layers().items()}
        count = max(1, sum(s["count"] for s in stats.values()))
        return {"out_of_range_fraction": sum(s["out_of_range"] for s in stats.values()) / count,
                "layers": {n: {"out_of_range_fraction": s["out_of_range"] / max(1, s["count"]),
                               "max_abs": s["max_abs"]} for n, s in stats.items()}}
