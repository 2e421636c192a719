"""Client ↔ server messages of ``ringlet serve``: a JSON frame, then one payload frame.

client → server   {"op": "info"}                                       (no payload frame)
                  {"op": "query", "id": ID, "rows": K}  + this server's share, ring wire format
server → client   {"op": "info", ...the model's public facts}           (no payload frame)
                  {"op": "result", "id": ID, "rows": K} + this server's share of the K output rows
                  {"op": "error", "id": ID, "kind": KIND, "message": TEXT}  (no payload frame)

Costs per query of K rows (p servers, ℓ-bit ring): the client sends each server K·(input size)·ℓ
bits (tag ``input``) and receives from each K·(output size)·ℓ bits (tag ``output``); no rounds.

Limits: a header frame holds at most :data:`HEADER_LIMIT` bytes; a payload's length is known from
its header (``payload_limit(header)``) before a byte of it is read, and a longer announcement ends
the link (:class:`~ringlet.comm.channel.FrameTooLargeError`). Fields are typed strictly: ``rows``
is a JSON integer (``true`` is not 1), ``id`` a string of 1–64 characters.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from ringlet.comm.base import ProtocolMismatchError
from ringlet.comm.mesh import parse_json

WITH_PAYLOAD = ("query", "result")
# every kind of error a query can get; the metrics export one series per kind
ERROR_KINDS = ("busy", "peer_failed", "bad_input", "draining", "timeout", "internal", "unavailable",
               "limit")
HEADER_LIMIT = 64 << 10  # a header is a few hundred bytes; an info answer a few KB


class QueryError(RuntimeError):
    """A query was answered with an error: ``kind`` (one of ERROR_KINDS) and who said it."""

    def __init__(self, kind: str, message: str, query_id: str | None = None):
        super().__init__(message)
        self.kind, self.query_id = kind, query_id


class QueryTimeout(QueryError, TimeoutError):
    """No complete answer by the deadline; the message names the servers that did not answer."""

    def __init__(self, message: str, query_id: str | None = None):
        super().__init__("timeout", message, query_id)


def send(ch, header: dict, payload=None) -> None:
    ch.send(json.dumps(header).encode())
    if header.get("op") in WITH_PAYLOAD:
        ch.send(payload if payload is not None else b"")


def recv(ch, timeout: float, what: str = "a message", *,
         payload_limit: Callable[[dict], int] | int = 0, frame_timeout: float | None = None):
    """(header, payload bytes or None). The header must start within ``timeout`` (the link's idle
    limit); each frame, once announced, must arrive within ``frame_timeout``; a payload longer
    than ``payload_limit`` (bytes, or a function of the header) ends the link."""
    deadline = time.monotonic() + timeout
    raw = ch.recv_frame(deadline, what, limit=HEADER_LIMIT, frame_timeout=frame_timeout)
    header = parse_json(raw, ch.peer, what)
    if header.get("op") not in WITH_PAYLOAD:
        return header, None
    limit = payload_limit(header) if callable(payload_limit) else payload_limit
    if frame_timeout is not None:
        deadline = time.monotonic() + frame_timeout
    return header, ch.recv_frame(deadline, what, limit=limit, frame_timeout=frame_timeout)


def query_id(header: dict):
    """The query's id if it is a string of 1–64 characters, else None."""
    qid = header.get("id")
    return qid if type(qid) is str and 0 < len(qid) <= 64 else None


def rows_of(header: dict, most: int) -> int | None:
    """``rows`` if it is a JSON integer in 1..most (not a bool, float or string), else None."""
    rows = header.get("rows")
    return rows if type(rows) is int and 1 <= rows <= most else None


def check_header(header: dict, peer: str) -> None:
    """A message header must have a string ``op``."""
    if type(header.get("op")) is not str:
        raise ProtocolMismatchError(f"{peer} sent a message without an 'op' string")
