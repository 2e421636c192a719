"""The dealer: answers server 0's requests (or a pool's plan) with each holder's material."""

from __future__ import annotations

from ringlet.comm.base import Communicator
from ringlet.offline.kind import Kinds
from ringlet.offline.request import STOP, Request
from ringlet.prng import AesCtrStream
from ringlet.ring import Ring


class Dealer:
    """The trusted third party: answers requests from server 0 until told to stop."""

    def __init__(self, comm: Communicator, streams: dict[int, AesCtrStream], kinds: Kinds,
                 requester: int = 0, ring: Ring | None = None):
        self.comm = comm
        self.kinds = kinds
        self.streams = streams  # server rank -> stream shared with that server
        self.requester = requester
        self.ring = ring or Ring()

    def produce(self, req: Request) -> list[tuple[int, dict]]:
        """Draw every holder's seeded part; [(holder rank, what the dealer sends it)] in holder
        order (only the last holder, for a seed-compressed kind)."""
        kind = self.kinds[req.kind]
        last = len(req.holders) - 1
        parts = [kind.draw(self.streams[h], req, i, i == last) for i, h in enumerate(req.holders)]
        sent = kind.correct(parts, req, self.ring)
        return [(req.holders[i], sent[i]) for i in sorted(sent)]

    def serve(self) -> None:
        while True:
            (msg,) = self.comm.recv(self.requester, "offline")
            values = msg.tolist()
            if values and values[0] == STOP:
                return
            pos = 0
            while pos < len(values):  # each request's corrections leave as soon as they exist:
                req, pos = self.kinds.decode(values, pos)  # the holder expands them meanwhile
                self.send_material(req)

    def send_material(self, req: Request) -> None:
        """Produce ``req``'s material and send each holder what it receives (tag ``offline``)."""
        kind = self.kinds[req.kind]
        sent = self.produce(req)
        self.comm.flush()  # the previous request's material has left: free it
        for dst, corr in sent:
            keys = kind.receives(req, req.holders.index(dst))
            items = [("offline", corr[k] if k in kind.raw else self.ring.wire(corr[k]))
                     for k in keys]
            for start in range(0, len(items), 8):  # messages carry at most 8 tensors
                self.comm.send(dst, items[start:start + 8], "offline")
