"""Client ↔ server messages of ``ringlet serve``: a JSON frame, then one payload frame.

client → server   {"op": "info"}                                       (no payload frame)
                  {"op": "query", "id": ID, "rows": K}  + this server's share, ring wire format
server → client   {"op": "info", ...the model's public facts}           (no payload frame)
                  {"op": "result", "id": ID, "rows": K} + this server's share of the K output rows
                  {"op": "error", "id": ID, "kind": KIND, "message": TEXT}  (no payload frame)

Costs per query of K rows (p servers, ℓ-bit ring): the client sends each server K·(input size)·ℓ
bits (tag ``input``) and receives from each K·(output size)·ℓ bits (tag ``output``); no rounds.
"""

from __future__ import annotations

import json
import time

from ringlet.comm.base import ProtocolMismatchError

WITH_PAYLOAD = ("query", "result")
ERROR_KINDS = ("busy", "peer_failed", "bad_input", "draining", "timeout", "internal", "unavailable")


class QueryError(RuntimeError):
    """A query was answered with an error: ``kind`` (one of ERROR_KINDS) and who said it."""

    def __init__(self, kind: str, message: str, query_id: str | None = None):
        super().__init__(message)
        self.kind, self.query_id = kind, query_id


def send(ch, header: dict, payload=None) -> None:
    ch.send(json.dumps(header).encode())
    if header.get("op") in WITH_PAYLOAD:
        ch.send(payload if payload is not None else b"")


def recv(ch, timeout: float, what: str = "a message"):
    """(header, payload bytes or None)."""
    deadline = time.monotonic() + timeout
    raw = ch.recv_frame(deadline, what)
    try:
        header = json.loads(bytes(raw).decode())
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ProtocolMismatchError(f"{ch.peer} sent a garbled message") from None
    if not isinstance(header, dict):
        raise ProtocolMismatchError(f"{ch.peer} sent {type(header).__name__}, not a message")
    payload = ch.recv_frame(deadline, what) if header.get("op") in WITH_PAYLOAD else None
    return header, payload
