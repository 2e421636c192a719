"""The dealer's pool of offline material, kept ahead of demand per batch shape.

Link protocol (dealer ↔ server *s*, after the hello):

1. the dealer sends a fresh seed (tag ``setup``): the stream both draw *s*'s seeded parts from;
2. *s* answers with a JSON frame: the plan of every batch shape (the dealer requests of one batch,
   recorded by the server), the ring, and the keys of the entries it still holds per shape;
3. the dealer answers each server with the keys that *every* server holds (``keep``): entries that
   only some servers hold (a dealer died while streaming one) are dropped everywhere, so old
   epochs are reconciled before anything new is made;
4. the dealer produces *entries*: a header (shape, key) then, request by request, what *s*
   receives (tag ``offline``); *s* expands each into a complete queue of material in arrival order
   and tells the dealer ``{"stored": [shape, key]}``. Once every follower (server 1…) stored an
   entry, the dealer tells server 0 ``{"confirmed": [[shape, key]]}`` (step ``pool-confirm``,
   taken between any two messages of the link, mid-entry too): server 0
   orders a batch only with a confirmed entry, so a follower never lacks the entry of an order
   unless it lost it (then it says so at once and both drop it);
5. after each batch every server sends ``{"consumed": [shape, key], "backlog": rows}`` (rows
   still waiting), and server 0 sends ``{"need": shape}`` when it has queries but no entry of their
   shape; the dealer keeps each server's count of ready entries per shape at the pool depth: first
   a shape server 0 needs, then at once a shape below the low-water mark, else only while no
   server has a backlog — offline work takes the cycles the online phase leaves, and a burst is
   served from the pool;
6. while it has nothing to send the dealer sends ``{"alive": 1}`` every :data:`BEAT` seconds (a
   quarter of the message timeout if that is shorter); a server that hears nothing for the
   message timeout between entries drops the link (a frozen dealer frees the place of the next
   one: a server links one dealer at a time).

Entries are self-contained (every stream value drawn at arrival), so a pool outlives its dealer:
the servers serve from it when the dealer dies, and then answer "busy". Keys are (epoch, sequence):
a dealer that restarts starts a new epoch, and server 0 tells the others which key a batch uses.
Costs: the ``offline`` bytes of each batch's plan (see :mod:`ringlet.offline`), never online.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import OrderedDict

import torch

from ringlet import prng
from ringlet.comm.base import CommError, ProtocolMismatchError
from ringlet.comm.mesh import parse_json
from ringlet.offline.dealer import Dealer
from ringlet.offline.kind import Kinds
from ringlet.offline.link import DealerLink
from ringlet.offline.request import Request
from ringlet.prng import AesCtrStream
from ringlet.ring import Ring


def encode_plans(plans: dict[int, list[Request]], kinds: Kinds) -> dict[str, list[int]]:
    return {str(b): [v for req in plan for v in kinds.encode(req)] for b, plan in plans.items()}


def decode_plans(data: dict[str, list[int]], kinds: Kinds) -> dict[int, list[Request]]:
    out = {}
    for b, values in data.items():
        plan, pos = [], 0
        while pos < len(values):
            req, pos = kinds.decode(values, pos)
            plan.append(req)
        out[int(b)] = plan
    return out


def plans_digest(plans: dict[int, list[Request]], kinds: Kinds) -> str:
    return hashlib.sha256(json.dumps(encode_plans(plans, kinds), sort_keys=True).encode()).hexdigest()[:16]


def json_tensor(obj) -> torch.Tensor:
    return torch.frombuffer(bytearray(json.dumps(obj).encode()), dtype=torch.uint8)


def tensor_json(t: torch.Tensor):
    return json.loads(bytes(t.tolist()).decode())


def _yield_cpu(nice: int = 10) -> None:
    """Lower the calling thread's CPU priority (Linux: a thread is a schedulable task)."""
    import os
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
    except (AttributeError, OSError):
        pass  # elsewhere the thread keeps the process's priority


class MaterialPool:
    """A server's ready entries: {shape: OrderedDict[key, queue]} (thread-safe).

    On server 0 an entry can be used once every other server holds it too (``confirmed``);
    depths count those only. Keys dropped before they arrived (a follower asked for one it
    lacked) are remembered, so that a late arrival is discarded instead of kept forever.
    """

    def __init__(self, sizes, on_change=None, needs_confirmation: bool = False):
        self._cond = threading.Condition()
        self._entries: dict[int, OrderedDict[tuple, list]] = {b: OrderedDict() for b in sizes}
        self._sizes: dict[tuple, int] = {}  # (shape, key) -> bytes held
        self._confirmed: set[tuple] = set()  # (shape, key)
        self._dropped: set[tuple] = set()  # (shape, key) never to be kept
        self.needs_confirmation = needs_confirmation
        self.on_change = on_change or (lambda size, depth: None)

    def _usable(self, size: int, key: tuple) -> bool:
        return not self.needs_confirmation or (size, key) in self._confirmed

    def depth(self, size: int) -> int:
        with self._cond:
            return sum(self._usable(size, k) for k in self._entries[size])

    def depths(self) -> dict[int, int]:
        with self._cond:
            return {b: sum(self._usable(b, k) for k in e) for b, e in self._entries.items()}

    def held(self) -> dict[int, list[list]]:
        """Every entry's key per shape, usable or not (for the dealer's reconciliation)."""
        with self._cond:
            return {b: [list(k) for k in e] for b, e in self._entries.items()}

    def nbytes(self) -> int:
        """Memory held by the ready entries (their tensors)."""
        with self._cond:
            return sum(self._sizes.values())

    def _changed(self, size: int) -> None:
        self.on_change(size, self.depth(size))

    def put(self, size: int, key: tuple, queue: list, first: bool = False) -> bool:
        """Keep an entry (``first``: before the others, as a returned one); False if dropped."""
        key = tuple(key)
        held = sum(t.numel() * t.element_size() for _, material in queue for t in material.tensors()
                   if hasattr(t, "numel"))
        with self._cond:
            if size not in self._entries or (size, key) in self._dropped:
                self._dropped.discard((size, key))
                return False
            self._sizes[(size, key)] = held
            self._entries[size][key] = queue
            if first:  # a returned entry: every server still holds it
                self._entries[size].move_to_end(key, last=False)
                self._confirmed.add((size, key))
            self._cond.notify_all()
        self._changed(size)
        return True

    def confirm(self, pairs) -> None:
        """Server 0: these (shape, key) entries are held by every server."""
        with self._cond:
            self._confirmed.update((int(b), tuple(k)) for b, k in pairs)
            self._cond.notify_all()
        for b in {int(b) for b, _ in pairs if int(b) in self._entries}:
            self._changed(b)

    def take_ready(self, size: int):
        """(key, queue) of the oldest usable entry of ``size`` now, or None."""
        with self._cond:
            key = next((k for k in self._entries[size] if self._usable(size, k)), None)
            if key is None:
                return None
            queue = self._pop(size, key)
        self._changed(size)
        return key, queue

    def take(self, size: int, key: tuple):
        """The entry ``key`` of ``size`` now, or None (then a late arrival of it is dropped)."""
        key = tuple(key)
        with self._cond:
            if size not in self._entries:
                return None
            if key not in self._entries[size]:
                self._dropped.add((size, key))
                return None
            queue = self._pop(size, key)
        self._changed(size)
        return queue

    def _pop(self, size: int, key: tuple):
        self._sizes.pop((size, key), None)
        self._confirmed.discard((size, key))
        return self._entries[size].pop(key)

    def keep_only(self, keep: dict) -> int:
        """Drop every entry whose key is not in ``keep`` ({shape: [keys]}); the number dropped.
        What is kept is held by every server: it is confirmed."""
        wanted = {(int(b), tuple(k)) for b, keys in keep.items() for k in keys}
        dropped = 0
        with self._cond:
            for b, entries in self._entries.items():
                for k in [k for k in entries if (b, k) not in wanted]:
                    self._pop(b, k)
                    dropped += 1
            self._confirmed = {(b, k) for b, e in self._entries.items() for k in e}
            self._dropped.clear()
            self._cond.notify_all()
        for b in self._entries:
            self._changed(b)
        return dropped

    def wait_change(self, timeout: float) -> None:
        with self._cond:
            self._cond.wait(timeout)

    def clear(self) -> None:
        with self._cond:
            for e in self._entries.values():
                e.clear()
            self._sizes.clear()
            self._confirmed.clear()
            self._dropped.clear()
        for b in self._entries:
            self.on_change(b, 0)


BEAT = 5.0  # at most this many seconds between the dealer's signs of life when it is idle
ACK_LIMIT = 64 << 10  # bytes of a server's acknowledgement frame
PLANS_LIMIT = 256 << 20  # bytes of a server's plans (a request is a few integers)


def receive_entries(comm, dealer: int, rank: int, ring, plans: dict[int, list[Request]],
                    pool: MaterialPool, stop: threading.Event, kinds: Kinds, on_bytes=None,
                    silence: float = 60.0, log=None, on_ready=None) -> None:
    """A server's side of the dealer link (steps 1–4 and 6 above) until the link ends."""
    _yield_cpu()  # this thread expands material; the server's online phase comes first
    on_bytes = on_bytes or (lambda n: None)
    ch = comm.channels[dealer]
    comm.interject("pool-confirm", lambda src, items: pool.confirm(tensor_json(items[0])["confirmed"]))
    (seed,) = comm.recv(dealer, "pool-seed")
    ch.send(json.dumps({"plans": encode_plans(plans, kinds), "ring_bits": ring.bits,
                        "held": {str(b): keys for b, keys in pool.held().items()}}).encode())
    (keep,) = comm.recv(dealer, "pool-keep")
    dropped = pool.keep_only(tensor_json(keep)["keep"])
    if dropped and log is not None:
        log(f"dropped {dropped} pool entries that another server lacks")
    if on_ready is not None:
        on_ready()  # from here the server may tell the dealer what it consumed and needs
    client = DealerLink(comm, rank, AesCtrStream(bytes(seed.tolist())), dealer, kinds, ring)
    wait = comm.timeout
    while not stop.is_set():
        comm.timeout = silence  # between entries the dealer says it is alive every few seconds
        (head,) = comm.recv(dealer, "pool")
        comm.timeout = wait
        msg = tensor_json(head)
        if "size" not in msg:
            continue  # a sign of life
        size, key = int(msg["size"]), tuple(msg["key"])
        if size not in plans:
            raise ProtocolMismatchError(f"the dealer sent an entry of batch shape {size}; this "
                                        f"server plans {sorted(plans)}")
        before = comm.stats.bytes_received()
        kept = pool.put(size, key, client.receive(plans[size]))
        on_bytes(comm.stats.bytes_received() - before)
        ch.send(json.dumps({"stored": [size, list(key)]} if kept else
                           {"consumed": [size, list(key)], "backlog": 0}).encode())


class DealerPool:
    """The dealer's side for one set of server links (one epoch): fill every pool to ``depth``."""

    def __init__(self, comm, servers: list[int], depth: int, epoch: str, log, kinds: Kinds,
                 low_water: int = 1):
        self.comm, self.servers, self.depth, self.epoch, self.log = comm, servers, depth, epoch, log
        self.kinds = kinds
        self.low_water = max(1, min(low_water, depth))
        self.beat = min(BEAT, comm.timeout / 4)
        self.backlog = {s: 0 for s in servers}  # rows waiting at each server (its last word)
        self._cond = threading.Condition()
        self.ready: dict[int, dict[int, int]] = {}  # server -> shape -> entries it holds
        self.stored: dict[tuple, set[int]] = {}  # (shape, key) -> followers that stored it
        self.needed: set[int] = set()  # shapes server 0 lacked an entry for since the last pick
        self.failed: str | None = None
        self.seq = 0

    def start(self, timeout: float):
        """Steps 1–3: seeds out, plans and held keys in, the common keys out; (Dealer, plans)."""
        seeds = {s: prng.new_seed() for s in self.servers}
        for s, seed in seeds.items():
            self.comm.send(s, [("setup", torch.tensor(list(seed), dtype=torch.uint8))], "pool-seed")
        hellos = {}
        for s in self.servers:
            ch = self.comm.channels[s]
            deadline = time.monotonic() + timeout
            while s not in hellos:  # an acknowledgement of an earlier epoch may come first
                data = ch.recv_frame(deadline, "the server's plans", limit=PLANS_LIMIT)
                msg = parse_json(data, ch.peer, "plans")
                if "plans" in msg:
                    hellos[s] = msg
                elif not ({"consumed", "need", "stored"} & set(msg)):
                    raise ProtocolMismatchError(f"{ch.peer} sent {sorted(msg)[:4]} instead of its plans")
        plans = {s: decode_plans(h["plans"], self.kinds) for s, h in hellos.items()}
        digests = {s: plans_digest(p, self.kinds) for s, p in plans.items()}
        if len(set(digests.values())) != 1:
            raise CommError(f"dealer: the servers' batch plans differ ({digests}): they do not run "
                            f"the same model")
        rings = {h["ring_bits"] for h in hellos.values()}
        if len(rings) != 1:
            raise CommError(f"dealer: the servers compute in different rings ({sorted(rings)})")
        keep = {}
        for b in plans[self.servers[0]]:
            sets = [{tuple(k) for k in h.get("held", {}).get(str(b), [])} for h in hellos.values()]
            keep[str(b)] = sorted(list(k) for k in set.intersection(*sets))
        dropped = sum(len(k) for h in hellos.values() for k in h.get("held", {}).values()) \
            - len(self.servers) * sum(len(k) for k in keep.values())
        if dropped:
            self.log(f"reconciled the pools: {dropped} entries held by only some servers dropped")
        for s in self.servers:
            self.comm.send(s, [("setup", json_tensor({"keep": keep}))], "pool-keep")
        self.ready = {s: {int(b): len(k) for b, k in keep.items()} for s in self.servers}
        dealer = Dealer(self.comm, {s: AesCtrStream(seed) for s, seed in seeds.items()},
                        self.kinds, ring=Ring(rings.pop()))
        for s in self.servers:
            threading.Thread(target=self._acks, args=(s,), daemon=True,
                             name=f"ringlet-dealer-acks-{s}").start()
        return dealer, plans[self.servers[0]]

    def _acks(self, s: int) -> None:
        ch = self.comm.channels[s]
        followers = set(self.servers[1:])
        try:
            while self.failed is None:
                data = ch.recv_frame(time.monotonic() + 24 * 3600.0, "acks", limit=ACK_LIMIT)
                msg = parse_json(data, ch.peer, "acknowledgement")
                with self._cond:
                    if "stored" in msg:
                        size, key = int(msg["stored"][0]), tuple(msg["stored"][1])
                        have = self.stored.setdefault((size, key), set())
                        have.add(s)
                        if have >= followers:  # server 0 may use it now (between any messages)
                            del self.stored[(size, key)]
                            self.comm.send(self.servers[0], [("setup", json_tensor(
                                {"confirmed": [[size, list(key)]]}))], "pool-confirm")
                    elif "need" in msg:  # server 0 has queries and no entry of this shape
                        self.needed.add(int(msg["need"]))
                    else:
                        size = int(msg["consumed"][0])
                        self.ready[s][size] = max(0, self.ready[s].get(size, 0) - 1)
                        self.backlog[s] = int(msg.get("backlog", 0))
                    self._cond.notify_all()
        except (CommError, ValueError, KeyError, TypeError, IndexError) as exc:
            with self._cond:
                self.failed = self.failed or f"server {s}: {exc}"
                self._cond.notify_all()

    def _next_size(self, sizes) -> int | None:
        """The shape to produce next, or None to wait: a shape server 0 needs now (it has queries
        and no entry), else the fewest ready below the low-water mark (the larger on ties), else
        while no server has a backlog the fewest below the depth."""
        ready = [(max(self.ready[s].get(b, 0) for s in self.servers), -b) for b in sizes]
        needed = [(n, nb) for n, nb in ready if -nb in self.needed and n < self.depth]
        self.needed.clear()
        if needed:
            return -min(needed)[1]
        urgent = [(n, nb) for n, nb in ready if n < self.low_water]
        idle = not any(self.backlog.values())
        lacking = urgent or [(n, nb) for n, nb in ready if n < self.depth and idle]
        return -min(lacking)[1] if lacking else None

    def run(self, dealer, plans: dict[int, list[Request]], stop: threading.Event) -> None:
        """Steps 4–6 until a link fails (raises CommError) or ``stop`` is set."""
        last = time.monotonic()
        while not stop.is_set():
            if time.monotonic() - last >= self.beat:
                for s in self.servers:
                    self.comm.send(s, [("setup", json_tensor({"alive": 1}))], "pool")
                last = time.monotonic()
            with self._cond:
                if self.failed:
                    raise CommError(self.failed)
                size = self._next_size(sorted(plans))
                if size is None:
                    self._cond.wait(min(0.5, self.beat))
                    continue
            key = [self.epoch, self.seq]
            self.seq += 1
            for s in self.servers:
                self.comm.send(s, [("setup", json_tensor({"size": size, "key": key}))], "pool")
            for req in plans[size]:
                dealer.send_material(req)
            self.comm.flush()
            last = time.monotonic()
            with self._cond:
                for s in self.servers:
                    self.ready[s][size] = self.ready[s].get(size, 0) + 1
