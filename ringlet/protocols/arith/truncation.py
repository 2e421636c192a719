"""Truncation of fixed-point shares after a product: divide by 2^f, rounding down.

Ring Z_2^ℓ (32 ≤ ℓ ≤ 64).

``truncate_local`` (2 parties, SecureML): no communication, 0 rounds, 0 bits. Each party reduces its
share to the centred residue; party 0 shifts it arithmetically, party 1 negates, shifts and negates
back. The result is ⌊x/2^f⌋ or one more; it fails (a huge error) only if the two centred shares
overflow when added, with probability at most |x| / 2^(ℓ−1) per element (about 2^-29 for |x| < 2^34
at ℓ = 64; at ℓ = 40 the same x fails with probability 2^-5, which is why a ring below 64 bits
truncates with the dealer by default).

``truncate_dealer`` (any p, dealer pairs; Escudero et al. 2020): 1 round, (p−1)·ℓ bits sent per
party per element. Requires |x| < 2^(ℓ−2). Party 0 adds 2^(ℓ−2) so x' ∈ [0, 2^(ℓ−1)); the dealer
gives [r], [msb(r)] and [(r mod 2^(ℓ−1)) >> f]; open c = x' + r mod 2^ℓ; the carry b out of the low
ℓ−1 bits is msb(c) ⊕ msb(r), linear in [msb(r)]; then x'>>f = (c_low >> f) − [r_low >> f] +
2^(ℓ−1−f)·[b] − {0,1}. Never fails catastrophically; error at most one unit in the last place.
"""

from __future__ import annotations

import torch

from ringlet.offline.core import Trunc
from ringlet.offline.request import Request
from ringlet.protocols.io import open_values
from ringlet.session import Session
from ringlet.sharing import ArithmeticShare


def truncate(sess: Session, x: ArithmeticShare, bits: int, method: str | None = None) -> ArithmeticShare:
    """Divide a share by 2^bits: ``local`` for 2 parties by default, ``dealer`` otherwise."""
    if bits == 0:
        return x
    if bits < 0 or bits > x.frac:
        raise ValueError(f"truncate by {bits} bits: the value has {x.frac} fractional bits")
    method = method or default_method(sess.num_parties, sess.ring.bits)
    if method == "local":
        return truncate_local(sess, x, bits)
    if method == "dealer":
        return truncate_dealer(sess, x, bits)
    raise ValueError(f"unknown truncation method {method!r} (local or dealer)")


def default_method(parties: int, ring_bits: int) -> str:
    """Local for 2 servers in the 64-bit ring; the dealer's (exact, 1 round) otherwise."""
    return "local" if parties == 2 and ring_bits == 64 else "dealer"


def truncate_local(sess: Session, x: ArithmeticShare, bits: int,
                   two_holders: bool = False) -> ArithmeticShare:
    """SecureML truncation. With p ≥ 3 servers it applies only when servers 2…p−1 hold zero shares
    (``two_holders``: the value lives on servers 0 and 1, as after a re-sharing)."""
    if sess.num_parties != 2 and not two_holders:
        raise ValueError("local truncation is a 2-party protocol; use method='dealer'")
    if x.party >= 2:
        return ArithmeticShare(torch.zeros_like(x.data), x.party, x.frac - bits)
    mine = sess.ring.reduce(x.data)
    data = mine >> bits if x.party == 0 else -((-mine) >> bits)
    return ArithmeticShare(data, x.party, x.frac - bits)


def truncate_dealer(sess: Session, x: ArithmeticShare, bits: int) -> ArithmeticShare:
    holders = tuple(sess.world.servers)
    m = sess.dealer.get(Request(Trunc(bits, tuple(x.shape)), holders))
    rng = sess.ring
    offset = 1 << (rng.bits - 2)
    shifted = x.data + offset if x.party == 0 else x.data
    (c,) = open_values(sess, [("trunc", shifted + m.r)], "add")
    c_low = rng.low(c)
    c_msb = rng.msb(c)
    carry = (1 - 2 * c_msb) * m.msb + (c_msb if x.party == 0 else 0)
    data = carry * (1 << (rng.bits - 1 - bits)) - m.low
    if x.party == 0:
        data = data + (c_low >> bits) - (offset >> bits)
    return ArithmeticShare(data, x.party, x.frac - bits)
