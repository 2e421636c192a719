"""LayerNorm and RMSNorm on shares (two servers): (x − μ)/√(var + ε) over the last axis, then the
public affine map (the caller's).

1. μ = Σx/D (local: a public factor 1/D and a local truncation), d = x − μ.
2. S = Σ_j d_j² over the last axis: one square (1 round, 64 bits per element), each
   square truncated to F = 24 fractional bits before the sum, plus the public D·ε.
3–5. r = 1/√(S/D) by its power of 2 (:func:`ringlet.protocols.inverse.inverse_power`): 36
   DReLUs per row at the thresholds D·2^i, i = −18…17, in one sign circuit; a select to
   u' = S/(D·2^i) ∈ [1, 2); g = 1/√u' by a degree-4 polynomial in u' − 1.5 (ESPN: one round; the
   input truncated to its precision; error 1.2e-4 on [1, 2]); a second select, with the same
   decisions, to g·2^(−i/2).
6. y = d·r: one Beaver product (1 round, 128 bits per element), truncated to the input's f bits
   by the dealer's exact truncation (1 round, 64 bits per element: y carries f + 24 bits, where a
   local truncation would fail with probability |y|/2^63 ≈ 2^−20 per element).
The range of var + ε is [2^−18, 2^(23 − log2 D)) (D = 64: up to 2^17; D = 768: 2^13): beyond it the
interval factors overflow — the compiled model's worst-case bound on its input says whether it can.
Error: 3e-4 relative for a variance in [ε, 2^18] (tested), plus the input's own precision
amplified: 2^−f/σ (σ = √(var + ε); f = 16 and σ = 0.01 give 1.5e-2).
Rounds (2 servers, exact gmw decisions): 1 (square) + 7 + 1 (decisions, first select) + 1 (ESPN)
+ 1 (its truncation) + 1 (second select, the same decisions) + 1 (product) + 1 (truncation) = 14;
bits: 256 per element, and per row 36 DReLUs, 2·37 selects, 192 (ESPN) and 64 (its truncation)
(:func:`layer_norm_cost`). RMSNorm skips step 1.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from ringlet.protocols.arith import beaver, poly
from ringlet.protocols.arith.truncation import truncate
from ringlet.protocols.inverse import F, inverse_power, inverse_power_cost, require_two_servers_64
from ringlet.protocols.relu import ReluSpec
from ringlet.session import Session
from ringlet.sharing import ArithmeticShare

LOW, HIGH = -18, 18    # thresholds D·2^i for i in LOW..HIGH−1 (the products stay below 2^62 for i + log2 D ≤ 23)
DEGREE = 4
MEAN_BITS = 20         # the public factor 1/D
POLY_FRAC = 11         # the polynomial's input precision: 4·11 + 16 = 60 bits of scale


@functools.cache
def _inv_sqrt_coeffs() -> tuple[float, ...]:
    """1/√(t + 1.5) for t in [−0.5, 0.5] by a degree-4 near-minimax fit (2^−16 coefficients)."""
    return tuple(poly.fit_interval(lambda t: 1.0 / np.sqrt(t + 1.5), DEGREE, -0.5, 0.5, 16))


def layer_norm(sess: Session, x: ArithmeticShare, eps: float, center: bool = True,
               spec: ReluSpec = ReluSpec()) -> ArithmeticShare:
    """(x − μ)/√(var + ε) over the last axis (``center=False``: x/√(mean(x²) + ε), RMSNorm), at
    x.frac bits; see the module docstring for the steps, costs and error."""
    require_two_servers_64(sess, "layer_norm")
    f = x.frac
    d_size = x.shape[-1]
    data = x.data
    if center:  # values stay far below 2^63, so the local truncations all but never fail
        inv = int(round(2 ** MEAN_BITS / d_size))
        mean = ArithmeticShare(data.sum(-1, keepdim=True) * inv, x.party, f + MEAN_BITS)
        mean = truncate(sess, mean, MEAN_BITS)
        data = data - mean.data
    d = ArithmeticShare(data.contiguous(), x.party, f)
    sq = beaver.square(sess, d, rescale=False)  # 2f bits
    sq = truncate(sess, sq, 2 * f - F) if 2 * f > F else sq.mul_public(1 << (F - 2 * f), frac=F - 2 * f)
    s = ArithmeticShare(sq.data.sum(-1), x.party, F)
    flat = s.data.reshape(-1) + (int(round(d_size * eps * 2 ** F)) if sess.rank == 0 else 0)

    def inv_sqrt(u: ArithmeticShare) -> ArithmeticShare:
        t = u.data - (int(1.5 * 2 ** F) if sess.rank == 0 else 0)
        return poly.evaluate(sess, ArithmeticShare(t, x.party, F), list(_inv_sqrt_coeffs()), F, "espn",
                             frac=POLY_FRAC, r=0.5)

    # 1/√(S/D) = (S/(D·2^i))^(−1/2)·2^(−i/2)
    r = inverse_power(sess, flat, d_size, LOW, HIGH, 0.5, inv_sqrt, x.party, spec)
    r_share = ArithmeticShare(r.view(*s.shape, 1).expand(d.shape).contiguous(), x.party, F)
    y = beaver.mul(sess, d, r_share, rescale=False)  # f + F bits: the dealer's exact truncation
    return truncate(sess, y, F, "dealer")          # (a local one fails with p ≈ |y|/2^63 ≈ 2^−20)


def variance_range(d_size: int) -> tuple[float, float]:
    """[lowest, highest) var + ε that :func:`layer_norm` resolves for rows of ``d_size`` values."""
    return 2.0 ** LOW, 2.0 ** min(HIGH, 23 - math.log2(d_size))


def layer_norm_cost(rows: int, elements: int, ring_bits: int = 64) -> dict:
    """Bits sent per server (2 servers) and rounds of :func:`layer_norm` for ``rows`` rows of
    ``elements`` values in total (exact 64-bit decisions, local truncations; exact when rows is a
    multiple of 64, the bit planes' word)."""
    ell = ring_bits
    scaling = inverse_power_cost(rows, HIGH - LOW, ell)
    # ESPN (its powers) and its exact truncation per row; a square, a Beaver product and the
    # final dealer truncation per element
    bits = scaling["bits"] + rows * (64 * (DEGREE - 1) + ell) + (ell + 2 * ell + ell) * elements
    rounds = 1 + scaling["rounds"] + 1 + 1 + 1 + 1
    return {"bits": bits, "rounds": rounds}


__all__ = ["layer_norm", "layer_norm_cost", "F", "LOW", "HIGH"]
