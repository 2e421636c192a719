"""The input range a compiled model is valid for, and the headroom every layer keeps in the ring.

A fixed-point value v with g fractional bits is the ring element round(v·2^g); the secure run is
exact while every such element stays below 2^62 in magnitude (the bound of the exact truncations
and selects). A model therefore has an input range: the client refuses any input element beyond it
(:func:`check_input`) instead of letting the servers compute a wrapped, wrong answer.

Where the bound comes from (``method``), most trusted first:

- ``user``: given at compile time (``input_bound=``);
- ``pixels``: the model's normalisation of pixels in [0, 1] (any image the model can be given);
- ``calibration``: twice the largest |x| of the calibration (example) inputs.

The headroom at that bound is measured per node: from the calibration inputs' largest activations
scaled linearly to the bound (``predicted``), and by worst-case propagation through the layers'
weight norms (``worst_case``: a proof of no overflow when it fits, usually far too pessimistic for
deep networks). A model whose predicted headroom falls below ``MIN_HEADROOM`` bits anywhere is
refused at compile time with the node named.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ringlet.compiler.graph import LoweredGraph
from ringlet.compiler.interpret import FracPlan, Magnitudes, PlainInterpreter

RING_LIMIT_BITS = 62
MIN_HEADROOM = 4  # bits kept free at the bound, for inputs the calibration did not see


class InputRangeError(ValueError):
    """An input element is outside the range the model is valid for."""


def _bits(value: float, frac: int, limit: int = RING_LIMIT_BITS) -> float:
    """Headroom in bits of a magnitude ``value`` at ``frac`` fractional bits below 2^limit
    (2^(ℓ−2): the fused select and the dealer's truncation need |y| < 2^(ℓ−2))."""
    if value <= 0:
        return float(limit)
    return limit - (math.log2(value) + frac)


class _Peaks(PlainInterpreter):
    """The plaintext run, recording every node's largest |value| (no value is kept longer)."""

    def __init__(self, graph: LoweredGraph):
        super().__init__(graph, torch.float32)  # a peak to 1e-6 relative: far inside any margin,
        self.peaks: dict[str, float] = {}       # and ImageNet-size convs 10x faster than float64

    def run_node(self, node, ins):
        out = super().run_node(node, ins)
        peak = float(out.abs().max()) if out.numel() else 0.0
        self.peaks[node.name] = max(self.peaks.get(node.name, 0.0), peak)
        return out


def calibrate(graph: LoweredGraph, x: torch.Tensor, batch: int = 32) -> dict:
    """Largest |value| of every node over the calibration inputs ``x`` (plaintext, float32)."""
    interp = _Peaks(graph)
    with torch.no_grad():
        for start in range(0, x.shape[0], batch):
            interp.run(x[start:start + batch])
    peaks = {graph.nodes[0].name: float(x.abs().max()), **interp.peaks}
    return {"input_max": float(x.abs().max()), "samples": int(x.shape[0]), "peaks": peaks}


def generated_inputs(shape, normalization=None, bound: float | None = None, n: int = 64):
    """Public calibration inputs when none are given: uniform pixels in [0, 1] normalised with the
    model's normalisation, else uniform on [−bound, bound]; (inputs, where they came from)."""
    gen = torch.Generator().manual_seed(0)  # not secret: public calibration inputs
    u = torch.rand(n, *shape, generator=gen, dtype=torch.float64)  # not secret: the same inputs
    if normalization is not None:
        mean, std = (torch.tensor(v, dtype=torch.float64).view(1, -1, *([1] * (len(shape) - 1)))
                     for v in normalization)
        return ((u - mean) / std).float(), "generated uniform pixels"
    if bound is None:
        raise ValueError("no input range: give calibration inputs, a normalisation or input_bound")
    return ((2 * u - 1) * bound).float(), "generated uniform inputs on ±input_bound"


def pixel_bound(normalization) -> float:
    """max |(p − mean)/std| over pixels p in [0, 1] and every channel."""
    mean, std = normalization
    return max(max(abs((0.0 - m) / s), abs((1.0 - m) / s)) for m, s in zip(mean, std))


@dataclass(frozen=True)
class InputRange:
    """The accepted |input| and how it was found."""

    bound: float
    method: str  # "user", "pixels" or "calibration"

    def to_dict(self) -> dict:
        return {"bound": self.bound, "method": self.method}

    @classmethod
    def from_dict(cls, d: dict) -> InputRange:
        return cls(float(d["bound"]), str(d["method"]))


def choose_bound(calibration: dict | None, normalization=None, bound: float | None = None) -> InputRange:
    """The input range by the rules in the module docstring."""
    if bound is not None:
        if not bound > 0 or not math.isfinite(bound):
            raise ValueError(f"input_bound must be a positive number, got {bound}")
        return InputRange(float(bound), "user")
    if normalization is not None:
        return InputRange(pixel_bound(normalization), "pixels")
    if calibration is None or calibration["input_max"] <= 0:
        raise ValueError("no input range: give calibration inputs, a normalisation or input_bound")
    return InputRange(2.0 * calibration["input_max"], "calibration")


def headroom(graph: LoweredGraph, frac_bits: int, rng: InputRange, calibration: dict | None,
             ring_bits: int = 64) -> dict:
    """Per-node headroom (bits below 2^(ℓ−2)) at the range's bound: predicted from the calibration
    and worst-case; with the smallest of each and whether the worst case proves no overflow."""
    fracs = FracPlan(graph, frac_bits).plan()
    worst = Magnitudes(graph).bounds(rng.bound)
    limit = ring_bits - 2
    rows = {}
    for node in graph.nodes:
        row = {"frac": fracs[node.name],
               "worst_case": round(_bits(worst[node.name], fracs[node.name], limit), 2)}
        if calibration is not None and calibration["input_max"] > 0:
            scale = rng.bound / calibration["input_max"]
            peak = calibration["peaks"].get(node.name, 0.0) * max(scale, 1.0)
            row["predicted"] = round(_bits(peak, fracs[node.name], limit), 2)
        rows[node.name] = row
    predicted = [r["predicted"] for r in rows.values() if "predicted" in r]
    worst_min = min(r["worst_case"] for r in rows.values())
    return {"input_bound": rng.bound, "method": rng.method, "frac_bits": frac_bits,
            "ring_bits": ring_bits,
            "min_predicted_bits": min(predicted) if predicted else None,
            "min_worst_case_bits": worst_min, "guaranteed": worst_min >= 1,
            "per_node": rows}


def check_headroom(report: dict, graph: LoweredGraph) -> None:
    """Refuse a model that leaves fewer than ``MIN_HEADROOM`` bits anywhere (predicted, or worst
    case when nothing predicts), naming the node."""
    key = "predicted" if report["min_predicted_bits"] is not None else "worst_case"
    if key == "worst_case" and report["guaranteed"]:
        return
    for node in graph.nodes:
        bits = report["per_node"][node.name][key]
        if bits < MIN_HEADROOM:
            raise InputRangeError(
                f"node {node.label!r} ({node.kind}) keeps {bits:.1f} bits of headroom below "
                f"2^{report.get('ring_bits', 64) - 2} at {report['frac_bits']} fractional bits in a "
                f"{report.get('ring_bits', 64)}-bit ring for inputs up to ±{report['input_bound']:g} "
                f"({report['method']}, {key}); at least {MIN_HEADROOM} are needed: use fewer "
                f"fractional bits (--frac-bits), a wider ring (--ring-bits) or a smaller input range")


BOUND_TOLERANCE = 1e-6  # relative: float32 rounding of inputs at the bound


def check_input(x: torch.Tensor, rng: InputRange, what: str = "input") -> None:
    """Raise :class:`InputRangeError` naming the first element outside ±bound (or not finite)."""
    if x.is_complex():
        raise InputRangeError(f"{what}: {x.dtype} values; the model takes real numbers (a complex "
                              f"value would lose its imaginary part)")
    # float32 inputs normalised with float32 arithmetic land up to a few ulps beyond a bound
    # computed in float64 (a white pixel is the bound itself): that much is accepted
    limit = rng.bound * (1.0 + BOUND_TOLERANCE)
    bad = ~torch.isfinite(x) | (x.double().abs() > limit)
    if bool(bad.any()):
        idx = tuple(bad.nonzero()[0].tolist())
        raise InputRangeError(
            f"{what} element {idx} = {float(x[idx]):.6g} is outside the model's input range "
            f"±{rng.bound:.6g} ({rng.method}); {int(bad.sum())} element(s) affected. The private "
            f"result would be wrong: the fixed-point values would wrap in the ring. To accept "
            f"larger inputs, compile with a larger bound (--input-bound B, or "
            f"ringlet.compile(..., input_bound=B))")
