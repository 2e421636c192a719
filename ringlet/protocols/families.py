"""Protocol families for the sign of a two-server sum (the DReLU circuit), each registered once.

A family is one object: its name, how it runs, what it costs and what it asks the dealer for.

A ReLU protocol (:class:`ReluProtocol`, registry :func:`relu_protocols`) is one level up: gmw
runs a sign family and a select, fss its own one-round gate.

``run(sess, planes, piggyback) -> (sign plane, peer piggyback)``
    servers 0 and 1 hold w private bit planes of a w-bit value each; the result is their XOR shares
    of the most significant bit of the sum mod 2^w (``piggyback``: ring items sent with the first
    round, the peer's returned).
``circuit_cost(w) -> (bits, rounds)``
    bits sent per server per element and rounds, of the sign alone (2 servers).
``requests(w, words) -> [Request]``
    the dealer material of one run on ``words`` packed words per plane, in order.

:func:`sign_families` is the registry; ReLU specs, :func:`ringlet.protocols.compare.relu_cost`
and the command line's ``--adder`` choices read it, so a new family is one more registration here.
The select that turns a sign into a ReLU has its cost as data too (:data:`SELECT_COSTS`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

from ringlet.offline import Request
from ringlet.protocols import adders

TWO = (0, 1)


@dataclass(frozen=True)
class SignFamily:
    """One way to compute the sign bit of a two-server sum of w-bit values."""

    name: str
    summary: str
    run: Callable
    circuit_cost: Callable[[int], tuple[int, int]]
    requests: Callable[[int, int], list]


class Families:
    """Families by name; an unknown name is an error that lists the known ones."""

    def __init__(self):
        self._by_name: dict[str, SignFamily] = {}

    def register(self, family: SignFamily) -> SignFamily:
        if family.name in self._by_name:
            raise ValueError(f"sign family {family.name!r} is registered twice")
        self._by_name[family.name] = family
        return family

    def __getitem__(self, name: str) -> SignFamily:
        try:
            return self._by_name[name]
        except KeyError:
            raise ValueError(f"unknown adder {name!r}; use one of {self.names()}") from None

    def __contains__(self, name: str) -> bool:
        return name in self._by_name

    def names(self) -> tuple[str, ...]:
        return tuple(self._by_name)


def _carry_tree_requests(w: int, words: int) -> list:
    """pand for the leaves, then per level one ``and`` (the spine) and one ``and2`` (the others)."""
    if w <= 1:
        return []
    out = [Request("pand", (w - 1, words), TWO)]
    n = w - 1
    while n > 1:
        others = max(0, n // 2 - 1)
        out.append(Request("and", (1, words), TWO))
        if others:
            out.append(Request("and2", (others, words), TWO))
        n = 1 + others + n % 2
    return out


def _kogge_stone_requests(w: int, words: int) -> list:
    """One generic AND of w planes, then one of 2w planes per doubling level."""
    out = [Request("and", (w, words), TWO)]
    shift = 1
    while shift < w:
        out.append(Request("and", (2 * w, words), TWO))
        shift *= 2
    return out


@functools.cache
def sign_families() -> Families:
    """The registry of sign circuits (built on first use)."""
    from ringlet.protocols import fss
    reg = Families()
    reg.register(SignFamily(
        "carry-tree", "generate/propagate tree with private-input leaves: 4w − 7 − ⌈log2(w−1)⌉ "
        "bits, ⌈log2(w−1)⌉ + 1 rounds", adders.carry_tree_msb, adders.carry_tree_cost,
        _carry_tree_requests))
    reg.register(SignFamily(
        "kogge-stone", "CrypTen's word adder: 2w + 4w⌈log2 w⌉ bits, ⌈log2 w⌉ + 1 rounds",
        adders.kogge_stone_msb, adders.kogge_stone_cost, _kogge_stone_requests))
    reg.register(SignFamily(
        "fss", "function secret sharing: a w-bit masked opening and one DCF key per element "
        "(w bits, 1 round; keys from the dealer)", fss.sign, fss.sign_cost, fss.sign_requests))
    return reg


@dataclass(frozen=True)
class ReluProtocol:
    """One way to evaluate a ReLU layer: its run, its cost and how many servers it supports.

    ``relu(sess, x, spec, shift, truncation)`` the ReLU (``shift`` extra fractional bits dropped);
    ``cost(spec, parties, ring_bits)`` the dict of :func:`ringlet.protocols.compare.relu_cost`;
    ``sign`` the sign family its DReLU-only uses take (None: the spec's adder).
    """

    name: str
    summary: str
    relu: Callable
    cost: Callable
    sign: str | None = None
    two_servers_only: bool = False


class Protocols(Families):
    def __getitem__(self, name: str):
        try:
            return self._by_name[name]
        except KeyError:
            raise ValueError(f"unknown ReLU protocol {name!r}; use one of {self.names()}") from None


def _late(module: str, name: str) -> Callable:
    """``module.name``, imported at the first call (the protocols import this registry)."""
    def call(*args, **kwargs):
        import importlib
        return getattr(importlib.import_module(module), name)(*args, **kwargs)
    call.__name__ = name
    return call


@functools.cache
def relu_protocols() -> Protocols:
    """The registry of ReLU protocols: gmw (sign circuit + select) and fss (one round)."""
    compare, fss = "ringlet.protocols.compare", "ringlet.protocols.fss"
    reg = Protocols()
    reg.register(ReluProtocol(
        "gmw", "a sign circuit over the bits [k:m] (--adder) and a select (--select)",
        _late(compare, "relu_gmw"), _late(compare, "relu_cost_gmw")))
    reg.register(ReluProtocol(
        "fss", "open x + r once, one DCF key per element from the dealer: 1 round, ℓ bits",
        _late(fss, "relu"), _late(compare, "relu_cost_fss"), sign="fss", two_servers_only=True))
    return reg


# bits and rounds the select adds beside the sign circuit, per server per element, in Z_2^ℓ:
# fused — the ReLU's value opened with the first circuit round and one 1-bit opening (ℓ + 1, 1);
# b2a-mult — CrypTen's B2A of the sign (ℓ, 1) and a Beaver product of 2 ℓ-bit openings (2ℓ, 1)
SELECT_COSTS = {
    "fused": {"drelu": lambda ell: (0, 0), "relu": lambda ell: (ell + 1, 1)},
    "b2a-mult": {"drelu": lambda ell: (ell, 1), "relu": lambda ell: (3 * ell, 2)},
}
SELECTS = tuple(SELECT_COSTS)
