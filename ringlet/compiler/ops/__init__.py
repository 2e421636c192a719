"""Node kinds: every operator is one :class:`Op` (its handlers in every mode) registered once,
with the lowerings that turn torch modules, functions and tensor methods into it.

``registry()`` builds the table on first use from the op modules (nothing happens on import).
"""

from __future__ import annotations

import functools

from ringlet.compiler.ops.base import Op, Registry


@functools.cache
def registry() -> Registry:
    """Every node kind of this ringlet (immutable once built)."""
    from ringlet.compiler.ops import activation, arith, attention, embed, linear, norm, pool, refusals, shape
    reg = Registry()
    for module in (linear, arith, activation, attention, embed, norm, pool, shape, refusals):
        module.register(reg)
    return reg


__all__ = ["Op", "Registry", "registry"]
