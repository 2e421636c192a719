"""What a kind of dealer material is, and the table of the kinds a computation knows."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from ringlet.offline.request import Material, OfflineError, Params, Request


@dataclass(frozen=True)
class Kind:
    """One kind of dealer material: its request's parameters and its material (two frozen
    dataclasses), how each holder draws its seeded part, what the dealer sends to whom, and how
    it travels.

    ``draw(stream, req, index, corrected) -> dict``: holder ``index``'s seeded tensors (the last
    holder, ``corrected``, draws none of those it receives corrected);
    ``correct(parts, req, ring) -> {holder index: {key: tensor}}``: what the dealer sends each
    holder; ``receives(req, index)``: the keys holder ``index`` receives (in the order they
    travel); ``raw``: keys sent as they are (bit planes, seeds) rather than as ring values in the
    ℓ-bit wire format; ``shapes(req, index)``: the shapes of the received keys (None: those the
    draw gives, uncorrected). ``material.of`` turns a holder's tensors by name into its material.
    """

    params: type[Params]
    material: type[Material]
    draw: Callable
    correct: Callable
    receives: Callable
    raw: frozenset = frozenset()
    shapes: Callable | None = None

    def received_shapes(self, req: Request, index: int) -> dict[str, tuple]:
        if self.shapes is not None:
            return self.shapes(req, index)
        drawn = self.draw(Shapes(), req, index, False)
        return {k: tuple(drawn[k].shape) for k in self.receives(req, index)}


def last_kind(params: type[Params], material: type[Material], draw, correct, keys, raw=False) -> Kind:
    """A kind that corrects the last holder only (seed compression): the dealer sends it the
    keys ``keys`` (a tuple, or a function of the request)."""
    def correct_last(parts, req, rng):
        return {len(req.holders) - 1: correct(parts, req, rng)}

    def receives(req, index):
        if index != len(req.holders) - 1:
            return ()
        return tuple(sorted(keys(req) if callable(keys) else keys))
    return Kind(params, material, draw, correct_last, receives,
                frozenset(keys) if raw and not callable(keys) else frozenset())


class Kinds:
    """The kinds of material by name; their order fixes the wire ids of requests, so the dealer
    and every server must use the same table."""

    def __init__(self, kinds: Mapping[str, Kind]):
        for name, kind in kinds.items():
            if kind.params.KIND != name:
                raise ValueError(f"material kind {name!r} is registered with the parameters of "
                                 f"{kind.params.KIND!r}")
        self._kinds = dict(kinds)
        self._ids = {name: i for i, name in enumerate(self._kinds)}
        self._names = list(self._kinds)

    def __getitem__(self, name: str) -> Kind:
        try:
            return self._kinds[name]
        except KeyError:
            raise OfflineError(f"material kind {name!r} is not in this table of kinds (known: "
                               f"{', '.join(self._names)})") from None

    def __contains__(self, name: str) -> bool:
        return name in self._kinds

    def names(self) -> tuple[str, ...]:
        return tuple(self._names)

    def encode(self, req: Request) -> list[int]:
        """``req`` as integers: kind id, parameters and holders, each list with its length."""
        params = req.params.encode()
        return [self._ids[req.kind], len(params), *params, len(req.holders), *req.holders]

    def decode(self, values: list[int], pos: int) -> tuple[Request, int]:
        """The request encoded at ``values[pos:]`` and the position after it."""
        if not 0 <= values[pos] < len(self._names):
            raise OfflineError(f"material kind id {values[pos]} is not in this table of kinds")
        kind = self._kinds[self._names[values[pos]]]
        n = values[pos + 1]
        params = kind.params.decode(values[pos + 2:pos + 2 + n])
        pos += 2 + n
        m = values[pos]
        holders = tuple(values[pos + 1:pos + 1 + m])
        return Request(params, holders), pos + 1 + m


class Shapes:
    """A stand-in stream that draws zeros: the shapes of a kind's tensors, with no keystream."""

    def int64(self, shape) -> torch.Tensor:
        return torch.zeros(tuple(shape) if not isinstance(shape, int) else (shape,), dtype=torch.int64)

    words = int64
