"""Getting values in and out: input sharing by a data owner, opening, reveal to all or to one party.

Costs (per element, ring Z_2^ℓ, p servers):
  share_input, owner = client:  1 message, ℓ bits client → server p−1 only (servers 0…p−2 draw
                                 their shares from seeds they share with the client); tag ``input``
  share_input, owner = server:  no communication (the others draw from seeds shared with the owner)
  open_values:                   1 round, every server sends (p−1)·ℓ bits of each arithmetic value
                                 (binary planes: their words) (tag given)
  reveal(to=client):             each server sends ℓ bits to the client; tag ``output``
  reveal(to=None):               1 round, (p−1)·ℓ bits per server; tag ``open``

Arithmetic values travel in the ring's wire format (:meth:`ringlet.ring.Ring.wire`: exactly ℓ bits
per element, rounded up to a byte per message) and are reduced to their centred residues on arrival.
"""

from __future__ import annotations

import torch

from ringlet.session import Session
from ringlet.sharing import ArithmeticShare


def share_input(sess: Session, value: torch.Tensor | None, owner: int, shape=None,
                encoded: bool = False) -> ArithmeticShare | None:
    """Secret-share ``value`` (held by ``owner``) among the servers; returns this server's share.

    ``value`` is a float tensor (encoded here at ``sess.fixed``) or, with ``encoded=True``, an int64
    ring tensor. Non-owners pass ``value=None`` and the public ``shape`` (servers know the shape of
    what they compute on); the owner may pass ``shape`` to have it checked. The owner gets ``None``
    unless it is a server.
    """
    world = sess.world
    servers = list(world.servers)
    if owner not in servers and owner != world.client:
        raise ValueError(f"share_input: owner {owner} is neither a server nor the client")
    if sess.rank == owner:
        if value is None:
            raise ValueError(f"share_input: the owner (rank {owner}) must provide a value")
        x = value if encoded else sess.fixed.encode(value, what=f"input of party {owner}")
        if x.dtype != torch.int64:
            raise TypeError(f"share_input: encoded values must be int64, got {x.dtype}")
        if shape is not None and tuple(shape) != tuple(x.shape):
            raise ValueError(f"share_input: value has shape {tuple(x.shape)}, declared {tuple(shape)}")
        # servers other than the owner draw their shares from seeds shared with it; when the
        # owner is the client, the last server instead receives the remainder
        drawn = [s for s in servers if s != owner and (owner in servers or s != servers[-1])]
        rest = x
        for s in drawn:
            rest = rest - sess.pairs[s].int64(x.shape)
        if owner in servers:
            return sess.share(rest)
        sess.comm.send(servers[-1], [("input", sess.ring.wire(rest))], "input")
        return None
    if not sess.is_server:
        return None
    if shape is None:
        raise ValueError(f"share_input: party {sess.rank} must pass the public shape of party "
                         f"{owner}'s input")
    if owner == world.client and sess.rank == servers[-1]:
        (data,) = sess.comm.recv(owner, "input")
        try:
            return sess.share(sess.ring.unwire(data, shape))
        except ValueError as e:
            raise ValueError(f"share_input: the input from party {owner} does not fit shape "
                             f"{tuple(shape)}: {e}") from None
    return sess.share(sess.pairs[owner].int64(shape))


def open_values(sess: Session, items: list[tuple[str, torch.Tensor]], op: str = "add",
                among=None, round_tag: str | None = None) -> list[torch.Tensor]:
    """Open shared tensors among servers in one round: everyone sends its pieces to everyone.

    ``op`` is ``add`` (arithmetic, mod 2^ℓ: sent at ℓ bits, returned as centred residues) or ``xor``
    (binary planes). ``among`` restricts the opening to a subset of servers (the others must not
    call).
    """
    among = list(sess.world.servers if among is None else among)
    if sess.rank not in among:
        raise RuntimeError(f"open_values: party {sess.rank} is not among {among}")
    peers = [s for s in among if s != sess.rank]
    arith = op == "add"
    sent = [(tag, sess.ring.wire(t)) for tag, t in items] if arith else items
    got = sess.comm.round(round_tag or items[0][0], {p: sent for p in peers}, peers)
    out = []
    for i, (_, mine) in enumerate(items):
        acc = mine
        for p in peers:
            theirs = got[p][i]
            if arith:
                try:
                    theirs = sess.ring.unwire(theirs, mine.shape)
                except ValueError as e:
                    raise ValueError(f"open_values: party {p} sent a piece that does not fit "
                                     f"{tuple(mine.shape)}: {e}") from None
            elif theirs.shape != mine.shape:
                raise ValueError(f"open_values: party {p} sent shape {tuple(theirs.shape)}, "
                                 f"expected {tuple(mine.shape)}")
            acc = acc + theirs if arith else acc ^ theirs
        out.append(sess.ring.reduce(acc) if arith else acc)
    return out


def reveal(sess: Session, share: ArithmeticShare | None, to: int | None = None,
           decode: bool = True, shape=None) -> torch.Tensor | None:
    """Reconstruct a shared value on party ``to`` only (or on every server if ``to`` is None).

    Returns the decoded float64 tensor (or the raw ring tensor with ``decode=False``) on the
    receiving party, ``None`` elsewhere. A receiving client must pass ``share=None``.
    """
    world = sess.world
    servers = list(world.servers)
    if to is None:
        sess.require_server("reveal to all")
        if share is None:
            raise ValueError(f"reveal: server {sess.rank} must pass its share")
        (value,) = open_values(sess, [("open", share.data)], "add")
        return sess.fixed.decode(value) if decode else value
    if sess.is_server and sess.rank != to:
        if share is None:
            raise ValueError(f"reveal: server {sess.rank} must pass its share")
        sess.comm.send(to, [("output", sess.ring.wire(share.data))], "output")
        return None
    if sess.rank != to:
        return None
    want = tuple(share.shape) if share is not None else (tuple(shape) if shape is not None else None)
    if want is None and sess.ring.bits < 64:
        raise ValueError("reveal: a receiver without a share must pass the output's shape")
    acc: torch.Tensor | None = share.data if share is not None else None
    for s in servers:
        if s == sess.rank:
            continue
        (t,) = sess.comm.recv(s, "output")
        t = sess.ring.unwire(t, want) if want is not None else t
        acc = t if acc is None else acc + t
    sess.comm.stats.rounds["output"] += 1
    if acc is None:
        raise ValueError("reveal: no server sent a share")
    acc = sess.ring.reduce(acc)
    frac = share.frac if share is not None else sess.fixed.frac_bits
    return acc.to(torch.float64) / (1 << frac) if decode else acc
