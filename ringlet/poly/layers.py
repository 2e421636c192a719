"""Polynomial activations (ESPN + PILLAR): ReLU replaced by a low-degree polynomial.

``fit_relu`` fits ReLU on [−r, r] by least squares and quantises the coefficients to 2^−q so that the
error stays low after rounding: coefficients are rounded one at a time, highest degree first, and
the remaining ones refitted to absorb each rounding (:func:`ringlet.poly.fit.fit_function` with
ReLU). ``PolyAct`` evaluates the polynomial; while training it clips its input to ±r (PILLAR) and
records the input statistics the penalty needs.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ringlet.poly.fit import fit_function


def fit_relu(degree: int, r: float = 5.0, frac: int = 10) -> dict:
    """Least-squares fit of ReLU on [−r, r], coefficients quantised to 2^−frac (lowest first)."""
    if not 2 <= degree <= 8:
        raise ValueError(f"polynomial degree must be 2..8, got {degree}")
    return fit_function(lambda x: np.maximum(x, 0), degree, r, frac)


def fit_table(degrees=range(2, 9), r: float = 5.0, fracs=(10, 12)) -> list[dict]:
    """The shipped coefficient tables (``models/poly-fits.json``): every degree at each precision."""
    return [fit_relu(d, r, q) for q in fracs for d in degrees]


class PolyAct(nn.Module):
    """Σ_j c_j x^j with fixed coefficients; inputs clipped to ±r while training only. The
    out-of-range statistics count training inputs (and eval inputs when ``track_eval`` is set)."""

    coeffs: torch.Tensor  # a buffer, registered in __init__

    def __init__(self, coeffs, r: float = 5.0):
        super().__init__()
        self.register_buffer("coeffs", torch.tensor([float(c) for c in coeffs], dtype=torch.float64))
        self.range = float(r)
        self.last_input: torch.Tensor | None = None  # for the PILLAR penalty (training only)
        self.stats = {"count": 0, "out_of_range": 0, "max_abs": 0.0}
        self.track_eval = False  # record statistics in eval mode too (PILLAR's test-time measure)

    @property
    def degree(self) -> int:
        return self.coeffs.numel() - 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training or self.track_eval:
            self._record(x)
        if self.training:
            self.last_input = x
            x = x.clamp(-self.range, self.range)
        out = torch.zeros_like(x)
        for c in reversed(self.coeffs.tolist()):  # Horner
            out = out * x + c
        return out

    @torch.no_grad()
    def _record(self, x: torch.Tensor) -> None:
        self.stats["count"] += x.numel()
        self.stats["out_of_range"] += int((x.abs() > self.range).sum())
        self.stats["max_abs"] = max(self.stats["max_abs"], float(x.abs().max()))

    def reset_stats(self) -> dict:
        old, self.stats = self.stats, {"count": 0, "out_of_range": 0, "max_abs": 0.0}
        return old

    def extra_repr(self) -> str:
        return f"degree={self.degree}, range={self.range}"


def convert_to_poly(model: nn.Module, config: dict) -> dict[str, PolyAct]:
    """Replace ReLU modules by :class:`PolyAct` (``{"degree", "range", "frac", "layers": "all" | [names]}``)."""
    fit = fit_relu(int(config.get("degree", 4)), float(config.get("range", 5.0)), int(config.get("frac", 10)))
    coeffs = config.get("coeffs", fit["coeffs"])
    wanted = config.get("layers", "all")
    mods = dict(model.named_modules())
    names = [n for n, m in mods.items() if isinstance(m, nn.ReLU)] if wanted == "all" else list(wanted)
    new = {}
    for name in names:
        if not isinstance(mods.get(name), nn.ReLU):
            raise ValueError(f"poly config: {name!r} is not a ReLU module of the model")
        layer = PolyAct(coeffs, fit["range"])
        parent, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, attr, layer)
        new[name] = layer
    return new
