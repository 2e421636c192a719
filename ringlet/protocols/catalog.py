"""Every registered protocol family: the one place consumers read them from.

* :func:`sign_families` — the sign circuits (``--adder``): gmw's ``carry-tree`` and ``kogge-stone``,
  fss's ``fss``;
* :func:`relu_protocols` — the ReLU protocols (``--relu-protocol``, config ``"protocol"``): ``gmw``
  and ``fss``;
* :func:`material_kinds` — the dealer's table of material kinds (the core kinds of
  :mod:`ringlet.offline.core`, then each family's; the order fixes their wire ids).

A new family is a package under :mod:`ringlet.protocols` that defines its objects, plus one line
here. The command line's choices, the activation config's validation, ``auto``, the key-memory
check, ``bench relu``, the suite and the dealer all iterate these registries.
"""

from __future__ import annotations

import functools

from ringlet.offline.core import core_kinds
from ringlet.offline.kind import Kinds
from ringlet.protocols import fss, gmw
from ringlet.protocols.base import SELECT_COSTS, SELECTS, Registry, ReluProtocol, SignFamily

FAMILIES = (gmw, fss)  # each: SIGN_FAMILIES or SIGN, RELU, material_kinds()

__all__ = ["SELECTS", "SELECT_COSTS", "material_kinds", "relu_protocols", "sign_families"]


@functools.cache
def sign_families() -> Registry[SignFamily]:
    """The registry of sign circuits (built on first use)."""
    reg: Registry[SignFamily] = Registry("adder")
    for family in FAMILIES:
        for sign in getattr(family, "SIGN_FAMILIES", ()) or (family.SIGN,):
            reg.register(sign)
    return reg


@functools.cache
def relu_protocols() -> Registry[ReluProtocol]:
    """The registry of ReLU protocols."""
    reg: Registry[ReluProtocol] = Registry("ReLU protocol")
    for family in FAMILIES:
        reg.register(family.RELU)
    return reg


@functools.cache
def material_kinds() -> Kinds:
    """The table of dealer material kinds every party of a computation uses."""
    out = dict(core_kinds())
    for family in FAMILIES:
        extra = family.material_kinds() if hasattr(family, "material_kinds") else {}
        clash = set(extra) & set(out)
        if clash:
            raise ValueError(f"material kinds {sorted(clash)} are registered twice")
        out.update(extra)
    return Kinds(out)
