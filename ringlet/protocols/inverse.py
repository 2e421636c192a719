"""(s/base)^(−p) for a positive per-row share s (p = 1/2: LayerNorm's 1/√, p = 1: softmax's 1/Σ) by its
power of 2 (two servers, exact 64-bit decisions):

1. One DReLU per threshold base·2^i (i = low … high − 1), all in one sign circuit; then ONE
   select round gives u = s/(base·2^i) ∈ [1, 2) (each interval's public factor applied locally,
   the select truncating; below the first threshold and above the last the nearest interval's
   factor, so u then leaves [1, 2): the caller's stated range).
2. g ≈ u^(−p) on [1, 2] by the caller's ``approx`` (a polynomial, maybe a Newton step).
3. A second select round with the SAME decisions: g·2^(−i·p), at F fractional bits.

Cost per row (2 servers): (high − low) DReLUs (c bits each), 2·(high − low + 1) selects of
ℓ + 1 bits, plus ``approx``'s; rounds: ρ (the sign circuit) + 1 (first select) + approx's + 1.
The factors are Q-bit mantissas (relative error 2^−(Q+1)).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ringlet.protocols import piecewise
from ringlet.protocols.base import input_bits
from ringlet.protocols.convert import local_bits
from ringlet.protocols.relu import ReluSpec, relu_cost
from ringlet.session import Session
from ringlet.sharing import ArithmeticShare

F = 24  # fractional bits of s, u and the result
Q = 14  # bits of the public interval factors' mantissas


def require_two_servers_64(sess: Session, what: str) -> None:
    """The setting of the protocols built on :func:`inverse_power`: two servers, Z_2^64."""
    sess.require_server(what)
    if sess.num_parties != 2:
        raise ValueError(f"{what} runs on two servers (its selects are two-server protocols)")
    if sess.ring.bits != 64:
        raise ValueError(f"{what} runs in the 64-bit ring only (use --ring-bits 64)")


def factor(scale: float) -> tuple[int, int]:
    """``scale`` as (mantissa of at least Q bits, shift): scale ≈ mantissa / 2^shift."""
    shift = Q + max(0, -math.floor(math.log2(scale)))
    return int(round(scale * 2 ** shift)), shift


def inverse_power(sess: Session, s: torch.Tensor, base: float, low: int, high: int, power: float,
                  approx: Callable[[ArithmeticShare], ArithmeticShare], party: int,
                  spec: ReluSpec = ReluSpec()) -> torch.Tensor:
    """This server's share of (s/base)^(−power) at F bits, for ``s`` (flat, F bits) in
    [base·2^low, base·2^high); ``approx(u)`` returns u^(−power) at F bits for u ∈ [1, 2]."""
    n = s.numel()
    k, m = input_bits(spec, 0, sess.ring.bits)
    thresholds = [int(round(base * 2.0 ** i * 2 ** F)) if sess.rank == 0 else 0 for i in range(low, high)]
    t2 = local_bits(torch.cat([s - t for t in thresholds]), k, m)
    exps = [low] + list(range(low, high - 1)) + [high - 1]  # lo, each interval, hi

    def select(values: list[tuple[torch.Tensor, int]], decided: dict) -> torch.Tensor:
        terms: list[tuple[int | str, torch.Tensor, int]] = [(i, v, sh) for i, (v, sh) in enumerate(values[1:-1])]
        terms += [("lo", *values[0]), ("hi", *values[-1])]
        return piecewise.decide_and_select(sess, t2, k - m, spec.sign, terms, n, high - low, decided)

    decided: dict = {}
    scaled = []
    for i in exps:
        mantissa, shift = factor(1.0 / (base * 2.0 ** i))
        scaled.append((s * mantissa, shift))
    u = select(scaled, decided)
    g = approx(ArithmeticShare(u, party, F)).data
    outs = []
    for i in exps:
        mantissa, shift = factor(2.0 ** (-i * power))
        outs.append((g * mantissa, shift))
    return select(outs, decided)


def inverse_power_cost(rows: int, breaks: int, ring_bits: int = 64) -> dict:
    """Bits per server and rounds of :func:`inverse_power`'s decisions and two selects for
    ``rows`` rows and ``breaks`` thresholds (exact when rows is a multiple of 64), ``approx``'s
    not included."""
    circuit = relu_cost(ReluSpec(), 2, ring_bits)
    bits = rows * (breaks * circuit["drelu_bits"] + 2 * (breaks + 1) * (ring_bits + 1))
    return {"bits": bits, "rounds": circuit["drelu_rounds"] + 2}


__all__ = ["inverse_power", "inverse_power_cost", "factor", "require_two_servers_64", "F", "Q"]
