"""Share containers: one party's piece of a secret. Local work only — nothing here communicates.

``ArithmeticShare``: an int64 tensor; the secret is the sum of all parties' tensors mod 2^64, a
fixed-point value with ``frac`` fractional bits. ``BinaryShare``: ``w`` bit planes of packed words
(see :mod:`ringlet.ring`); the secret's bit j of element i is the XOR over parties of bit i of plane j.

A share knows its party index (``party``), because adding a public value is done by party 0 alone
and inverting a bit by party 0 alone. Share tensors are never modified in place: every operation
returns a new share (which may reuse the old tensor when nothing changed).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from ringlet import ring


class ShareError(ValueError):
    """Shares that cannot be combined (mismatched shapes, kinds, scales or parties)."""


class Share:
    """Common base: the party index and the checks shared by both kinds."""

    __slots__ = ("party",)

    def __init__(self, party: int) -> None:
        if not isinstance(party, int) or party < 0:
            raise ShareError(f"party must be a non-negative int, got {party!r}")
        self.party = party

    def _check_same(self, other: Share, op: str) -> None:
        if type(other) is not type(self):
            raise ShareError(f"{op}: cannot combine {type(self).__name__} with {type(other).__name__}")
        if other.party != self.party:
            raise ShareError(f"{op}: shares of parties {self.party} and {other.party} cannot be "
                             f"combined locally")
        if self.shape != other.shape:
            raise ShareError(f"{op}: shape mismatch {tuple(self.shape)} vs {tuple(other.shape)}")

    @property
    def shape(self) -> torch.Size:  # pragma: no cover - overridden
        raise NotImplementedError


MIN_INTEGER_BITS = 14  # a product keeps at least this many integer bits beside its fractional ones


def check_product_frac(what: str, frac_a: int, frac_b: int) -> int:
    """The fractional bits of a product before truncation, or a FixedPointError when they leave
    fewer than ``MIN_INTEGER_BITS`` integer bits (plus the sign) in the 64-bit ring."""
    total = frac_a + frac_b
    if total > 63 - 1 - MIN_INTEGER_BITS:
        raise ring.FixedPointError(
            f"{what}: {frac_a} + {frac_b} fractional bits leave {62 - total} integer bits before "
            f"truncation (at least {MIN_INTEGER_BITS} needed); use fewer fractional bits")
    return total


class ArithmeticShare(Share):
    """Additive share in Z_2^64 of a fixed-point tensor with ``frac`` fractional bits."""

    __slots__ = ("data", "frac")

    def __init__(self, data: torch.Tensor, party: int, frac: int = ring.DEFAULT_FRAC_BITS) -> None:
        super().__init__(party)
        if not isinstance(data, torch.Tensor) or data.dtype != torch.int64:
            raise ShareError(f"arithmetic share data must be an int64 tensor, got "
                             f"{getattr(data, 'dtype', type(data).__name__)}")
        if not 0 <= frac <= 62:
            raise ring.FixedPointError(f"arithmetic share with {frac} fractional bits: must be 0…62")
        self.data = data
        self.frac = frac

    def _new(self, data: torch.Tensor, frac: int | None = None) -> ArithmeticShare:
        return ArithmeticShare(data, self.party, self.frac if frac is None else frac)

    # shape -----------------------------------------------------------------------------------
    @property
    def shape(self) -> torch.Size:
        return self.data.shape

    def numel(self) -> int:
        return self.data.numel()

    def reshape(self, *shape: Any) -> ArithmeticShare:  # as torch's: ints, or one sequence
        return self._new(self.data.reshape(*shape))

    def flatten(self, start_dim: int = 0, end_dim: int = -1) -> ArithmeticShare:
        return self._new(self.data.flatten(start_dim, end_dim))

    def permute(self, *dims: Any) -> ArithmeticShare:  # as torch's: ints, or one sequence
        return self._new(self.data.permute(*dims))

    def __getitem__(self, index: Any) -> ArithmeticShare:
        return self._new(self.data[index])

    def sum(self, dim: int | tuple[int, ...] | None = None, keepdim: bool = False) -> ArithmeticShare:
        data = self.data.sum() if dim is None else self.data.sum(dim, keepdim=keepdim)
        return self._new(data)

    @staticmethod
    def cat(shares: list[ArithmeticShare], dim: int = 0) -> ArithmeticShare:
        first = shares[0]
        for s in shares[1:]:
            if s.party != first.party or s.frac != first.frac:
                raise ShareError("cat: shares differ in party or fractional bits")
        return first._new(torch.cat([s.data for s in shares], dim))

    # arithmetic ------------------------------------------------------------------------------
    def _check_arith(self, other: ArithmeticShare, op: str) -> None:
        self._check_same(other, op)
        if other.frac != self.frac:
            raise ShareError(f"{op}: fractional bits differ ({self.frac} vs {other.frac}); "
                             f"truncate or rescale first")

    def __add__(self, other: ArithmeticShare) -> ArithmeticShare:
        self._check_arith(other, "add")
        return self._new(self.data + other.data)

    def __sub__(self, other: ArithmeticShare) -> ArithmeticShare:
        self._check_arith(other, "sub")
        return self._new(self.data - other.data)

    def __neg__(self) -> ArithmeticShare:
        return self._new(-self.data)

    def add_public(self, value: torch.Tensor) -> ArithmeticShare:
        """Add a public ring tensor (already encoded at this share's scale); party 0 adds it."""
        if value.dtype != torch.int64:
            raise ShareError(f"add_public expects an encoded int64 tensor, got {value.dtype}")
        if self.party == 0:
            return self._new(self.data + value)
        shape = torch.broadcast_shapes(self.shape, value.shape)
        return self._new(self.data if shape == self.shape else self.data.expand(shape).clone())

    def mul_public(self, value: torch.Tensor | int, frac: int = 0) -> ArithmeticShare:
        """Multiply by a public integer tensor carrying ``frac`` fractional bits (no truncation)."""
        if isinstance(value, torch.Tensor) and value.dtype != torch.int64:
            raise ShareError(f"mul_public expects an int64 tensor or int, got {value.dtype}")
        return self._new(self.data * value, self.frac + frac)

    def __repr__(self) -> str:
        return f"ArithmeticShare(party={self.party}, shape={tuple(self.shape)}, frac={self.frac})"


class BinaryShare(Share):
    """XOR share of ``n`` elements of ``width`` bits, held as ``width`` planes of packed words."""

    __slots__ = ("planes", "n", "elem_shape")

    def __init__(self, planes: torch.Tensor, n: int, party: int,
                 elem_shape: Iterable[int] | None = None) -> None:
        super().__init__(party)
        if planes.dtype != torch.int64 or planes.ndim != 2:
            raise ShareError(f"binary share planes must be a 2-D int64 tensor, got "
                             f"{planes.dtype} {tuple(planes.shape)}")
        if planes.shape[1] != ring.num_words(n):
            raise ShareError(f"{planes.shape[1]} words per plane cannot hold {n} elements")
        self.planes = planes
        self.n = n
        self.elem_shape = torch.Size(elem_shape) if elem_shape is not None else torch.Size([n])

    def _new(self, planes: torch.Tensor) -> BinaryShare:
        return BinaryShare(planes, self.n, self.party, self.elem_shape)

    @property
    def shape(self) -> torch.Size:
        return self.planes.shape

    @property
    def width(self) -> int:
        return self.planes.shape[0]

    @classmethod
    def from_private(cls, values: torch.Tensor, width: int, party: int) -> BinaryShare:
        """This party's own ``width``-bit values as a share (the other parties hold zeros)."""
        return cls(ring.pack_bits(values, width), values.numel(), party, values.shape)

    def __xor__(self, other: BinaryShare) -> BinaryShare:
        self._check_same(other, "xor")
        return self._new(self.planes ^ other.planes)

    def and_public(self, mask: torch.Tensor) -> BinaryShare:
        """AND with public planes (broadcast over planes if ``mask`` is 1-D)."""
        return self._new(self.planes & mask)

    def invert(self) -> BinaryShare:
        """NOT of every bit: party 0 flips its planes."""
        return self._new(~self.planes) if self.party == 0 else self._new(self.planes.clone())

    def select(self, index: Any) -> BinaryShare:
        """A subset of planes (an int, slice or index tensor)."""
        planes = self.planes[index]
        return self._new(planes.unsqueeze(0) if planes.ndim == 1 else planes)

    def __repr__(self) -> str:
        return f"BinaryShare(party={self.party}, n={self.n}, width={self.width})"
