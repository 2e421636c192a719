"""Parties joined by direct links (:class:`~ringlet.comm.channel.Channel`), plain TCP or TLS 1.3.

Who connects to whom: a party with a listening address accepts; of each linked pair, the higher
rank dials the lower if the lower listens (else the lower dials). In ringlet's worlds the servers
listen and the dealer and the client dial them; the dealer and the client share no link.

Joining a link: TCP connect (retried until the connect deadline: the listener may start later),
the TLS handshake with mutual certificate authentication, then a *hello* frame (JSON: rank, party
name, world size, deployment id) and the acceptor's answer. With TLS the party name must be the
certificate's common name: a process that holds no certificate of the deployment's CA cannot take a
party's place, and a rejected dialer does not disturb the parties already joined. Every wait is
bounded; a party that never comes is named in the error.

Message wire format (one frame per message): a 2-byte header length, the header (step hash, item
count, per item: tag, dtype, shape), then the items' bytes. Header and length prefixes are counted
as ``framing_bytes``, TLS records as ``tls_overhead_bytes``; payload bytes are counted per tag.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, cast

import torch

from ringlet.comm.base import (
    TAGS,
    CommError,
    Communicator,
    Item,
    ItemSpec,
    PeerFailedError,
    PeerTimeoutError,
    ProtocolMismatchError,
    split_items,
)
from ringlet.comm.channel import Channel

_DTYPES = [torch.int64, torch.uint8, torch.float32, torch.float64, torch.int32, torch.bool,
           torch.int8, torch.int16]


class HandshakeError(PeerFailedError):
    """A party was refused when joining (wrong identity, world, deployment or certificate)."""


def _step_hash(step: str) -> int:
    return int.from_bytes(hashlib.blake2b(step.encode(), digest_size=8).digest(), "little")


def encode_header(step: str, items: list[Item]) -> bytes:
    parts = [struct.pack("<QB", _step_hash(step), len(items))]
    for tag, t in items:
        if tag not in TAGS:
            raise ValueError(f"unknown accounting tag {tag!r}; known: {', '.join(TAGS)}")
        parts.append(struct.pack("<BBB", TAGS.index(tag), _DTYPES.index(t.dtype), t.ndim))
        parts.append(struct.pack(f"<{t.ndim}q", *t.shape))
    body = b"".join(parts)
    return struct.pack("<H", len(body)) + body


def decode_header(data: bytes, peer: str = "the peer") -> tuple[int, list[ItemSpec]]:
    try:
        step, n = struct.unpack_from("<QB", data, 0)
        pos = 9
        spec: list[ItemSpec] = []
        for _ in range(n):
            tag, dt, ndim = struct.unpack_from("<BBB", data, pos)
            shape = struct.unpack_from(f"<{ndim}q", data, pos + 3)
            pos += 3 + 8 * ndim
            if min(shape, default=0) < 0:
                raise ValueError("a negative dimension")
            spec.append((TAGS[tag], _DTYPES[dt], tuple(shape)))
    except (struct.error, IndexError, ValueError) as exc:
        raise ProtocolMismatchError(f"{peer} sent a garbled message header ({exc})") from None
    return step, spec




def _itemsize(dtype: torch.dtype) -> int:
    return torch.empty(0, dtype=dtype).element_size()


HELLO_LIMIT = 64 << 10  # bytes of a hello or its answer (a few hundred in practice)


def send_json(ch: Channel, obj: Any) -> None:
    ch.send(json.dumps(obj).encode())


def parse_json(data: bytes | bytearray, peer: str, what: str) -> dict[str, Any]:
    """A JSON object from a peer's frame; anything else (not UTF-8, not JSON, too deeply nested,
    not an object) is a :class:`ProtocolMismatchError` naming the peer."""
    try:
        obj = json.loads(bytes(data).decode())
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ProtocolMismatchError(f"{peer} sent a garbled {what} message") from None
    except RecursionError:
        raise ProtocolMismatchError(f"{peer} sent a {what} message nested too deeply") from None
    if not isinstance(obj, dict):
        raise ProtocolMismatchError(f"{peer} sent a JSON {type(obj).__name__} as its {what} "
                                    f"message, not an object")
    return obj


def recv_json(ch: Channel, timeout: float, what: str, limit: int = HELLO_LIMIT) -> dict[str, Any]:
    data = ch.recv_frame(time.monotonic() + timeout, what, limit=limit)
    return parse_json(data, ch.peer, what)


def admit(hello: dict[str, Any], cert_name: str | None, deployment: str,
          tls: bool) -> str | None:
    """Why a joining party is refused before its role is looked at: a hello without a party
    name, another deployment's, or (with TLS) a certificate for another name than the hello's.
    None: go on. Every listener (:func:`ringlet.comm.transport.connect_mesh`, a serving server)
    checks this first."""
    name = hello.get("name")
    if type(name) is not str:
        return "the hello has no party name"
    if hello.get("deployment") != deployment:
        return f"another deployment ({hello.get('deployment')!r}, this is {deployment!r})"
    if tls and cert_name != name:
        return f"certificate is for {cert_name!r}, the hello says {name!r}"
    return None


def common_name(cert: dict[str, Any] | None) -> str | None:
    for rdn in (cert or {}).get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return cast(str, value)
    return None


class Listener:
    """Accepts links on ``address``; each verified peer is handed to ``on_peer(hello, channel)``.

    ``check(hello, cert_name, where) -> str | None`` returns why a hello is refused (None:
    accepted); ``where`` is the peer's address.
    Connections that fail the TLS handshake or the check are closed and reported to ``on_reject``.
    """

    def __init__(self, address: tuple[str, int], context: ssl.SSLContext | None,
                 on_peer: Callable[[dict[str, Any], Channel], None],
                 check: Callable[[dict[str, Any], str | None, str], str | None], timeout: float = 10.0,
                 on_reject: Callable[[str, str], None] | None = None, name: str = "listener") -> None:
        self.context, self.on_peer, self.check = context, on_peer, check
        self.on_reject = on_reject or (lambda addr, why: None)
        self.timeout, self.name = timeout, name
        try:
            self.sock = socket.create_server(address, reuse_port=False)
        except OSError as exc:
            raise ConnectionError(f"{name} cannot listen on {address[0]}:{address[1]}: "
                                  f"{exc.strerror or exc} (is another process using it?)") from None
        self.address = self.sock.getsockname()[:2]
        self._stop = threading.Event()
        self._joining, self._joining_lock = 0, threading.Lock()
        self._thread = threading.Thread(target=self._accept, name=f"ringlet-{name}", daemon=True)
        self._thread.start()

    MAX_JOINING = 64  # connections in their handshake at once; more are closed at once

    def _accept(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, addr = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._joining_lock:
                full = self._joining >= self.MAX_JOINING
                self._joining += not full
            if full:
                conn.close()
                self.on_reject(f"{addr[0]}:{addr[1]}", f"{self.MAX_JOINING} links are joining "
                                                       f"already; closed")
                continue
            threading.Thread(target=self._join, args=(conn, addr), daemon=True,
                             name=f"ringlet-{self.name}-join").start()

    def _join(self, conn: socket.socket, addr: tuple[Any, ...]) -> None:
        try:
            self._join_one(conn, addr)
        finally:
            with self._joining_lock:
                self._joining -= 1

    def _join_one(self, conn: socket.socket, addr: tuple[Any, ...]) -> None:
        where = f"{addr[0]}:{addr[1]}"
        ch = None
        try:
            ch = Channel.open(conn, f"the party at {where}", self.context, True, self.timeout)
            hello = recv_json(ch, self.timeout, "hello")
            cert_name = common_name(ch.peer_certificate()) if self.context is not None else None
            why = self.check(hello, cert_name, where)
            if why:
                with contextlib.suppress(CommError):
                    send_json(ch, {"ok": False, "error": why})
                    ch.flush(self.timeout)
                raise HandshakeError(why)
            ch.peer = str(hello.get("name"))
            send_json(ch, {"ok": True})
        except Exception as exc:  # noqa: BLE001 - whatever a joining peer sends ends its link only
            (ch or conn).close()
            self.on_reject(where, str(exc) if isinstance(exc, CommError) else
                           f"{type(exc).__name__} while joining: {exc}")
            return
        self.on_peer(hello, ch)

    def close(self) -> None:
        self._stop.set()
        if threading.current_thread() is not self._thread:
            self._thread.join(2.0)  # the port is really closed when this returns
        self.sock.close()


def dial(address: tuple[str, int], context: ssl.SSLContext | None, expect: str, hello: dict[str, Any],
         deadline: float) -> Channel:
    """Connect to the party ``expect`` at ``address`` (retrying until ``deadline``), verify its
    certificate's name, say hello and wait for the answer."""
    last = "no attempt"
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise PeerTimeoutError(f"{expect} at {address[0]}:{address[1]} did not answer within the "
                                   f"connect timeout ({last})")
        try:
            sock = socket.create_connection(address, timeout=min(left, 5.0))
            break
        except OSError as exc:
            last = str(exc)
            time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
    ch = Channel.open(sock, expect, context, False, max(0.1, deadline - time.monotonic()))
    if context is not None:
        got = common_name(ch.peer_certificate())
        if got != expect:
            ch.close()
            raise HandshakeError(f"the party at {address[0]}:{address[1]} presents a certificate for "
                                 f"{got!r}, expected {expect!r}")
    send_json(ch, hello)
    answer = recv_json(ch, max(0.1, deadline - time.monotonic()), "hello answer")
    if not answer.get("ok"):
        ch.close()
        raise HandshakeError(f"{expect} refused this party: {answer.get('error')}")
    return ch


class MeshCommunicator(Communicator):
    """A :class:`Communicator` over one :class:`Channel` per linked peer."""

    def __init__(self, rank: int, world_size: int, channels: dict[int, Channel], timeout: float = 60.0,
                 names: dict[int, str] | None = None) -> None:
        super().__init__(rank, world_size, timeout, names)
        self.channels = channels
        # on_receive(src, items): a test's recorder
        self.on_receive: Callable[[int, list[Item]], None] | None = None
        self._interject: dict[int, tuple[str, Callable[[int, list[torch.Tensor]], None]]] = {}

    def interject(self, step: str, handler: Callable[[int, list[torch.Tensor]], None]) -> None:
        """Messages of ``step`` may arrive between any others: whichever step a receive waits
        for, they are handed to ``handler(src, tensors)`` (and counted) as they come."""
        self._interject[_step_hash(step)] = (step, handler)

    def _channel(self, peer: int) -> Channel:
        ch = self.channels.get(peer)
        if ch is None:
            raise ValueError(f"{self.peer_name(self.rank)} has no link to {self.peer_name(peer)}")
        return ch

    def _send(self, dst: int, step: str, items: list[Item]) -> None:
        header = encode_header(step, items)
        self.stats.framing_bytes += len(header) + 4
        views = [t.detach().contiguous().reshape(-1).view(torch.uint8).numpy().data for _, t in items
                 if t.numel()]
        with self._naming(dst, f"step '{step}'", f"sending to {self.peer_name(dst)} stalled"):
            self._channel(dst).send(header, *views)

    @contextlib.contextmanager
    def _naming(self, peer: int, what: str, late: str) -> Iterator[None]:
        """Errors of a link to ``peer`` as this party's, naming both (``late``: the timeout's)."""
        try:
            yield
        except PeerTimeoutError:
            raise PeerTimeoutError(f"{self.peer_name(self.rank)}: {late} within {self.timeout:g} s") from None
        except PeerFailedError as exc:
            raise PeerFailedError(f"{self.peer_name(self.rank)}: {self.peer_name(peer)} is gone "
                                  f"({what}: {exc})") from None

    def _recv(self, src: int, step: str, deadline: float) -> list[Item]:
        while True:
            step_hash, items = self._recv_one(src, step, deadline)
            if step_hash == _step_hash(step) or step_hash not in self._interject:
                break
            for tag, t in items:
                self.stats.received[(src, tag)] += t.numel() * t.element_size()
            self._interject[step_hash][1](src, [t for _, t in items])
        if step and step_hash != _step_hash(step):
            raise ProtocolMismatchError(f"{self.peer_name(self.rank)}: {self.peer_name(src)} is in a "
                                        f"different step than '{step}'")
        if self.on_receive is not None:
            self.on_receive(src, items)
        return items

    def _recv_one(self, src: int, step: str, deadline: float) -> tuple[int, list[Item]]:
        ch = self._channel(src)
        what = f"step '{step}'"
        with self._naming(src, what, f"no message from {self.peer_name(src)} in {what}"):
            n = ch.recv_length(deadline, what, limit=0xFFFFFFFF)
            (hlen,) = struct.unpack("<H", bytes(ch.read(2, deadline, what)))
            step_hash, spec = decode_header(bytes(ch.read(hlen, deadline, what)), ch.peer)
            size = sum(math.prod(shape) * _itemsize(dt) for _, dt, shape in spec)
            if n != 2 + hlen + size:  # checked before anything of that size is allocated
                raise ProtocolMismatchError(f"{ch.peer} announced {n} bytes for items of {size}")
            buf = torch.empty(size, dtype=torch.uint8)
            if buf.numel():
                ch.recv_into(buf.numpy().data, deadline, what)
        self.stats.framing_bytes += 4 + 2 + hlen
        items, used = split_items(buf, spec)
        if used != buf.numel():
            raise ProtocolMismatchError(f"{self.peer_name(self.rank)}: a message from "
                                        f"{self.peer_name(src)} has {buf.numel() - used} stray bytes")
        return step_hash, items

    def _flush(self) -> None:
        for peer, ch in self.channels.items():
            with self._naming(peer, "sending", f"sending to {self.peer_name(peer)} did not finish"):
                ch.flush(self.timeout)

    def tls_overhead_bytes(self) -> int:
        """Bytes on the wire beyond the frames (TLS records, handshake), both ways, all links."""
        return sum(ch.wire_sent - ch.sent + ch.wire_received - ch.received
                   for ch in self.channels.values())

    def close(self) -> None:
        try:
            self._flush()
        except CommError:
            pass
        finally:
            for ch in self.channels.values():
                ch.close()
