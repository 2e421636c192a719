"""``ringlet serve --role server``: a long-running server of a private model.

Each server listens on its deployment address for the other servers, the dealer and clients
(TLS 1.3, mutual authentication: a certificate's name is its party). The servers link up, verify
each other's model fingerprint (graph, weights, activation config, protocols, fixed point, input
range; a mismatch is refused, naming what differs) and agree on fresh pairwise seeds. Then:

* clients send each server its share of a query (:mod:`ringlet.serve.wire`); a server never sees
  an input, only its share;
* server 0 leads batching: it waits for queries (up to ``max_batch`` rows, at most ``max_wait_ms``
  after the first), picks the batch shape (padding rows are zero shares) and a ready pool entry,
  and tells the other servers which query ids, in which order, with which entry (tag ``setup``,
  one message and one acknowledgement per batch); with no entry until a query's deadline, that
  query gets "busy";
* the servers run the compiled model on the batch (the online phase, exactly ``ringlet infer``'s
  rounds and bytes for that batch shape) and each sends every query its share of its output rows.

A server that loses another server answers every pending query with an error naming it, drops its
pool, and waits for the peer to link up again (no manual step). SIGTERM drains: accepted queries are
answered, new ones refused with "draining".
"""

from __future__ import annotations

import collections
import json
import signal
import sys
import threading
import time
from dataclasses import dataclass

import torch

from ringlet import prng
from ringlet.comm.base import CommError
from ringlet.comm.mesh import Listener, MeshCommunicator, dial
from ringlet.nn.inference import ModelMismatchError, agree_on_model
from ringlet.serve import wire
from ringlet.serve.metrics import HealthServer, ServeMetrics
from ringlet.serve.pool import MaterialPool, json_tensor, receive_entries, tensor_json
from ringlet.session import Seeds, Session, World


@dataclass
class Query:
    id: str
    rows: int
    share: torch.Tensor  # this server's share, (rows, *input shape), int64 ring elements
    ch: object  # the client's channel
    t0: float
    deadline: float


def _norm(norm):
    return {"mean": list(norm[0]), "std": list(norm[1])} if norm else None


def load_model(deploy):
    from ringlet import sources
    m = deploy.model
    return sources.server_model(
        m["source"], weights=m.get("weights") or None, input_shape=m.get("input_shape"),
        relu_config=m.get("relu_config") or None, dataset=m.get("dataset") or None,
        data_dir=m.get("data_dir") or None, frac_bits=m.get("frac_bits"), ring_bits=m.get("ring_bits"),
        smooth=m.get("smooth"), input_bound=m.get("input_bound"),
        backend=m.get("linear_backend"), relu_protocol=m.get("relu_protocol"))


class ServerNode:
    """One server of a deployment (see the module docstring)."""

    def __init__(self, deploy, rank: int, model=None, log=None):
        self.d, self.rank = deploy, rank
        self.p = len(deploy.servers)
        if not 0 <= rank < self.p:
            raise ValueError(f"--rank {rank}: the deployment has servers 0..{self.p - 1}")
        self.name = f"server-{rank}"
        self.world = World(self.p)
        self.log = log or (lambda msg: print(f"[{self.name}] {msg}", file=sys.stderr, flush=True))
        self.model = model if model is not None else load_model(deploy)
        self.ring = self.model.fixed.ring
        self.shape = tuple(self.model.graph.input_shape)
        self.out_shape = tuple(self.model.graph.nodes[-1].out_shape)  # per input row
        self.metrics = ServeMetrics(self.name)
        self.pool = MaterialPool(deploy.sizes, on_change=self.metrics.pool)
        self.plans: dict | None = None
        self.plans_ready = threading.Event()
        self.cond = threading.Condition()
        self.waiting: collections.OrderedDict[str, Query] = collections.OrderedDict()
        self.peers: dict[int, object] = {}
        self.clients: set = set()
        self.missed: dict[str, float] = {}  # ids a batch ran without this server's share -> when
        self.dealer = None  # (channel, stop event)
        self.draining = False
        self.stopped = threading.Event()
        self.session_up = False
        self.refused: str | None = None  # why this server stopped (another model)
        ctx = deploy.tls_files().contexts(self.name) if deploy.tls else (None, None)
        self.server_ctx, self.client_ctx = ctx
        self.listener = self.health = None

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> "ServerNode":
        me = self.d.server(self.rank)
        self.listener = Listener(me.address, self.server_ctx, self._on_peer, self._check,
                                 timeout=self.d.connect_timeout, name=self.name,
                                 on_reject=lambda where, why: self.log(f"refused {where}: {why}"))
        if me.metrics is not None:
            self.health = HealthServer(me.metrics[0], me.metrics[1], self.metrics,
                                       health=self._health).start()
        threading.Thread(target=self._main, name=f"ringlet-{self.name}", daemon=True).start()
        self.log(f"listening on {me.address[0]}:{self.listener.address[1]} "
                 f"({'TLS 1.3' if self.server_ctx else 'plain TCP'})")
        return self

    def drain(self, *_):
        self.log("draining: answering accepted queries, refusing new ones")
        self.draining = True
        self.metrics.set_draining(True)
        with self.cond:
            self.cond.notify_all()

    def install_signals(self) -> None:
        signal.signal(signal.SIGTERM, self.drain)
        signal.signal(signal.SIGINT, self.drain)

    def wait(self) -> int:
        while not self.stopped.wait(0.5):
            if self.draining and not self.waiting:
                self.stopped.set()
        self.close()
        if self.refused:
            self.log(f"error: {self.refused}")
            return 1
        return 0

    def close(self) -> None:
        self.stopped.set()
        for ch in list(self.clients):  # answers already queued leave before the process ends
            try:
                ch.flush(5.0)
            except CommError:
                pass
        for obj in (self.listener, self.health):
            if obj is not None:
                (obj.close if hasattr(obj, "close") else obj.stop)()
        for ch in list(self.peers.values()):
            ch.close()
        if self.dealer is not None:
            self.dealer[0].close()

    def _health(self) -> dict:
        return {"ok": self.session_up and not self.draining, "party": self.name,
                "peers": sorted(self.peers), "dealer": self.dealer is not None,
                "pool": {str(b): n for b, n in self.pool.depths().items()},
                "waiting": len(self.waiting)}

    def info(self) -> dict:
        return {"op": "info", "server": self.rank, "servers": self.p,
                "fingerprint": self.model.fingerprint(), "input_shape": list(self.shape),
                "output_shape": list(self.out_shape), "output_frac": self.model.output_frac,
                "input_frac": self.model.fixed.frac_bits, "ring_bits": self.ring.bits,
                "input_range": self.model.input_range.to_dict(),
                "postprocess": self.model.graph.postprocess, "max_batch": self.d.max_batch,
                "normalization": _norm(getattr(self.model, "normalization", None)),
                "serving": self.session_up and not self.draining,
                "pool": {str(b): n for b, n in self.pool.depths().items()},
                "pool_bytes": self.pool.nbytes()}

    # -- who may join ---------------------------------------------------------------------------
    def _check(self, hello: dict, cert_name):
        name = str(hello.get("name"))
        if hello.get("deployment") != self.d.name:
            return f"another deployment ({hello.get('deployment')!r}, this is {self.d.name!r})"
        if self.server_ctx is not None and cert_name != name:
            return f"certificate is for {cert_name!r}, the hello says {name!r}"
        if name.startswith("server-"):
            r = hello.get("rank")
            if name != f"server-{r}" or not isinstance(r, int) or not self.rank < r < self.p:
                return f"{name} does not connect to {self.name}"
            return None
        if name == "dealer" or name.startswith("client"):
            return None
        return f"{name!r} is not a party of this deployment"

    def _on_peer(self, hello: dict, ch) -> None:
        name = hello["name"]
        if name.startswith("server-"):
            with self.cond:
                old = self.peers.pop(hello["rank"], None)
                if old is not None:
                    old.close()  # a restarted peer replaces its dead link
                self.peers[hello["rank"]] = ch
                self.cond.notify_all()
            self.log(f"{name} linked")
        elif name == "dealer":
            threading.Thread(target=self._dealer_link, args=(ch,), daemon=True,
                             name=f"ringlet-{self.name}-dealer").start()
        else:
            threading.Thread(target=self._client_link, args=(ch,), daemon=True,
                             name=f"ringlet-{self.name}-{name}").start()

    # -- the dealer link ------------------------------------------------------------------------
    def _dealer_link(self, ch) -> None:
        if self.dealer is not None:
            self.dealer[0].close()
        stop = threading.Event()
        self.dealer = (ch, stop)
        self.log("dealer linked")
        comm = MeshCommunicator(self.rank, self.p + 1, {self.p: ch}, self.d.message_timeout)
        try:
            while not self.plans_ready.wait(0.5):
                if self.stopped.is_set() or stop.is_set():
                    return
            receive_entries(comm, self.p, self.rank, self.ring, self.plans, self.pool, stop,
                            on_bytes=lambda n: self.metrics.add_bytes("received", "dealer", n))
        except CommError as exc:
            self.log(f"dealer link ended: {exc}")
        finally:
            if self.dealer is not None and self.dealer[0] is ch:
                self.dealer = None
            ch.close()

    def _consumed(self, size: int, key) -> None:
        if self.dealer is not None:
            try:
                backlog = sum(q.rows for q in list(self.waiting.values()))
                self.dealer[0].send(json.dumps({"consumed": [size, list(key)],
                                                "backlog": backlog}).encode())
            except CommError:
                pass

    # -- clients --------------------------------------------------------------------------------
    def _client_link(self, ch) -> None:
        self.clients.add(ch)
        try:
            while not self.stopped.is_set():
                header, payload = wire.recv(ch, 24 * 3600.0, "a query")
                if header.get("op") == "info":
                    wire.send(ch, self.info())
                elif header.get("op") == "query":
                    self._accept(header, payload, ch)
                else:
                    wire.send(ch, {"op": "error", "id": header.get("id"), "kind": "bad_input",
                                   "message": f"{self.name}: unknown op {header.get('op')!r}"})
        except CommError:
            self.clients.discard(ch)
            ch.close()  # the client left; its queries still run, their answers go nowhere

    def _refuse(self, ch, qid, kind: str, message: str) -> None:
        self.metrics.error(kind)
        try:
            wire.send(ch, {"op": "error", "id": qid, "kind": kind, "message": f"{self.name}: {message}"})
        except CommError:
            pass

    def _accept(self, header: dict, payload, ch) -> None:
        qid, rows = header.get("id"), header.get("rows")
        if not isinstance(qid, str) or not 0 < len(qid) <= 64:
            return self._refuse(ch, None, "bad_input", "a query needs an id (a string of 1–64 chars)")
        if not isinstance(rows, int) or not 1 <= rows <= self.d.max_batch:
            return self._refuse(ch, qid, "bad_input", f"rows {rows!r}: 1..{self.d.max_batch} per query")
        if self.draining:
            return self._refuse(ch, qid, "draining", "draining (shutting down); not accepting queries")
        if not self.session_up:
            others = ", ".join(f"server-{r}" for r in range(self.p) if r != self.rank)
            return self._refuse(ch, qid, "unavailable", f"not serving: not linked to {others}")
        shape = (rows, *self.shape)
        try:
            t = torch.frombuffer(bytearray(payload), dtype=torch.uint8) if payload else torch.empty(0, dtype=torch.uint8)
            if self.ring.bits == 64:
                if t.numel() % 8:
                    raise ValueError(f"{t.numel()} bytes is not a whole number of 64-bit elements")
                t = t.view(torch.int64)
            share = self.ring.unwire(t, shape)
        except ValueError as exc:
            return self._refuse(ch, qid, "bad_input", f"the share does not fit {rows} inputs of shape "
                                                      f"{self.shape}: {exc}")
        self.metrics.add_bytes("received", "clients", len(payload))
        now = time.monotonic()
        with self.cond:
            if qid in self.missed:  # server 0 ran its batch without this share: answer, never keep it
                self.missed.pop(qid)
                return self._refuse(ch, qid, "timeout", "the share arrived after server 0 ran the "
                                                        "query's batch without it")
            if qid in self.waiting:
                return self._refuse(ch, qid, "bad_input", f"query id {qid} is already pending")
            self.waiting[qid] = Query(qid, rows, share, ch, now, now + self.d.query_timeout)
            self.cond.notify_all()
        self.metrics.query()

    # -- the server pair ------------------------------------------------------------------------
    def _main(self) -> None:
        while not self.stopped.is_set():
            try:
                sess = self._link_up()
                if sess is None:
                    continue
                self.session_up = True
                self.metrics.set_up(True)
                self.log("serving")
                while not self.stopped.is_set():
                    self._lead(sess) if self.rank == 0 else self._follow(sess)
            except CommError as exc:
                self.log(f"lost the other servers: {exc}")
                self._fail_all("peer_failed", str(exc))
            except ModelMismatchError as exc:
                # refused: the joining server stops; server 0 waits for a server with its model
                self.log(f"refused to serve with that server: {exc}")
                if self.rank > 0:
                    self.refused = f"ModelMismatchError: {exc}"
                    self.stopped.set()
            except Exception as exc:  # noqa: BLE001 - a bug ends the server, loudly
                import traceback
                traceback.print_exc()
                self.refused = f"{type(exc).__name__}: {exc}"
                self._fail_all("internal", self.refused)
                self.stopped.set()
            finally:
                self.session_up = False
                self.metrics.set_up(False)
                self._drop_links()

    def _drop_links(self) -> None:
        with self.cond:
            for ch in self.peers.values():
                ch.close()
            self.peers.clear()
        self.pool.clear()  # the other servers' halves of these entries are gone
        if self.dealer is not None:
            self.dealer[1].set()
            self.dealer[0].close()

    def _link_up(self) -> Session | None:
        others = [r for r in range(self.p) if r != self.rank]
        for r in (r for r in others if r < self.rank):  # dial the lower ranks (retrying)
            addr = self.d.server(r).address
            hello = {"rank": self.rank, "name": self.name, "deployment": self.d.name}
            while not self.stopped.is_set():
                try:
                    ch = dial(addr, self.client_ctx, f"server-{r}", hello,
                              time.monotonic() + self.d.connect_timeout)
                    break
                except CommError as exc:
                    self.log(f"waiting for server-{r}: {exc}")
            else:
                return None
            with self.cond:
                self.peers[r] = ch
        with self.cond:  # wait for the higher ranks to dial us
            while not all(r in self.peers for r in others):
                if self.stopped.is_set():
                    return None
                self.cond.wait(0.5)
            channels = {r: self.peers[r] for r in others}
        comm = MeshCommunicator(self.rank, self.p + 1, channels, self.d.message_timeout,
                                {r: f"server-{r}" for r in others})
        pairs = {}
        for r in others:  # fresh pairwise seeds: the lower rank draws
            if self.rank < r:
                pairs[r] = prng.new_seed()
                comm.send(r, [("setup", torch.tensor(list(pairs[r]), dtype=torch.uint8))], "seed")
        for r in others:
            if r < self.rank:
                (t,) = comm.recv(r, "seed")
                pairs[r] = bytes(t.tolist())
        sess = Session(comm, self.world, Seeds(prng.new_seed(), pairs, {self.rank: prng.new_seed()}),
                       self.model.fixed)
        agree_on_model(sess, self.model)
        if self.plans is None:
            self.plans = {b: self.model.record_plan(sess, (b, *self.shape)) for b in self.d.sizes}
            self.plans_ready.set()
            self.log(f"plans recorded for batch shapes {list(self.d.sizes)}")
        return sess

    def _fail_all(self, kind: str, message: str) -> None:
        with self.cond:
            pending, self.waiting = list(self.waiting.values()), collections.OrderedDict()
        for q in pending:
            self._refuse(q.ch, q.id, kind, message)

    # -- batches --------------------------------------------------------------------------------
    def _lead(self, sess: Session) -> None:
        """Server 0: form a batch, find its entry, tell the others, run it."""
        with self.cond:
            while not self.waiting:
                if self.stopped.is_set() or (self.draining and not self.waiting):
                    return
                self.cond.wait(0.2)
            first = next(iter(self.waiting.values())).t0
            until = first + self.d.max_wait_ms / 1000
            while sum(q.rows for q in self.waiting.values()) < self.d.max_batch:
                left = until - time.monotonic()
                if left <= 0:
                    break
                self.cond.wait(left)
            batch, rows = [], 0
            for q in self.waiting.values():
                if rows + q.rows > self.d.max_batch:
                    break
                batch.append(q)
                rows += q.rows
        size = self.d.bucket(rows)
        got = self.pool.take_oldest(size, min(q.deadline for q in batch))
        others = [r for r in range(self.p) if r != self.rank]
        if got is None:  # no material before the first deadline: those queries are busy
            now = time.monotonic()
            late = [q for q in batch if q.deadline <= now + 0.001]
            for r in others:
                sess.comm.send(r, [("setup", json_tensor({"refuse": [q.id for q in late]}))], "order")
            self._drop(late, "busy", "busy: no offline material ready (the dealer is behind or gone)")
            return
        key, queue = got
        order = {"ids": [q.id for q in batch], "rows": [q.rows for q in batch], "size": size,
                 "key": list(key)}
        for r in others:
            sess.comm.send(r, [("setup", json_tensor(order))], "order")
        for r in others:
            (ack,) = sess.comm.recv(r, "order-ack")
            ack = tensor_json(ack)
            if not ack.get("ok"):
                raise CommError(f"server-{r} cannot run the batch: {ack.get('why')}")
        self._run(sess, batch, size, key, queue)

    def _follow(self, sess: Session) -> None:
        """Servers 1…: run what server 0 orders."""
        sess.comm.timeout = 24 * 3600.0  # server 0 orders when clients query: idle is fine
        try:
            (t,) = sess.comm.recv(0, "order")
        finally:
            sess.comm.timeout = self.d.message_timeout
        order = tensor_json(t)
        if "refuse" in order:
            with self.cond:
                late = [self.waiting[i] for i in order["refuse"] if i in self.waiting]
            return self._drop(late, "busy", "busy: no offline material ready (the dealer is behind or gone)")
        deadline = time.monotonic() + min(5.0, self.d.query_timeout)
        batch = []
        with self.cond:  # a client may reach this server a moment after server 0
            for qid, rows in zip(order["ids"], order["rows"]):
                while qid not in self.waiting and time.monotonic() < deadline:
                    self.cond.wait(0.05)
                if qid not in self.waiting:  # zero shares in its place; a late share is refused
                    self.missed[qid] = time.monotonic()
                batch.append(self.waiting.get(qid) or (qid, rows))
            cutoff = time.monotonic() - self.d.query_timeout
            for old in [k for k, t in self.missed.items() if t < cutoff]:
                del self.missed[old]  # a share this late is refused by its client's deadline anyway
        queue = self.pool.take(order["size"], tuple(order["key"]),
                               time.monotonic() + self.d.message_timeout)
        ok = queue is not None
        sess.comm.send(0, [("setup", json_tensor({"ok": ok, "why": None if ok else
                                                   f"pool entry {order['key']} never arrived"}))],
                       "order-ack")
        if not ok:
            raise CommError(f"pool entry {order['key']} of server 0's batch never arrived")
        self._run(sess, batch, order["size"], tuple(order["key"]), queue)

    def _drop(self, queries, kind, message) -> None:
        with self.cond:
            for q in queries:
                self.waiting.pop(q.id, None)
        for q in queries:
            self._refuse(q.ch, q.id, kind, message)

    def _run(self, sess: Session, batch: list, size: int, key, queue) -> None:
        x = torch.zeros((size, *self.shape), dtype=torch.int64)
        pos, spans = 0, []
        for q in batch:
            rows = q.rows if isinstance(q, Query) else q[1]
            if isinstance(q, Query):
                x[pos:pos + rows] = q.share
            spans.append((q, pos, rows))
            pos += rows
        self.metrics.batch(pos)
        sess.offline.load(queue)
        before = sess.stats.copy()
        y = self.model.run(sess, sess.share(x)).data
        sess.offline.plan = []
        used = sess.stats.minus(before)
        self.metrics.add_bytes("sent", "servers", used.bytes_sent())
        self.metrics.add_bytes("received", "servers", used.bytes_received())
        with self.cond:
            for q, _, _ in spans:
                if isinstance(q, Query):
                    self.waiting.pop(q.id, None)
        self._consumed(size, key)  # with the rows still waiting: the dealer refills when idle
        for q, start, rows in spans:
            if not isinstance(q, Query):
                continue
            out = self.ring.wire(y[start:start + rows].contiguous())
            try:
                wire.send(q.ch, {"op": "result", "id": q.id, "rows": rows}, out.numpy())
                self.metrics.answered(time.monotonic() - q.t0)
                self.metrics.add_bytes("sent", "clients", out.numel() * out.element_size())
            except CommError:
                pass
