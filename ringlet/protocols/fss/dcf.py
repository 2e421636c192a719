"""A distributed comparison function (DCF): two keys whose evaluations add up to β·1{x < α}.

The construction of Boyle, Chandran, Gilboa, Gupta, Ishai, Kumar and Rathee (EUROCRYPT 2021, the DCF
of "Function Secret Sharing for Mixed-Mode and Fixed-Point Secure Computation"), written from the
paper: a binary tree over the n bits of the domain, most significant bit first. Each party's key
holds a root seed and, per level, one seed correction word, two control-bit corrections and one
payload correction; a last payload correction closes the path. Evaluating a key on a public x walks
one path of the tree: per level one PRG call, a select between its left and right halves, and an
addition to the running payload. The two evaluations add up to β where x < α and to 0 elsewhere,
in the payload group Z_2^ℓ (ℓ ≤ 64, kept in int64 and reduced by the caller).

The PRG is fixed-key AES in the Matyas–Meyer–Oseas mode, H(s) = AES_K(s) ⊕ s, a correlation-robust
hash under a public key K (the standard assumption of FSS implementations). G(s) is three blocks,
H(s ⊕ c_0) ‖ H(s ⊕ c_1) ‖ H(s ⊕ c_2): the left child seed and its control bit (the block's lowest
bit, cleared in the seed), the right child and its bit, and the two 64-bit payload words. Every
level of a whole batch of keys is one AES call of 3N blocks (``cryptography``'s AES-ECB on the fixed
key): no per-element Python. Root seeds are drawn from the caller's AES-CTR CSPRNG stream.

Payloads are one word or a vector of P words per element (a pair for ReLU, three for ReLU with its
truncation): the payload group is Z_2^64 ^ P, corrected word by word.

Costs per element, for a domain of n bits and P payload words (B = ⌈P/2⌉):
  key: a 16-byte root seed, n·16 bytes of seed corrections, (n + 1)·P payload words and 2n
  control bits (:meth:`KeyBatch.nbytes`; payload words travel at the ring's ℓ bits, and roots drawn
  from a stream shared with the dealer do not travel);
  AES blocks: keygen n·(2 + 2B) per party + B for the leaf; evaluation n·(1 + B) + B per party;
  no communication.

Speed (this 2-core machine, one thread, scaled to 10^6 keys): n = 63, P = 3: evaluation 1.5–2.2 s
in numpy, 1.0–1.3 s compiled (:mod:`ringlet.protocols.fss.native`, AES-NI, used where a C compiler
is found), keygen 13 s; n = 7, P = 3: evaluation 0.26 s / 0.17 s. Chunks of :data:`CHUNK` elements keep every
level's arrays in the cache, and every array is block-major (numpy is slow on a trailing axis of 2).

Not here: early termination (the last levels packed into one block when P·ℓ is small).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from ringlet.prng import AesCtrStream
from ringlet.protocols.fss import native as dcf_native

# the public fixed key of the PRG and the three tweaks of its blocks (public constants)
_FIXED_KEY = bytes(range(0x52, 0x62))
_TWEAKS = np.array([[0, 0], [1, 0], [2, 0]], dtype=np.uint64)
_LSB = np.uint64(1)


class Prg:
    """Fixed-key AES in MMO mode over whole arrays of blocks: H(s ⊕ c) = AES_K(s ⊕ c) ⊕ s ⊕ c.

    Blocks of a seed s (tweak c = (j, 0) in the low word): j = σ the child seed of side σ (0 left,
    1 right) and its control bit (the block's lowest bit, cleared in the seed), then the payload:
    B = ⌈P/2⌉ blocks per side, j = 2(i + 1) + σ (two payload words per block), so every block of
    side σ is s ⊕ σ ⊕ an even constant. The leaf's
    payload: B blocks with c = (i, 1). Arrays are block-major (block index first, then the
    element): numpy is slow on tiny trailing axes.
    """

    def __init__(self):
        self._aes = Cipher(algorithms.AES(_FIXED_KEY), modes.ECB()).encryptor()
        self.blocks = 0  # AES blocks computed so far

    def mmo(self, x: np.ndarray, out: bytearray | None = None) -> np.ndarray:
        """H of every 128-bit block of x (…×2 uint64); a view of ``out`` when given."""
        out = out if out is not None else bytearray(x.nbytes + 15)
        self._aes.update_into(memoryview(x.reshape(-1)).cast("B"), out)  # type: ignore[arg-type]  # numpy arrays are buffers
        h = np.frombuffer(out, dtype=np.uint64, count=x.size).reshape(x.shape)
        h ^= x
        self.blocks += x.size // 2
        return h

    def convert(self, seeds: np.ndarray, b: int) -> np.ndarray:
        """The leaf seeds (n×2) as payload blocks, B×n×2 int64 (a fresh array)."""
        x = np.empty((b, seeds.shape[0], 2), dtype=np.uint64)
        x[:] = seeds[None]
        x[:, :, 0] ^= np.arange(b, dtype=np.uint64)[:, None]
        x[:, :, 1] ^= _LSB
        return self.mmo(x).view(np.int64).copy()


@dataclass
class KeyBatch:
    """One party's DCF keys for N elements, level-major: every array's first axis is the level.

    Everything is stored as it travels, so a received key needs no conversion: payload words
    payload-major (P×N), control bits packed 8 per byte in little-endian order, one row of
    ⌈N/8⌉ bytes per level and side."""

    party: int
    bits: int                # the domain width n
    seed: np.ndarray         # N×2 uint64: the root seeds
    cw_seed: np.ndarray      # n×N×2 uint64
    cw_t: np.ndarray         # n×2×⌈N/8⌉ uint8: the control-bit corrections (left, right), packed
    cw_v: np.ndarray         # n×P×N int64: the payload corrections
    cw_last: np.ndarray      # P×N int64: the final payload correction

    def __len__(self) -> int:
        return self.seed.shape[0]

    @property
    def payloads(self) -> int:
        return self.cw_last.shape[0]

    def nbytes(self, payload_bits: int = 64, roots: bool = True) -> int:
        """Bytes of this party's keys: words (payload words of ``payload_bits``), the control bits
        packed 8 per byte, and the root seeds unless ``roots`` is false (roots drawn from a stream
        shared with the dealer never travel)."""
        n, p = len(self), self.payloads
        words = (self.bits + 1) * n * p * payload_bits
        return 16 * n * roots + self.bits * n * 16 + (words + 7) // 8 + 2 * self.bits * ((n + 7) // 8)


def to_blocks(words: np.ndarray) -> np.ndarray:
    """N×P payload words → B×N×2 blocks (zero-padded)."""
    n, p = words.shape
    b = (p + 1) // 2
    out = np.zeros((n, 2 * b), dtype=np.int64)
    out[:, :p] = words
    return np.ascontiguousarray(out.reshape(n, b, 2).transpose(1, 0, 2))


def _check(values: torch.Tensor, width: int, what: str) -> np.ndarray:
    if not 1 <= width <= 64:
        raise ValueError(f"DCF domain width must be 1..64, got {width}")
    arr = values.reshape(-1).to(torch.int64).numpy()
    if width < 64 and ((arr < 0) | (arr >= (1 << width))).any():
        raise ValueError(f"DCF {what}: values must lie in [0, 2^{width})")
    return arr


def root_seeds(stream: AesCtrStream, n: int) -> np.ndarray:
    """n root seeds (N×2 uint64, control bit cleared) from a CSPRNG stream: a dealer and a server
    sharing that stream draw the same roots, so roots never need to be sent."""
    roots = stream.int64((n, 2)).numpy().view(np.uint64).copy()
    roots[:, 0] &= ~_LSB
    return roots


CHUNK = 16384  # elements per pass: every level's arrays of a chunk stay in the cache


def keygen(alpha: torch.Tensor, beta: torch.Tensor, width: int,
           stream: AesCtrStream | None = None, prg: Prg | None = None,
           roots: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[KeyBatch, KeyBatch]:
    """Keys of f(x) = β·1{x < α} for each element (α unsigned ``width``-bit, β in Z_2^64, or
    N×P: P payloads per element, e.g. a pair).

    The parties' root seeds come from ``roots`` (see :func:`root_seeds`) or are drawn from
    ``stream``; everything else in the keys (the correction words) is the same for both parties.
    Runs chunk by chunk (:data:`CHUNK` elements), both parties' trees in one AES call per level.
    """
    a = _check(alpha, width, "α")
    n = a.shape[0]
    beta64 = beta.to(torch.int64).numpy()
    beta64 = beta64.reshape(n, -1) if beta64.ndim != 2 else beta64
    if beta64.shape[0] != n:
        raise ValueError(f"DCF: {n} values of α but {beta64.shape[0]} payloads")
    p = beta64.shape[1]
    prg = prg or Prg()
    if roots is None:
        if stream is None:
            raise ValueError("DCF keygen needs root seeds or a CSPRNG stream to draw them from")
        roots = (root_seeds(stream, n), root_seeds(stream, n))
    root_pair = [np.asarray(r, dtype=np.uint64) & np.array([~_LSB, ~np.uint64(0)], dtype=np.uint64)
                 for r in roots]
    if any(r.shape != (n, 2) for r in root_pair):
        raise ValueError(f"DCF keygen: root seeds must be {n}×2 uint64 arrays")
    cw_seed = np.empty((width, n, 2), dtype=np.uint64)
    cw_t = np.zeros((width, 2, (n + 7) // 8), dtype=np.uint8)
    cw_v = np.empty((width, p, n), dtype=np.int64)
    last = np.empty((p, n), dtype=np.int64)
    for lo in range(0, n, CHUNK):  # CHUNK is a multiple of 8: chunks start on whole bytes of cw_t
        hi = min(n, lo + CHUNK)
        blocks = _keygen_chunk(a[lo:hi], to_blocks(beta64[lo:hi]), width, root_pair[0][lo:hi],
                               root_pair[1][lo:hi], prg, cw_seed[:, lo:hi],
                               cw_t[:, :, lo // 8:(hi + 7) // 8], cw_v[:, :, lo:hi], p)
        for k in range(p):
            last[k, lo:hi] = blocks[k // 2, :, k % 2]
    return (KeyBatch(0, width, root_pair[0], cw_seed, cw_t, cw_v, last),
            KeyBatch(1, width, root_pair[1], cw_seed, cw_t, cw_v, last))


def _keygen_chunk(a, beta, width, root0, root1, prg, cw_seed, cw_t, cw_v, p) -> np.ndarray:
    b, n, _ = beta.shape
    nb = 2 + 2 * b
    pay = 2 * (1 + np.arange(b))
    tw = np.concatenate([[0, 1], pay, pay + 1]).astype(np.uint64)[None, :, None]
    x = np.empty((2, nb, n, 2), dtype=np.uint64)    # both parties, every block, every element
    out = bytearray(x.nbytes + 15)
    s = np.stack([root0, root1])                     # 2×n×2
    t = np.zeros((2, n), dtype=np.uint64)
    t[1] = 1
    v_alpha = np.zeros((b, n, 2), dtype=np.int64)
    with np.errstate(over="ignore"):
        for i in range(width):
            x[:] = s[:, None]
            x[:, :, :, 0] ^= tw
            h = prg.mmo(x, out)
            t_l, t_r = h[:, 0, :, 0] & _LSB, h[:, 1, :, 0] & _LSB   # 2×n
            h[:, 0:2, :, 0] &= ~_LSB
            v = h[:, 2:].view(np.int64)
            v_l, v_r = v[:, :b], v[:, b:]             # 2×B×n×2
            ai = (a.view(np.uint64) >> np.uint64(width - 1 - i)) & _LSB
            right = ai.astype(bool)
            m2 = np.repeat(0 - ai, 2).reshape(n, 2)   # all ones where α_i = 1: keep the right child
            r2 = np.repeat(right, 2).reshape(n, 2)
            s_l, s_r = h[:, 0], h[:, 1]               # 2×n×2
            d_l, d_r = s_l[0] ^ s_l[1], s_r[0] ^ s_r[1]
            cw_s = d_r ^ ((d_l ^ d_r) & m2)           # the lost child's seeds, XORed
            dv_l, dv_r = v_l[1] - v_l[0], v_r[1] - v_r[0]
            lose, keep = np.where(r2, dv_l, dv_r), np.where(r2, dv_r, dv_l)
            lose -= v_alpha
            lose += beta * r2                         # losing the left child: x < α there
            sign = np.repeat(1 - 2 * t[1].view(np.int64), 2).reshape(n, 2)
            corr = lose * sign
            for k in range(p):
                cw_v[i, k] = corr[k // 2, :, k % 2]
            v_alpha = lose + v_alpha - keep           # the kept path's sum after correction
            cw_seed[i] = cw_s
            tcl = t_l[0] ^ t_l[1] ^ ai ^ _LSB
            tcr = t_r[0] ^ t_r[1] ^ ai
            cw_t[i, 0] = np.packbits(tcl.astype(np.uint8), bitorder="little")
            cw_t[i, 1] = np.packbits(tcr.astype(np.uint8), bitorder="little")
            t_keep = np.where(right, tcr, tcl)
            keep_s = s_l ^ ((s_l ^ s_r) & m2)         # 2×n×2
            keep_s ^= cw_s & np.repeat(0 - t, 2, axis=1).reshape(2, n, 2)
            s = keep_s
            t = np.where(right, t_r, t_l) ^ (t & t_keep)
        sign = np.repeat(1 - 2 * t[1].astype(np.int64), 2).reshape(n, 2)
        return sign * (prg.convert(s[1], b) - prg.convert(s[0], b) - v_alpha)


def evaluate(key: KeyBatch, x: torch.Tensor, prg: Prg | None = None,
             native: bool | str | None = None) -> torch.Tensor:
    """This party's share (int64, Z_2^64) of β·1{x < α} at public x, element by element: N
    values for one payload, N×P for P.

    Compiled for this machine where it can be (:mod:`ringlet.protocols.fss.native`; ``native``
    False, or a ``prg`` to count blocks, forces numpy; a kind, ``vaes`` or ``aesni``, forces that
    build), else numpy chunk by chunk (:data:`CHUNK` elements); all give the same outputs."""
    xs = _check(x, key.bits, "x")
    if xs.shape[0] != len(key):
        raise ValueError(f"DCF: {len(key)} keys but {xs.shape[0]} inputs")
    p, n = key.payloads, len(key)
    which = native if isinstance(native, str) else None
    native = dcf_native.load(which) if prg is None and native is not False else None
    v = dcf_native.evaluate(native, key, xs.view(np.uint64), _FIXED_KEY) if native else None
    if v is not None:
        out = torch.from_numpy(v)
        return out[0] if p == 1 else out.t()
    prg = prg or Prg()
    v = np.empty((p, n), dtype=np.int64)
    for lo in range(0, n, CHUNK):
        hi = min(n, lo + CHUNK)
        v[:, lo:hi] = _eval_chunk(key, xs[lo:hi].view(np.uint64), lo, hi, prg)
    if key.party:
        np.negative(v, out=v)
    out = torch.from_numpy(v)
    return out[0] if p == 1 else out.t()


def _eval_chunk(key: KeyBatch, xs: np.ndarray, lo: int, hi: int, prg: Prg) -> np.ndarray:
    n, p = hi - lo, key.payloads
    b = (p + 1) // 2
    nb = 1 + b
    x = np.empty((nb, n, 2), dtype=np.uint64)       # the path's child block, then its payload
    out = bytearray(x.nbytes + 15)
    even = (2 * (1 + np.arange(b))).astype(np.uint64)[:, None]
    s = key.seed[lo:hi]
    t = np.full(n, key.party, dtype=np.uint64)
    v = np.zeros((p, n), dtype=np.int64)
    tmp = np.empty((p, n), dtype=np.int64)
    bytes_lo, bytes_hi = lo // 8, (hi + 7) // 8
    with np.errstate(over="ignore"):
        for i in range(key.bits):
            side = (xs >> np.uint64(key.bits - 1 - i)) & _LSB
            x[:] = s[None]
            x[:, :, 0] ^= side                      # every block of the path: s ⊕ σ ⊕ constant
            x[1:, :, 0] ^= even
            h = prg.mmo(x, out)
            words = h[1:].view(np.int64)
            for k in range(p):
                v[k] += words[k // 2, :, k % 2]
            np.multiply(key.cw_v[i, :, lo:hi], t.view(np.int64), out=tmp)
            v += tmp
            child = h[0]                            # a view: the next level copies it into x
            ct = child[:, 0] & _LSB
            child[:, 0] ^= ct
            mask = np.repeat(0 - t, 2).reshape(n, 2)
            mask &= key.cw_seed[i, lo:hi]
            child ^= mask
            rows = key.cw_t[i, :, bytes_lo:bytes_hi]
            left = np.unpackbits(rows[0], count=n, bitorder="little")
            right = np.unpackbits(rows[1], count=n, bitorder="little")
            sel = left ^ ((left ^ right) & side.astype(np.uint8))
            ct ^= t & sel
            s, t = child, ct
        leaf = prg.convert(s, b)
        ti = t.astype(np.int64)
        for k in range(p):
            v[k] += leaf[k // 2, :, k % 2] + ti * key.cw_last[k, lo:hi]
    return v
