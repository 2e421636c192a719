"""How the servers of a deployment agree on a batch and run it (``ringlet serve``).

Server 0 leads. Per batch (tag ``setup``, 3 small messages between server 0 and each other server;
while idle, a ping and its answer every :func:`ping_every` seconds):

1. **order** (0 → s): the queries of the batch in order, each as (id, rows, share bytes), and the
   candidate entries: the oldest confirmed entry of the batch's shape and of each smaller shape;
2. **verdict** (s → 0), at once, never waiting: the ids *s* lacks, the ids whose two halves differ
   (naming the field: rows or bytes), the candidates it lacks, and the ids of queries that reached
   *s* since its last verdict (server 0 offers a query *s* lacked again as soon as *s* has it, else
   after a back-off growing to 2 s; fresh queries always come first);
3. **go** (0 → s): the ids that run (every server has them and they agree), the shape whose
   entry they use (the smallest that holds them, else the largest that holds the first ones), and
   the candidates to drop (some server lacked them); the other candidates go back to the pools.

The shape is chosen after the verdict, so queries that only server 0 holds never make a batch
use a larger (slower) entry than the queries that run need.

A query whose halves differ is refused as ``bad_input`` by every server and never laid out, so no
client can shift another's rows or make a server fail. A query a server lacks is offered again a
little later and expires at its deadline (``timeout``, naming the server that never had its
share); nothing on the batch path waits for a missing share or a missing entry.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from ringlet.comm.base import CommError, ProtocolMismatchError
from ringlet.serve import wire
from ringlet.serve.book import Query
from ringlet.serve.pool import json_tensor, tensor_json


def _send(sess, dst: int, obj: dict, step: str) -> None:
    sess.comm.send(dst, [("setup", json_tensor(obj))], step)


def _recv(sess, src: int, step: str) -> dict:
    (t,) = sess.comm.recv(src, step)
    try:
        return tensor_json(t)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise ProtocolMismatchError(f"server-{src} sent a garbled {step} message") from None


def busy_cause(node, size: int) -> str:
    """Why no batch of ``size`` can run now, in words a client can act on."""
    if node.dealer is None:
        return (f"busy: no offline material ready for a batch of {size} rows, and no dealer is "
                f"linked to {node.name} (it is down or has not started)")
    return (f"busy: no offline material ready for a batch of {size} rows; the dealer is linked "
            f"but behind (queries arrive faster than it makes material)")


@dataclass(frozen=True)
class BatchPolicy:
    """What runs together: up to ``max_batch`` rows, gathered for at most ``max_wait`` seconds
    after the first query, on the entry of the smallest of ``sizes`` (batch shapes) that holds the
    rows no other server was found to lack — never a larger shape than the agreed queries need,
    else the largest smaller one that holds the first of them (the others wait)."""

    max_batch: int
    max_wait: float
    sizes: tuple[int, ...]

    @classmethod
    def of(cls, d) -> BatchPolicy:
        """The policy of a deployment (its ``[batching]`` section)."""
        return cls(d.max_batch, d.max_wait_ms / 1000, tuple(d.sizes))

    def bucket(self, rows: int) -> int:
        """The batch shape ``rows`` rows are padded to."""
        for size in self.sizes:
            if size >= rows:
                return size
        raise ValueError(f"a batch of {rows} rows is larger than max_batch {self.max_batch}")

    def want(self, batch: list[Query]) -> int:
        """The shape to propose: that of the rows no other server was found to lack (a share
        sent to server 0 alone must not make an honest batch take a larger, slower entry)."""
        fresh = sum(q.rows for q in batch if not q.tries)
        return self.bucket(fresh or sum(q.rows for q in batch))

    def candidates(self, want: int) -> list[int]:
        """The shapes whose oldest entries are offered: ``want`` and every smaller one."""
        return [b for b in self.sizes if b <= want]

    def fit(self, queries: list[Query], sizes: set[int]) -> tuple[list[Query], int | None]:
        """The queries to run and the shape of their entry among ``sizes`` (those every server
        holds): the smallest that holds them all, but never larger than they need; else the
        largest that holds the first ones."""
        if not queries:
            return [], None
        need = self.bucket(sum(q.rows for q in queries))
        sizes = {b for b in sizes if b <= need}
        rows = sum(q.rows for q in queries)
        fits = sorted(b for b in sizes if b >= rows)
        if fits:
            return queries, fits[0]
        for b in sorted(sizes, reverse=True):
            run, total = [], 0
            for q in queries:
                if total + q.rows > b:
                    break
                run.append(q)
                total += q.rows
            if run:
                return run, b
        return [], None


def ping_every(d) -> float:
    """Seconds between server 0's signs of life to an idle follower (a quarter of the message
    timeout, at most 2 s): each side notices a dead or frozen peer within the message timeout."""
    return min(2.0, d.message_timeout / 4)


def lead(node, sess) -> None:
    """Server 0: form a batch of queries, agree with the others on the queries and the entry, run."""
    d, book = node.d, node.book
    node.check_session(sess)
    others = [r for r in range(node.p) if r != node.rank]
    if time.monotonic() - getattr(sess, "last_exchange", 0.0) > ping_every(d):
        for r in others:
            _send(sess, r, {"ping": 1}, "order")
        for r in others:
            book.wake(_recv(sess, r, "verdict").get("have", []))
        sess.last_exchange = time.monotonic()
    policy = node.policy
    batch = book.gather(policy.max_batch, policy.max_wait, lambda: node.stopped.is_set())
    if not batch:
        return
    want = policy.want(batch)  # candidates: the oldest confirmed entry of each shape up to it
    held = {b: got for b in policy.candidates(want) for got in [node.pool.take_ready(b)] if got}
    if not held:
        node.need(want)
        book.release(batch, ("busy", busy_cause(node, want)))
        node.pool.wait_change(0.05)
        return
    sess.last_exchange = time.monotonic()
    order = {"queries": [[q.id, q.rows, q.nbytes] for q in batch],
             "entries": {str(b): list(key) for b, (key, _) in held.items()}}
    for r in others:
        _send(sess, r, order, "order")
    missing: dict[str, int] = {}  # query id -> the first server that lacks it
    bad: dict[str, str] = {}  # query id -> how its two halves differ
    lacked: set[int] = set()  # shapes whose candidate entry some server lacks
    for r in others:
        verdict = _recv(sess, r, "verdict")
        for qid in verdict.get("missing", []):
            missing.setdefault(qid, r)
        for qid, why in verdict.get("bad", {}).items():
            bad.setdefault(qid, why)
        lacked.update(int(b) for b in verdict.get("lacks", []))
        book.wake(verdict.get("have", []))
    agreed = [q for q in batch if q.id not in missing and q.id not in bad]
    run, size = policy.fit(agreed, {b for b in held if b not in lacked})
    if agreed and (size is None or len(run) < len(agreed)):
        node.need(policy.bucket(sum(q.rows for q in agreed)))  # the shape they need
    go = {"run": [q.id for q in run], "size": size,
          "drop": sorted(lacked)}  # an entry some server lacks is dropped everywhere
    for r in others:
        _send(sess, r, go, "go")
    node.refuse_queries([q for q in batch if q.id in bad], "bad_input",
                        lambda q: f"the two halves of query {q.id} differ: {bad[q.id]}")
    for q in batch:
        if q.id in missing:
            book.release([q], ("timeout", f"server-{missing[q.id]} never received its share of "
                                          f"query {q.id}"), lacked=True)
    book.release([q for q in agreed if q not in run],
                 None if run or not agreed else ("busy", busy_cause(node, want)))
    for b, (key, queue) in held.items():
        if b in lacked:
            node.log(f"pool entry {list(key)} is missing at another server: dropped")
            node.consumed(b, key)
        elif b != size:
            node.pool.put(b, key, queue, first=True)
    if run:
        run_batch(node, sess, run, size, held[size][0], held[size][1])


def follow(node, sess) -> None:
    """Servers 1…: check server 0's order against the queries and entries held here, answer, run."""
    node.check_session(sess)
    order = _recv(sess, 0, "order")  # an idle server 0 pings well within the message timeout
    if "ping" in order:
        _send(sess, 0, {"pong": 1, "have": node.book.news()}, "verdict")
        return
    try:
        queries = [(str(i), int(r), int(n)) for i, r, n in order["queries"]]
        entries = {int(b): tuple(k) for b, k in order["entries"].items()}
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ProtocolMismatchError(f"server-0 sent a malformed order ({exc})") from None
    mine, missing, bad = node.book.claim(queries, node.name)
    # at once: the entries held here are set aside for this batch, a lacking one is said
    held = {b: queue for b, key in entries.items() for queue in [node.pool.take(b, key)] if queue}
    _send(sess, 0, {"missing": missing, "bad": bad, "have": node.book.news(),
                    "lacks": sorted(b for b in entries if b not in held)}, "verdict")
    go = _recv(sess, 0, "go")
    run_ids, size = set(go.get("run", [])), go.get("size")
    node.refuse_queries([q for q in mine if q.id in bad], "bad_input",
                        lambda q: f"the two halves of query {q.id} differ: {bad[q.id]}")
    run = [q for q in mine if q.id in run_ids and q.id not in bad]
    node.book.release([q for q in mine if q.id not in run_ids and q.id not in bad])
    if len(run) != len(run_ids) or (run and size not in held):
        raise ProtocolMismatchError("server-0 ordered a batch this server did not agree to run")
    drop = set(go.get("drop", []))
    for b, queue in held.items():
        if b in drop:
            node.consumed(b, entries[b])
        elif b != size or not run:
            node.pool.put(b, entries[b], queue, first=True)
    if run and size is not None:  # run: size is in held (checked above)
        run_batch(node, sess, run, size, entries[size], held[size])


def run_batch(node, sess, batch: list[Query], size: int, key, queue) -> None:
    """Lay the agreed queries out in order (rows as both servers checked), run, answer each."""
    x = torch.zeros((size, *node.shape), dtype=torch.int64)
    spans, pos = [], 0
    for q in batch:
        try:
            x[pos:pos + q.rows] = q.share
        except (RuntimeError, ValueError) as exc:  # never expected after the check: isolate it
            node.log(f"query {q.id} could not be laid out ({type(exc).__name__}); it gets zeros")
            q.why = ("internal", "its share could not be laid out")
        spans.append((q, pos))
        pos += q.rows
    node.metrics.batch(pos)
    sess.offline.load(queue)
    before = sess.stats.copy()
    y = node.model.run(sess, sess.share(x)).data
    sess.offline.plan = []
    used = sess.stats.minus(before)
    node.metrics.add_bytes("sent", "servers", used.bytes_sent())
    node.metrics.add_bytes("received", "servers", used.bytes_received())
    node.book.remove(batch)
    node.consumed(size, key)  # with the rows still waiting: the dealer refills when idle
    for q, start in spans:
        if q.why is not None and q.why[0] == "internal":
            node.refuse(q.ch, q.id, "internal", f"query {q.id}: {q.why[1]}")
            continue
        out = node.ring.wire(y[start:start + q.rows].contiguous())
        try:
            wire.send(q.ch, {"op": "result", "id": q.id, "rows": q.rows}, out.numpy())
            node.metrics.answered(time.monotonic() - q.t0)
            node.metrics.add_bytes("sent", "clients", out.numel() * out.element_size())
        except CommError:
            pass
