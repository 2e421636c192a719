"""Binary circuits on bit planes between two servers: AND gates and the MSB of a sum.

Inputs: server 0 holds a w-bit value ``a`` and server 1 a w-bit value ``b`` (each as w planes of
packed words; an element is a bit of a word). Output: XOR shares (one plane) of the most significant
bit of (a + b) mod 2^w — the sign bit of the sum. Every opened plane costs one bit per element.

``carry_tree`` (default). msb(a+b) = a_{w−1} ⊕ b_{w−1} ⊕ G, where G is the generate signal of bits
0…w−2. Leaves g_i = a_i ∧ b_i are ANDs of *private inputs* (each server sends one masked bit);
p_i = a_i ⊕ b_i is local. Groups combine as (G,P)_hi ∘ (G,P)_lo = (G_hi ⊕ P_hi∧G_lo, P_hi∧P_lo) in a
balanced tree of L = ⌈log2(w−1)⌉ levels; the groups holding bit 0 (the spine) need only G (one AND:
2 bits), the others need both ANDs, which share P_hi, so P_hi's mask is opened once (3 bits).
Cost per server per element: (w−1) + 3(w−2) − L = 4w − 7 − L bits, L + 1 rounds (w ≥ 2).
w = 1: the sign is a_0 ⊕ b_0, local (0 bits, 0 rounds).

``kogge_stone`` (baseline: CrypTen's word adder). G = a∧b as a generic AND (2w bits), then
⌈log2 w⌉ levels each computing G ← G ⊕ P∧(G≪s) and P ← P∧(P≪s) as one AND of stacked words (4w
bits). Cost: 2w + 4w⌈log2 w⌉ bits, 1 + ⌈log2 w⌉ rounds; w = 64: 1664 bits, 7 rounds (CrypTen).

AND gates use dealer triples: and (x∧y: open x⊕a, y⊕b), and2 (x∧y1, x∧y2 sharing x: 3 openings),
pand (private inputs: each server opens its own input's mask).
"""

from __future__ import annotations

import math

import torch

from ringlet.offline.core import And, And2, Pand
from ringlet.offline.request import Request
from ringlet.session import Session

TWO = (0, 1)


def _exchange(sess: Session, items: list[torch.Tensor], tag: str, step: str,
              piggyback: list | None = None) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """One round between servers 0 and 1: send planes (and piggybacked items), return the peer's."""
    peer = 1 - sess.rank
    out = [(tag, t) for t in items] + list(piggyback or [])
    got = sess.comm.round(tag, {peer: out}, [peer], step=step)[peer]
    return got[:len(items)], got[len(items):]


def private_and(sess: Session, mine: torch.Tensor, tag: str = "circuit",
                piggyback: list | None = None):
    """Shares of a ∧ b where server 0 holds planes a and server 1 holds planes b (private inputs).

    1 round; each server sends one masked plane per input plane. Returns (share, peer piggyback).
    """
    w, nw = mine.shape
    m = sess.dealer.get(Request(Pand(w, nw), TWO))
    if sess.rank == 0:
        (beta,), extra = _exchange(sess, [mine ^ m.u], tag, f"{tag}/leaves", piggyback)
        return (mine & beta) ^ m.z, extra
    (alpha,), extra = _exchange(sess, [mine ^ m.v], tag, f"{tag}/leaves", piggyback)
    return (alpha & m.v) ^ m.z, extra


def and_gates(sess: Session, x: torch.Tensor, y: torch.Tensor, x2: torch.Tensor | None = None,
              y2: torch.Tensor | None = None, y3: torch.Tensor | None = None, tag: str = "circuit",
              step: str = "and", piggyback: list | None = None):
    """In one round: z = x∧y (generic AND) and, if given, (x2∧y2, x2∧y3) sharing operand x2.

    Opens x, y (2 planes per gate) and x2, y2, y3 (3 planes per shared pair).
    Returns ([z, z2, z3], peer piggyback).
    """
    first = sess.rank == 0
    items, mats = [], []
    if x.numel():
        m = sess.dealer.get(Request(And(*x.shape), TWO))
        items += [x ^ m.a, y ^ m.b]
        mats.append(m)
    if x2 is not None and x2.numel():
        m2 = sess.dealer.get(Request(And2(*x2.shape), TWO))
        items += [x2 ^ m2.a, y2 ^ m2.b1, y3 ^ m2.b2]
        mats.append(m2)
    got, extra = _exchange(sess, items, tag, step, piggyback)
    opened = [mine ^ theirs for mine, theirs in zip(items, got)]
    out = []
    pos = 0
    if x.numel():
        m = mats.pop(0)
        d, e = opened[0], opened[1]
        z = m.c ^ (d & m.b) ^ (e & m.a)
        out.append(z ^ (d & e) if first else z)
        pos = 2
    else:
        out.append(x)
    if x2 is not None and x2.numel():
        m2 = mats.pop(0)
        d, e1, e2 = opened[pos:pos + 3]
        z2 = m2.c1 ^ (d & m2.b1) ^ (e1 & m2.a)
        z3 = m2.c2 ^ (d & m2.b2) ^ (e2 & m2.a)
        if first:
            z2, z3 = z2 ^ (d & e1), z3 ^ (d & e2)
        out += [z2, z3]
    elif x2 is not None:
        out += [x2, x2]  # no shared-operand gates this round: empty results
    return out, extra


def carry_tree_cost(w: int) -> tuple[int, int]:
    """(bits sent per server per element, rounds) of :func:`carry_tree_msb` on w bits."""
    if w <= 1:
        return 0, 0
    levels = math.ceil(math.log2(w - 1)) if w > 2 else 0
    return 4 * w - 7 - levels, levels + 1


def kogge_stone_cost(w: int) -> tuple[int, int]:
    """(bits sent per server per element, rounds) of :func:`kogge_stone_msb` on w bits."""
    levels = math.ceil(math.log2(w)) if w > 1 else 0
    return 2 * w + 4 * w * levels, levels + 1


def carry_tree_msb(sess: Session, planes: torch.Tensor, tag: str = "circuit",
                   piggyback: list | None = None):
    """XOR shares (1×nw) of msb(a + b mod 2^w) from this server's private w planes.

    Returns (share of the msb plane, peer's piggybacked tensors from the first round).
    """
    w, nw = planes.shape
    top = planes[w - 1:w]
    if w == 1:
        return top.clone(), []
    carry, extra = _generate(sess, planes[:w - 1], tag, piggyback)
    return top ^ carry, extra


def _generate(sess: Session, planes: torch.Tensor, tag: str, piggyback):
    """Shares of the carry out of bits 0…n−1 of a + b (n = planes.shape[0] ≥ 1)."""
    g, extra = private_and(sess, planes, tag, piggyback)  # leaves g_i = a_i ∧ b_i
    p = planes  # p_i = a_i ⊕ b_i: this server's own bits are its share
    level = 0
    while g.shape[0] > 1:
        n = g.shape[0]
        pairs = n // 2
        # spine: group 0 absorbs group 1 (G only); others: (2j+1) absorbs (2j) (G and P)
        hi_ns = torch.arange(3, max(3, 2 * pairs), 2)
        lo_ns = hi_ns - 1
        (z_spine, z_g, z_p), _ = and_gates(
            sess, p[1:2], g[0:1], p[hi_ns], g[lo_ns], p[lo_ns], tag=tag,
            step=f"{tag}/level{level}")
        new_g = [g[1:2] ^ z_spine, g[hi_ns] ^ z_g]
        new_p = [p[1:2], z_p]  # the spine's P is never used; keep the row for alignment
        if n % 2:
            new_g.append(g[n - 1:n])
            new_p.append(p[n - 1:n])
        g, p = torch.cat(new_g), torch.cat(new_p)
        level += 1
    return g, extra


def kogge_stone_msb(sess: Session, planes: torch.Tensor, tag: str = "circuit",
                    piggyback: list | None = None):
    """The CrypTen-equivalent word adder: msb of a + b via a full prefix adder on w planes."""
    w, nw = planes.shape
    zero = torch.zeros_like(planes)
    x, y = (planes, zero) if sess.rank == 0 else (zero, planes)  # a and b as XOR-shared words
    (g,), extra = and_gates(sess, x, y, tag=tag, step=f"{tag}/ks-generate", piggyback=piggyback)
    p = x ^ y
    shift, level = 1, 0
    while shift < w:
        g_shift = torch.cat([torch.zeros_like(g[:shift]), g[:w - shift]])
        p_shift = torch.cat([torch.zeros_like(p[:shift]), p[:w - shift]])
        (both,), _ = and_gates(sess, torch.cat([p, p]), torch.cat([g_shift, p_shift]), tag=tag,
                               step=f"{tag}/ks-level{level}")
        g, p = g ^ both[:w], both[w:]
        shift, level = shift * 2, level + 1
    # sum bit w−1 = a ⊕ b ⊕ carry into w−1 = p_{w−1}(original) ⊕ g_{w−2}
    carry = g[w - 2:w - 1] if w > 1 else torch.zeros_like(g[:1])
    return (x ^ y)[w - 1:w] ^ carry, extra
