"""In-process transport: parties are threads, messages go through queues.

Used by tests, the simulator and the single-process demo. Tensors are copied on send, so a party
can never observe another party's later in-place changes. When one party fails, the hub records it
and every party waiting on a message raises :class:`PeerFailedError` naming the failed party.
"""

from __future__ import annotations

import queue
import threading
import time

from ringlet.comm.base import Communicator, Item, PeerFailedError, PeerTimeoutError, ProtocolMismatchError

_POLL = 0.05  # seconds between checks for a failed peer while waiting


class LocalHub:
    """The shared mailboxes of one in-process world."""

    def __init__(self, world_size: int) -> None:
        self.world_size = world_size
        # (src, dst) -> messages (step, items) in order
        self.queues: dict[tuple[int, int], queue.Queue[tuple[str, list[Item]]]] = {
            (s, d): queue.Queue() for s in range(world_size) for d in range(world_size) if s != d}
        self._lock = threading.Lock()
        self.failed: dict[int, str] = {}

    def fail(self, rank: int, reason: str) -> None:
        with self._lock:
            self.failed.setdefault(rank, reason)

    def communicator(self, rank: int, timeout: float = 60.0,
                     names: dict[int, str] | None = None) -> LocalCommunicator:
        return LocalCommunicator(self, rank, timeout, names)


class LocalCommunicator(Communicator):
    def __init__(self, hub: LocalHub, rank: int, timeout: float = 60.0,
                 names: dict[int, str] | None = None) -> None:
        super().__init__(rank, hub.world_size, timeout, names)
        self.hub = hub

    def _send(self, dst: int, step: str, items: list[Item]) -> None:
        self.hub.queues[(self.rank, dst)].put((step, [(tag, t.detach().clone()) for tag, t in items]))

    def _recv(self, src: int, step: str, deadline: float) -> list[Item]:
        q = self.hub.queues[(src, self.rank)]
        while True:
            try:
                got_step, items = q.get(timeout=_POLL)
                break
            except queue.Empty:
                if src in self.hub.failed:
                    raise PeerFailedError(
                        f"{self.peer_name(self.rank)}: {self.peer_name(src)} failed while this party "
                        f"waited for it in step '{step}': {self.hub.failed[src]}") from None
                if time.monotonic() > deadline:
                    raise PeerTimeoutError(
                        f"{self.peer_name(self.rank)}: no message from {self.peer_name(src)} in step "
                        f"'{step}' within {self.timeout:g} s") from None
        if step and got_step and got_step != step:
            raise ProtocolMismatchError(
                f"{self.peer_name(self.rank)}: expected step '{step}' from {self.peer_name(src)}, "
                f"got '{got_step}'")
        return items
