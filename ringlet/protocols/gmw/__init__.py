"""GMW-style binary sharing: sign circuits on bit planes (:mod:`~.adders`) and the ReLU that
selects by their sign (:mod:`~.relu`). Registered: the sign families ``carry-tree`` and
``kogge-stone`` and the ReLU protocol ``gmw`` (:mod:`ringlet.protocols.catalog`)."""

from __future__ import annotations

from ringlet.offline.core import And, And2, Pand
from ringlet.offline.request import Request
from ringlet.protocols.base import ReluProtocol, SignFamily
from ringlet.protocols.gmw import adders, relu

TWO = (0, 1)


def _carry_tree_requests(w: int, words: int) -> list:
    """pand for the leaves, then per level one ``and`` (the spine) and one ``and2`` (the others)."""
    if w <= 1:
        return []
    out: list[Request] = [Request(Pand(w - 1, words), TWO)]
    n = w - 1
    while n > 1:
        others = max(0, n // 2 - 1)
        out.append(Request(And(1, words), TWO))
        if others:
            out.append(Request(And2(others, words), TWO))
        n = 1 + others + n % 2
    return out


def _kogge_stone_requests(w: int, words: int) -> list:
    """One generic AND of w planes, then one of 2w planes per doubling level."""
    out = [Request(And(w, words), TWO)]
    shift = 1
    while shift < w:
        out.append(Request(And(2 * w, words), TWO))
        shift *= 2
    return out


CARRY_TREE = SignFamily(
    "carry-tree", "generate/propagate tree with private-input leaves: 4w − 7 − ⌈log2(w−1)⌉ "
    "bits, ⌈log2(w−1)⌉ + 1 rounds", adders.carry_tree_msb, adders.carry_tree_cost,
    _carry_tree_requests, kinds=("pand", "and", "and2"))
KOGGE_STONE = SignFamily(
    "kogge-stone", "CrypTen's word adder: 2w + 4w⌈log2 w⌉ bits, ⌈log2 w⌉ + 1 rounds",
    adders.kogge_stone_msb, adders.kogge_stone_cost, _kogge_stone_requests, kinds=("and",))
SIGN_FAMILIES = (CARRY_TREE, KOGGE_STONE)

RELU = ReluProtocol(
    "gmw", "a sign circuit over the bits [k:m] (--adder) and a select (--select)",
    relu.relu, relu.cost, kinds=("inject", "injtrunc", "b2a", "beaver"))


def material_kinds() -> dict:
    """gmw asks only for core kinds (:mod:`ringlet.offline.core`)."""
    return {}
