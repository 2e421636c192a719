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
  AES blocks: keygen n·(2 + 2B) per party (P = 1: 3n) + B for the leaf; evaluation n·(1 + B) per
  party (P = 1: 2n) + B; no communication.

Not here: early termination (the last levels packed into one block when P·ℓ is small).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from ringlet.prng import AesCtrStream

# the public fixed key of the PRG and the three tweaks of its blocks (public constants)
_FIXED_KEY = bytes(range(0x52, 0x62))
_TWEAKS = np.array([[0, 0], [1, 0], [2, 0]], dtype=np.uint64)
_LSB = np.uint64(1)


class Prg:
    """G(s) for a batch of 128-bit seeds (N×2 uint64), P payload words per child, one AES call.

    Blocks per seed: H(s ⊕ 0) the left child seed and its control bit (the block's lowest bit,
    cleared in the seed), H(s ⊕ 1) the right one, then the payload: for P = 1 one block H(s ⊕ 2)
    holding both children's words; for P ≥ 2, B = ⌈P/2⌉ blocks per side, H(s ⊕ (2 + σB + j)).
    Leaf conversion (P ≥ 2): ⌈P/2⌉ blocks H(s ⊕ (j, 1)); P = 1 uses the seed's upper word.
    """

    def __init__(self):
        self._aes = Cipher(algorithms.AES(_FIXED_KEY), modes.ECB()).encryptor()
        self.blocks = 0  # AES blocks computed so far
        self._slots: dict[tuple, tuple] = {}  # reused buffers (fresh memory is dear here)

    def _buffers(self, key: tuple, n: int, blocks: int):
        x, out = self._slots.get(key, (None, None))
        if x is None or x.shape[0] != n:
            x, out = np.empty((n, blocks, 2), dtype=np.uint64), bytearray(n * blocks * 16 + 15)
            self._slots[key] = (x, out)
        return x, out

    def _mmo(self, x: np.ndarray, out: bytearray) -> np.ndarray:
        n, blocks = x.shape[0], x.shape[1]
        self._aes.update_into(memoryview(x.reshape(-1)).cast("B"), out)
        h = np.frombuffer(out, dtype=np.uint64, count=2 * blocks * n).reshape(n, blocks, 2)
        h ^= x
        self.blocks += blocks * n
        return h

    @staticmethod
    def payload_blocks(p: int) -> int:
        return 1 if p == 1 else 2 * ((p + 1) // 2)

    def expand(self, seeds: np.ndarray, p: int = 1, slot: int = 0):
        """(s_L, t_L, s_R, t_R, v_L, v_R) for N seeds: child seeds N×2 uint64 with their control
        bits (0/1 uint64) and both children's payloads (N×P int64). Views of buffer ``slot``,
        reused by the next call with the same slot."""
        n = seeds.shape[0]
        nb = 2 + self.payload_blocks(p)
        x, out = self._buffers(("expand", slot, p), n, nb)
        x[:] = seeds[:, None, :]
        x[:, :, 0] ^= np.arange(nb, dtype=np.uint64)[None, :]
        h = self._mmo(x, out)
        s_l, s_r = h[:, 0], h[:, 1]
        t_l, t_r = s_l[:, 0] & _LSB, s_r[:, 0] & _LSB
        s_l[:, 0] &= ~_LSB
        s_r[:, 0] &= ~_LSB
        words = h[:, 2:].reshape(n, -1).view(np.int64)
        if p == 1:
            return s_l, t_l, s_r, t_r, words[:, 0:1], words[:, 1:2]
        half = words.shape[1] // 2
        return s_l, t_l, s_r, t_r, words[:, :p], words[:, half:half + p]

    def path(self, seeds: np.ndarray, side: np.ndarray, p: int = 1):
        """Evaluation's half of :meth:`expand`: only the child on each seed's own side (0 left,
        1 right, uint64) and its payload — 1 + ⌈P/2⌉ AES blocks per seed (2 for P = 1).
        Returns (child seed N×2 uint64, its control bit, payload N×P int64); the payload is a
        view reused by the next call, the child a copy."""
        n = seeds.shape[0]
        b = (p + 1) // 2
        x, out = self._buffers(("path", p), n, 1 + b)
        x[:] = seeds[:, None, :]
        x[:, 0, 0] ^= side
        if p == 1:
            x[:, 1, 0] ^= np.uint64(2)
        else:
            x[:, 1:, 0] ^= (np.uint64(2) + side * np.uint64(b))[:, None] + np.arange(b, dtype=np.uint64)
        h = self._mmo(x, out)
        child = h[:, 0].copy()
        t = child[:, 0] & _LSB
        child[:, 0] &= ~_LSB
        words = h[:, 1:].reshape(n, -1).view(np.int64)
        if p == 1:
            return child, t, np.where(side.astype(bool), words[:, 1], words[:, 0])[:, None]
        return child, t, words[:, :p]

    def convert(self, seeds: np.ndarray, p: int) -> np.ndarray:
        """The leaf seeds as P payload words (N×P int64, a fresh array)."""
        if p == 1:
            return seeds[:, 1:2].view(np.int64).copy()
        b = (p + 1) // 2
        x, out = self._buffers(("convert", p), seeds.shape[0], b)
        x[:] = seeds[:, None, :]
        x[:, :, 0] ^= np.arange(b, dtype=np.uint64)[None, :]
        x[:, :, 1] ^= _LSB
        h = self._mmo(x, out)
        return h.reshape(seeds.shape[0], -1).view(np.int64)[:, :p].copy()


@dataclass
class KeyBatch:
    """One party's DCF keys for N elements, level-major: every array's first axis is the level."""

    party: int
    bits: int                # the domain width n
    seed: np.ndarray         # N×2 uint64: the root seeds
    cw_seed: np.ndarray      # n×N×2 uint64
    cw_t: np.ndarray         # n×N×2 uint8: the control-bit corrections (left, right)
    cw_v: np.ndarray         # n×N×P int64: the payload corrections
    cw_last: np.ndarray      # N×P int64: the final payload correction

    def __len__(self) -> int:
        return self.seed.shape[0]

    @property
    def payloads(self) -> int:
        return self.cw_last.shape[1]

    def nbytes(self, payload_bits: int = 64, roots: bool = True) -> int:
        """Bytes of this party's keys: words (payload words of ``payload_bits``), the control bits
        packed 8 per byte, and the root seeds unless ``roots`` is false (roots drawn from a stream
        shared with the dealer never travel)."""
        n, p = len(self), self.payloads
        words = (self.bits + 1) * n * p * payload_bits
        return (16 * n * roots + self.bits * n * 16 + (words + 7) // 8
                + (2 * self.bits * n + 7) // 8)


def _bit(values: np.ndarray, i: int, width: int) -> np.ndarray:
    """Bit i of each width-bit value counted from the most significant (i = 0), as 0/1 uint64."""
    return (values.view(np.uint64) >> np.uint64(width - 1 - i)) & _LSB


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


def keygen(alpha: torch.Tensor, beta: torch.Tensor, width: int,
           stream: AesCtrStream | None = None, prg: Prg | None = None,
           roots: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[KeyBatch, KeyBatch]:
    """Keys of f(x) = β·1{x < α} for each element (α unsigned ``width``-bit, β in Z_2^64, or
    N×P: P payloads per element, e.g. a pair).

    The parties' root seeds come from ``roots`` (see :func:`root_seeds`) or are drawn from
    ``stream``; everything else in the keys (the correction words) is the same for both parties.
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
    roots = [np.asarray(r, dtype=np.uint64) & np.array([~_LSB, ~np.uint64(0)], dtype=np.uint64)
             for r in roots]
    if any(r.shape != (n, 2) for r in roots):
        raise ValueError(f"DCF keygen: root seeds must be {n}×2 uint64 arrays")
    s = [roots[0].copy(), roots[1].copy()]
    t = [np.zeros(n, dtype=np.uint64), np.ones(n, dtype=np.uint64)]
    v_alpha = np.zeros((n, p), dtype=np.int64)
    cw_seed = np.empty((width, n, 2), dtype=np.uint64)
    cw_t = np.empty((width, n, 2), dtype=np.uint8)
    cw_v = np.empty((width, n, p), dtype=np.int64)
    with np.errstate(over="ignore"):
        for i in range(width):
            (sl0, tl0, sr0, tr0, vl0, vr0) = prg.expand(s[0], p)
            (sl1, tl1, sr1, tr1, vl1, vr1) = prg.expand(s[1], p, slot=1)
            ai = _bit(a, i, width)
            right = ai.astype(bool)
            r2 = right[:, None]
            m = (0 - ai)[:, None]  # all ones where α_i = 1: keep the right child, lose the left
            sign = (1 - 2 * t[1].view(np.int64))[:, None]  # (−1)^{t_1}
            lose_s0 = sr0 ^ ((sl0 ^ sr0) & m)
            lose_s1 = sr1 ^ ((sl1 ^ sr1) & m)
            lose_v0, lose_v1 = np.where(r2, vl0, vr0), np.where(r2, vl1, vr1)
            keep_v0, keep_v1 = np.where(r2, vr0, vl0), np.where(r2, vr1, vl1)
            s_cw = lose_s0 ^ lose_s1
            v_cw = sign * (lose_v1 - lose_v0 - v_alpha)
            v_cw += np.where(r2, sign * beta64, 0)  # losing the left child: x < α there
            v_alpha = v_alpha - keep_v1 + keep_v0 + sign * v_cw
            t_cw_l = tl0 ^ tl1 ^ ai ^ _LSB
            t_cw_r = tr0 ^ tr1 ^ ai
            cw_seed[i], cw_v[i] = s_cw, v_cw
            cw_t[i, :, 0], cw_t[i, :, 1] = t_cw_l, t_cw_r
            t_cw_keep = np.where(right, t_cw_r, t_cw_l)
            for b, (sl, tl, sr, tr) in enumerate(((sl0, tl0, sr0, tr0), (sl1, tl1, sr1, tr1))):
                keep_s = sl ^ ((sl ^ sr) & m)
                keep_s ^= s_cw & (0 - t[b])[:, None]
                s[b] = keep_s
                t[b] = np.where(right, tr, tl) ^ (t[b] & t_cw_keep)
        sign = (1 - 2 * t[1].astype(np.int64))[:, None]
        last = sign * (prg.convert(s[1], p) - prg.convert(s[0], p) - v_alpha)
    return tuple(KeyBatch(b, width, roots[b], cw_seed, cw_t, cw_v, last) for b in (0, 1))


def evaluate(key: KeyBatch, x: torch.Tensor, prg: Prg | None = None) -> torch.Tensor:
    """This party's share (int64, Z_2^64) of β·1{x < α} at public x, element by element: N
    values for one payload, N×P for P."""
    xs = _check(x, key.bits, "x")
    if xs.shape[0] != len(key):
        raise ValueError(f"DCF: {len(key)} keys but {xs.shape[0]} inputs")
    prg = prg or Prg()
    p = key.payloads
    s = key.seed
    t = np.full(len(key), key.party, dtype=np.uint64)
    v = np.zeros((len(key), p), dtype=np.int64)
    with np.errstate(over="ignore"):
        for i in range(key.bits):
            xi = _bit(xs, i, key.bits)
            child, ct, step = prg.path(s, xi, p)
            on = (0 - t).astype(np.uint64)  # all ones where the control bit is set
            child ^= key.cw_seed[i] & on[:, None]
            right = xi.astype(bool)
            cw_t = np.where(right, key.cw_t[i, :, 1], key.cw_t[i, :, 0])
            step = step + key.cw_v[i] * t.view(np.int64)[:, None]
            if key.party:
                v -= step
            else:
                v += step
            s, t = child, ct ^ (t & cw_t)
        leaf = prg.convert(s, p) + t.astype(np.int64)[:, None] * key.cw_last
        if key.party:
            v -= leaf
        else:
            v += leaf
    out = torch.from_numpy(v)
    return out[:, 0].contiguous() if p == 1 else out
