"""Dealer material of the function-secret-sharing gates (:mod:`ringlet.protocols.fss`)."""

from __future__ import annotations


def kinds(kind_type) -> dict:
    """The FSS kinds of material, built with :class:`ringlet.offline.Kind`."""
    return {}
