"""The queries a server holds, from acceptance to answer (thread-safe).

A query is *waiting* until server 0 orders it into a batch (*ordered*), then answered and removed.
Every waiting query has a deadline: :meth:`QueryBook.expired` hands back those past it with the
reason they never ran (no material, or the other server never had its share), so nothing waits
beyond its deadline and nothing is kept forever. Server 0 retries a query that another server
lacked a little later (``not_before``) instead of waiting for it while other queries are ready.
"""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass

import torch


@dataclass
class Query:
    id: str
    rows: int
    nbytes: int  # the share's size on the wire
    share: torch.Tensor  # this server's share, (rows, *input shape), int64 ring elements
    ch: object  # the client's channel
    client: str  # the client's certificate name
    t0: float
    deadline: float
    ordered: bool = False
    not_before: float = 0.0  # server 0: offer it again after this (another server lacked it)
    tries: int = 0
    reported: bool = False  # a follower told server 0 it holds this query
    why: tuple[str, str] | None = None  # (kind, message) if it expires now


class QueryBook:
    """Waiting and ordered queries of one server, with per-client counts."""

    def __init__(self, max_per_client: int):
        self.cond = threading.Condition()
        self._queries: collections.OrderedDict[str, Query] = collections.OrderedDict()
        self.max_per_client = max_per_client
        self._per_client: collections.Counter[str] = collections.Counter()

    def __len__(self) -> int:
        with self.cond:
            return len(self._queries)

    def rows_waiting(self) -> int:
        """Rows that could run now (the backlog the dealer hears of): waiting queries that no
        other server was found to lack — shares sent to one server alone never hold off the
        dealer's refills."""
        with self.cond:
            return sum(q.rows for q in self._queries.values() if not q.ordered and not q.tries)

    def get(self, qid: str) -> Query | None:
        with self.cond:
            return self._queries.get(qid)

    def add(self, q: Query) -> tuple[str, str] | None:
        """Keep ``q``; else (kind, why not): "bad_input" for a pending id, "limit" per client."""
        with self.cond:
            if q.id in self._queries:
                return "bad_input", f"query id {q.id} is already pending"
            if self._per_client[q.client] >= self.max_per_client:
                return "limit", (f"{q.client} has {self._per_client[q.client]} queries in flight "
                                 f"(the deployment's limit per client is {self.max_per_client})")
            self._queries[q.id] = q
            self._per_client[q.client] += 1
            self.cond.notify_all()
        return None

    def remove(self, queries) -> None:
        with self.cond:
            for q in queries:
                if self._queries.pop(q.id, None) is not None:
                    self._per_client[q.client] -= 1
                    if self._per_client[q.client] <= 0:
                        del self._per_client[q.client]

    def take_all(self) -> list[Query]:
        with self.cond:
            out = list(self._queries.values())
            self._queries.clear()
            self._per_client.clear()
        return out

    def gather(self, max_rows: int, max_wait: float, stop) -> list[Query]:
        """Server 0: wait for offerable queries (at most 0.2 s at a time), then up to ``max_wait``
        after the first for more rows; mark and return them (arrival order, ≤ ``max_rows`` rows)."""
        with self.cond:
            first = self._first_offerable()
            if first is None:
                self.cond.wait(self._sleep())
                return []
            until = first.t0 + max_wait
            while self._offerable_rows() < max_rows and not stop():
                left = until - time.monotonic()
                if left <= 0:
                    break
                self.cond.wait(left)
            batch, rows = [], 0
            for q in self._offerable():
                if rows + q.rows > max_rows:
                    break
                q.ordered = True
                batch.append(q)
                rows += q.rows
            return batch

    def _offerable(self):
        """Waiting queries server 0 may order now: fresh ones first, then those another server
        lacked before (so that shares sent to server 0 alone never crowd out the others)."""
        now = time.monotonic()
        ready = [q for q in self._queries.values() if not q.ordered and q.not_before <= now
                 and q.deadline > now]
        return iter(sorted(ready, key=lambda q: q.tries > 0))

    def _first_offerable(self) -> Query | None:
        return next(self._offerable(), None)

    def _offerable_rows(self) -> int:
        return sum(q.rows for q in self._offerable())

    def _sleep(self) -> float:
        now = time.monotonic()
        later = [q.not_before - now for q in self._queries.values()
                 if not q.ordered and q.not_before > now]
        return max(0.001, min([0.2, *later]))

    def release(self, queries, why: tuple[str, str] | None = None, lacked: bool = False) -> None:
        """Back to waiting (not run this time); ``lacked``: another server lacks it, offer it
        again after a back-off (5 ms, doubling to 2 s) or when that server has it."""
        now = time.monotonic()
        with self.cond:
            for q in queries:
                q.ordered = False
                if why is not None:
                    q.why = why
                if lacked:
                    q.tries += 1
                    q.not_before = now + min(2.0, 0.005 * 2 ** q.tries)
            self.cond.notify_all()

    def news(self) -> list[str]:
        """A follower: ids of waiting queries not reported to server 0 yet (each once)."""
        with self.cond:
            out = [q.id for q in self._queries.values() if not q.ordered and not q.reported]
            for qid in out:
                self._queries[qid].reported = True
        return out

    def wake(self, ids) -> None:
        """Server 0: another server now holds these; offer them again at once."""
        with self.cond:
            for qid in ids:
                q = self._queries.get(qid)
                if q is not None and not q.ordered:
                    q.not_before, q.tries = 0.0, 0
            self.cond.notify_all()

    def claim(self, ids_rows: list, me: str) -> tuple[list, list, dict]:
        """A follower (``me``) checks server 0's order [(id, rows, nbytes)]: (the queries of it
        held here, now ordered; ids it lacks; {id: what differs}) — a query whose halves differ
        is in the first and the last, and is never laid out."""
        mine, missing, bad = [], [], {}
        with self.cond:
            for qid, rows, nbytes in ids_rows:
                q = self._queries.get(qid)
                if q is None or q.ordered:
                    missing.append(qid)
                    continue
                if q.rows != rows:
                    bad[qid] = f"rows: {rows} at server-0, {q.rows} at {me}"
                elif q.nbytes != nbytes:
                    bad[qid] = f"share bytes: {nbytes} at server-0, {q.nbytes} at {me}"
                q.ordered = True
                mine.append(q)
        return mine, missing, bad

    def expired(self) -> list[Query]:
        """Waiting queries past their deadline, removed from the book."""
        now = time.monotonic()
        with self.cond:
            late = [q for q in self._queries.values() if not q.ordered and q.deadline <= now]
        self.remove(late)
        return late

    def next_deadline(self) -> float | None:
        with self.cond:
            return min((q.deadline for q in self._queries.values() if not q.ordered), default=None)
