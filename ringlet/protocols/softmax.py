"""Softmax over the last axis on shares (two servers), with an optional public mask (padding).

1. m = the row's max by a tournament: ⌈log2 D⌉ rounds of max(a, b) = b + ReLU(a − b), D − 1
   comparisons per row, each a ReLU on the spec's bits [k:m] (HummingBird's reduced ring applies;
   a mismatch makes m smaller than the max by at most the mismatch set's width, which z ≤ 0
   tolerates up to the clip's slack). Masked positions repeat the row's first kept element, which
   never changes a max, and are zeroed after the exp.
2. z = x − m ≤ 0 (local); z' = max(z, −T) = ReLU(z + T) − T, T = 16 (one ReLU per element on the
   same bits: where it errs, z + T is near 0, and exp(−16) = 1.1e-7).
3. e = exp(z') = p(z'/16)^16, z'/16 ∈ [−1, 0] free (the same shares read with 4 more fractional
   bits, then truncated to f: z resolved to 2^(4−f), a relative error up to 2^(3−f) in e): p a
   degree-5 fit of exp on [−1, 0] (relative error 1.1e-6) by Horner at the session's f
   bits (4 Beaver products, 4 rounds), then 4 squarings (square triples: one opening each, 4
   rounds).
4. s = Σ e over the row (local), read at F = 24 bits (s ≥ 1: the max's own term).
5. r = 1/s by its power of 2 (:func:`ringlet.protocols.inverse.inverse_power`, thresholds 2^i for
   i = 0 … ⌈log2 D⌉): ⌈log2 D⌉ + 1 DReLUs per row, two selects, 1/u on [1, 2] by a degree-5
   Horner fit (relative error 7.3e-5; 4 rounds).
6. y = e·r: one Beaver product, truncated by the dealer's exact truncation (e·r carries f + 24
   bits, where a local truncation would fail with probability |y|/2^63 ≈ 2^−23 per element).

Error (tested on a dense grid and on edge rows): at most 4e-4 per output for f = 16 (the
squarings amplify p's error and the roundings of e sixteen-fold; the reciprocal adds 1e-4).
Rounds (exact gmw decisions, ρ = 7 the sign circuit's, R = 8 a ReLU's):
⌈log2 D⌉·R (max) + R (clip) + 8 (exp) + ρ + 1 + 4 + 1 (reciprocal) + 2 (product, truncation);
D = 65: 87. Bits per server (:func:`softmax_cost`): per element (D − 1)/D + 1 ReLUs, 4·128 + 4·64
(exp), 128 + 64 (product, truncation); per row ⌈log2 D⌉ + 1 DReLUs, 2·(⌈log2 D⌉ + 2) selects,
4·128 (reciprocal).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from ringlet.protocols.arith import beaver, poly
from ringlet.protocols.arith.truncation import truncate
from ringlet.protocols.inverse import F, inverse_power, inverse_power_cost, require_two_servers_64
from ringlet.protocols.relu import ReluSpec, relu, relu_cost, secure_tournament, tournament
from ringlet.session import Session
from ringlet.sharing import ArithmeticShare

T = 16            # the clip: exp(z) for z < −T is taken as exp(−T) = 1.1e-7
SQUARINGS = 4     # exp(z) = exp(z/2^4)^(2^4): z/16 ∈ [−1, 0]
EXP_DEGREE = 5
RECIP_DEGREE = 5


@functools.cache
def _exp_coeffs() -> tuple[float, ...]:
    return tuple(poly.fit_interval(np.exp, EXP_DEGREE, -1.0, 0.0, 24))


@functools.cache
def _recip_coeffs() -> tuple[float, ...]:
    """1/(t + 1.5) on t ∈ [−0.5, 0.5]."""
    return tuple(poly.fit_interval(lambda t: 1.0 / (t + 1.5), RECIP_DEGREE, -0.5, 0.5, 24))


def row_breaks(d_size: int) -> int:
    """Thresholds 2^0 … 2^(breaks − 1) of the reciprocal for rows of ``d_size`` values."""
    return math.ceil(math.log2(d_size)) + 1


def prepare_mask(mask: torch.Tensor | None, shape: tuple) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(keep as 0/1 int64 shaped like x, the gather index that replaces each masked position by
    its row's first kept one) for a public bool mask (True = attend) broadcastable to ``shape``."""
    if mask is None:
        return None
    keep = torch.broadcast_to(torch.as_tensor(mask, dtype=torch.bool), shape)
    if not bool(keep.any(-1).all()):
        raise ValueError("softmax mask: a row with every position masked has no softmax")
    pos = torch.arange(shape[-1]).expand(shape)
    first = torch.where(keep, pos, shape[-1]).amin(-1, keepdim=True)
    index = torch.where(keep, pos, first.expand(shape))
    return keep.to(torch.int64), index


def softmax(sess: Session, x: ArithmeticShare, spec: ReluSpec = ReluSpec(),
            mask: torch.Tensor | None = None) -> ArithmeticShare:
    """softmax(x) over the last axis at x.frac bits (the session's f); positions where the public
    ``mask`` is False get exactly 0. See the module docstring for the steps, costs and error."""
    require_two_servers_64(sess, "softmax")
    f = x.frac
    if f != sess.fixed.frac_bits:
        raise ValueError(f"softmax takes x at the session's {sess.fixed.frac_bits} fractional bits, not {f}")
    if f > F:
        raise ValueError(f"softmax runs at up to {F} fractional bits (its reciprocal's precision); "
                         f"this session has {f}")
    shape, d_size = tuple(x.shape), x.shape[-1]
    data = x.data
    prepared = prepare_mask(mask, shape)
    if prepared is not None:
        data = torch.gather(data, -1, prepared[1])
    z = data - secure_tournament(sess, data.movedim(-1, 0), x.party, f, spec).unsqueeze(-1)  # all rows at once
    shift = (T << f) if sess.rank == 0 else 0
    zc = relu(sess, ArithmeticShare((z + shift).contiguous(), x.party, f), spec).data - shift
    e = poly.evaluate(sess, ArithmeticShare(zc, x.party, f + SQUARINGS), list(_exp_coeffs()), f, "horner")
    for _ in range(SQUARINGS):
        e = beaver.square(sess, e, tag="poly")
    if prepared is not None:
        e = ArithmeticShare(e.data * prepared[0], x.party, f)
    s = e.data.sum(-1).reshape(-1) << (F - f)

    def recip(u: ArithmeticShare) -> ArithmeticShare:
        t = ArithmeticShare(u.data - (int(1.5 * 2 ** F) if sess.rank == 0 else 0), x.party, F)
        g = poly.evaluate(sess, t, list(_recip_coeffs()), f, "horner")
        return g.mul_public(1 << (F - f), frac=F - f)

    r = inverse_power(sess, s, 1.0, 0, row_breaks(d_size), 1.0, recip, x.party)
    r_share = ArithmeticShare(r.view(*shape[:-1], 1).expand(shape).contiguous(), x.party, F)
    y = beaver.mul(sess, e, r_share, rescale=False)
    return truncate(sess, y, F, "dealer")


def softmax_float(x: torch.Tensor, relu_fn, keep: torch.Tensor | None = None) -> torch.Tensor:
    """What :func:`softmax` computes, in floating point, with ``relu_fn`` for its ReLUs (the
    search's simulated reduced-ring ReLU, or exact): the tournament and the clip by ``relu_fn``,
    exp by the same polynomial and squarings, 1/Σ by the same intervals and polynomial — so a
    wrong max shows as the secure run's error (the fits extrapolated), not hidden by softmax's
    shift invariance. Public arithmetic only (no shares)."""
    prepared = prepare_mask(keep, tuple(x.shape))
    if prepared is not None:
        x = torch.gather(x, -1, prepared[1])
    z = x - tournament(x.movedim(-1, 0), lambda a, b: b + relu_fn(a - b)).unsqueeze(-1)
    u = (relu_fn(z + T) - T) / 2 ** SQUARINGS
    e = sum(c * u ** j for j, c in enumerate(_exp_coeffs())) ** (2 ** SQUARINGS)
    if keep is not None:
        e = e * keep
    total = e.sum(-1, keepdim=True)
    high = row_breaks(x.shape[-1])
    i = torch.floor(torch.log2(total.clamp_min(1e-30))).clamp(0, high - 1)
    t = total / 2 ** i - 1.5
    g = sum(c * t ** j for j, c in enumerate(_recip_coeffs()))
    return e * g / 2 ** i


def softmax_cost(rows: int, d_size: int, spec: ReluSpec = ReluSpec(), ring_bits: int = 64) -> dict:
    """Bits sent per server (2 servers) and rounds of :func:`softmax` on ``rows`` rows of
    ``d_size`` (exact when the ReLU counts and rows are multiples of 64, the bit planes' word)."""
    ell = ring_bits
    levels, comparisons, width = 0, 0, d_size
    while width > 1:
        levels += 1
        comparisons += width // 2
        width = width - width // 2
    rc = relu_cost(spec, 2, ell)
    elements = rows * d_size
    scaling = inverse_power_cost(rows, row_breaks(d_size), ell)
    products = ((EXP_DEGREE - 1 + 1) * 2 + SQUARINGS) * ell * elements + (RECIP_DEGREE - 1) * 2 * ell * rows
    bits = round(rc["relu_bits"] * (rows * comparisons + elements)) + products + ell * elements + scaling["bits"]
    rounds = (levels + 1) * rc["relu_rounds"] + EXP_DEGREE - 1 + SQUARINGS + scaling["rounds"] + RECIP_DEGREE - 1 + 2
    return {"bits": bits, "rounds": rounds}


__all__ = ["softmax", "softmax_cost", "softmax_float", "prepare_mask", "row_breaks", "T"]
