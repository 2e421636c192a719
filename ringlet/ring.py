"""The ring Z_2^ℓ (32 ≤ ℓ ≤ 64) on torch.int64, fixed-point encoding, bit extraction, bit-slicing.

Pure functions: no parties, no I/O. Addition and multiplication of int64 tensors wrap modulo 2^64,
and reduction modulo 2^ℓ is a ring homomorphism Z_2^64 → Z_2^ℓ, so every local linear operation and
product can run on int64 unreduced: only the low ℓ bits are ever meaningful. Values are reduced
(:meth:`Ring.reduce`, to the centred residue in [−2^(ℓ−1), 2^(ℓ−1))) where the integer itself
matters — a sign, a truncation, a decoding — and sent at exactly ℓ bits per element
(:meth:`Ring.wire`). Fixed point: a real x is the ring element round(x · 2^f).

Bit-slicing turns n elements of w bits into w *bit planes* of ceil(n/64) int64 words (element i is
bit i % 64 of word i // 64); a bitwise AND/XOR of planes then works on 64 elements per word op, and a
plane sent over the network costs exactly one bit per element (plus padding to a whole word).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

RING_BITS = 64
MIN_RING_BITS = 32
DEFAULT_FRAC_BITS = 16


class FixedPointError(ValueError):
    """A value cannot be represented in the fixed-point ring without wrapping."""


def _describe(x: torch.Tensor, mask: torch.Tensor) -> str:
    idx = mask.nonzero()[0].tolist()
    return f"index {tuple(idx)} (value {x[tuple(idx)].item()!r}); {int(mask.sum())} element(s) affected"


@dataclass(frozen=True)
class Ring:
    """Z_2^ℓ held in int64 tensors: reduction, sign bit, and the ℓ-bit wire format.

    ``wire`` sends exactly ⌈n·ℓ/8⌉ bytes for n elements (8n at ℓ = 64, where it is the tensor
    itself): whole low bytes when ℓ is a multiple of 8, otherwise the bits packed densely.
    ``unwire`` checks the byte count and returns the centred residues.
    """

    bits: int = RING_BITS

    def __post_init__(self) -> None:
        if not 2 <= self.bits <= 64:
            raise ValueError(f"ring bits must be in 2..64, got {self.bits}")

    @property
    def mask(self) -> int:
        return mask_bits(self.bits)

    def reduce(self, x: torch.Tensor) -> torch.Tensor:
        """The centred residue of x modulo 2^ℓ (x itself at ℓ = 64)."""
        if self.bits == 64:
            return x
        s = 64 - self.bits
        return (x << s) >> s

    def unsigned(self, x: torch.Tensor) -> torch.Tensor:
        """x modulo 2^ℓ in [0, 2^ℓ) (at ℓ = 64 the bit pattern itself)."""
        return x if self.bits == 64 else x & self.mask

    def msb(self, x: torch.Tensor) -> torch.Tensor:
        """Bit ℓ − 1 of every element (the sign of the centred residue)."""
        return (x >> (self.bits - 1)) & 1

    def low(self, x: torch.Tensor) -> torch.Tensor:
        """x modulo 2^(ℓ−1): every bit below the sign bit."""
        return x & mask_bits(self.bits - 1)

    def wire_bytes(self, n: int) -> int:
        """Bytes of n elements on the wire: ⌊ℓ/8⌋ whole bytes each, and the other ℓ mod 8 bits of
        every 8 elements in ℓ mod 8 bytes (exactly n·ℓ/8 when n is a multiple of 8)."""
        if self.bits == 64:
            return 8 * n
        return n * (self.bits // 8) + (self.bits % 8) * ((n + 7) // 8)

    def wire(self, x: torch.Tensor) -> torch.Tensor:
        """The low ℓ bits of every element, packed: int64 itself at ℓ = 64, else uint8 bytes —
        the low ⌊ℓ/8⌋ bytes of each element, then the remaining r = ℓ mod 8 bits of each group of
        8 elements as r bytes (the 8 r-bit pieces side by side in one word)."""
        if x.dtype != torch.int64:
            raise TypeError(f"ring wire format expects int64, got {x.dtype}")
        if self.bits == 64:
            return x
        whole, rest = divmod(self.bits, 8)
        raw = np.ascontiguousarray(x.reshape(-1).numpy()).view(np.uint8).reshape(-1, 8)
        head = np.ascontiguousarray(raw[:, :whole]).reshape(-1)
        if not rest:
            return torch.from_numpy(head)
        n = raw.shape[0]
        top = np.zeros(((n + 7) // 8) * 8, dtype=np.uint64)
        top[:n] = raw[:, whole] & ((1 << rest) - 1)
        groups = top.reshape(-1, 8)
        word = groups[:, 0].copy()
        for i in range(1, 8):
            word |= groups[:, i] << np.uint64(rest * i)
        tail = np.ascontiguousarray(word.view(np.uint8).reshape(-1, 8)[:, :rest]).reshape(-1)
        return torch.from_numpy(np.concatenate([head, tail]))

    def unwire(self, t: torch.Tensor, shape: Iterable[int]) -> torch.Tensor:
        """Inverse of :meth:`wire` for a tensor of ``shape``; the centred residues as int64."""
        shape = tuple(shape)
        n = int(np.prod(shape)) if shape else 1
        if self.bits == 64:
            if t.dtype != torch.int64 or t.numel() != n:
                raise ValueError(f"expected {8 * n} bytes for {n} elements of 64 bits, got "
                                 f"{t.dtype} {tuple(t.shape)}")
            return t.view(shape)
        if t.dtype != torch.uint8 or t.numel() != self.wire_bytes(n):
            raise ValueError(f"expected {self.wire_bytes(n)} bytes for {n} elements of "
                             f"{self.bits} bits, got {t.numel()} {t.dtype}")
        whole, rest = divmod(self.bits, 8)
        data = t.numpy()
        raw = np.zeros((n, 8), dtype=np.uint8)
        raw[:, :whole] = data[:n * whole].reshape(n, whole)
        if rest:
            words = np.zeros(((n + 7) // 8, 8), dtype=np.uint8)
            words[:, :rest] = data[n * whole:].reshape(-1, rest)
            word = words.reshape(-1).view(np.uint64)
            mask = np.uint64((1 << rest) - 1)
            top = np.empty((word.size, 8), dtype=np.uint64)
            for i in range(8):
                top[:, i] = (word >> np.uint64(rest * i)) & mask
            raw[:, whole] = top.reshape(-1)[:n].astype(np.uint8)
        return self.reduce(torch.from_numpy(raw.reshape(-1).view(np.int64))).view(shape)


@dataclass(frozen=True)
class FixedPoint:
    """Fixed-point encoding with ``frac_bits`` fractional bits in Z_2^ℓ, ℓ = ``ring_bits``.

    Encodable reals satisfy |x| < 2^(ℓ − 1 − f); anything else (including NaN/inf) is rejected with
    an error naming the first offending element. Decoding reduces modulo 2^ℓ and divides by 2^f in
    float64 (exact for every ring value below 2^53; above that, float64 rounds to nearest), with no
    off-by-one on negative values.
    """

    frac_bits: int = DEFAULT_FRAC_BITS
    ring_bits: int = RING_BITS

    def __post_init__(self) -> None:
        if not MIN_RING_BITS <= self.ring_bits <= 64:
            raise ValueError(f"ring bits must be in {MIN_RING_BITS}..64, got {self.ring_bits}")
        if not 0 <= self.frac_bits <= self.ring_bits - 2:
            raise ValueError(f"frac_bits must be in 0..{self.ring_bits - 2} in a {self.ring_bits}-bit "
                             f"ring, got {self.frac_bits}")

    @property
    def ring(self) -> Ring:
        return Ring(self.ring_bits)

    def with_frac(self, frac_bits: int) -> FixedPoint:
        """The same ring at another scale (e.g. a bias at 2f fractional bits)."""
        return FixedPoint(frac_bits, self.ring_bits)

    def describe(self) -> str:
        return f"f={self.frac_bits}" + ("" if self.ring_bits == 64 else f",l={self.ring_bits}")

    @property
    def scale(self) -> int:
        return 1 << self.frac_bits

    @property
    def max_abs(self) -> float:
        """Exclusive bound on encodable magnitudes: 2^(ℓ − 1 − f)."""
        return float(2 ** (self.ring_bits - 1 - self.frac_bits))

    def encode(self, x: Any, what: str = "input") -> torch.Tensor:
        """Encode reals to ring elements; ``what`` names the value in error messages."""
        t = torch.as_tensor(x)
        if t.is_complex() or t.dtype == torch.bool:
            raise FixedPointError(f"{what}: {t.dtype} values; the model takes real numbers (a "
                                  f"complex value would lose its imaginary part)")
        t = t.to(torch.float64)
        bad = ~torch.isfinite(t)
        if bad.any():
            raise FixedPointError(f"{what}: non-finite value at {_describe(t, bad)}")
        scaled = torch.round(t * self.scale)
        over = scaled.abs() >= 2.0 ** (self.ring_bits - 1)
        if over.any():
            raise FixedPointError(
                f"{what}: |x| must be < 2^{self.ring_bits - 1 - self.frac_bits} = {self.max_abs:g} "
                f"with {self.frac_bits} fractional bits in a {self.ring_bits}-bit ring; out of range "
                f"at {_describe(t, over)}")
        return scaled.to(torch.int64)

    def decode(self, v: torch.Tensor, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """Ring elements (signed) to reals."""
        if v.dtype != torch.int64:
            raise TypeError(f"decode expects an int64 ring tensor, got {v.dtype}")
        return (self.ring.reduce(v).to(torch.float64) / self.scale).to(dtype)

    def check_product(self, bound_a: float, bound_b: float, what: str = "product") -> None:
        """Raise unless a product of magnitudes ≤ bound_a, bound_b fits with 2f fractional bits."""
        need = bound_a * bound_b * float(self.scale) ** 2
        if need >= 2.0 ** (self.ring_bits - 1):
            raise FixedPointError(
                f"{what}: |a|·|b| ≤ {bound_a:g}·{bound_b:g} needs {np.log2(need):.1f} bits with "
                f"{2 * self.frac_bits} fractional bits before truncation; the ring has "
                f"{self.ring_bits - 1}")

    def mul_public(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Product of two public fixed-point ring tensors, truncated back to f bits (floor).

        Checks the headroom exactly: the 2f-bit product must be representable.
        """
        fa = a.to(torch.float64).abs()
        fb = b.to(torch.float64).abs()
        over = (fa * fb) >= 2.0 ** (self.ring_bits - 2)
        if over.any():
            raise FixedPointError(f"mul_public: 2f-bit product overflows the ring at {_describe(a, over)}")
        return (a * b) >> self.frac_bits


def mask_bits(width: int) -> int:
    """The int64 value with the low ``width`` bits set (width 64 → all ones, i.e. −1)."""
    if not 0 <= width <= 64:
        raise ValueError(f"bit width must be in 0..64, got {width}")
    return -1 if width == 64 else (1 << width) - 1


def extract_bits(x: torch.Tensor, k: int, m: int) -> torch.Tensor:
    """x[k:m]: bits m..k−1 of each element as an unsigned integer in [0, 2^(k−m)).

    Requires 0 ≤ m ≤ k ≤ 64. k = 64, m = 0 returns x unchanged (all 64 bits).
    """
    if not (0 <= m <= k <= 64):
        raise ValueError(f"bit range [k:m] = [{k}:{m}] needs 0 <= m <= k <= 64")
    if x.dtype != torch.int64:
        raise TypeError(f"extract_bits expects int64, got {x.dtype}")
    width = k - m
    if width == 0:
        return torch.zeros_like(x)
    shifted = x >> m if m else x  # arithmetic shift; the mask below makes it logical
    return shifted & mask_bits(width) if width < 64 else shifted


def msb(x: torch.Tensor, width: int = 64) -> torch.Tensor:
    """Bit ``width − 1`` of each element (the sign of a ``width``-bit two's complement value)."""
    return (x >> (width - 1)) & 1


def num_words(n: int) -> int:
    """Words needed to hold n bits packed 64 per int64."""
    return (n + 63) // 64


# (shift, mask) of the six stages of a 64×64 bit-matrix transpose (Hacker's Delight, 7-3)
_TRANSPOSE_STAGES = ((32, 0x00000000FFFFFFFF), (16, 0x0000FFFF0000FFFF), (8, 0x00FF00FF00FF00FF),
                     (4, 0x0F0F0F0F0F0F0F0F), (2, 0x3333333333333333), (1, 0x5555555555555555))


def transpose64(blocks: torch.Tensor) -> torch.Tensor:
    """Transpose each 64×64 bit matrix in ``blocks`` (B×64 int64; row i = word i) — a new tensor.

    Bit b of row i becomes bit i of row b. The transpose is its own inverse.
    """
    a = blocks.clone()
    nb = a.shape[0]
    scratch = torch.empty(nb, 32, dtype=torch.int64)
    for j, m in _TRANSPOSE_STAGES:
        v = a.view(nb, 64 // (2 * j), 2, j)
        lo, hi = v[:, :, 0, :], v[:, :, 1, :]
        t = scratch.view(nb, 64 // (2 * j), j)
        # t = ((lo >> j) ^ hi) & m; the arithmetic shift is fine: m clears the sign-filled bits
        torch.bitwise_right_shift(lo, j, out=t)
        t ^= hi
        t &= m
        hi ^= t
        t <<= j
        lo ^= t
    return a


def _check_width(width: int) -> None:
    if not 0 <= width <= 64:
        raise ValueError(f"bit width must be in 0..64, got {width}")


def pack_bits(x: torch.Tensor, width: int) -> torch.Tensor:
    """Bit-slice: n int64 elements (any shape, flattened) → ``width`` planes of ceil(n/64) words.

    Plane j holds bit j of every element. Bits above ``width`` are ignored. Padding bits are 0.
    """
    _check_width(width)
    flat = x.reshape(-1)
    if flat.dtype != torch.int64:
        raise TypeError(f"pack_bits expects int64, got {flat.dtype}")
    n = flat.numel()
    nw = num_words(n)
    if width == 0:
        return torch.zeros(0, nw, dtype=torch.int64)
    if width <= 8:  # one byte per element: numpy's bit (un)packing is cheapest
        raw = flat.contiguous().numpy().view(np.uint8).reshape(n, 8)[:, :1]
        bits = np.unpackbits(raw, axis=1, bitorder="little")[:, :width]
        planes = np.zeros((width, nw * 64), dtype=np.uint8)
        planes[:, :n] = bits.T
        packed = np.packbits(planes, axis=1, bitorder="little")
        return torch.from_numpy(packed.view(np.int64).reshape(width, nw).copy())
    if n % 64:
        flat = torch.cat([flat, flat.new_zeros(nw * 64 - n)])
    if width < 64:
        flat = flat & mask_bits(width)
    return transpose64(flat.view(nw, 64)).t()[:width].contiguous()


def unpack_bits(planes: torch.Tensor, n: int) -> torch.Tensor:
    """Inverse of :func:`pack_bits`: w planes → n int64 elements holding bits 0..w−1."""
    if planes.dtype != torch.int64 or planes.ndim != 2:
        raise TypeError(f"unpack_bits expects a 2-D int64 plane tensor, got {planes.dtype} "
                        f"{tuple(planes.shape)}")
    width, nw = planes.shape
    _check_width(width)
    if nw != num_words(n):
        raise ValueError(f"{nw} words cannot hold {n} elements (need {num_words(n)})")
    full = planes.new_zeros(64, nw)
    full[:width] = planes
    return transpose64(full.t().contiguous()).view(-1)[:n].clone()


def pack_plane(bits: torch.Tensor) -> torch.Tensor:
    """One plane: n values in {0, 1} (any integer/bool dtype) → ceil(n/64) words."""
    flat = bits.reshape(-1).to(torch.uint8).numpy()
    n = flat.size
    padded = np.zeros(num_words(n) * 64, dtype=np.uint8)
    padded[:n] = flat
    return torch.from_numpy(np.packbits(padded, bitorder="little").view(np.int64).copy())


def unpack_plane(words: torch.Tensor, n: int) -> torch.Tensor:
    """One plane of words → n int64 values in {0, 1}."""
    raw = words.reshape(-1).contiguous().numpy().view(np.uint8)
    if raw.size * 8 < n:
        raise ValueError(f"{words.numel()} words cannot hold {n} elements")
    return torch.from_numpy(np.unpackbits(raw, bitorder="little")[:n].astype(np.int64))
