"""A server's link to the dealer: material for each request, online or from a pre-generated queue."""

from __future__ import annotations

from typing import Any

import torch

from ringlet.comm.base import Communicator
from ringlet.offline.kind import Kinds, Shapes
from ringlet.offline.request import STOP, Material, Nothing, OfflineError, Request
from ringlet.prng import AesCtrStream
from ringlet.ring import Ring


class DealerLink:
    """A server's access to dealer material: online requests, or a pre-generated queue."""

    def __init__(self, comm: Communicator, party: int, stream: AesCtrStream, dealer_rank: int,
                 kinds: Kinds, ring: Ring | None = None):
        self.comm = comm
        self.kinds = kinds
        self.party = party
        self.stream = stream
        self.dealer = dealer_rank
        self.ring = ring or Ring()
        self.plan: list[Request] = []  # every request made, in order (the recorded plan)
        self.recording = False  # answer every request with zero material, asking no dealer
        self._queue: list[Any] | None = None  # (request, material) pairs of load(); None once used
        self._cursor = 0

    def get(self, req: Request) -> Any:
        """This party's material for ``req`` (every server must call this in the same order): the
        kind's :class:`~ringlet.offline.request.Material`, :class:`Nothing` for a non-holder."""
        self.plan.append(req)
        if self.recording:  # a plan recording: the shapes of the material, all zeros
            if self.party not in req.holders:
                return Nothing()
            kind, index = self.kinds[req.kind], req.holders.index(self.party)
            material = kind.draw(Shapes(), req, index, False)
            for key, shape in kind.received_shapes(req, index).items():
                material.setdefault(key, torch.zeros(shape, dtype=torch.int64))
            return kind.material.of(material)
        if self._queue is not None:
            if self._cursor >= len(self._queue):
                raise OfflineError(f"pre-generated material exhausted at request {self._cursor} "
                                   f"({req.kind}); the plan was shorter than the computation")
            expected, material = self._queue[self._cursor]
            if expected != req:
                raise OfflineError(f"request {self._cursor}: computation asks for {req}, plan has "
                                   f"{expected}")
            self._queue[self._cursor] = None
            self._cursor += 1
            return material
        if self.party == 0:
            self.comm.send(self.dealer, [("offline", torch.tensor(self.kinds.encode(req),
                                                                   dtype=torch.int64))], "offline")
        return self._expand(req, self._receive_corrections([req]))[0]

    def _receive_corrections(self, reqs: list[Request]) -> list[dict | None]:
        out: list[dict | None] = []
        pending: list = []
        for req in reqs:
            if self._receives(req):
                got, pending = self._take_corrections(req, pending)
                out.append(got)
            else:
                out.append(None)
        return out

    def _receives(self, req: Request) -> tuple:
        if self.party not in req.holders:
            return ()
        return self.kinds[req.kind].receives(req, req.holders.index(self.party))

    def _take_corrections(self, req: Request, pending: list) -> tuple[dict, list]:
        """What the dealer sends this holder for ``req`` (received now if not yet in
        ``pending``), and what is left."""
        kind = self.kinds[req.kind]
        keys = self._receives(req)
        while len(pending) < len(keys):
            pending.extend(self.comm.recv(self.dealer, "offline"))
        got = dict(zip(keys, pending[:len(keys)]))
        ringed = {k: v for k, v in got.items() if k not in kind.raw}
        if self.ring.bits < 64 and ringed:
            shapes = kind.received_shapes(req, req.holders.index(self.party))
            try:
                got.update({k: self.ring.unwire(v, shapes[k]) for k, v in ringed.items()})
            except ValueError as exc:
                raise OfflineError(f"party {self.party}: the dealer's {req.kind} material does not "
                                   f"fit a {self.ring.bits}-bit ring ({exc}); does the dealer run "
                                   f"with --ring-bits {self.ring.bits}?") from None
        elif self.ring.bits == 64 and any(v.dtype != torch.int64 for v in ringed.values()):
            raise OfflineError(f"party {self.party}: the dealer sends {req.kind} material of a "
                               f"narrower ring; this server computes in 64 bits (--ring-bits)")
        return got, pending[len(keys):]

    def _expand(self, reqs_or_req, corrections) -> list[Material]:
        reqs = reqs_or_req if isinstance(reqs_or_req, list) else [reqs_or_req]
        return [self._complete(req, self._draw(req), corr) for req, corr in zip(reqs, corrections)]

    def _draw(self, req: Request) -> dict | None:
        """This party's seeded part of ``req`` (None for a non-holder)."""
        if self.party not in req.holders:
            return None
        index = req.holders.index(self.party)
        return self.kinds[req.kind].draw(self.stream, req, index, index == len(req.holders) - 1)

    def _complete(self, req: Request, drawn: dict | None, corr: dict | None) -> Material:
        """The material of ``req``: the drawn part completed by the dealer's ``corr``."""
        if drawn is None:
            return Nothing()
        if corr:
            drawn.update(corr)
        return self.kinds[req.kind].material.of(drawn)

    def pregenerate(self, plan: list[Request]) -> None:
        """Fetch and expand all material of ``plan`` now; later requests must follow it exactly."""
        if self.party == 0 and plan:
            values = [v for req in plan for v in self.kinds.encode(req)]
            self.comm.send(self.dealer, [("offline", torch.tensor(values, dtype=torch.int64))],
                           "offline")
        self.load(self.receive(plan))

    def receive(self, plan: list[Request]) -> list:
        """The dealer's answers to ``plan``, expanded: a queue for :meth:`load`."""
        # request by request: this server draws its own seeded part while the dealer computes
        # the next correction (the dealer answers in plan order, one request at a time)
        queue: list[tuple[Request, Material]] = []
        pending: list = []
        for req in plan:
            drawn, corr = self._draw(req), None
            if self._receives(req):
                corr, pending = self._take_corrections(req, pending)
            queue.append((req, self._complete(req, drawn, corr)))
        return queue

    def load(self, queue: list) -> None:
        """Answer the next requests from ``queue`` (a :meth:`receive` result), in its order."""
        self._queue = queue
        self._cursor = 0
        self.plan = []

    def go_online(self) -> None:
        """Drop any pre-generated queue: later requests go to the dealer one by one."""
        self._queue = None
        self._cursor = 0

    def stop_dealer(self) -> None:
        if self.party == 0:
            self.comm.send(self.dealer, [("offline", torch.tensor([STOP]))], "offline")
