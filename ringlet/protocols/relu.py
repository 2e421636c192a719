"""DReLU, ReLU, max and max-pool: exact (all ℓ bits) or on the reduced ring x[k:m] (HummingBird),
by the protocol a :class:`ReluSpec` names (:mod:`ringlet.protocols.catalog`).

The ring is Z_2^ℓ (32 ≤ ℓ ≤ 64, ``sess.ring``); exact means [ℓ:0] (a setting [64:0] is read as
exact in any ring), and any other [k:m] needs k ≤ ℓ.

DReLU(x) = 1 − sign(x). On bits [k:m] (w = k − m), each server extracts t_i = s_i[k:m] locally and
the sign is the top bit of Σ t_i mod 2^w (HummingBird Eq. 3): w = 0 makes the ReLU the identity (no
communication), w = 1 makes the sign a local XOR, w ≥ 2 runs a sign family. Σ t_i ≡ ⌊x/2^m⌋ − c
with a carry loss c ∈ [0, p−1], so in ring units a result can differ from exact ReLU only where
x ≥ 2^(k−1), x < −2^(k−1) + (p−1)·2^m, or 0 < x < (p−1)·2^m
(:func:`~ringlet.protocols.base.allowed_mismatch`), and nowhere else.

Costs: each protocol's own docstring and ``cost`` (gmw: :mod:`ringlet.protocols.gmw.relu`, fss:
:mod:`ringlet.protocols.fss.gates`); :func:`relu_cost` dispatches. max(x, y) = y + ReLU(x − y);
k×k max-pool: ⌈log2 k²⌉ rounds of max.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ringlet import ring
from ringlet.protocols.base import SELECTS, input_bits, spec_in_ring
from ringlet.protocols.catalog import relu_protocols, sign_families
from ringlet.protocols.convert import b2a_word, drelu_two, local_bits, reshare_to_two
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
    bit, _ = drelu_two(sess, shared[0], k - m, sign_families()[spec.sign])
    return b2a_word(sess, bit, n) if arithmetic else bit


def relu(sess: Session, x: ArithmeticShare, spec: ReluSpec = ReluSpec(), shift: int = 0,
         truncation: str | None = None) -> ArithmeticShare:
    """ReLU(⌊x / 2^shift⌋) on bits [k:m] by the spec's protocol (gmw:
    :func:`ringlet.protocols.gmw.relu.relu`; fss: :func:`ringlet.protocols.fss.gates.relu`)."""
    return relu_protocols()[spec.protocol].relu(sess, x, spec, shift, truncation,
                                                sign_families()[spec.sign])


def maximum(sess: Session, x: ArithmeticShare, y: ArithmeticShare,
            spec: ReluSpec = ReluSpec()) -> ArithmeticShare:
    """Elementwise max(x, y) = y + ReLU(x − y)."""
    return y + relu(sess, x - y, spec)


def tournament(cands: torch.Tensor, larger) -> torch.Tensor:
    """The max over the first axis of K candidates in ⌈log2 K⌉ rounds of ``larger(a, b)`` (the
    first half against the second, all at once; an odd one out waits a round)."""
    while cands.shape[0] > 1:
        half = cands.shape[0] // 2
        best = larger(cands[:half], cands[half:2 * half])
        cands = torch.cat([best, cands[2 * half:]]) if cands.shape[0] % 2 else best
    return cands[0]


def secure_tournament(sess: Session, cands: torch.Tensor, party: int, frac: int,
                      spec: ReluSpec = ReluSpec()) -> torch.Tensor:
    """:func:`tournament` on this server's shares of K candidates, each round a :func:`maximum`."""
    return tournament(cands, lambda a, b: maximum(sess, ArithmeticShare(a.contiguous(), party, frac),
                                                  ArithmeticShare(b.contiguous(), party, frac), spec).data)


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
    best = secure_tournament(sess, cands, x.party, x.frac, spec)
    return ArithmeticShare(best.contiguous(), x.party, x.frac)


def relu_cost(spec: ReluSpec, parties: int = 2, ring_bits: int = 64) -> dict:
    """Expected bits sent per server per element and rounds (the max over servers) in Z_2^ℓ,
    by the spec's protocol."""
    return relu_protocols()[spec.protocol].cost(spec, parties, ring_bits, sign_families()[spec.sign])
