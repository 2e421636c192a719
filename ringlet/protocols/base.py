"""What a protocol family registers, and the bits [k:m] every ReLU protocol reads.

A *sign family* (:class:`SignFamily`) computes XOR shares of the sign of a two-server sum of w-bit
values; a *ReLU protocol* (:class:`ReluProtocol`) evaluates a whole ReLU layer. Each is one frozen
object that declares how it runs, its cost (written once, a function of the width, the number of
servers and the ring), the dealer material it asks for, its capabilities and its accounting tag.
Families register them in :mod:`ringlet.protocols.catalog`; every consumer (the config's
validation, ``auto``, the key-memory check, ``bench relu``, the suite, the CLI's choices, the
dealer's table of kinds) reads them from there.

``SignFamily.run(sess, planes, piggyback) -> (sign plane, peer piggyback)``
    servers 0 and 1 hold w private bit planes of a w-bit value each; the result is their XOR shares
    of the most significant bit of the sum mod 2^w (``piggyback``: ring items sent with the first
    round, the peer's returned).
``SignFamily.circuit_cost(w) -> (bits, rounds)``
    bits sent per server per element and rounds, of the sign alone (2 servers).
``SignFamily.requests(w, words) -> [Request]``
    the dealer material of one run on ``words`` packed words per plane, in order.
``SignFamily.key_bytes(w, ring_bits) -> [server 0, server 1]``
    dealer bytes per element (0 where the material is small enough not to be budgeted).

``ReluProtocol.relu(sess, x, spec, shift, truncation, sign) -> share``
    ReLU(⌊x / 2^shift⌋) on the spec's bits; ``sign`` is the :class:`SignFamily` of the spec.
``ReluProtocol.cost(spec, parties, ring_bits, sign) -> dict``
    ``drelu_bits``, ``drelu_rounds``, ``relu_bits``, ``relu_rounds`` per server per element (and,
    for keyed protocols, ``key_bytes``, ``aes_eval``, ``aes_keygen``).
``ReluProtocol.key_bytes(k, m, ring_bits, shift) -> [server 0, server 1]``
    dealer bytes per element of one ReLU on the input bits [k:m].
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import torch

T = TypeVar("T")


def _no_key_bytes(*_args) -> list[float]:
    return [0.0, 0.0]


@dataclass(frozen=True)
class SignFamily:
    """One way to compute the sign bit of a two-server sum of w-bit values."""

    name: str
    summary: str
    run: Callable
    circuit_cost: Callable[[int], tuple[int, int]]
    requests: Callable[[int, int], list]
    key_bytes: Callable[[int, int], list] = _no_key_bytes
    kinds: tuple[str, ...] = ()  # dealer material kinds it asks for
    tag: str = "circuit"  # the accounting tag of its rounds


@dataclass(frozen=True)
class ReluProtocol:
    """One way to evaluate a ReLU layer (see the module docstring for its functions).

    ``sign`` is the sign family its DReLU-only uses take (None: the spec's adder);
    ``two_servers_only`` refuses more servers; ``kinds`` the dealer material it asks for.
    """

    name: str
    summary: str
    relu: Callable
    cost: Callable
    key_bytes: Callable = _no_key_bytes
    sign: str | None = None
    two_servers_only: bool = False
    kinds: tuple[str, ...] = ()
    tag: str = "circuit"
    ring_bits: tuple[int, int] = (32, 64)  # the ring widths it runs in
    details: Callable | None = None  # details(spec, op, shift, ring_bits) -> dict for bench relu


@dataclass
class Registry(Generic[T]):
    """Objects by name, registered once; an unknown name is an error listing the known ones."""

    what: str
    _by_name: dict = field(default_factory=dict)

    def register(self, item: T) -> T:
        name = item.name  # type: ignore[attr-defined]
        if name in self._by_name:
            raise ValueError(f"{self.what} {name!r} is registered twice")
        self._by_name[name] = item
        return item

    def __getitem__(self, name: str) -> T:
        try:
            return self._by_name[name]
        except KeyError:
            raise ValueError(f"unknown {self.what} {name!r}; use one of {self.names()}") from None

    def __contains__(self, name: str) -> bool:
        return name in self._by_name

    def __iter__(self):
        return iter(self._by_name.values())

    def names(self) -> tuple[str, ...]:
        return tuple(self._by_name)


# bits and rounds the select adds beside the sign circuit, per server per element, in Z_2^ℓ:
# fused — the ReLU's value opened with the first circuit round and one 1-bit opening (ℓ + 1, 1);
# b2a-mult — CrypTen's B2A of the sign (ℓ, 1) and a Beaver product of 2 ℓ-bit openings (2ℓ, 1)
SELECT_COSTS = {
    "fused": {"drelu": lambda ell: (0, 0), "relu": lambda ell: (ell + 1, 1)},
    "b2a-mult": {"drelu": lambda ell: (ell, 1), "relu": lambda ell: (3 * ell, 2)},
}
SELECTS = tuple(SELECT_COSTS)


def spec_in_ring(spec, ring_bits: int) -> tuple[int, int]:
    """[k:m] in a ring of ``ring_bits``: [64:0] means exact, i.e. [ℓ:0]; otherwise k ≤ ℓ."""
    if spec.m == 0 and spec.k == 64:
        return ring_bits, 0
    if spec.k > ring_bits:
        raise ValueError(f"ReLU bits [{spec.k}:{spec.m}] need k <= {ring_bits}, the ring's width")
    return spec.k, spec.m


def input_bits(spec, shift: int = 0, ring_bits: int = 64) -> tuple[int, int]:
    """The bits of the shares the sign circuit reads when the input carries ``shift`` extra
    fractional bits: [k+shift : m+shift] (capped at ℓ); exact stays all ℓ bits."""
    if spec.k == spec.m:
        return spec.k, spec.m
    k, m = spec_in_ring(spec, ring_bits)
    if (k, m) == (ring_bits, 0):
        return k, m
    return min(ring_bits, k + shift), m + shift


def allowed_mismatch(x: torch.Tensor, k: int, m: int, parties: int) -> torch.Tensor:
    """Where reduced-ring ReLU on [k:m] may differ from exact ReLU (x in ring units, int64).

    The carry loss c ∈ [0, p−1] of the p floors exists only when m > 0. A mismatch needs
    x ≥ 2^(k−1) (overflow), x < −2^(k−1) + c·2^m (the negative edge), or 0 < x < c·2^m (pruning).
    """
    if k == m:  # no bits kept: the ReLU is the identity
        return x < 0
    lo, hi = -(1 << 63), (1 << 63) - 1
    edge = (parties - 1) << m if m > 0 else 0

    def clamp(v: int) -> int:  # Python ints, then int64-safe
        return max(lo, min(hi, v))

    def less(bound: int) -> torch.Tensor:
        if bound > hi:
            return torch.ones_like(x, dtype=torch.bool)
        return x < clamp(bound)

    over = x >= (1 << (k - 1)) if k < 64 else torch.zeros_like(x, dtype=torch.bool)
    neg = less(-(1 << (k - 1)) + edge)
    return over | neg | ((x > 0) & less(edge))
