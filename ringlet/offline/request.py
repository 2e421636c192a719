"""A request for dealer material and the material that answers it, both typed.

Each kind of material declares two frozen dataclasses: its request's parameters (a :class:`Params`,
e.g. :class:`~ringlet.offline.core.Trunc` with ``f`` and ``shape``) and what a holder receives (a
:class:`Material`, e.g. :class:`~ringlet.offline.core.TruncMaterial` with ``r``, ``msb``, ``low``).
Parameters travel as integers: each field in declaration order, an ``int`` as itself, a tuple with
its length first — except a tuple that is the last field, which takes the rest.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Generic, TypeVar

import torch

STOP = -1  # the request that ends a dealer's serve loop

P = TypeVar("P", bound="Params")
M = TypeVar("M", bound="Material")


class OfflineError(RuntimeError):
    """Material requested out of order, or a plan that does not match the computation."""


def _is_tuple(annotation: Any) -> bool:
    return str(annotation).startswith("tuple")


@dataclass(frozen=True)
class Params:
    """The parameters of one kind's request; subclasses are frozen dataclasses that set ``KIND``."""

    KIND: ClassVar[str] = ""

    def encode(self) -> tuple[int, ...]:
        """The parameters as integers (see the module docstring)."""
        out: list[int] = []
        fs = fields(self)
        for i, f in enumerate(fs):
            value = getattr(self, f.name)
            if _is_tuple(f.type):
                out.extend([int(v) for v in value] if i == len(fs) - 1 else [len(value), *map(int, value)])
            else:
                out.append(int(value))
        return tuple(out)

    @classmethod
    def decode(cls: type[P], values: Sequence[int]) -> P:
        """The parameters :meth:`encode` gave ``values``; an :class:`OfflineError` if they do not fit."""
        fs = fields(cls)
        args: list[Any] = []
        pos = 0
        try:
            for i, f in enumerate(fs):
                if not _is_tuple(f.type):
                    args.append(int(values[pos]))
                    pos += 1
                elif i == len(fs) - 1:
                    args.append(tuple(int(v) for v in values[pos:]))
                    pos = len(values)
                else:
                    n = int(values[pos])
                    if n < 0 or pos + 1 + n > len(values):
                        raise IndexError(n)
                    args.append(tuple(int(v) for v in values[pos + 1:pos + 1 + n]))
                    pos += 1 + n
        except IndexError:
            raise OfflineError(f"{cls.KIND} request: {list(values)} are too few parameters for "
                               f"({', '.join(f.name for f in fs)})") from None
        if pos != len(values):
            raise OfflineError(f"{cls.KIND} request: {len(values) - pos} parameters left over")
        return cls(*args)


@dataclass(frozen=True)
class Request(Generic[P]):
    """One piece of correlated randomness: its typed parameters and its holders (server ranks).
    Encoded on the wire by the table of kinds, :meth:`ringlet.offline.kind.Kinds.encode`."""

    params: P
    holders: tuple[int, ...]

    @property
    def kind(self) -> str:
        return self.params.KIND


@dataclass(frozen=True)
class Material:
    """What one holder has of one request: a frozen dataclass per kind whose fields are tensors
    (None for those this holder does not hold). ``of`` builds it from the tensors by name."""

    @classmethod
    def of(cls: type[M], parts: dict[str, torch.Tensor]) -> M:
        names = {f.name for f in fields(cls)}
        extra = sorted(set(parts) - names)
        if extra:
            raise OfflineError(f"{cls.__name__} has no field {', '.join(extra)}")
        return cls(**parts)

    def tensors(self) -> Iterator[torch.Tensor]:
        """Every tensor held (for memory accounting)."""
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, torch.Tensor):
                yield value
            elif isinstance(value, tuple | list):
                yield from (v for v in value if isinstance(v, torch.Tensor))
            elif isinstance(value, dict):
                yield from (v for v in value.values() if isinstance(v, torch.Tensor))


@dataclass(frozen=True)
class Nothing(Material):
    """The material of a party that is not among a request's holders."""
