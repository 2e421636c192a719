"""A stand-in transport for recording a computation's dealer plan without its peers.

In a symmetric round between two servers each receives, from its peer, items of exactly the shapes
it sends; :class:`MirrorComm` hands a party its own items back as the peer's. Values are meaningless
(the recording runs on zero inputs and zero material) and nothing is counted or sent: the recorded
plan depends on shapes alone. A round that is not symmetric (a party waits for a peer it sends
nothing to) raises :class:`NotSymmetric`, and the caller records on the real transport instead.
"""

from __future__ import annotations

from collections.abc import Collection

import torch

from ringlet.comm.base import Communicator, Item


class NotSymmetric(RuntimeError):
    """The computation has a round a mirror cannot answer."""


class MirrorComm(Communicator):
    """The :class:`~ringlet.comm.base.Communicator` calls protocols make, answered by a mirror.

    A Communicator, so that it can stand in a :class:`~ringlet.session.Session` for the real one.
    It overrides :meth:`round`, :meth:`send` and :meth:`recv` (nothing crosses a wire, nothing is
    counted), so the transport hooks are never reached.
    """

    def __init__(self, rank: int, world_size: int) -> None:
        super().__init__(rank, world_size)

    def round(self, tag: str, sends: dict[int, list[Item]], recv_from: Collection[int] = (),
              step: str | None = None) -> dict[int, list[torch.Tensor]]:
        out: dict[int, list[torch.Tensor]] = {}
        for src in recv_from:
            if src not in sends:
                raise NotSymmetric(f"round {step or tag}: party {self.rank} waits for party {src} "
                                   f"without sending to it")
            out[src] = [t for _, t in sends[src]]
        return out

    def send(self, dst: int, items: list[Item], step: str = "") -> None:
        raise NotSymmetric(f"a one-way message to party {dst} ({step})")

    def recv(self, src: int, step: str = "") -> list[torch.Tensor]:
        raise NotSymmetric(f"a one-way message from party {src} ({step})")

    def _send(self, dst: int, step: str, items: list[Item]) -> None:
        raise NotSymmetric(f"a one-way message to party {dst} ({step})")

    def _recv(self, src: int, step: str, deadline: float) -> list[Item]:
        raise NotSymmetric(f"a one-way message from party {src} ({step})")
