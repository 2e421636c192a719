"""How the servers of a deployment agree on a batch and run it (``ringlet serve``).

Server 0 leads. Per batch (tag ``setup``, 3 small messages between server 0 and each other server;
while idle, a ping and its answer every :func:`ping_every` seconds):

1. **order** (0 → s): the queries of the batch in order, each as (id, rows, share bytes), the
   batch shape and the pool entry (a key that every server confirmed it holds);
2. **verdict** (s → 0), at once, never waiting: the ids *s* lacks, the ids whose two halves differ
   (naming the field: rows or bytes), and whether *s* holds the entry;
3. **go** (0 → s): the ids that run (every server has them and they agree) and what becomes of
   the entry: ``use`` it, ``keep`` it (nothing to run) or ``drop`` it (a server lacked it).

A query whose halves differ is refused as ``bad_input`` by every server and never laid out, so no
client can shift another's rows or make a server fail. A query a server lacks is offered again a
little later and expires at its deadline (``timeout``, naming the server that never had its
share); nothing on the batch path waits for a missing share or a missing entry.
"""

from __future__ import annotations

import time

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


def ping_every(d) -> float:
    """Seconds between server 0's signs of life to an idle follower (a quarter of the message
    timeout, at most 2 s): each side notices a dead or frozen peer within the message timeout."""
    return min(2.0, d.message_timeout / 4)


def lead(node, sess) -> None:
    """Server 0: form a batch of queries, pick a confirmed entry, agree with the others, run."""
    d, book = node.d, node.book
    node.check_session(sess)
    others = [r for r in range(node.p) if r != node.rank]
    if time.monotonic() - getattr(sess, "last_exchange", 0.0) > ping_every(d):
        for r in others:
            _send(sess, r, {"ping": 1}, "order")
        for r in others:
            _recv(sess, r, "verdict")
        sess.last_exchange = time.monotonic()
    batch = book.gather(d.max_batch, d.max_wait_ms / 1000, lambda: node.stopped.is_set())
    if not batch:
        return
    size = d.bucket(sum(q.rows for q in batch))
    got = node.pool.take_ready(size)
    if got is None:
        node.need(size)
        got, size, batch = _other_shape(node, batch, size)
    if got is None:
        book.release(batch, ("busy", busy_cause(node, size)), retry=True)
        node.pool.wait_change(0.05)
        return
    key, queue = got
    sess.last_exchange = time.monotonic()
    order = {"queries": [[q.id, q.rows, q.nbytes] for q in batch], "size": size, "key": list(key)}
    for r in others:
        _send(sess, r, order, "order")
    missing, bad, lacks = {}, {}, []
    for r in others:
        verdict = _recv(sess, r, "verdict")
        for qid in verdict.get("missing", []):
            missing.setdefault(qid, r)
        for qid, why in verdict.get("bad", {}).items():
            bad.setdefault(qid, why)
        if not verdict.get("entry"):
            lacks.append(r)
    run = [q for q in batch if q.id not in missing and q.id not in bad]
    fate = "drop" if lacks else ("use" if run else "keep")
    for r in others:
        _send(sess, r, {"run": [q.id for q in run], "entry": fate}, "go")
    node.refuse_queries([q for q in batch if q.id in bad], "bad_input",
                        lambda q: f"the two halves of query {q.id} differ: {bad[q.id]}")
    for q in batch:
        if q.id in missing:
            book.release([q], ("timeout", f"server-{missing[q.id]} never received its share of "
                                          f"query {q.id}"), retry=True)
    if fate == "drop":
        node.log(f"pool entry {list(key)} is missing at {', '.join(f'server-{r}' for r in lacks)}: "
                 f"dropped, the next one is taken")
        node.consumed(size, key)
        book.release(run)
        return
    if fate == "keep":
        node.pool.put(size, key, queue, first=True)
        return
    run_batch(node, sess, run, size, key, queue)


def _other_shape(node, batch: list[Query], size: int):
    """No entry of the batch's shape: the largest smaller shape with an entry that the first
    queries fit (the others wait for the next batch); (got, size, batch). Never a larger shape:
    under steady load that would spend the dealer's slowest entries on padding."""
    for b in sorted((b for b in node.d.sizes if b < size), reverse=True):
        fit, rows = [], 0
        for q in batch:
            if rows + q.rows > b:
                break
            fit.append(q)
            rows += q.rows
        got = node.pool.take_ready(b) if fit else None
        if got is not None:
            node.book.release(batch[len(fit):])
            return got, b, fit
    return None, size, batch


def follow(node, sess) -> None:
    """Servers 1…: check server 0's order against the queries held here, answer, run."""
    node.check_session(sess)
    order = _recv(sess, 0, "order")  # an idle server 0 pings well within the message timeout
    if "ping" in order:
        _send(sess, 0, {"pong": 1}, "verdict")
        return
    try:
        queries = [(str(i), int(r), int(n)) for i, r, n in order["queries"]]
        size, key = int(order["size"]), tuple(order["key"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ProtocolMismatchError(f"server-0 sent a malformed order ({exc})") from None
    mine, missing, bad = node.book.claim(queries, node.name)
    queue = node.pool.take(size, key)  # at once: a lacking entry is said, never waited for
    _send(sess, 0, {"missing": missing, "bad": bad, "entry": queue is not None}, "verdict")
    go = _recv(sess, 0, "go")
    run_ids = set(go.get("run", []))
    node.refuse_queries([q for q in mine if q.id in bad], "bad_input",
                        lambda q: f"the two halves of query {q.id} differ: {bad[q.id]}")
    run = [q for q in mine if q.id in run_ids and q.id not in bad]
    node.book.release([q for q in mine if q.id not in run_ids and q.id not in bad])
    if len(run) != len(run_ids):
        raise ProtocolMismatchError("server-0 ordered queries this server did not agree to run")
    if go.get("entry") != "use":
        node.book.release(run)
        if queue is not None:
            if go.get("entry") == "keep":
                node.pool.put(size, key, queue, first=True)
            else:
                node.consumed(size, key)
        return
    if queue is None:
        raise ProtocolMismatchError(f"server-0 runs a batch with pool entry {list(key)} that this "
                                    f"server said it lacks")
    run_batch(node, sess, run, size, key, queue)


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
