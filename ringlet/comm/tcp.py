"""TCP transport on torch.distributed (a gloo process group), for multi-process and multi-host runs.

Rendezvous: rank 0 hosts a ``TCPStore`` at ``master_addr:master_port`` (listening on that address
only, never on all interfaces); every party connects to it
and gloo builds a full mesh of TCP connections, each party listening on the address of its interface
towards the master (or ``bind_addr``, or ``$GLOO_SOCKET_IFNAME``). No global process group is created.

Wire format. In a round where two parties both send to and wait for each other (the common,
symmetric case), each message is one flat byte buffer whose layout the receiver already knows: it
mirrors what the receiver itself sends to that peer. Otherwise a fixed-size header (step, items,
dtypes, shapes) goes first, then the payload. Header bytes are counted as framing, never as payload.

Security: gloo links are plain TCP with no authentication: whoever reaches the rendezvous first as
a rank is that rank. The launcher and ``ringlet party --master`` warn on every run and refuse a
rendezvous off loopback without ``--insecure-plain-tcp``; serving uses TLS links only.
"""

from __future__ import annotations

import datetime
import hashlib
import math
import os
import socket
import time
from collections.abc import Collection
from typing import Any, cast

import torch
import torch.distributed as dist

from ringlet.comm.base import (
    TAGS,
    Communicator,
    Item,
    ItemSpec,
    PeerFailedError,
    PeerTimeoutError,
    ProtocolMismatchError,
    split_items,
)

_MAGIC = 0x52494E474C4554  # "RINGLET"
_MAX_ITEMS = 8
_MAX_DIMS = 6
_HEADER_LEN = 3 + _MAX_ITEMS * (2 + 1 + _MAX_DIMS)
_DTYPES = [torch.int64, torch.uint8, torch.float32, torch.float64, torch.int32, torch.bool,
           torch.int8, torch.int16]


def _step_hash(step: str) -> int:
    return int.from_bytes(hashlib.blake2b(step.encode(), digest_size=7).digest(), "little")


def _tag_index(tag: str) -> int:
    try:
        return TAGS.index(tag)
    except ValueError:
        raise ValueError(f"unknown accounting tag {tag!r}; known: {', '.join(TAGS)}") from None


_ONE_BUFFER_BYTES = 1 << 20  # larger messages of several items go item by item (no copy)


def _item_bytes(items: list[Item]) -> list[torch.Tensor]:
    return [t.detach().contiguous().reshape(-1).view(torch.uint8) for _, t in items if t.numel()]


def _flatten(items: list[Item]) -> torch.Tensor:
    parts = [t.detach().contiguous().reshape(-1).view(torch.uint8) if t.numel() else
             torch.empty(0, dtype=torch.uint8) for _, t in items]
    return torch.cat(parts) if len(parts) != 1 else parts[0]


def local_address(master_addr: str, master_port: int) -> str:
    """The address of the interface this host uses to reach the master (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect((master_addr, master_port))
        return cast(str, s.getsockname()[0])


def _device(master_addr: str, master_port: int, bind_addr: str | None) -> dist.ProcessGroupGloo.Device:
    """The gloo device: $GLOO_SOCKET_IFNAME if set, else the address that reaches the master."""
    if os.environ.get("GLOO_SOCKET_IFNAME") and not bind_addr:
        return dist.ProcessGroupGloo.create_default_device()
    return dist.ProcessGroupGloo.create_device(
        hostname=bind_addr or local_address(master_addr, master_port))


class TcpCommunicator(Communicator):
    """One party's endpoint in a gloo mesh of ``world_size`` processes."""

    def __init__(self, rank: int, world_size: int, master_addr: str, master_port: int,
                 timeout: float = 60.0, names: dict[int, str] | None = None,
                 connect_timeout: float | None = None, bind_addr: str | None = None) -> None:
        super().__init__(rank, world_size, timeout, names)
        wait = datetime.timedelta(seconds=connect_timeout or timeout)
        try:
            fd = None
            if rank == 0:  # the rendezvous listens on the master address only, not on every one;
                # the store owns the socket from here (it closes it)
                fd = socket.create_server((master_addr, int(master_port)), backlog=128).detach()
            self.store: dist.TCPStore | None = dist.TCPStore(  # None once closed
                master_addr, int(master_port), world_size, rank == 0, timeout=wait, use_libuv=True,
                master_listen_fd=fd)
            opts = dist.ProcessGroupGloo._Options()  # type: ignore[attr-defined]  # not in torch's stubs
            opts._timeout = datetime.timedelta(seconds=timeout)
            opts._devices = [_device(master_addr, int(master_port), bind_addr)]
            # Any: torch's stubs lack the send/recv that ProcessGroupGloo has at runtime; None once closed
            self.pg: Any = dist.ProcessGroupGloo(self.store, rank, world_size, opts)
        except (RuntimeError, dist.DistStoreError, OSError) as exc:
            raise PeerFailedError(f"{self.peer_name(rank)}: could not join the party mesh at "
                                  f"{master_addr}:{master_port} within {wait.total_seconds():g} s "
                                  f"({str(exc).splitlines()[0]})") from exc
        self._pending: list[tuple[dist.Work, int, str, torch.Tensor]] = []  # (work, peer, step, keepalive)
        self._mirror: dict[int, list[ItemSpec]] = {}  # peer -> spec of what we sent it this round
        self._mirror_peers: set[int] = set()  # peers we both send to and wait for this round

    # sending ---------------------------------------------------------------------------------
    def _isend(self, dst: int, tensor: torch.Tensor, step: str) -> None:
        work = self.pg.send([tensor], dst, 0)
        self._pending.append((work, dst, step, tensor))

    def _send(self, dst: int, step: str, items: list[Item]) -> None:
        total = sum(t.numel() * t.element_size() for _, t in items)
        payload = None if len(items) > 1 and total >= _ONE_BUFFER_BYTES else _flatten(items)
        if dst not in self._mirror_peers:
            header = torch.zeros(_HEADER_LEN, dtype=torch.int64)
            if len(items) > _MAX_ITEMS:
                raise ValueError(f"a message holds at most {_MAX_ITEMS} items, got {len(items)}")
            header[0], header[1], header[2] = _MAGIC, _step_hash(step), len(items)
            for i, (tag, t) in enumerate(items):
                if t.ndim > _MAX_DIMS:
                    raise ValueError(f"tensor with {t.ndim} dims; at most {_MAX_DIMS}")
                base = 3 + i * (3 + _MAX_DIMS)
                header[base] = _tag_index(tag)
                header[base + 1] = _DTYPES.index(t.dtype)
                header[base + 2] = t.ndim
                header[base + 3:base + 3 + t.ndim] = torch.tensor(t.shape, dtype=torch.int64)
            self.stats.framing_bytes += header.numel() * 8
            self._isend(dst, header, step)
        else:
            self._mirror[dst] = [(tag, t.dtype, tuple(t.shape)) for tag, t in items]
        if payload is None:
            for piece in _item_bytes(items):
                self._isend(dst, piece, step)
        elif payload.numel():
            self._isend(dst, payload, step)

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        for work, peer, step, _keep in pending:
            self._wait(work, peer, step, time.monotonic() + self.timeout, "send")

    # receiving -------------------------------------------------------------------------------
    def _wait(self, work: dist.Work, peer: int, step: str, deadline: float, what: str) -> None:
        left = max(0.001, deadline - time.monotonic())
        try:
            work.wait(datetime.timedelta(seconds=left))
        except RuntimeError as exc:
            msg = str(exc)
            if "Timed out" in msg or "timed out" in msg:
                raise PeerTimeoutError(
                    f"{self.peer_name(self.rank)}: {what} with {self.peer_name(peer)} in step "
                    f"'{step}' did not complete within {self.timeout:g} s") from None
            raise PeerFailedError(
                f"{self.peer_name(self.rank)}: {self.peer_name(peer)} is gone ({what} in step "
                f"'{step}': {msg.splitlines()[0][:200]})") from None

    def _recv_into(self, src: int, buf: torch.Tensor, step: str, deadline: float) -> None:
        work = self.pg.recv([buf], src, 0)
        self._wait(work, src, step, deadline, "receive")

    def _recv(self, src: int, step: str, deadline: float) -> list[Item]:
        if src in self._mirror:
            spec = self._mirror[src]
        else:
            header = torch.empty(_HEADER_LEN, dtype=torch.int64)
            self._recv_into(src, header, step, deadline)
            self.stats.framing_bytes += header.numel() * 8
            if int(header[0]) != _MAGIC:
                raise ProtocolMismatchError(f"{self.peer_name(self.rank)}: garbled header from "
                                            f"{self.peer_name(src)} in step '{step}'")
            if step and int(header[1]) != _step_hash(step):
                raise ProtocolMismatchError(
                    f"{self.peer_name(self.rank)}: {self.peer_name(src)} is in a different step "
                    f"than '{step}'")
            spec = []
            for i in range(int(header[2])):
                base = 3 + i * (3 + _MAX_DIMS)
                ndim = int(header[base + 2])
                spec.append((TAGS[int(header[base])], _DTYPES[int(header[base + 1])],
                             tuple(int(d) for d in header[base + 3:base + 3 + ndim])))
        sizes = [math.prod(s) * torch.empty(0, dtype=d).element_size() for _, d, s in spec]
        total = sum(sizes)
        buf = torch.empty(total, dtype=torch.uint8)
        if len(spec) > 1 and total >= _ONE_BUFFER_BYTES:  # the sender sent item by item
            pos = 0
            for size in sizes:
                if size:
                    self._recv_into(src, buf[pos:pos + size], step, deadline)
                pos += size
        elif total:
            self._recv_into(src, buf, step, deadline)
        return split_items(buf, spec)[0]

    def round(self, tag: str, sends: dict[int, list[Item]], recv_from: Collection[int] = (),
              step: str | None = None) -> dict[int, list[torch.Tensor]]:
        self._mirror_peers = {p for p in recv_from if sends.get(p)}
        self._mirror = {}
        try:
            return super().round(tag, sends, recv_from, step)
        finally:
            self._mirror_peers = set()
            self._mirror = {}

    def close(self) -> None:
        try:
            self._flush()
        finally:
            self.pg = None
            self.store = None


