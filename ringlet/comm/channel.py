"""One authenticated link between two parties: a TCP socket, optionally inside TLS 1.3.

TLS runs through Python's ``ssl`` (OpenSSL) on memory buffers (:class:`ssl.SSLObject`): this
module moves the encrypted bytes between the socket and OpenSSL itself, so that one thread can
send while another receives on the same link without sharing an SSL object unlocked, and so that
the bytes on the wire are counted exactly (``wire_sent``/``wire_received``; the TLS overhead is
those minus the plaintext ``sent``/``received``).

A *frame* is a 4-byte little-endian length and that many bytes. Every read of a frame states the
largest length it accepts (the caller knows what may come: a hello, a query header, a payload of a
known size); a longer announcement fails at once, and buffers grow with the bytes that arrive.
:meth:`Channel.send` returns at once: a sender thread per channel writes frames in order, so two
parties that both send large messages before reading never deadlock. Every wait has a deadline; a
closed or reset connection raises :class:`~ringlet.comm.base.PeerFailedError` naming the peer.
"""

from __future__ import annotations

import queue
import select
import socket
import ssl
import struct
import threading
import time
from typing import Any, cast

from ringlet.comm.base import PeerFailedError, PeerTimeoutError, ProtocolMismatchError

_CHUNK = 1 << 20  # plaintext handed to OpenSSL at a time (it cuts 16 KiB records)
_RECV = 1 << 20

_BytesLike = bytes | bytearray | memoryview  # a part of a frame


class FrameTooLargeError(ProtocolMismatchError):
    """A peer announced a frame longer than the limit of what it may send at that point."""


class Channel:
    """A bidirectional frame link to ``peer`` (a name used in every error message)."""

    def __init__(self, sock: socket.socket, peer: str, tls: ssl.SSLObject | None = None,
                 incoming: ssl.MemoryBIO | None = None, outgoing: ssl.MemoryBIO | None = None) -> None:
        sock.settimeout(None)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock, self.peer = sock, peer
        self.tls, self._in, self._out = tls, incoming, outgoing
        self._tls_lock = threading.Lock()  # the SSL object is shared by the sender and receiver
        self._wire_lock = threading.Lock()  # one writer of raw bytes at a time
        self.sent = self.received = 0  # plaintext bytes (frames and their length prefixes)
        self.wire_sent = self.wire_received = 0  # bytes on the socket (TLS records included)
        # (length prefix, parts) per frame; None stops the sender thread
        self._queue: queue.Queue[tuple[bytes, tuple[_BytesLike, ...]] | None] = queue.Queue()
        self._error: BaseException | None = None
        self._idle = threading.Event()
        self._idle.set()
        self._closed = False
        self._thread = threading.Thread(target=self._sender, name=f"ringlet-send-{peer}", daemon=True)
        self._thread.start()

    # TLS handshake ---------------------------------------------------------------------------
    @classmethod
    def open(cls, sock: socket.socket, peer: str, context: ssl.SSLContext | None, server_side: bool,
             timeout: float) -> Channel:
        """Wrap a connected socket; with ``context``, run the TLS handshake (bounded by ``timeout``)."""
        if context is None:
            return cls(sock, peer)
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = context.wrap_bio(incoming, outgoing, server_side=server_side)
        deadline = time.monotonic() + timeout
        wire = [0, 0]
        while True:
            try:
                obj.do_handshake()
                done = True
            except ssl.SSLWantReadError:
                done = False
            except ssl.SSLError as exc:
                _drain(sock, outgoing, wire)  # let the peer learn why (an alert)
                raise PeerFailedError(f"TLS handshake with {peer} failed: {exc.reason or exc}") from None
            _drain(sock, outgoing, wire)
            if done:
                break
            data = _recv_some(sock, deadline, peer, "the TLS handshake")
            wire[1] += len(data)
            incoming.write(data)
        ch = cls(sock, peer, obj, incoming, outgoing)
        ch.wire_sent, ch.wire_received = wire
        return ch

    def peer_certificate(self) -> dict[str, Any] | None:
        return self.tls.getpeercert() if self.tls is not None else None

    # sending ---------------------------------------------------------------------------------
    def send(self, *parts: _BytesLike) -> None:
        """Queue one frame made of ``parts`` (bytes-like objects kept alive until sent)."""
        self._raise()
        n = sum(memoryview(p).nbytes for p in parts)
        self._idle.clear()
        self._queue.put((struct.pack("<I", n), parts))

    def flush(self, timeout: float) -> None:
        """Wait until every queued frame has been written to the socket."""
        if not self._idle.wait(timeout):
            self._raise()
            raise PeerTimeoutError(f"sending to {self.peer} did not finish within {timeout:g} s")
        self._raise()

    def _raise(self) -> None:
        if self._error is not None:
            raise PeerFailedError(f"{self.peer} is gone (sending: {self._error})")

    def _sender(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            head, parts = item
            try:
                if self._error is None:
                    self._write(head)
                    for p in parts:
                        self._write(p)
            except (OSError, ssl.SSLError, ValueError) as exc:
                self._error = exc
            if self._queue.empty():
                self._idle.set()

    def _write(self, data: _BytesLike) -> None:
        view = memoryview(data).cast("B")
        self.sent += view.nbytes
        if self.tls is None:
            with self._wire_lock:
                self.sock.sendall(view)
            self.wire_sent += view.nbytes
            return
        for start in range(0, view.nbytes, _CHUNK):
            piece = view[start:start + _CHUNK]
            with self._tls_lock:
                done = 0
                while done < piece.nbytes:
                    done += self.tls.write(piece[done:])
                assert self._out is not None  # set with tls (Channel.open)
                out = self._out.read()
            self._put_wire(out)

    def _put_wire(self, data: bytes) -> None:
        if data:
            with self._wire_lock:
                self.sock.sendall(data)
            self.wire_sent += len(data)

    # receiving -------------------------------------------------------------------------------
    def recv_frame(self, deadline: float, what: str, *, limit: int,
                   frame_timeout: float | None = None) -> bytearray:
        """The next frame's bytes: its length must arrive by ``deadline`` (time.monotonic()); a
        length over ``limit`` raises :class:`FrameTooLargeError` before anything is allocated, and
        with ``frame_timeout`` the rest of the frame must follow within that many seconds."""
        n = self.recv_length(deadline, what, limit=limit)
        if frame_timeout is not None:
            deadline = time.monotonic() + frame_timeout
        return self.read(n, deadline, what)

    def recv_into(self, buf: memoryview, deadline: float, what: str) -> None:
        """Read exactly ``buf.nbytes`` bytes of the current frame into ``buf``."""
        self._fill(buf.nbytes, deadline, what, buf)

    def recv_length(self, deadline: float, what: str, *, limit: int) -> int:
        """The next frame's announced length (at most ``limit``, else FrameTooLargeError)."""
        n: int
        (n,) = struct.unpack("<I", bytes(self.read(4, deadline, what)))
        if n > limit:
            raise FrameTooLargeError(f"{self.peer} announced a frame of {n} bytes ({what}); the "
                                     f"limit for it is {limit} bytes")
        return n

    def read(self, n: int, deadline: float, what: str) -> bytearray:
        """Exactly ``n`` bytes; the buffer grows with the data received, never ahead of it."""
        if n <= _CHUNK:
            out = bytearray(n)
            self._fill(n, deadline, what, memoryview(out))
            return out
        out = bytearray()
        while len(out) < n:
            piece = bytearray(min(n - len(out), max(_CHUNK, len(out))))
            self._fill(len(piece), deadline, what, memoryview(piece))
            out += piece
        return out

    def _fill(self, n: int, deadline: float, what: str, out: memoryview) -> None:
        pos = 0
        out = out.cast("B")
        while pos < n:
            if self.tls is None:
                pos += self._recv_plain(out[pos:n], deadline, what)
                continue
            got = self._decrypt_into(out[pos:n], what)  # records already buffered first
            if got:
                pos += got
                continue
            data = _recv_some(self.sock, deadline, self.peer, what)
            self.wire_received += len(data)
            with self._tls_lock:
                assert self._in is not None  # set with tls (Channel.open)
                self._in.write(data)
        self.received += n

    def _decrypt_into(self, view: memoryview, what: str) -> int:
        """Decrypt buffered records straight into ``view``; the number of bytes written."""
        assert self.tls is not None and self._out is not None  # called with TLS only (_fill)
        with self._tls_lock:
            try:
                # with a buffer, read returns the count of bytes written (typeshed says bytes)
                got = cast(int, self.tls.read(view.nbytes, view))
            except ssl.SSLWantReadError:
                got = 0
            except ssl.SSLZeroReturnError:
                raise PeerFailedError(f"{self.peer} closed the connection ({what})") from None
            except ssl.SSLError as exc:
                raise PeerFailedError(f"TLS error from {self.peer} ({what}): {exc}") from None
            reply = self._out.read()  # post-handshake messages (tickets, key updates)
        self._put_wire(reply)
        return got

    def _recv_plain(self, view: memoryview, deadline: float, what: str) -> int:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise PeerTimeoutError(f"no data from {self.peer} ({what}) in time")
            try:
                if not _readable(self.sock, left):
                    continue
                got = self.sock.recv_into(view)
            except OSError as exc:
                raise PeerFailedError(f"{self.peer} is gone ({what}: {exc})") from None
            if got == 0:
                raise PeerFailedError(f"{self.peer} closed the connection ({what})")
            self.wire_received += got
            return got

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        if threading.current_thread() is not self._thread:
            self._thread.join(2.0)  # no thread of ours outlives the link (nor the interpreter)
        self.sock.close()


def _recv_some(sock: socket.socket, deadline: float, peer: str, what: str) -> bytes:
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise PeerTimeoutError(f"no data from {peer} ({what}) in time")
        try:
            if not _readable(sock, left):
                continue
            data = sock.recv(_RECV)
        except OSError as exc:
            raise PeerFailedError(f"{peer} is gone ({what}: {exc})") from None
        if not data:
            raise PeerFailedError(f"{peer} closed the connection ({what})")
        return data


def _readable(sock: socket.socket, left: float) -> bool:
    # the socket stays blocking (the sender thread writes on it); select bounds the read's wait
    try:
        ready, _, _ = select.select([sock], [], [], min(left, 1.0))
    except ValueError:  # closed here, meanwhile
        raise OSError("the link was closed") from None
    return bool(ready)


def _drain(sock: socket.socket, outgoing: ssl.MemoryBIO, wire: list[int]) -> None:
    data = outgoing.read()
    if data:
        try:
            sock.sendall(data)
        except OSError:
            return
        wire[0] += len(data)
