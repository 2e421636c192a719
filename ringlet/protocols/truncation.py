"""Truncation of fixed-point shares after a product: divide by 2^f, rounding down.

``truncate_local`` (2 parties, SecureML): no communication, 0 rounds, 0 bits. Party 0 shifts its
share arithmetically, party 1 negates, shifts and negates back. The result is ⌊x/2^f⌋ or one more;
it fails (a huge error) only if the two signed shares overflow when added, with probability at most
|x| / 2^63 per element (about 2^-29 for |x| < 2^34, i.e. |value| < 2^18 at 2f = 32 fractional bits).

``truncate_dealer`` (any p, dealer pairs; Escudero et al. 2020): 1 round, (p−1)·64 bits sent per
party per element. Requires |x| < 2^62. Party 0 adds 2^62 so x' ∈ [0, 2^63); the dealer gives
[r], [msb(r)] and [(r mod 2^63) >> f]; open c = x' + r; the carry b out of the low 63 bits is
msb(c) ⊕ msb(r), linear in [msb(r)]; then x'>>f = (c_low >> f) − [r_low >> f] + 2^(63−f)·[b] − {0,1}.
Never fails catastrophically; error at most one unit in the last place.
"""

from __future__ import annotations

import torch

from ringlet import ring
from ringlet.offline import Request
from ringlet.protocols.io import open_values
from ringlet.session import Session
from ringlet.sharing import ArithmeticShare


def truncate(sess: Session, x: ArithmeticShare, bits: int, method: str | None = None) -> ArithmeticShare:
    """Divide a share by 2^bits: ``local`` for 2 parties by default, ``dealer`` otherwise."""
    if bits == 0:
        return x
    if bits < 0 or bits > x.frac:
        raise ValueError(f"truncate by {bits} bits: the value has {x.frac} fractional bits")
    method = method or ("local" if sess.num_parties == 2 else "dealer")
    if method == "local":
        return truncate_local(sess, x, bits)
    if method == "dealer":
        return truncate_dealer(sess, x, bits)
    raise ValueError(f"unknown truncation method {method!r} (local or dealer)")


def truncate_local(sess: Session, x: ArithmeticShare, bits: int,
                   two_holders: bool = False) -> ArithmeticShare:
    """SecureML truncation. With p ≥ 3 servers it applies only when servers 2…p−1 hold zero shares
    (``two_holders``: the value lives on servers 0 and 1, as after a re-sharing)."""
    if sess.num_parties != 2 and not two_holders:
        raise ValueError("local truncation is a 2-party protocol; use method='dealer'")
    if x.party >= 2:
        return ArithmeticShare(torch.zeros_like(x.data), x.party, x.frac - bits)
    data = x.data >> bits if x.party == 0 else -((-x.data) >> bits)
    return ArithmeticShare(data, x.party, x.frac - bits)


def truncate_dealer(sess: Session, x: ArithmeticShare, bits: int) -> ArithmeticShare:
    holders = tuple(sess.world.servers)
    m = sess.offline.get(Request("trunc", (bits, *x.shape), holders))
    offset = 1 << 62
    shifted = x.data + offset if x.party == 0 else x.data
    (c,) = open_values(sess, [("trunc", shifted + m["r"])], "add")
    c_low = c & ring.mask_bits(63)
    c_msb = (c >> 63) & 1
    carry = (1 - 2 * c_msb) * m["msb"] + (c_msb if x.party == 0 else 0)
    data = carry * (1 << (63 - bits)) - m["low"]
    if x.party == 0:
        data = data + (c_low >> bits) - (offset >> bits)
    return ArithmeticShare(data, x.party, x.frac - bits)
