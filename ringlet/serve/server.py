"""``ringlet serve --role server``: a long-running server of a private model.

Each server listens on its deployment address for the other servers, the dealer and clients
(TLS 1.3, mutual authentication: a certificate's name is its party). The servers link up, verify
each other's model fingerprint (graph, weights, activation config, protocols, fixed point, input
range; a mismatch is refused, naming what differs) and agree on fresh pairwise seeds. Then:

* clients send each server its share of a query (:mod:`ringlet.serve.wire`); a server never sees
  an input, only its share;
* server 0 leads batching: it waits for queries (up to ``max_batch`` rows, at most ``max_wait_ms``
  after the first), picks the batch shape (padding rows are zero shares) and a pool entry that
  every server holds, and agrees on the batch with the others (:mod:`ringlet.serve.batches`: the
  followers check every query's rows and bytes and say at once what they lack); a query that
  cannot run by its deadline gets "busy" (no material, with the cause) or "timeout" (naming the
  server that never had its share);
* the servers run the compiled model on the batch (the online phase, exactly ``ringlet infer``'s
  rounds and bytes for that batch shape) and each sends every query its share of its output rows.

A server that loses another server answers every pending query with an error naming it, drops its
pool, and waits for the peer to link up again (no manual step). SIGTERM drains: accepted queries are
answered (for at most the query timeout), new ones refused with "draining".

Links: every frame has a limit known before it is read; a client link idle for ``timeouts.idle``
or slow inside a frame for ``timeouts.frame`` is closed; each client certificate may hold
``limits.links`` links and ``limits.in_flight`` queries; whatever a link sends ends at most that
link (its thread catches everything, closes the channel and counts the error by kind).
"""

from __future__ import annotations

import contextlib
import json
import signal
import ssl
import sys
import threading
import time
import traceback

import torch

from ringlet import prng, sources
from ringlet.comm.base import CommError, PeerTimeoutError
from ringlet.comm.channel import Channel
from ringlet.comm.mesh import Listener, MeshCommunicator, admit, dial
from ringlet.compiler.options import SecureOptions
from ringlet.protocols.catalog import material_kinds
from ringlet.roles import Role
from ringlet.runtime.programs import ModelMismatchError, agree_on_model
from ringlet.serve import batches
from ringlet.serve.book import QueryBook
from ringlet.serve.metrics import HealthServer, ServeMetrics
from ringlet.serve.pool import MaterialPool, receive_entries
from ringlet.serve.queries import QueryService
from ringlet.session import Seeds, Session, World


def _norm(norm):
    return {"mean": list(norm[0]), "std": list(norm[1])} if norm else None


def load_model(deploy):
    m = deploy.model
    options = SecureOptions.from_dict({k: v for k, v in m.items() if k in SecureOptions.keys()},
                                      f"{deploy.path} [model]")
    return sources.server_model(
        m["source"], weights=m.get("weights") or None, input_shape=m.get("input_shape"),
        relu_config=m.get("relu_config") or None, dataset=m.get("dataset") or None,
        data_dir=m.get("data_dir") or None, frac_bits=m.get("frac_bits"), ring_bits=m.get("ring_bits"),
        smooth=m.get("smooth"), input_bound=m.get("input_bound"), options=options)


class _DealerLink:
    def __init__(self, ch, where: str):
        self.ch, self.where, self.stop, self.since = ch, where, threading.Event(), time.time()
        self.ready = False  # the plans went out and the pools are reconciled


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
        self.numel = int(torch.Size(self.shape).numel())
        self.out_shape = tuple(self.model.graph.nodes[-1].out_shape)  # per input row
        self.metrics = ServeMetrics(self.name)
        self.pool = MaterialPool(deploy.sizes, on_change=self.metrics.pool,
                                 needs_confirmation=rank == 0)
        self.book = QueryBook(deploy.max_in_flight)
        self.policy = batches.BatchPolicy.of(deploy)
        self.plans: dict | None = None
        self.plans_ready = threading.Event()
        self.cond = threading.Condition()  # guards peers, dealer and the client links
        self.peers: dict[int, Channel] = {}
        self.dealer: _DealerLink | None = None
        self._needs: dict[int, float] = {}  # shape -> when the dealer was last told
        self.draining: float | None = None  # when SIGTERM came
        self.stopped = threading.Event()
        self.session_up = False
        self.refused: str | None = None  # why this server stopped (another model, a bug)
        ctx: tuple[ssl.SSLContext | None, ssl.SSLContext | None] = (
            deploy.tls_files().contexts(self.name) if deploy.tls else (None, None))
        self.server_ctx, self.client_ctx = ctx
        self.listener: Listener | None = None
        self.health: HealthServer | None = None
        self.queries = QueryService(deploy, rank, self.p, self.ring, self.shape, self.metrics,
                                    self.book, self.info, lambda: self.session_up and not self.draining,
                                    lambda: bool(self.draining), self.stopped, self.log)

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> ServerNode:
        me = self.d.server(self.rank)
        self.listener = Listener(me.address, self.server_ctx, self._on_peer, self._check,
                                 timeout=self.d.connect_timeout, name=self.name,
                                 on_reject=self._rejected)
        if me.metrics is not None:
            self.health = HealthServer(me.metrics[0], me.metrics[1], self.metrics,
                                       health=self._health).start()
        for target, what in ((self._main, "main"), (self.queries.reap, "reaper")):
            threading.Thread(target=target, name=f"ringlet-{self.name}-{what}", daemon=True).start()
        self.log(f"listening on {me.address[0]}:{self.listener.address[1]} "
                 f"({'TLS 1.3' if self.server_ctx else 'plain TCP'})")
        return self

    def _rejected(self, where: str, why: str) -> None:
        self.metrics.link_error("refused")
        self.log(f"refused {where}: {why}")

    def drain(self, *_):
        self.log("draining: answering accepted queries, refusing new ones")
        self.draining = self.draining or time.monotonic()
        self.metrics.set_draining(True)
        with self.book.cond:
            self.book.cond.notify_all()

    def install_signals(self) -> None:
        signal.signal(signal.SIGTERM, self.drain)
        signal.signal(signal.SIGINT, self.drain)

    def wait(self) -> int:
        while not self.stopped.wait(0.2):
            if self.draining and (not len(self.book) or
                                  time.monotonic() - self.draining > self.d.query_timeout + 1):
                self.stopped.set()  # drained, or every accepted query's deadline has passed
        self.close()
        if self.refused:
            self.log(f"error: {self.refused}")
            return 1
        return 0

    def close(self) -> None:
        self.stopped.set()
        for q in self.book.take_all():
            self.refuse(q.ch, q.id, "draining", f"{self.name} stopped before query {q.id} ran")
        self.queries.flush_all()
        if self.listener is not None:
            self.listener.close()
        if self.health is not None:
            self.health.stop()
        for ch in list(self.peers.values()):
            ch.close()
        if self.dealer is not None:
            self.dealer.ch.close()

    def _health(self) -> dict:
        return {"ok": self.session_up and not self.draining, "party": self.name,
                "peers": sorted(self.peers), "dealer": self.dealer is not None,
                "pool": {str(b): n for b, n in self.pool.depths().items()},
                "waiting": len(self.book), "clients": len(self.queries.clients)}

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
                "pool_bytes": self.pool.nbytes(), "waiting": len(self.book),
                "dealer": self.dealer is not None}

    # -- who may join ---------------------------------------------------------------------------
    def _check(self, hello: dict, cert_name, where=None):
        why = admit(hello, cert_name, self.d.name, self.server_ctx is not None)
        if why:
            return why
        name, role = hello["name"], Role.of_name(hello["name"])
        if role is Role.SERVER:
            r = hello.get("rank")
            if name != f"server-{r}" or type(r) is not int or not self.rank < r < self.p:
                return f"{name} does not connect to {self.name}"
            return None
        if role is Role.DEALER:
            held = self.dealer
            if held is not None:
                return (f"a dealer is already linked to {self.name} (from {held.where}); the "
                        f"dealer at {where} is refused: a deployment has one dealer")
            return None
        if role is Role.CLIENT:
            return None
        return f"{name!r} is not a party of this deployment"

    def _on_peer(self, hello: dict, ch) -> None:
        name, role = hello["name"], Role.of_name(hello["name"])
        if role is Role.SERVER:
            with self.cond:
                old = self.peers.pop(hello["rank"], None)
                if old is not None:
                    old.close()  # a restarted peer replaces its dead link
                self.peers[hello["rank"]] = ch
                self.cond.notify_all()
            self.log(f"{name} linked")
            return
        target = self._dealer_link if role is Role.DEALER else self.queries.link
        threading.Thread(target=target, args=(ch, name), daemon=True,
                         name=f"ringlet-{self.name}-{name}").start()

    # -- the dealer link ------------------------------------------------------------------------
    def _dealer_link(self, ch, _name) -> None:
        try:
            host, port = ch.sock.getpeername()[:2]
            where = f"{host}:{port}"
        except OSError:
            where = "an address that is gone"
        link = _DealerLink(ch, where)
        with self.cond:
            if self.dealer is not None:  # two dealers passed the check at once: the first stays
                ch.close()
                self.log("refused a second dealer (one is linked)")
                return
            self.dealer = link
        self.log("dealer linked")
        comm = MeshCommunicator(self.rank, self.p + 1, {self.p: ch}, self.d.message_timeout,
                                {self.p: "dealer", self.rank: self.name})
        try:
            while not self.plans_ready.wait(0.5):
                if self.stopped.is_set() or link.stop.is_set():
                    return
            if self.plans is None:  # plans_ready is set once they are recorded
                raise RuntimeError("the batch plans are not recorded")
            receive_entries(comm, self.p, self.rank, self.ring, self.plans, self.pool, link.stop,
                            material_kinds(),
                            on_bytes=lambda n: self.metrics.add_bytes("received", "dealer", n),
                            silence=self.d.message_timeout, log=self.log,
                            on_ready=lambda: setattr(link, "ready", True))
        except PeerTimeoutError:
            self.log("the dealer went silent; its link is closed (a new dealer may link)")
        except CommError as exc:
            self.log(f"dealer link ended: {exc}")
        except Exception as exc:  # noqa: BLE001 - a malformed dealer message ends its link only
            self.metrics.link_error("internal")
            self.log(f"dealer link ended: {type(exc).__name__}: {exc}")
        finally:
            with self.cond:
                if self.dealer is link:
                    self.dealer = None
            ch.close()

    def consumed(self, size: int, key) -> None:
        """Tell the dealer an entry left this server's pool (used or dropped)."""
        link = self.dealer
        if link is not None and link.ready:
            try:
                link.ch.send(json.dumps({"consumed": [size, list(key)],
                                         # server 0 alone knows which queries can run
                                         "backlog": self.book.rows_waiting() if self.rank == 0
                                         else 0}).encode())
            except CommError:
                pass

    def need(self, size: int) -> None:
        """Server 0: tell the dealer queries wait for an entry of ``size`` (at most 4 times a s)."""
        link, now = self.dealer, time.monotonic()
        if link is None or not link.ready or now - self._needs.get(size, 0.0) < 0.25:
            return
        self._needs[size] = now
        with contextlib.suppress(CommError):
            link.ch.send(json.dumps({"need": size}).encode())

    # -- the server pair ------------------------------------------------------------------------
    def _main(self) -> None:
        while not self.stopped.is_set():
            sess = None
            try:
                sess = self._link_up()
                if sess is None:
                    continue
                self.session_up = True
                self.metrics.set_up(True)
                self.log("serving")
                step = batches.lead if self.rank == 0 else batches.follow
                while not self.stopped.is_set():
                    step(self, sess)
            except CommError as exc:
                self.log(f"lost the other servers: {exc}")
                self._fail_all("peer_failed", str(exc))
            except ModelMismatchError as exc:
                # refused: the joining server stops; server 0 waits for a server with its model
                self.log(f"refused to serve with that server: {exc}")
                if self.rank > 0:
                    self.refused = f"ModelMismatchError: {exc}"
                    self.stopped.set()
            except Exception as exc:  # noqa: BLE001 - a bug ends the server, loudly, in its log
                traceback.print_exc()
                self.refused = f"{type(exc).__name__}: {exc}"
                self._fail_all("internal", f"internal error at {self.name} (see its log); the "
                                           f"query was not computed")
                self.stopped.set()
            finally:
                self.session_up = False
                self.metrics.set_up(False)
                self._drop_links(sess)

    def _drop_links(self, sess) -> None:
        """Close the session's peer links (a peer that already linked again keeps its new link),
        the pool and the dealer link (its entries pair with the lost session's)."""
        with self.cond:
            old = set(sess.comm.channels.values()) if sess is not None else set(self.peers.values())
            for r, ch in list(self.peers.items()):
                if ch in old:
                    del self.peers[r]
            for ch in old:
                ch.close()
        self.pool.clear()  # the other servers' halves of these entries are gone
        link = self.dealer
        if link is not None:
            link.stop.set()
            link.ch.close()

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
                                {r: f"server-{r}" for r in range(self.p)} | {self.p: "dealer"})
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
                       material_kinds(), self.model.fixed)
        agree_on_model(sess, self.model)
        if self.plans is None:
            self.plans = {b: self.model.record_plan(sess, (b, *self.shape)) for b in self.d.sizes}
            self.plans_ready.set()
            self.log(f"plans recorded for batch shapes {list(self.d.sizes)}")
        return sess

    def check_session(self, sess) -> None:
        """A peer that linked again (it restarted) ends the session that used its old link."""
        with self.cond:
            stale = [r for r, ch in sess.comm.channels.items() if self.peers.get(r) is not ch]
        if stale:
            raise CommError(f"{', '.join(f'server-{r}' for r in stale)} linked again (restarted)")

    def refuse(self, ch, qid, kind: str, message: str) -> None:
        self.queries.refuse(ch, qid, kind, message)

    def refuse_queries(self, queries, kind: str, message) -> None:
        self.queries.refuse_queries(queries, kind, message)

    def _fail_all(self, kind: str, message: str) -> None:
        for q in self.book.take_all():
            self.refuse(q.ch, q.id, kind, message)
