"""A request for dealer material: its kind's name, integer parameters and holders."""

from __future__ import annotations

from dataclasses import dataclass

STOP = -1  # the request that ends a dealer's serve loop


class OfflineError(RuntimeError):
    """Material requested out of order, or a plan that does not match the computation."""


@dataclass(frozen=True)
class Request:
    """One piece of correlated randomness: its kind, integer parameters and holders (encoded on
    the wire by the table of kinds, :meth:`ringlet.offline.kind.Kinds.encode`)."""

    kind: str
    params: tuple
    holders: tuple
