"""The client side of a server of ``ringlet serve``: links, admission of queries, deadlines.

A :class:`QueryService` owns the client links of one server: it reads each link's frames within
their limits (:mod:`ringlet.serve.wire`), answers ``info``, checks and keeps each query in the
server's :class:`~ringlet.serve.book.QueryBook` (per-client limits on links and queries in
flight), refuses what it cannot keep with an error kind and a message naming the server, and
answers every query that reaches its deadline without running (the reaper). Whatever one link
sends ends at most that link. The batches themselves are :mod:`ringlet.serve.batches`'.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable

import torch

from ringlet.comm.base import CommError, PeerTimeoutError, ProtocolMismatchError
from ringlet.comm.channel import FrameTooLargeError
from ringlet.serve import wire
from ringlet.serve.book import Query, QueryBook
from ringlet.serve.metrics import ServeMetrics


class QueryService:
    """The clients of server ``rank`` of ``p`` (``d``: the deployment; ``info``: its public facts;
    ``serving`` and ``draining``: whether it takes queries now)."""

    def __init__(self, d, rank: int, p: int, ring, shape: tuple, metrics: ServeMetrics,
                 book: QueryBook, info: Callable[[], dict], serving: Callable[[], bool],
                 draining: Callable[[], bool], stopped: threading.Event, log: Callable[[str], None]):
        self.d, self.rank, self.p, self.ring, self.shape = d, rank, p, ring, shape
        self.numel = int(torch.Size(shape).numel())
        self.name = f"server-{rank}"
        self.metrics, self.book, self.info = metrics, book, info
        self.serving, self.draining, self.stopped, self.log = serving, draining, stopped, log
        self.cond = threading.Condition()
        self.clients: dict = {}  # channel -> certificate name

    def flush_all(self, timeout: float = 5.0) -> None:
        """Let the answers already queued leave (before the process ends)."""
        for ch in list(self.clients):
            with contextlib.suppress(CommError):
                ch.flush(timeout)

    def link(self, ch, name: str) -> None:
        with self.cond:
            count = sum(1 for n in self.clients.values() if n == name)
            if count < self.d.max_links:
                self.clients[ch] = name
        if ch not in self.clients:
            self.metrics.link_error("limit")
            self.refuse(ch, None, "limit", f"{name} already holds {count} links to {self.name} "
                                           f"(the deployment's limit per client)")
            with contextlib.suppress(CommError):
                ch.flush(1.0)
            ch.close()
            return
        kind = None
        try:
            while not self.stopped.is_set():
                header, payload = wire.recv(ch, self.d.idle_timeout, "a query",
                                            payload_limit=self._payload_limit,
                                            frame_timeout=self.d.frame_timeout)
                self._message(header, payload, ch, name)
        except FrameTooLargeError as exc:
            kind = "oversized"
            self.refuse(ch, None, "bad_input", str(exc))
        except ProtocolMismatchError as exc:
            kind = "garbled"
            self.refuse(ch, None, "bad_input", str(exc))
        except PeerTimeoutError:
            kind = "timeout"  # idle, or too slow inside a frame
        except CommError:
            pass  # the client left; its queries still run, their answers go nowhere
        except Exception as exc:  # noqa: BLE001 - one client's link never takes the server down
            kind = "internal"
            self.log(f"{name}'s link ended by {type(exc).__name__}: {exc}")
        finally:
            if kind is not None:
                self.metrics.link_error(kind)
            with contextlib.suppress(CommError):
                ch.flush(1.0)
            with self.cond:
                self.clients.pop(ch, None)
            ch.close()

    def _payload_limit(self, header: dict) -> int:
        rows = wire.rows_of(header, self.d.max_batch) or self.d.max_batch
        return self.ring.wire_bytes(rows * self.numel)

    def _message(self, header: dict, payload, ch, name: str) -> None:
        op = header.get("op")
        if op == "info":
            wire.send(ch, self.info())
        elif op == "query":
            self.accept(header, payload, ch, name)
        else:
            self.refuse(ch, wire.query_id(header), "bad_input", f"unknown op {op!r}")

    def refuse(self, ch, qid, kind: str, message: str) -> None:
        self.metrics.error(kind)
        try:
            wire.send(ch, {"op": "error", "id": qid, "kind": kind, "message": f"{self.name}: {message}"})
        except CommError:
            pass

    def refuse_queries(self, queries, kind: str, message) -> None:
        """Remove ``queries`` and answer each with an error (``message(q)``)."""
        self.book.remove(queries)
        for q in queries:
            self.refuse(q.ch, q.id, kind, message(q))

    def accept(self, header: dict, payload, ch, client: str) -> None:
        qid, rows = wire.query_id(header), wire.rows_of(header, self.d.max_batch)
        if qid is None:
            return self.refuse(ch, None, "bad_input", "a query needs an id (a string of 1–64 chars)")
        if rows is None:
            return self.refuse(ch, qid, "bad_input", f"rows {header.get('rows')!r}: an integer "
                                                     f"1..{self.d.max_batch} per query")
        if self.draining():
            return self.refuse(ch, qid, "draining", "draining (shutting down); not accepting queries")
        if not self.serving():
            others = ", ".join(f"server-{r}" for r in range(self.p) if r != self.rank)
            return self.refuse(ch, qid, "unavailable", f"not serving: not linked to {others}")
        want = self.ring.wire_bytes(rows * self.numel)
        if len(payload) != want:
            return self.refuse(ch, qid, "bad_input", f"the share of {rows} inputs of shape "
                                                     f"{self.shape} is {want} bytes, got {len(payload)}")
        t = torch.frombuffer(payload, dtype=torch.uint8) if payload else torch.empty(0, dtype=torch.uint8)
        share = self.ring.unwire(t.view(torch.int64) if self.ring.bits == 64 else t, (rows, *self.shape))
        self.metrics.add_bytes("received", "clients", len(payload))
        now = time.monotonic()
        # a follower keeps a query a little past its deadline: server 0, which knows why a query
        # did not run (no material, a share it lacks), answers first
        grace = 0.0 if self.rank == 0 else min(2.0, 0.25 * self.d.query_timeout)
        why = self.book.add(Query(qid, rows, len(payload), share, ch, client, now,
                                  now + self.d.query_timeout + grace))
        if why is not None:
            return self.refuse(ch, qid, *why)
        self.metrics.query()

    def reap(self) -> None:
        """Answer every query that reached its deadline without running, with the reason."""
        lead = self.rank == 0
        default = ("timeout", "not run before its deadline" if lead else
                   "server-0 never ordered it before its deadline (its share did not reach "
                   "server-0, or server-0 was overloaded)")
        while not self.stopped.is_set():
            for q in self.book.expired():
                kind, msg = q.why or default
                self.refuse(q.ch, q.id, kind, f"query {q.id}: {msg} "
                                              f"(deadline {self.d.query_timeout:g} s)")
            self.stopped.wait(0.05)
