"""Conversions between arithmetic and binary shares, and the bit × value products that use them.

Ring Z_2^ℓ (32 ≤ ℓ ≤ 64): every arithmetic value below is sent at ℓ bits per element.

``local_bits``: x[k:m] of this server's own share, as w = k−m bit planes (local; HummingBird Eq. 3).

``reshare_to_two`` (p ≥ 3): servers 2…p−1 hand their w-bit pieces (and, for a ReLU, their ℓ-bit
shares) to servers 0 and 1 as a fresh 2-party sharing: server i sends t_i − ρ_i mod 2^w to server 0
and server 1 adds ρ_i, drawn from the seed it shares with server i. 1 round; server i ≥ 2 sends w
(+ ℓ) bits per element, servers 0 and 1 send nothing. The sum mod 2^w is unchanged, so the result
of the sign circuit is exactly that of the p-party rule. From here on the sign circuit and the select
run between servers 0 and 1, and privacy rests on those two not colluding (as the model assumes).

``inject`` (fused select; bit injection): [b·x] from an XOR-shared bit b and an arithmetic x.
The dealer gives r ∈ {0,1} shared both ways, a random s and r·s. Open f = x − s (ℓ bits; it does
not depend on b, so it travels with the first round of the sign circuit) and e = b ⊕ r (1 bit).
Then b = e + r − 2er and x = f + s give [b·x] = e·[x] + (1 − 2e)·(f·[r] + [r·s]). Cost: ℓ + 1 bits,
1 round after b is known.

``inject_trunc`` (fused select and truncation): [b·⌊y/2^d⌋] from an XOR-shared bit b and an
arithmetic y with d extra fractional bits (a conv output before its truncation), |y| < 2^(ℓ−2).
Open c = y + 2^(ℓ−2) + r mod 2^ℓ (ℓ bits, with the first round of the sign circuit) and e = b ⊕ r_b
(1 bit): the same ℓ + 1 bits and 1 round as ``inject``. With c_low = c mod 2^(ℓ−1), the carry
M = msb(c) ⊕ msb(r) (bit ℓ−1) and L = (r mod 2^(ℓ−1)) >> d, ⌊y/2^d⌋ = (c_low >> d) − 2^(ℓ−2−d) − L +
2^(ℓ−1−d)·M − {0, 1} (Escudero et al.'s truncation with the mask r), and b·⌊y/2^d⌋ is linear in the
dealer's [r_b], [L], [msb r], [r_b·L], [r_b·msb r] once e and c are public. The truncation is exact
to one unit and never fails, unlike local truncation, which goes wrong with probability |y|/2^ℓ per
element.

``with_value`` (both selects): the same opening and material also give the value itself, for free:
[⌊y/2^d⌋] = public − [L] + 2^(ℓ−1−d)·[M] (the same T as in [b·T], to the unit), and x itself when
d = 0. ``select_finish_many`` runs several selects (each its own bit, value and shift) in one
round: the sum of their bits, 1 round.

``drelu_two``: the DReLU plane of servers 0 and 1 from their w-bit pieces, by a sign family
(:class:`~ringlet.protocols.base.SignFamily`: its rounds and bits; none for w = 1, a local XOR).

``b2a_word`` (CrypTen's B2A of one bit, the baseline): the dealer gives r ∈ {0,1} shared both ways;
open z = b ⊕ r as an ℓ-bit ring word per element (CrypTen reveals a whole ring word, and the
baseline sends the same); [b] = z + [r] − 2z[r]. Cost: ℓ bits, 1 round.
"""

from __future__ import annotations

from typing import Any

import torch

from ringlet import ring
from ringlet.offline.core import B2A, Inject, InjTrunc
from ringlet.offline.request import Request
from ringlet.session import Session
from ringlet.sharing import ArithmeticShare

TWO = (0, 1)


def drelu_two(sess: Session, t: torch.Tensor, w: int, family, piggyback=None):
    """On servers 0/1 holding w-bit pieces t: (DReLU share plane 1×nw, peer piggyback), the sign
    computed by ``family`` (a :class:`~ringlet.protocols.base.SignFamily`).

    ``piggyback`` items are ring values (ℓ bits each on the wire); the peer's come back read.
    """
    planes = ring.pack_bits(t, w)
    wired = [(tag, sess.ring.wire(v)) for tag, v in piggyback] if piggyback else piggyback
    if w == 1:
        sign, extra = planes.clone(), []
    else:
        sign, extra = family.run(sess, planes, piggyback=wired)
    if piggyback and extra:
        extra = [sess.ring.unwire(e, v.shape) for e, (_, v) in zip(extra, piggyback)]
    return (~sign if sess.rank == 0 else sign), extra


def local_bits(x: torch.Tensor, k: int, m: int) -> torch.Tensor:
    """Bits [k:m] of this server's share, one int64 value in [0, 2^(k−m)) per element."""
    return ring.extract_bits(x.reshape(-1), k, m)


def reshare_to_two(sess: Session, pieces: list[tuple[torch.Tensor, int]],
                   tag: str = "reshare") -> list[torch.Tensor] | None:
    """Turn p-party sharings into 2-party ones on servers 0 and 1 (p ≥ 3).

    ``pieces``: (values, bits) pairs — this server's share of each value, in Z_2^bits; bits = ℓ
    (the ring's width) marks an arithmetic share, sent in the ring's wire format and returned as
    centred residues; fewer bits travel as bit planes and return in [0, 2^bits).
    Returns the new shares on servers 0 and 1, ``None`` on the others.
    """
    p = sess.num_parties
    if p == 2:
        return [v for v, _ in pieces]
    rng = sess.ring
    for _, bits in pieces:
        if bits > rng.bits:
            raise ValueError(f"reshare_to_two: {bits}-bit pieces in a {rng.bits}-bit ring")
    if sess.rank >= 2:
        items = []
        for values, bits in pieces:
            rho = sess.pairs[1].below(values.shape, bits)
            masked = values - rho
            items.append((tag, ring.pack_bits(masked, bits) if bits < rng.bits else rng.wire(masked)))
        sess.comm.round(tag, {0: items}, [], step=tag)
        return None

    def finish(acc, bits):
        return acc & ring.mask_bits(bits) if bits < rng.bits else rng.reduce(acc)
    if sess.rank == 1:
        out = []
        for values, bits in pieces:
            acc = values
            for i in range(2, p):
                acc = acc + sess.pairs[i].below(values.shape, bits)
            out.append(finish(acc, bits))
        return out
    got = sess.comm.round(tag, {}, list(range(2, p)), step=tag)
    out = []
    for j, (values, bits) in enumerate(pieces):
        acc = values
        for i in range(2, p):
            t = got[i][j]
            acc = acc + (ring.unpack_bits(t, values.numel()).view(values.shape) if bits < rng.bits
                         else rng.unwire(t, values.shape))
        out.append(finish(acc, bits))
    return out


def inject_prepare(sess: Session, x: torch.Tensor) -> tuple[Any, tuple[str, torch.Tensor]]:
    """Dealer material for :func:`inject_finish` and the item f_i = x_i − s_i to be opened."""
    m = sess.dealer.get(Request(Inject(x.numel()), TWO))
    return m, ("select", x.reshape(-1) - m.s)


def inject_finish(sess: Session, bit: torch.Tensor, x: torch.Tensor, m: Any,
                  f: torch.Tensor | None, with_value: bool = False):
    """[b·x] given the bit's share (1×nw plane) and, if already opened, f = x − s.

    Opens e = b ⊕ r (and f, if ``f`` is None) in one round between servers 0 and 1. With
    ``with_value`` returns ([b·x], [x]): the value is the input share itself.
    """
    to_open = [x.reshape(-1) - m.s] if f is None else []
    (e,), opened = _select_round(sess, [(bit, x.numel())], [m], to_open)
    out = inject_combine(e, x, m, f if f is not None else opened[0])
    return (out, x) if with_value else out


def inject_combine(e: torch.Tensor, x: torch.Tensor, m: Any, f: torch.Tensor) -> torch.Tensor:
    """Local: [b·x] = e·[x] + (1 − 2e)·(f·[r] + [r·s]) from the opened e (0/1 per element) and f."""
    g = f * m.r
    g += m.rs
    flat = x.reshape(-1)
    return torch.where(e.bool(), flat - g, g).view(x.shape)


def inject_trunc_prepare(sess: Session, y: torch.Tensor, shift: int) -> tuple[Any, tuple]:
    """Dealer material for :func:`inject_trunc_finish` and this server's piece of
    c = y + 2^(ℓ−2) + r."""
    m = sess.dealer.get(Request(InjTrunc(y.numel(), shift), TWO))
    c = y.reshape(-1) + m.r
    if sess.rank == 0:
        c = c + (1 << (sess.ring.bits - 2))
    return m, ("select", c)


def inject_trunc_finish(sess: Session, bit: torch.Tensor, shape, m: Any, c: torch.Tensor | None,
                        c_mine: torch.Tensor, shift: int, with_value: bool = False):
    """[b·⌊y/2^shift⌋] given b's share plane and the opened c (opened here with e if None).

    With ``with_value`` also [⌊y/2^shift⌋] from the same c and material (see
    :func:`inject_trunc_combine`), at no extra cost.
    """
    (e,), opened = _select_round(sess, [(bit, c_mine.numel())], [m], [c_mine] if c is None else [])
    return inject_trunc_combine(sess, e, c if c is not None else opened[0], m, shape, shift,
                                with_value)


def inject_trunc_combine(sess: Session, e: torch.Tensor, c: torch.Tensor, m: Any, shape,
                         shift: int, with_value: bool = False):
    """Local: [b·T] with T = ⌊y/2^shift⌋ + {0, 1}, and, with ``with_value``, ([b·T], [T]).

    T = public − [L] + 2^(ℓ−1−shift)·[M] with public = (c_low >> shift) − 2^(ℓ−2−shift) (party 0)
    and the carry [M] = msb(c) + (1 − 2·msb(c))·[msb r]; b·T is the same expression in [b], [b·L]
    and [b·msb r], so d·T and T are exactly consistent (the same T, the same unit of error).
    """
    first = sess.rank == 0
    rng = sess.ring
    ell = rng.bits
    c_msb = rng.msb(c).bool()
    public = rng.low(c)
    public >>= shift
    public -= 1 << (ell - 2 - shift)
    e = e.bool()
    # e·Y + (1 − 2e)·X = (e ? Y − X : X), one select per product instead of four multiplications
    b = torch.where(e, int(first) - m.rb, m.rb)                    # [b]
    b_low = torch.where(e, m.low - m.rb_low, m.rb_low)          # [b·L]
    b_msb = torch.where(e, m.msb - m.rb_msb, m.rb_msb)          # [b·msb(r)]
    b_carry = torch.where(c_msb, b - b_msb, b_msb)                       # [b·M]
    out = public * b
    out -= b_low
    b_carry *= 1 << (ell - 1 - shift)
    out += b_carry
    out = out.view(shape)
    if not with_value:
        return out
    carry = torch.where(c_msb, int(first) - m.msb, m.msb)           # [M]
    value = (1 << (ell - 1 - shift)) * carry - m.low + (public if first else 0)
    return out, value.view(shape)


def _select_round(sess: Session, bits: list[tuple[torch.Tensor, int]], mats: list[Any],
                  to_open: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The select's one round between servers 0 and 1: open every e = b ⊕ r_b (``bits``: one
    (plane, n) per group, with its material in ``mats``) and the pieces in ``to_open`` (f or c,
    when they did not travel with the circuit). Returns (each e as a 0/1 int64 vector, opened)."""
    peer = 1 - sess.rank
    rng = sess.ring
    items = [("select", plane ^ m.r_bits) for (plane, _), m in zip(bits, mats)]
    items += [("select", rng.wire(t)) for t in to_open]
    got = sess.comm.round("select", {peer: items}, [peer], step="select")[peer]
    es = [ring.unpack_plane((items[i][1] ^ got[i])[0], n) for i, (_, n) in enumerate(bits)]
    k = len(bits)
    return es, [t + rng.unwire(got[k + j], t.shape) for j, t in enumerate(to_open)]


def select_prepare(sess: Session, x: torch.Tensor, shift: int) -> tuple[Any, tuple]:
    """Material and the item to open for a fused select (with ``shift`` bits truncated if > 0)."""
    return inject_trunc_prepare(sess, x, shift) if shift else inject_prepare(sess, x)


def select_finish(sess: Session, bit: torch.Tensor, x: torch.Tensor, m: Any, item: tuple,
                  extra: list, shift: int, with_value: bool = False):
    """[b·⌊x/2^shift⌋]; ``extra`` is what the peer piggybacked on the circuit (its half of the
    opening), empty when the opening still has to happen here. With ``with_value`` returns
    ([b·T], [T]) with T = ⌊x/2^shift⌋ (x itself when shift = 0), from the same opening."""
    return select_finish_many(sess, [(bit, x, m, item, shift)], extra, with_value)[0]


def select_finish_many(sess: Session, groups: list[tuple], extra: list,
                       with_value: bool = False) -> list:
    """Several fused selects in ONE round: ``groups`` are (bit plane, x, material, item, shift)
    from :func:`select_prepare`, each with its own shift; ``extra`` the peer's piggybacked items
    in the same order (or empty: then every f / c is opened in this round too; ``extra`` items are
    already read from the wire, see :func:`~ringlet.protocols.relu.drelu_two`). Cost: the sum
    of the groups' selects (1 + ℓ bits per element), 1 round."""
    to_open = [] if extra else [item[1] for _, _, _, item, _ in groups]
    es, opened = _select_round(sess, [(bit, x.numel()) for bit, x, _, _, _ in groups],
                               [m for _, _, m, _, _ in groups], to_open)
    out = []
    for j, ((_bit, x, m, item, shift), e) in enumerate(zip(groups, es)):
        c = item[1] + extra[j] if extra else opened[j]
        if shift:
            out.append(inject_trunc_combine(sess, e, c, m, x.shape, shift, with_value))
        else:
            res = inject_combine(e, x, m, c)
            out.append((res, x) if with_value else res)
    return out


def b2a_word(sess: Session, bit: torch.Tensor, n: int) -> torch.Tensor:
    """Arithmetic shares (frac 0) of a bit given as an XOR-shared 1×nw plane; CrypTen's cost."""
    m = sess.dealer.get(Request(B2A(n), TWO))
    z_mine = ring.unpack_plane((bit ^ m.r_bits)[0], n)  # an ℓ-bit ring word per element
    peer = 1 - sess.rank
    got = sess.comm.round("b2a", {peer: [("b2a", sess.ring.wire(z_mine))]}, [peer], step="b2a")[peer]
    z = z_mine ^ sess.ring.unwire(got[0], z_mine.shape)
    out = m.r - 2 * z * m.r
    return out + z if sess.rank == 0 else out


def zeros_like_share(x: ArithmeticShare) -> ArithmeticShare:
    return ArithmeticShare(torch.zeros_like(x.data), x.party, x.frac)
