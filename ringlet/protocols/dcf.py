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

Costs per element, for a domain of n bits and one 64-bit payload:
  key: 16 + n·(16 + 8) + 8 bytes of words plus 2n control bits — stored level-major
  (``KeyBatch``), 24n + 24 bytes and ⌈2n/8⌉ more per key (:meth:`KeyBatch.nbytes`);
  AES blocks: keygen 6n (both parties' trees), evaluation 2n per party (only the child on x's
  path and the payload block); no communication.

Not yet here (issue 15): early termination for small payloads, pairs of payloads, and speed — the
AES of a level is one call into reused buffers, but the numpy work around it still dominates (on this
machine 10^6 keys of width 64 take 34–38 s to generate and 5.4–6.3 s to evaluate; width 8: 4.7–5.5 s
and 0.7–0.8 s).
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
    """G(s) for a batch of 128-bit seeds (N×2 uint64): three MMO blocks per seed, one AES call."""

    def __init__(self):
        self._aes = Cipher(algorithms.AES(_FIXED_KEY), modes.ECB()).encryptor()
        self.blocks = 0  # AES blocks computed so far
        self._x = self._out = None  # path's buffers, reused from level to level
        self._slots: dict[int, tuple] = {}  # expand's buffers

    def expand(self, seeds: np.ndarray, slot: int = 0):
        """(s_L, t_L, s_R, t_R, v_L, v_R) for N seeds: child seeds N×2 uint64 with their control
        bits (0/1 uint64) and the two payload words (int64). The results are views of buffer
        ``slot``, reused by the next call with the same slot (fresh memory is dear here)."""
        n = seeds.shape[0]
        x, out = self._slots.get(slot, (None, None))
        if x is None or x.shape[0] != n:
            x, out = np.empty((n, 3, 2), dtype=np.uint64), bytearray(n * 48 + 15)
            self._slots[slot] = (x, out)
        np.bitwise_xor(seeds[:, None, :], _TWEAKS[None, :, :], out=x)
        self._aes.update_into(memoryview(x.reshape(-1)).cast("B"), out)
        h = np.frombuffer(out, dtype=np.uint64, count=6 * n).reshape(n, 3, 2)
        h ^= x
        self.blocks += 3 * n
        s_l, s_r = h[:, 0], h[:, 1]
        t_l, t_r = s_l[:, 0] & _LSB, s_r[:, 0] & _LSB
        s_l[:, 0] &= ~_LSB
        s_r[:, 0] &= ~_LSB
        return s_l, t_l, s_r, t_r, h[:, 2, 0].view(np.int64), h[:, 2, 1].view(np.int64)

    def path(self, seeds: np.ndarray, side: np.ndarray):
        """Evaluation's half of :meth:`expand`: only the child on each seed's own side (0 left,
        1 right, uint64) and the payload words — two AES blocks per seed instead of three.
        Returns (child seed N×2 uint64, its control bit, v_L, v_R); the buffers are reused by
        the next call (the caller copies what it keeps)."""
        n = seeds.shape[0]
        if self._x is None or self._x.shape[0] != n:
            self._x = np.empty((n, 2, 2), dtype=np.uint64)
            self._out = bytearray(n * 32 + 15)  # update_into wants a block's worth of spare room
        x = self._x
        x[:, 0] = seeds
        x[:, 0, 0] ^= side  # tweak c_0 = 0 or c_1 = 1 in the low word
        x[:, 1] = seeds
        x[:, 1, 0] ^= np.uint64(2)
        self._aes.update_into(memoryview(x.reshape(-1)).cast("B"), self._out)
        h = np.frombuffer(self._out, dtype=np.uint64, count=4 * n).reshape(n, 2, 2)
        h ^= x
        self.blocks += 2 * n
        child = h[:, 0].copy()
        t = child[:, 0] & _LSB
        child[:, 0] &= ~_LSB
        return child, t, h[:, 1, 0].view(np.int64), h[:, 1, 1].view(np.int64)


@dataclass
class KeyBatch:
    """One party's DCF keys for N elements, level-major: every array's first axis is the level."""

    party: int
    bits: int                # the domain width n
    seed: np.ndarray         # N×2 uint64: the root seeds
    cw_seed: np.ndarray      # n×N×2 uint64
    cw_t: np.ndarray         # n×N×2 uint8: the control-bit corrections (left, right)
    cw_v: np.ndarray         # n×N int64: the payload corrections
    cw_last: np.ndarray      # N int64: the final payload correction

    def __len__(self) -> int:
        return self.seed.shape[0]

    def nbytes(self) -> int:
        """Bytes of this party's keys as sent: words, plus the control bits packed 8 per byte."""
        n = len(self)
        return 16 * n + self.bits * n * (16 + 8) + 8 * n + (2 * self.bits * n + 7) // 8


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
    """Keys of f(x) = β·1{x < α} for each element (α unsigned ``width``-bit, β in Z_2^64).

    The parties' root seeds come from ``roots`` (see :func:`root_seeds`) or are drawn from
    ``stream``; everything else in the keys (the correction words) is the same for both parties.
    """
    a = _check(alpha, width, "α")
    beta64 = beta.reshape(-1).to(torch.int64).numpy()
    n = a.shape[0]
    if beta64.shape[0] != n:
        raise ValueError(f"DCF: {n} values of α but {beta64.shape[0]} payloads")
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
    v_alpha = np.zeros(n, dtype=np.int64)
    cw_seed = np.empty((width, n, 2), dtype=np.uint64)
    cw_t = np.empty((width, n, 2), dtype=np.uint8)
    cw_v = np.empty((width, n), dtype=np.int64)
    with np.errstate(over="ignore"):
        for i in range(width):
            (sl0, tl0, sr0, tr0, vl0, vr0) = prg.expand(s[0])
            (sl1, tl1, sr1, tr1, vl1, vr1) = prg.expand(s[1], slot=1)
            ai = _bit(a, i, width)
            right = ai.astype(bool)
            m = (0 - ai)[:, None]  # all ones where α_i = 1: keep the right child, lose the left
            sign = 1 - 2 * t[1].view(np.int64)  # (−1)^{t_1}
            lose_s0 = sr0 ^ ((sl0 ^ sr0) & m)
            lose_s1 = sr1 ^ ((sl1 ^ sr1) & m)
            lose_v0, lose_v1 = np.where(right, vl0, vr0), np.where(right, vl1, vr1)
            keep_v0, keep_v1 = np.where(right, vr0, vl0), np.where(right, vr1, vl1)
            s_cw = lose_s0 ^ lose_s1
            v_cw = sign * (lose_v1 - lose_v0 - v_alpha)
            v_cw += np.where(right, sign * beta64, 0)  # losing the left child: x < α there
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
        sign = 1 - 2 * t[1].astype(np.int64)
        last = sign * (s[1][:, 0].view(np.int64) - s[0][:, 0].view(np.int64) - v_alpha)
    return tuple(KeyBatch(b, width, roots[b], cw_seed, cw_t, cw_v, last) for b in (0, 1))


def evaluate(key: KeyBatch, x: torch.Tensor, prg: Prg | None = None) -> torch.Tensor:
    """This party's share (int64, Z_2^64) of β·1{x < α} at public x, element by element."""
    xs = _check(x, key.bits, "x")
    if xs.shape[0] != len(key):
        raise ValueError(f"DCF: {len(key)} keys but {xs.shape[0]} inputs")
    prg = prg or Prg()
    s = key.seed
    t = np.full(len(key), key.party, dtype=np.uint64)
    sign = 1 - 2 * key.party
    v = np.zeros(len(key), dtype=np.int64)
    with np.errstate(over="ignore"):
        for i in range(key.bits):
            xi = _bit(xs, i, key.bits)
            child, ct, vl, vr = prg.path(s, xi)
            on = (0 - t).astype(np.uint64)  # all ones where the control bit is set
            child ^= key.cw_seed[i] & on[:, None]
            right = xi.astype(bool)
            cw_t = np.where(right, key.cw_t[i, :, 1], key.cw_t[i, :, 0])
            step = np.where(right, vr, vl)
            step += key.cw_v[i] * t.view(np.int64)
            if sign < 0:
                v -= step
            else:
                v += step
            s, t = child, ct ^ (t & cw_t)
        v += sign * (s[:, 0].view(np.int64) + t.astype(np.int64) * key.cw_last)
    return torch.from_numpy(v.copy())
