"""ReLU by a sign circuit over bit planes and a select (GMW-style binary sharing).

ReLU(⌊x / 2^shift⌋) = ⌊x/2^shift⌋ · DReLU(x[k:m]): servers extract their bits [k:m] locally
(HummingBird Eq. 3), a sign family (:mod:`ringlet.protocols.gmw.adders`, or any registered one)
decides the sign, and a select multiplies: ``fused`` (bit injection, the truncation folded in:
ℓ + 1 bits, 1 round after the sign) or ``b2a-mult`` (CrypTen: B2A then a Beaver product, 3ℓ bits,
2 rounds). Costs per server per element for 2 servers (w = k − m ≥ 2, L = ⌈log2(w−1)⌉):

=====================  ===============================  ==================================
adder / select          DReLU                            ReLU
=====================  ===============================  ==================================
carry-tree, fused       4w − 7 − L  (L + 1)              4w − 7 − L + ℓ + 1  (L + 2)
carry-tree, b2a-mult    4w − 7 − L + ℓ  (L + 2)          4w − 7 − L + 3ℓ  (L + 3)
kogge-stone, b2a-mult   2w + 4w⌈log2 w⌉ + ℓ  (⌈log2 w⌉ + 2)   + 2ℓ  (+ 1)  — CrypTen: 1728/1856, 8/9
kogge-stone, fused      same circuit + ℓ + 1  (⌈log2 w⌉ + 2)
=====================  ===============================  ==================================

w = 1: DReLU 0 bits (0 rounds); fused ReLU ℓ + 1 bits (1 round). p ≥ 3: servers 2…p−1 first
re-share their w-bit pieces (and ℓ-bit shares of x for a ReLU) to servers 0 and 1 (+1 round; they
send w (+ℓ) bits, servers 0 and 1 then pay the 2-server costs above).
"""

from __future__ import annotations

import torch

from ringlet.protocols.arith import beaver
from ringlet.protocols.arith.truncation import truncate
from ringlet.protocols.base import SELECT_COSTS, input_bits, spec_in_ring
from ringlet.protocols.convert import (
    b2a_word,
    drelu_two,
    local_bits,
    reshare_to_two,
    select_finish,
    select_prepare,
)
from ringlet.session import Session
from ringlet.sharing import ArithmeticShare


def relu(sess: Session, x: ArithmeticShare, spec, shift: int = 0, truncation: str | None = None,
         sign=None) -> ArithmeticShare:
    """ReLU(⌊x / 2^shift⌋) = ⌊x/2^shift⌋ · DReLU(x[k:m]) — exact when [k:m] = [ℓ:0], the sign
    by the family ``sign``.

    ``shift`` > 0 drops that many fractional bits (a product's extra scale): with the fused select
    the truncation is folded into it for free (:func:`~ringlet.protocols.convert.inject_trunc_finish`);
    otherwise (baseline, or an identity ReLU) it is a separate truncation (``truncation`` method).
    """
    sess.require_server("relu")
    if shift and (spec.select != "fused" or spec.width == 0):
        x, shift = truncate(sess, x, shift, truncation), 0
    if spec.width == 0:
        return x
    k, m = input_bits(spec, shift, sess.ring.bits)
    w = k - m
    shared = reshare_to_two(sess, [(local_bits(x.data, k, m), w),
                                   (x.data.reshape(-1), sess.ring.bits)])
    out_frac = x.frac - shift
    if shared is None:  # servers 2..p-1 hold zero shares of the result
        return ArithmeticShare(torch.zeros_like(x.data), x.party, out_frac)
    t2, x2 = shared[0], shared[1].view(x.shape)
    if spec.select == "b2a-mult":
        bit, _ = drelu_two(sess, t2, w, sign)
        d = b2a_word(sess, bit, x.numel()).view(x.shape)
        return beaver.mul(sess, ArithmeticShare(x2, x.party, x.frac),
                          ArithmeticShare(d, x.party, 0), rescale=False, among=(0, 1))
    mat, item = select_prepare(sess, x2, shift)
    bit, extra = drelu_two(sess, t2, w, sign, piggyback=[item] if w >= 2 else None)
    return ArithmeticShare(select_finish(sess, bit, x2, mat, item, extra, shift), x.party, out_frac)


def cost(spec, parties: int = 2, ring_bits: int = 64, sign=None) -> dict:
    """gmw: the sign family's circuit and the select's cost."""
    ell = ring_bits
    k, m = spec_in_ring(spec, ell) if spec.width else (spec.k, spec.m)
    w = k - m
    if w == 0:
        return {"drelu_bits": 0, "drelu_rounds": 0, "relu_bits": 0, "relu_rounds": 0}
    circ, rounds = (0, 0) if w == 1 else sign.circuit_cost(w)
    select = SELECT_COSTS[spec.select]
    (db, dr), (rb, rr) = select["drelu"](ell), select["relu"](ell)
    d_bits, d_rounds = circ + db, rounds + dr
    r_bits, r_rounds = circ + rb, rounds + rr
    if parties > 2:  # one re-sharing round before the circuit
        d_bits, r_bits = max(d_bits, w), max(r_bits, w + ell)
        d_rounds, r_rounds = d_rounds + 1, r_rounds + 1
    return {"drelu_bits": d_bits, "drelu_rounds": d_rounds, "relu_bits": r_bits,
            "relu_rounds": r_rounds}
