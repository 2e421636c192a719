"""Function secret sharing with a dealer (two servers): the DCF (:mod:`~.dcf`, compiled with AES-NI
where it can be: :mod:`~.native`), the dealer's keys (:mod:`~.keys`) and the one-round gates
(:mod:`~.gates`). Registered: the sign family ``fss``, the ReLU protocol ``fss`` and the material
kinds ``fsssign`` and ``fssrelu`` (:mod:`ringlet.protocols.catalog`)."""

from __future__ import annotations

from ringlet.protocols.base import ReluProtocol, SignFamily
from ringlet.protocols.fss import gates, keys

SIGN = SignFamily(
    "fss", "function secret sharing: a w-bit masked opening and one DCF key per element "
    "(w bits, 1 round; keys from the dealer)", gates.sign, gates.sign_cost, gates.sign_requests,
    key_bytes=gates.sign_key_bytes, kinds=("fsssign",), tag="fss")
RELU = ReluProtocol(
    "fss", "open x + r once, one DCF key per element from the dealer: 1 round, ℓ bits",
    gates.relu, gates.cost, key_bytes=gates.key_bytes, sign="fss", two_servers_only=True,
    kinds=("fssrelu", "fsssign"), tag="fss", details=gates.figures)


def material_kinds() -> dict:
    """The kinds of dealer material this family brings (by name)."""
    return keys.kinds()
