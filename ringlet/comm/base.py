"""The Communicator interface and its exact accounting.

A message is a list of ``(tag, tensor)`` items sent from one party to another in one step; every
payload byte is counted under its item's tag, per peer, on both ends. A *round* is one step in which
a party waits for messages from others: :meth:`Communicator.round` sends everything, then waits for
everything, and counts one round under the round's tag for each party that waited. Framing (the
small per-message header on TCP) is counted apart, under ``framing_bytes``, never inside a tag.

Every wait has a timeout; a missing, dead or failed peer raises an error that names the peer, the
step and how long was waited.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from ringlet.comm.shaper import LinkShaper

# tags used for accounting (free-form strings are allowed; these are the ones ringlet uses)
TAGS = ("setup", "input", "output", "offline", "mult", "trunc", "circuit", "b2a", "select",
        "reshare", "open", "poly", "other", "fss")


class CommError(RuntimeError):
    """A communication step failed."""


class PeerTimeoutError(CommError, TimeoutError):
    """A peer sent nothing within the timeout."""


class PeerFailedError(CommError, ConnectionError):
    """A peer died, closed its connection, or raised an error."""


class ProtocolMismatchError(CommError):
    """Parties disagree about the step they are in (a bug or a misconfigured launch)."""


Item = tuple[str, torch.Tensor]
ItemSpec = tuple[str, torch.dtype, tuple[int, ...]]  # an item as a header describes it: tag, dtype, shape


@dataclass
class CommStats:
    """Exact counts for one party: payload bytes per (peer, tag) each way, rounds per tag."""

    sent: dict[tuple[int, str], int] = field(default_factory=lambda: defaultdict(int))  # (peer, tag)
    received: dict[tuple[int, str], int] = field(default_factory=lambda: defaultdict(int))
    rounds: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    messages: int = 0
    framing_bytes: int = 0
    seconds_waiting: float = 0.0  # time inside send/recv/round: the communication share of a run

    def bytes_sent(self, tags: Collection[str] | None = None, exclude: Collection[str] = (),
                   peers: Collection[int] | None = None) -> int:
        return sum(v for (peer, tag), v in self.sent.items()
                   if (tags is None or tag in tags) and tag not in exclude
                   and (peers is None or peer in peers))

    def bytes_received(self, tags: Collection[str] | None = None, exclude: Collection[str] = (),
                       peers: Collection[int] | None = None) -> int:
        return sum(v for (peer, tag), v in self.received.items()
                   if (tags is None or tag in tags) and tag not in exclude
                   and (peers is None or peer in peers))

    def total_rounds(self, tags: Collection[str] | None = None, exclude: Collection[str] = ()) -> int:
        return sum(v for tag, v in self.rounds.items()
                   if (tags is None or tag in tags) and tag not in exclude)

    def by_tag(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for (_peer, tag), v in self.sent.items():
            out.setdefault(tag, {"bytes_sent": 0, "bytes_received": 0, "rounds": 0})["bytes_sent"] += v
        for (_peer, tag), v in self.received.items():
            out.setdefault(tag, {"bytes_sent": 0, "bytes_received": 0, "rounds": 0})["bytes_received"] += v
        for tag, v in self.rounds.items():
            out.setdefault(tag, {"bytes_sent": 0, "bytes_received": 0, "rounds": 0})["rounds"] += v
        return out

    def copy(self) -> CommStats:
        new = CommStats()
        new.sent.update(self.sent)
        new.received.update(self.received)
        new.rounds.update(self.rounds)
        new.messages, new.framing_bytes = self.messages, self.framing_bytes
        new.seconds_waiting = self.seconds_waiting
        return new

    def minus(self, before: CommStats) -> CommStats:
        """Counts accumulated since ``before`` (a :meth:`copy`)."""
        new = CommStats()
        tables: tuple[tuple[dict[Any, int], dict[Any, int], dict[Any, int]], ...] = (
            (self.sent, new.sent, before.sent), (self.received, new.received, before.received),
            (self.rounds, new.rounds, before.rounds))
        for src, dst, old in tables:
            for k, v in src.items():
                if v - old.get(k, 0):
                    dst[k] = v - old.get(k, 0)
        new.messages = self.messages - before.messages
        new.framing_bytes = self.framing_bytes - before.framing_bytes
        new.seconds_waiting = self.seconds_waiting - before.seconds_waiting
        return new

    def to_dict(self) -> dict[str, Any]:
        return {"bytes_sent": self.bytes_sent(), "bytes_received": self.bytes_received(),
                "rounds": self.total_rounds(), "messages": self.messages,
                "framing_bytes": self.framing_bytes, "seconds_waiting": self.seconds_waiting,
                "by_tag": self.by_tag(),
                "sent_by_peer": _by_peer(self.sent), "received_by_peer": _by_peer(self.received)}


def _by_peer(table: dict[tuple[int, str], int]) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for (peer, _tag), v in table.items():
        out[str(peer)] += v
    return dict(out)


def payload_bytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def split_items(buf: torch.Tensor, spec: list[ItemSpec]) -> tuple[list[Item], int]:
    """Items as views of a freshly received byte buffer (a copy only where an item is
    misaligned), and the number of bytes they take."""
    out: list[Item] = []
    pos = 0
    for tag, dtype, shape in spec:
        n = 1
        for d in shape:
            n *= d
        size = torch.empty(0, dtype=dtype).element_size()
        nbytes = n * size
        piece = buf[pos:pos + nbytes]
        if pos % size:
            piece = piece.clone()
        out.append((tag, piece.view(dtype).reshape(shape)))
        pos += nbytes
    return out, pos


class Communicator(ABC):
    """Point-to-point messages between ranks 0..world_size−1 with exact accounting."""

    def __init__(self, rank: int, world_size: int, timeout: float = 60.0,
                 names: dict[int, str] | None = None) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world of size {world_size}")
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        self.rank, self.world_size, self.timeout = rank, world_size, float(timeout)
        self.stats = CommStats()
        self.names = names or {}
        self.shaper: LinkShaper | None = None  # optional link shaper (bandwidth/latency), applied to sends

    def peer_name(self, rank: int) -> str:
        return f"party {rank}" + (f" ({self.names[rank]})" if rank in self.names else "")

    def _check_peer(self, peer: int) -> None:
        if not isinstance(peer, int) or not 0 <= peer < self.world_size or peer == self.rank:
            raise ValueError(f"{self.peer_name(self.rank)}: invalid peer {peer!r} "
                             f"(world size {self.world_size})")

    # transport hooks -------------------------------------------------------------------------
    @abstractmethod
    def _send(self, dst: int, step: str, items: list[Item]) -> None:
        """Start sending one message (may return before delivery)."""

    @abstractmethod
    def _recv(self, src: int, step: str, deadline: float) -> list[Item]:
        """Wait for one message from ``src`` until ``deadline`` (time.monotonic())."""

    def _flush(self) -> None:  # noqa: B027 - a transport with synchronous sends has nothing to do
        """Wait until every started send has left (transports with async sends override)."""

    def close(self) -> None:  # noqa: B027 - a transport with nothing to release keeps this
        """Release transport resources."""

    def tls_overhead_bytes(self) -> int:
        """Bytes on this party's links beyond the frames (TLS records); 0 without TLS."""
        return 0

    # public API ------------------------------------------------------------------------------
    def send(self, dst: int, items: list[Item], step: str = "") -> None:
        self._check_peer(dst)
        t0 = time.perf_counter()
        for tag, t in items:
            self.stats.sent[(dst, tag)] += payload_bytes(t)
        self.stats.messages += 1
        if self.shaper is not None and step != "offline":  # the link models the online phase
            self.shaper.before_send(dst, sum(payload_bytes(t) for _, t in items))
        self._send(dst, step, items)
        self.stats.seconds_waiting += time.perf_counter() - t0

    def recv(self, src: int, step: str = "") -> list[torch.Tensor]:
        self._check_peer(src)
        t0 = time.perf_counter()
        deadline = time.monotonic() + self.timeout
        items = self._recv(src, step, deadline)
        for tag, t in items:
            self.stats.received[(src, tag)] += payload_bytes(t)
        if self.shaper is not None and step != "offline":
            self.shaper.after_recv(src, sum(payload_bytes(t) for _, t in items))
        self.stats.seconds_waiting += time.perf_counter() - t0
        return [t for _, t in items]

    def flush(self) -> None:
        """Wait until every message sent so far has left (a party that only sends, like the
        dealer, calls this: a transport keeps each sent tensor alive until then)."""
        t0 = time.perf_counter()
        self._flush()
        self.stats.seconds_waiting += time.perf_counter() - t0

    def round(self, tag: str, sends: dict[int, list[Item]], recv_from: Collection[int] = (),
              step: str | None = None) -> dict[int, list[torch.Tensor]]:
        """One communication round: send every message, then wait for one from each ``recv_from``.

        Counts one round under ``tag`` if this party waits for anything.
        """
        step = step or tag
        for dst, items in sends.items():
            if items:
                self.send(dst, items, step)
        out = {src: self.recv(src, step) for src in recv_from}
        t0 = time.perf_counter()
        self._flush()
        self.stats.seconds_waiting += time.perf_counter() - t0
        if recv_from:
            self.stats.rounds[tag] += 1
        return out
