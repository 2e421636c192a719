"""DReLU, ReLU, max and max-pool: exact (all ℓ bits) or on the reduced ring x[k:m] (HummingBird).

The ring is Z_2^ℓ (32 ≤ ℓ ≤ 64, ``sess.ring``); exact means [ℓ:0] (a setting [64:0] is read as
exact in any ring), and any other [k:m] needs k ≤ ℓ.

DReLU(x) = 1 − sign(x). On bits [k:m] (w = k − m), each server extracts t_i = s_i[k:m] locally and
the sign is the top bit of Σ t_i mod 2^w (HummingBird Eq. 3): w = 0 makes the ReLU the identity (no
communication), w = 1 makes the sign a local XOR, w ≥ 2 runs a sign circuit (see
:mod:`ringlet.protocols.adders`). Σ t_i ≡ ⌊x/2^m⌋ − c with a carry loss c ∈ [0, p−1], so in ring
units a result can differ from exact ReLU only where x ≥ 2^(k−1), x < −2^(k−1) + (p−1)·2^m, or
0 < x < (p−1)·2^m (:func:`allowed_mismatch`), and nowhere else.

Costs per server per element for 2 servers (w ≥ 2, L = ⌈log2(w−1)⌉; rounds in brackets):

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

from dataclasses import dataclass

import torch

from ringlet import ring
from ringlet.protocols import beaver
from ringlet.protocols.convert import (
    b2a_word,
    local_bits,
    reshare_to_two,
    select_finish,
    select_prepare,
)
from ringlet.protocols.families import SELECT_COSTS, SELECTS, relu_protocols, sign_families
from ringlet.protocols.truncation import truncate
from ringlet.session import Session
from ringlet.sharing import ArithmeticShare


@dataclass(frozen=True)
class ReluSpec:
    """How to evaluate one ReLU: the kept bits [k:m], the sign circuit and the select."""

    k: int = 64
    m: int = 0
    adder: str = "carry-tree"
    select: str = "fused"
    protocol: str = "gmw"

    def __post_init__(self):
        if not 0 <= self.m <= self.k <= 64:
            raise ValueError(f"ReLU bits [k:m] = [{self.k}:{self.m}] need 0 <= m <= k <= 64")
        sign_families()[self.adder]  # an unknown family is an error naming the known ones
        relu_protocols()[self.protocol]
        if self.select not in SELECTS:
            raise ValueError(f"unknown select {self.select!r}; use one of {SELECTS}")

    @property
    def sign(self) -> str:
        """The sign family of this spec's DReLU (the protocol's own, else the adder)."""
        return relu_protocols()[self.protocol].sign or self.adder

    @property
    def width(self) -> int:
        return self.k - self.m


def allowed_mismatch(x: torch.Tensor, k: int, m: int, parties: int) -> torch.Tensor:
    """Where reduced-ring ReLU on [k:m] may differ from exact ReLU (x in ring units, int64).

    The carry loss c ∈ [0, p−1] of the p floors exists only when m > 0. A mismatch needs
    x ≥ 2^(k−1) (overflow), x < −2^(k−1) + c·2^m (the negative edge), or 0 < x < c·2^m (pruning).
    """
    if k == m:  # no bits kept: the ReLU is the identity
        return x < 0
    lo, hi = -(1 << 63), (1 << 63) - 1
    edge = (parties - 1) << m if m > 0 else 0
    clamp = lambda v: max(lo, min(hi, v))  # noqa: E731 - Python ints, then int64-safe

    def less(bound: int) -> torch.Tensor:
        if bound > hi:
            return torch.ones_like(x, dtype=torch.bool)
        return x < clamp(bound)

    over = x >= (1 << (k - 1)) if k < 64 else torch.zeros_like(x, dtype=torch.bool)
    neg = less(-(1 << (k - 1)) + edge)
    return over | neg | ((x > 0) & less(edge))


def drelu_two(sess: Session, t: torch.Tensor, w: int, adder: str, piggyback=None):
    """On servers 0/1 holding w-bit pieces t: (DReLU share plane 1×nw, peer piggyback).

    ``piggyback`` items are ring values (ℓ bits each on the wire); the peer's come back read.
    """
    planes = ring.pack_bits(t, w)
    wired = [(tag, sess.ring.wire(v)) for tag, v in piggyback] if piggyback else piggyback
    if w == 1:
        sign, extra = planes.clone(), []
    else:
        sign, extra = sign_families()[adder].run(sess, planes, piggyback=wired)
    if piggyback and extra:
        extra = [sess.ring.unwire(e, v.shape) for e, (_, v) in zip(extra, piggyback)]
    return (~sign if sess.rank == 0 else sign), extra


def spec_in_ring(spec: ReluSpec, ring_bits: int) -> tuple[int, int]:
    """[k:m] in a ring of ``ring_bits``: [64:0] means exact, i.e. [ℓ:0]; otherwise k ≤ ℓ."""
    if spec.m == 0 and spec.k == 64:
        return ring_bits, 0
    if spec.k > ring_bits:
        raise ValueError(f"ReLU bits [{spec.k}:{spec.m}] need k <= {ring_bits}, the ring's width")
    return spec.k, spec.m


def input_bits(spec: ReluSpec, shift: int = 0, ring_bits: int = 64) -> tuple[int, int]:
    """The bits of the shares the sign circuit reads when the input carries ``shift`` extra
    fractional bits: [k+shift : m+shift] (capped at ℓ); exact stays all ℓ bits."""
    if spec.width == 0:
        return spec.k, spec.m
    k, m = spec_in_ring(spec, ring_bits)
    if (k, m) == (ring_bits, 0):
        return k, m
    return min(ring_bits, k + shift), m + shift


def drelu(sess: Session, x: ArithmeticShare, spec: ReluSpec = ReluSpec(),
          arithmetic: bool | None = None, shift: int = 0) -> torch.Tensor:
    """Shares of DReLU(x) = [x ≥ 0] on bits [k:m] over the flattened x.

    Binary (a 1×nw plane of XOR shares) by default; arithmetic (int64 per element, B2A with
    CrypTen's cost) when ``arithmetic`` is true or, if None, when ``spec.select`` is b2a-mult.
    """
    if arithmetic is None:
        arithmetic = spec.select == "b2a-mult"
    sess.require_server("drelu")
    n = x.numel()
    if spec.width == 0:
        if arithmetic:
            return torch.full((n,), int(sess.rank == 0), dtype=torch.int64)
        one = ring.pack_plane(torch.ones(n, dtype=torch.int64)).view(1, -1)
        return one if sess.rank == 0 else torch.zeros_like(one)
    k, m = input_bits(spec, shift, sess.ring.bits)
    shared = reshare_to_two(sess, [(local_bits(x.data, k, m), k - m)])
    if shared is None:
        return torch.zeros(n if arithmetic else (1, ring.num_words(n)), dtype=torch.int64)
    bit, _ = drelu_two(sess, shared[0], k - m, spec.sign)
    return b2a_word(sess, bit, n) if arithmetic else bit


def relu(sess: Session, x: ArithmeticShare, spec: ReluSpec = ReluSpec(), shift: int = 0,
         truncation: str | None = None) -> ArithmeticShare:
    """ReLU(⌊x / 2^shift⌋) on bits [k:m] by the spec's protocol (gmw: :func:`relu_gmw`; fss:
    :func:`ringlet.protocols.fss.relu`)."""
    return relu_protocols()[spec.protocol].relu(sess, x, spec, shift, truncation)


def relu_gmw(sess: Session, x: ArithmeticShare, spec: ReluSpec = ReluSpec(), shift: int = 0,
             truncation: str | None = None) -> ArithmeticShare:
    """ReLU(⌊x / 2^shift⌋) = ⌊x/2^shift⌋ · DReLU(x[k:m]) — exact when [k:m] = [ℓ:0].

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
        bit, _ = drelu_two(sess, t2, w, spec.sign)
        d = b2a_word(sess, bit, x.numel()).view(x.shape)
        return beaver.mul(sess, ArithmeticShare(x2, x.party, x.frac),
                          ArithmeticShare(d, x.party, 0), rescale=False, among=(0, 1))
    mat, item = select_prepare(sess, x2, shift)
    bit, extra = drelu_two(sess, t2, w, spec.sign, piggyback=[item] if w >= 2 else None)
    return ArithmeticShare(select_finish(sess, bit, x2, mat, item, extra, shift), x.party, out_frac)


def maximum(sess: Session, x: ArithmeticShare, y: ArithmeticShare,
            spec: ReluSpec = ReluSpec()) -> ArithmeticShare:
    """Elementwise max(x, y) = y + ReLU(x − y)."""
    return y + relu(sess, x - y, spec)


def max_pool2d(sess: Session, x: ArithmeticShare, kernel, stride=None, padding=0,
               spec: ReluSpec = ReluSpec()) -> ArithmeticShare:
    """k×k max pooling by a tournament of ⌈log2(k²)⌉ rounds of :func:`maximum` (all windows at once).

    Padding uses the public value −2^(k−2) (ring units, k ≤ ℓ), which loses to every in-range value.
    """
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    sh, sw = (stride, stride) if isinstance(stride, int) else (stride or (kh, kw))
    ph, pw = (padding, padding) if isinstance(padding, int) else padding
    data = x.data
    n, c, h, w = data.shape
    if ph or pw:
        top = spec_in_ring(spec, sess.ring.bits)[0] if spec.width else spec.k
        low = -(1 << (top - 2)) if top >= 2 else 0
        fill = torch.full((n, c, h + 2 * ph, w + 2 * pw), low if x.party == 0 else 0,
                          dtype=torch.int64)
        fill[:, :, ph:ph + h, pw:pw + w] = data
        data = fill
    windows = data.unfold(2, kh, sh).unfold(3, kw, sw)  # n, c, oh, ow, kh, kw
    oh, ow = windows.shape[2], windows.shape[3]
    cands = windows.reshape(n, c, oh, ow, kh * kw).permute(4, 0, 1, 2, 3)
    while cands.shape[0] > 1:
        half = cands.shape[0] // 2
        a, b = cands[:half], cands[half:2 * half]
        best = maximum(sess, ArithmeticShare(a.contiguous(), x.party, x.frac),
                       ArithmeticShare(b.contiguous(), x.party, x.frac), spec).data
        cands = torch.cat([best, cands[2 * half:]]) if cands.shape[0] % 2 else best
    return ArithmeticShare(cands[0].contiguous(), x.party, x.frac)


def relu_cost(spec: ReluSpec, parties: int = 2, ring_bits: int = 64) -> dict:
    """Expected bits sent per server per element and rounds (the max over servers) in Z_2^ℓ,
    by the spec's protocol."""
    return relu_protocols()[spec.protocol].cost(spec, parties, ring_bits)


def relu_cost_fss(spec: ReluSpec, parties: int = 2, ring_bits: int = 64) -> dict:
    """fss: DReLU w bits (1 round; none for w ≤ 1; + the B2A of b2a-mult), ReLU ℓ bits (1 round),
    2 servers only."""
    from ringlet.protocols import fss
    if parties != 2:
        raise ValueError(f"fss is a two-server protocol; {parties} servers need gmw")
    k, m = spec_in_ring(spec, ring_bits) if spec.width else (spec.k, spec.m)
    w = k - m
    drelu_bits, drelu_rounds = fss.sign_cost(w) if w >= 2 else (0, 0)
    if w:  # an arithmetic DReLU (b2a-mult) adds its B2A, as under gmw
        extra_bits, extra_rounds = SELECT_COSTS[spec.select]["drelu"](ring_bits)
        drelu_bits, drelu_rounds = drelu_bits + extra_bits, drelu_rounds + extra_rounds
    out = {"drelu_bits": drelu_bits, "drelu_rounds": drelu_rounds,
           "relu_bits": ring_bits if w else 0, "relu_rounds": 1 if w else 0}
    cost = fss.relu_cost(k, m, ring_bits)
    out["key_bytes"], out["aes_eval"] = cost["key_bytes"], cost["aes_eval"]
    return out


def relu_cost_gmw(spec: ReluSpec, parties: int = 2, ring_bits: int = 64) -> dict:
    """gmw: the sign family's circuit and the select's cost."""
    ell = ring_bits
    k, m = spec_in_ring(spec, ell) if spec.width else (spec.k, spec.m)
    w = k - m
    if w == 0:
        return {"drelu_bits": 0, "drelu_rounds": 0, "relu_bits": 0, "relu_rounds": 0}
    circ, rounds = (0, 0) if w == 1 else sign_families()[spec.sign].circuit_cost(w)
    select = SELECT_COSTS[spec.select]
    (db, dr), (rb, rr) = select["drelu"](ell), select["relu"](ell)
    d_bits, d_rounds = circ + db, rounds + dr
    r_bits, r_rounds = circ + rb, rounds + rr
    if parties > 2:  # one re-sharing round before the circuit
        d_bits, r_bits = max(d_bits, w), max(r_bits, w + ell)
        d_rounds, r_rounds = d_rounds + 1, r_rounds + 1
    return {"drelu_bits": d_bits, "drelu_rounds": d_rounds, "relu_bits": r_bits,
            "relu_rounds": r_rounds}
