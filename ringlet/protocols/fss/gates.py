"""One-round ReLU by function secret sharing: a DCF key per element from the dealer (2 servers).

The servers open x̂ = x + r once (r the dealer's uniform mask in Z_2^ℓ) and evaluate their keys of a
distributed comparison function (:mod:`ringlet.protocols.fss.dcf`) on the public x̂, with no further
talk. HummingBird's reduced ring applies inside: the sign is read from bits [k:m] only, so the DCF
domain is w − 1 bits (w = k − m) instead of ℓ − 1, and key size and AES work fall by about ℓ/w.

**Sign on [k:m].** x̂ and −r are two shares of x, so HummingBird's rule on them is
msb_w(a + b mod 2^w) with a = x̂[k:m] (public) and b = (−r)[k:m]: exactly the reduced-ring decision
of the online GMW protocol and the search's simulator on the shares (x̂, −r)
(:func:`ringlet.search.simulator.decide`), Theorems 1–2 with carry loss c ∈ {0, 1}. With q = −b mod
2^w, a + b ≡ a − q, and msb_w(a − q) = c ⊕ msb(q) ⊕ [a mod 2^(w−1) < q mod 2^(w−1)] with c = msb_w(a):
one DCF with α = q mod 2^(w−1), payload β = 1 − 2·msb(q), gives u = [msb q] + β·1{·<α} =
msb(q) ⊕ lt in Z_2^ℓ, and DReLU = d = (1 − c) − (1 − 2c)·u (linear in public c). Exact is [ℓ:0].

**ReLU with its truncation, one round.** Server 0 adds the offset 2^(ℓ−2), so x' = x + 2^(ℓ−2)
lies in [0, 2^(ℓ−1)) (the compiler keeps |x| < 2^(ℓ−2): ranges.headroom); the servers open
x̂' = x' + r (ℓ bits each) and x̂ = x̂' − 2^(ℓ−2). For x' in that range, x' + r wraps past 2^ℓ exactly
when c' = msb(x̂') = 0 and M = msb(r) = 1, so ⌊x'/2^s⌋ = (x̂' >> s) − T + 2^(ℓ−s)·(1 − c')·M − δ
with T = r >> s and δ = [x̂' mod 2^s < r mod 2^s] ∈ {0, 1}. Multiplying by d needs [d·T] and [d·M],
linear in the DCF's other payloads β·T, β·M and the dealer's [Mq·T], [Mq·M]:

    ReLU = d·((x̂' >> s) − 2^(ℓ−2−s)) − [d·T] + 2^(ℓ−s)·(1 − c')·[d·M]  =  d·(⌊x/2^s⌋ + δ)

Error: at most one unit in the last place (δ, upward like the local truncation), whatever d is
(also where the reduced ring decides wrongly, so outputs match GMW's select). No larger error is
possible for |x| < 2^(ℓ−2), and there is no statistical leak at all: r is uniform in Z_2^ℓ, so x̂'
is uniform and independent of x (perfect hiding; the keys hide α, β under the PRG). s = 0 needs
no offset term: T = r and the M payload vanishes (2^ℓ ≡ 0).

Costs per element (2 servers; w = k − m ≥ 1, P = 2 payloads for s = 0, else 3, B = ⌈P/2⌉):
  ReLU (fused truncation): 1 round, ℓ bits per server; key per server (w − 1)·16 + w·P·ℓ/8 +
  (w − 1)/4 bytes, server 1 also ℓ/8 per additive value (2 for s = 0, else 5); AES blocks per
  server: evaluation (w − 1)(1 + B) + B, keygen at the dealer 2((w − 1)(2 + 2B) + B).
  DReLU / sign (``fsssign``): 1 round, w bits per server (the servers' own bits [k:m] masked by a
  w-bit ρ), P = 1; as a sign family it gives gReLU, LeakyReLU and |x| their sign (+ the fused
  select's round: 2 rounds, w + ℓ + 1 bits).
  w = 1: no DCF (the sign is c ⊕ msb(q)), same 1 round; w = 0: the identity (a truncation only).
  max(x, y) = y + ReLU(x − y): 1 round, ℓ bits; k×k max-pool: ⌈log2 k²⌉ rounds.
"""

from __future__ import annotations

import torch

from ringlet import ring
from ringlet.offline.request import Request
from ringlet.protocols.arith.truncation import truncate
from ringlet.protocols.base import SELECT_COSTS, input_bits, spec_in_ring
from ringlet.protocols.fss import dcf
from ringlet.protocols.fss.keys import DcfKey, FssRelu, FssSign, key_from, relu_additive, relu_payloads
from ringlet.protocols.io import open_values
from ringlet.session import Session
from ringlet.sharing import ArithmeticShare


def require_two(sess: Session, what: str) -> None:
    if sess.num_parties != 2:
        raise ValueError(f"{what}: fss is a two-server protocol; this run has {sess.num_parties} "
                         f"servers (use --relu-protocol gmw)")


def _evaluate(sess: Session, material: DcfKey, w: int, a_low: torch.Tensor, p: int) -> torch.Tensor:
    """This server's DCF outputs (N×P int64) at the public a mod 2^(w−1); zeros for w < 2."""
    n = a_low.numel()
    if w < 2 or sess.dealer.recording:  # a plan recording needs the requests, not the values
        return torch.zeros((n, p), dtype=torch.int64)
    key = key_from(material, sess.rank, w)
    out = dcf.evaluate(key, a_low, dcf.Prg())
    return out.view(n, p)


def sign_requests(w: int, words: int) -> list:
    return [Request(FssSign(64 * words, w), (0, 1))]


def sign_cost(w: int) -> tuple[int, int]:
    """The FSS sign alone: the w-bit masked opening (w bits, 1 round)."""
    return w, 1


def sign(sess: Session, planes: torch.Tensor, piggyback=None):
    """The sign family ``fss``: XOR shares of msb_w(t_0 + t_1) from w bit planes (2 servers),
    in one round of w bits per element (piggyback items travel with it)."""
    require_two(sess, "sign")
    w, words = planes.shape
    n = 64 * words
    m = sess.dealer.get(sign_requests(w, words)[0])
    mask = ring.mask_bits(w)
    y = (ring.unpack_bits(planes, n) + m.rho) & mask
    peer = 1 - sess.rank
    got = sess.comm.round("fss", {peer: [("fss", ring.pack_bits(y, w))] + list(piggyback or [])},
                          [peer])[peer]
    a = (y + ring.unpack_bits(got[0], n)) & mask
    c = ring.msb(a, w)
    lt = _evaluate(sess, m, w, a & ring.mask_bits(w - 1), 1)[:, 0] & 1
    bits = m.mq_bits ^ ring.pack_plane(lt).view(1, -1)
    if sess.rank == 0:
        bits = bits ^ ring.pack_plane(c).view(1, -1)
    return bits, got[1:]


def relu(sess: Session, x: ArithmeticShare, spec, shift: int = 0,
         truncation: str | None = None, sign=None) -> ArithmeticShare:
    """ReLU(⌊x/2^shift⌋) on bits [k:m] in one round (see the module docstring for the costs;
    ``sign`` is unused: the gate decides the sign itself)."""
    sess.require_server("relu")
    require_two(sess, "relu")
    if spec.width == 0:  # the identity: only the truncation remains
        return truncate(sess, x, shift, truncation)
    k, m = input_bits(spec, shift, sess.ring.bits)
    w = k - m
    n = x.numel()
    rng = sess.ring
    ell = rng.bits
    mat = sess.dealer.get(Request(FssRelu(n, k, m, shift), (0, 1)))
    off = 1 << (ell - 2)
    mine = x.data.reshape(-1) + mat.r
    if sess.rank == 0:
        mine = mine + off
    (opened,) = open_values(sess, [("fss", mine)], "add")
    xh = rng.unsigned(opened)                     # x̂' = x' + r, in [0, 2^ℓ)
    xhat = rng.unsigned(opened - off)             # x̂ = x + r
    a = ring.extract_bits(xhat, k, m)
    c = ring.msb(a, w)
    p = relu_payloads(shift)
    lv = _evaluate(sess, mat, w, a & ring.mask_bits(w - 1), p)
    # with u = [Mq] + β·lt (and its T, M companions), d = u where c = 1 and 1 − u where c = 0
    # (the 1 on server 0 only): every term below is a select on the public c, in place
    up = c.bool()
    one = 1 if sess.rank == 0 else 0

    def select(base, u):  # (c ? u : base − u), with u = [Mq·base] + the DCF's word
        return torch.where(up, u, (base - u) if base is not None else (one - u))
    d = select(None, lv[:, 0].add_(mat.mq))
    t = mat.T if shift else mat.r
    out = d * (((xh >> shift) & ring.mask_bits(ell - shift)) - (off >> shift) if shift else xhat)
    out -= select(t, lv[:, 1].add_(mat.mqT))
    if shift:
        d_m = select(mat.M, lv[:, 2].add_(mat.mqM))
        d_m.masked_fill_(rng.msb(xh).bool(), 0)           # the wrap exists only where c' = 0
        out += torch.bitwise_left_shift(d_m, ell - shift)
    return ArithmeticShare(rng.reduce(out).view(x.shape), x.party, x.frac - shift)


def relu_cost(k: int, m: int, ring_bits: int, shift: int = 1) -> dict:
    """Online bits and rounds, key bytes and AES blocks per element of :func:`relu` on [k:m]
    (exact: [ℓ:0]); ``shift`` 0 or > 0 (the fused truncation)."""
    w = k - m
    if w == 0:
        return {"relu_bits": 0, "relu_rounds": 0, "key_bytes": [0, 0], "aes_eval": 0, "aes_keygen": 0}
    p = relu_payloads(shift)
    b = (p + 1) // 2
    levels = w - 1
    cw = 16 * levels + (levels + 1) * p * ring_bits / 8 + 2 * levels / 8 if w >= 2 else 0
    extra = len(relu_additive(shift)) * ring_bits / 8
    return {"relu_bits": ring_bits, "relu_rounds": 1, "key_bytes": [cw, cw + extra],
            "aes_eval": levels * (1 + b) + b if w >= 2 else 0,
            "aes_keygen": 2 * (levels * (2 + 2 * b) + b) if w >= 2 else 0}


def sign_key_bytes(w: int, ring_bits: int) -> list:
    """Key bytes per element of the FSS sign (``fsssign``) for servers 0 and 1."""
    if w < 2:
        return [0, ring_bits / 8 + 1 / 8]
    levels = w - 1
    cw = 16 * levels + (levels + 1) * ring_bits / 8 + 2 * levels / 8
    return [cw, cw + ring_bits / 8 + 1 / 8]


def key_bytes(k: int, m: int, ring_bits: int, shift: int = 1) -> list:
    """Dealer bytes per element of one ReLU on the input bits [k:m] (servers 0 and 1)."""
    return relu_cost(k, m, ring_bits, shift)["key_bytes"]


def cost(spec, parties: int = 2, ring_bits: int = 64, sign=None) -> dict:
    """fss: DReLU w bits (1 round; none for w ≤ 1; + the B2A of b2a-mult), ReLU ℓ bits (1 round),
    2 servers only; the key bytes and AES blocks of the ReLU gate."""
    if parties != 2:
        raise ValueError(f"fss is a two-server protocol; {parties} servers need gmw")
    k, m = spec_in_ring(spec, ring_bits) if spec.width else (spec.k, spec.m)
    w = k - m
    drelu_bits, drelu_rounds = sign_cost(w) if w >= 2 else (0, 0)
    if w:  # an arithmetic DReLU (b2a-mult) adds its B2A, as under gmw
        extra_bits, extra_rounds = SELECT_COSTS[spec.select]["drelu"](ring_bits)
        drelu_bits, drelu_rounds = drelu_bits + extra_bits, drelu_rounds + extra_rounds
    out = {"drelu_bits": drelu_bits, "drelu_rounds": drelu_rounds,
           "relu_bits": ring_bits if w else 0, "relu_rounds": 1 if w else 0}
    gate = relu_cost(k, m, ring_bits)
    out["key_bytes"], out["aes_eval"] = gate["key_bytes"], gate["aes_eval"]
    return out


def figures(spec, op: str, shift: int, ring_bits: int = 64) -> dict:
    """Key bytes and AES blocks per element of the gate of ``op`` (relu, else the sign), and the
    DCF's domain and payloads: what ``bench relu`` reports (the formulas the tests assert)."""
    k, m = input_bits(spec, shift)
    if op == "relu":
        gate = relu_cost(k, m, ring_bits, shift)
        keys, blocks = gate["key_bytes"], {"eval": gate["aes_eval"], "keygen": gate["aes_keygen"]}
        payloads = relu_payloads(shift)
    else:
        keys = sign_key_bytes(k - m, ring_bits)
        b, levels = 1, max(0, k - m - 1)
        blocks = {"eval": levels * 2 + b if levels else 0,
                  "keygen": 2 * (levels * 4 + b) if levels else 0}
        payloads = 1
    return {"dcf_domain_bits": max(0, k - m - 1), "payload_words": payloads,
            "key_bytes_per_element": keys, "aes_blocks_per_element": blocks}
