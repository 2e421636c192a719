"""The eco ring: the smallest ring Z_2^ℓ and fixed point f in which nothing overflows.

HummingBird's observation — most of a share's 64 bits carry nothing — holds for the whole ring, not
only for the ReLU's comparison. Two choices, both from the validation inputs the eco search uses:

1. **f**, the fractional bits. ``keep`` (the default) keeps the model's own f: then the ring's
   width changes no arithmetic result at all (every value is the same modulo 2^ℓ as modulo 2^64,
   and none overflows), so accuracy is that of the 64-bit ring by construction. ``search`` takes
   the smallest f (from the model's own downwards) whose fixed-point emulation
   (:class:`FixedPointEmulation`: inputs and weights rounded to f bits, biases to 2f, every
   activation's output floored to f bits, as the fused select truncates) predicts every validation
   input as the model's own f does, plus ``frac_margin`` bits (default 1). Fewer fractional bits
   mean a smaller ring, at the price of a quantisation that validation data can only sample.
2. **ℓ**, the ring: every value must stay below 2^(ℓ−2) in magnitude (the fused select and the
   dealer's truncation add 2^(ℓ−2); see :mod:`ringlet.protocols.convert`). With P the largest
   |value| of a node over the validation inputs and F its fractional bits (f, or 2f after a conv
   before its truncation), ℓ ≥ log2(P) + F + 2 + ``margin`` for every node, where the margin
   (default 3 bits: inputs whose activations are 8× larger than any validation input's) is the
   safety the user states. ℓ is also at least what the model's own headroom check needs
   (:func:`ringlet.compiler.ranges.check_headroom`: 4 bits at the input range's bound), 32 at
   least, and what every node's protocol needs (``Op.min_ring_bits``: LayerNorm and softmax run in
   the 64-bit ring only, so a transformer's eco ring is 64 bits whatever its values need).

A run in a ring the model's headroom does not allow is refused when it is compiled (a clear error
naming the node), never a wrong answer.
"""

from __future__ import annotations

import math

import torch

from ringlet.compiler.interpret import FracPlan, PlainInterpreter
from ringlet.compiler.ops import registry
from ringlet.compiler.ranges import InputRangeError, calibrate
from ringlet.ring import MIN_RING_BITS, FixedPoint

DEFAULT_MARGIN_BITS = 3
PROTOCOL_BITS = 2  # |y| < 2^(ℓ−2): the offset of the fused select and of the dealer's truncation


class FixedPointEmulation(PlainInterpreter):
    """The graph in float64 with the secure run's quantisation at f fractional bits."""

    def __init__(self, graph, frac_bits: int):
        super().__init__(graph, torch.float64)
        self.f = frac_bits

    def _grid(self, x: torch.Tensor, bits: int, floor: bool = False) -> torch.Tensor:
        scaled = x * (2.0 ** bits)
        return (torch.floor(scaled) if floor else torch.round(scaled)) / (2.0 ** bits)

    def start(self, x):
        return self._grid(x.to(torch.float64), self.f)

    def params(self, node) -> dict:
        p = self._params.get(node.name)
        if p is None:
            p = dict(super().params(node))
            if node.kind in ("conv", "linear"):
                p["weight"] = self._grid(p["weight"], self.f)
                if p.get("bias") is not None:
                    p["bias"] = self._grid(p["bias"], 2 * self.f)
            self._params[node.name] = p
        return p

    def run_node(self, node, ins):
        out = super().run_node(node, ins)
        if self.ops[node.kind].bits is not None:  # an activation's select truncates to f bits
            out = self._grid(out, self.f, floor=True)
        return out


def emulated_accuracy(graph, x: torch.Tensor, y: torch.Tensor, frac_bits: int,
                      batch: int = 500) -> tuple[float, torch.Tensor]:
    """(accuracy, predictions) of the fixed-point emulation at ``frac_bits``."""
    preds = []
    with torch.no_grad():
        for i in range(0, x.shape[0], batch):
            out = FixedPointEmulation(graph, frac_bits).run(x[i:i + batch])
            preds.append(out.argmax(1))
    pred = torch.cat(preds)
    return float((pred == y).double().mean()), pred


def needed_ring_bits(graph, peaks: dict, frac_bits: int, input_bound: float,
                     margin: int = DEFAULT_MARGIN_BITS) -> tuple[int, dict]:
    """The smallest ℓ (unclamped) that holds every node's peak with the margin, and per node the
    bits it needs: log2(peak) + frac + 2 + margin."""
    fracs = FracPlan(graph, frac_bits).plan()
    rows = {}
    need = math.log2(max(input_bound, 2.0 ** -frac_bits)) + frac_bits + PROTOCOL_BITS + margin
    for node in graph.nodes:
        peak = peaks.get(node.name, 0.0)
        if peak > 0:
            bits = math.log2(peak) + fracs[node.name] + PROTOCOL_BITS + margin
            rows[node.label] = round(bits, 2)
            need = max(need, bits)
    return math.ceil(need), rows


FRAC_CHOICES = ("keep", "search")


def choose_ring(pm, vx: torch.Tensor, vy: torch.Tensor, margin: int = DEFAULT_MARGIN_BITS,
                frac: str = "keep", frac_margin: int = 1,
                min_frac: int = 6) -> tuple[FixedPoint, dict]:
    """The eco ring of a PrivateModel ``pm`` on validation data: (FixedPoint(f, ℓ), report)."""
    if frac not in FRAC_CHOICES:
        raise ValueError(f"eco-ring fractional bits: {frac!r}; use one of {', '.join(FRAC_CHOICES)}")
    if margin < 0 or frac_margin < 0:
        raise ValueError(f"eco-ring margins must be non-negative, got {margin} and {frac_margin}")
    graph, own_f = pm.graph, pm.fixed.frac_bits
    f, tried = own_f, {}
    if frac == "search":
        ref_acc, ref_pred = emulated_accuracy(graph, vx, vy, own_f)
        tried[own_f] = {"accuracy": ref_acc, "agreement": 1.0}
        for cand in range(own_f - 1, min_frac - 1, -1):
            acc, pred = emulated_accuracy(graph, vx, vy, cand)
            agree = float((pred == ref_pred).double().mean())
            tried[cand] = {"accuracy": acc, "agreement": agree}
            if agree < 1.0:
                break
            f = cand
        f = min(own_f, f + frac_margin)
    peaks = calibrate(graph, vx)["peaks"]
    ell, per_node = needed_ring_bits(graph, peaks, f, pm.input_range.bound, margin)
    ops = registry()
    protocols = {n.label: ops[n.kind].min_ring_bits for n in graph.nodes if ops[n.kind].min_ring_bits}
    ell = max(ell, MIN_RING_BITS, 2 * f + 2, *protocols.values())
    while True:
        if ell > 64:
            raise ValueError(f"no ring of at most 64 bits holds this model at {f} fractional bits "
                             f"with a {margin}-bit margin")
        try:
            pm.headroom_at(FixedPoint(f, ell))
            break
        except InputRangeError:
            ell += 1
    report = {"ring_bits": ell, "frac_bits": f, "margin_bits": margin, "frac": frac,
              "frac_margin_bits": frac_margin if frac == "search" else None,
              "reference_frac_bits": own_f, "emulated_validation": tried,
              "needed_bits_per_layer": per_node, "validation_samples": int(vx.shape[0]),
              "ring_bits_needed_by_protocols": protocols}
    return FixedPoint(f, ell), report
