"""The dealer's pool of offline material, kept ahead of demand per batch shape.

Link protocol (dealer ↔ server *s*, after the hello):

1. the dealer sends a fresh seed (tag ``setup``): the stream both draw *s*'s seeded parts from;
2. *s* answers with a JSON frame: the plan of every batch shape (the dealer requests of one batch,
   recorded by the server), the ring, and how many entries it still holds per shape;
3. the dealer produces *entries*: a header (shape, key) then, request by request, what *s*
   receives (tag ``offline``); *s* expands each into a complete queue of material in arrival order;
4. after each batch every server sends ``{"consumed": [shape, key], "backlog": rows}`` (rows
   still waiting); the dealer keeps each server's count of ready entries per shape at the pool
   depth: at once for a shape below the low-water mark, else only while no server has a backlog —
   offline work takes the cycles the online phase leaves, and a burst is served from the pool.

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

from ringlet.comm.base import CommError
from ringlet.offline import OfflineClient, Request


def encode_plans(plans: dict[int, list[Request]]) -> dict[str, list[int]]:
    return {str(b): [v for req in plan for v in req.encode()] for b, plan in plans.items()}


def decode_plans(data: dict[str, list[int]]) -> dict[int, list[Request]]:
    out = {}
    for b, values in data.items():
        plan, pos = [], 0
        while pos < len(values):
            req, pos = Request.decode(values, pos)
            plan.append(req)
        out[int(b)] = plan
    return out


def plans_digest(plans: dict[int, list[Request]]) -> str:
    return hashlib.sha256(json.dumps(encode_plans(plans), sort_keys=True).encode()).hexdigest()[:16]


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
    """A server's ready entries: {shape: OrderedDict[key, queue]} (thread-safe)."""

    def __init__(self, sizes, on_change=None):
        self._cond = threading.Condition()
        self._entries = {b: OrderedDict() for b in sizes}
        self._sizes: dict[tuple, int] = {}  # (shape, key) -> bytes held
        self.on_change = on_change or (lambda size, depth: None)

    def depth(self, size: int) -> int:
        with self._cond:
            return len(self._entries[size])

    def depths(self) -> dict[int, int]:
        with self._cond:
            return {b: len(e) for b, e in self._entries.items()}

    def nbytes(self) -> int:
        """Memory held by the ready entries (their tensors)."""
        with self._cond:
            return sum(self._sizes.values())

    def put(self, size: int, key: tuple, queue: list) -> None:
        held = sum(t.numel() * t.element_size() for _, material in queue for t in material.values()
                   if hasattr(t, "numel"))
        with self._cond:
            self._sizes[(size, tuple(key))] = held
            self._entries[size][tuple(key)] = queue
            self._cond.notify_all()
        self.on_change(size, self.depth(size))

    def take_oldest(self, size: int, deadline: float):
        """(key, queue) of the oldest entry of ``size``, waiting until ``deadline``; None if none."""
        with self._cond:
            while not self._entries[size]:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(min(left, 0.5))
            key, queue = self._entries[size].popitem(last=False)
            self._sizes.pop((size, key), None)
        self.on_change(size, self.depth(size))
        return key, queue

    def take(self, size: int, key: tuple, deadline: float):
        """The entry ``key`` of ``size`` (waiting until ``deadline``); None if it never comes."""
        key = tuple(key)
        with self._cond:
            while key not in self._entries[size]:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(min(left, 0.5))
            queue = self._entries[size].pop(key)
            self._sizes.pop((size, key), None)
        self.on_change(size, self.depth(size))
        return queue

    def clear(self) -> None:
        with self._cond:
            for e in self._entries.values():
                e.clear()
            self._sizes.clear()
        for b in self._entries:
            self.on_change(b, 0)


def receive_entries(comm, dealer: int, rank: int, ring, plans: dict[int, list[Request]],
                    pool: MaterialPool, stop: threading.Event, on_bytes=None) -> None:
    """A server's side of the dealer link (steps 1–3 above) until the link ends."""
    from ringlet.prng import AesCtrStream
    _yield_cpu()  # this thread expands material; the server's online phase comes first
    on_bytes = on_bytes or (lambda n: None)
    (seed,) = comm.recv(dealer, "pool-seed")
    comm.channels[dealer].send(json.dumps({
        "plans": encode_plans(plans), "ring_bits": ring.bits,
        "depths": {str(b): d for b, d in pool.depths().items()}}).encode())
    client = OfflineClient(comm, rank, AesCtrStream(bytes(seed.tolist())), dealer, ring)
    wait = comm.timeout
    while not stop.is_set():
        comm.timeout = 24 * 3600.0  # the dealer sends when a pool needs an entry: idle is fine
        (head,) = comm.recv(dealer, "pool")
        comm.timeout = wait
        entry = tensor_json(head)
        size = int(entry["size"])
        before = comm.stats.bytes_received()
        pool.put(size, tuple(entry["key"]), client.receive(plans[size]))
        on_bytes(comm.stats.bytes_received() - before)


class DealerPool:
    """The dealer's side for one set of server links (one epoch): fill every pool to ``depth``."""

    def __init__(self, comm, servers: list[int], depth: int, epoch: str, log, low_water: int = 1):
        self.comm, self.servers, self.depth, self.epoch, self.log = comm, servers, depth, epoch, log
        self.low_water = max(1, min(low_water, depth))
        self.backlog = {s: 0 for s in servers}  # rows waiting at each server (its last word)
        self._cond = threading.Condition()
        self.ready: dict[int, dict[int, int]] = {}  # server -> shape -> entries it holds
        self.failed: str | None = None
        self.seq = 0

    def start(self, timeout: float):
        """Steps 1–2: seeds out, plans in; returns (Dealer, plans)."""
        from ringlet import prng
        from ringlet.offline import Dealer
        from ringlet.prng import AesCtrStream
        from ringlet.ring import Ring
        seeds = {s: prng.new_seed() for s in self.servers}
        for s, seed in seeds.items():
            self.comm.send(s, [("setup", torch.tensor(list(seed), dtype=torch.uint8))], "pool-seed")
        hellos = {}
        for s in self.servers:
            data = self.comm.channels[s].recv_frame(time.monotonic() + timeout, "the server's plans")
            hellos[s] = json.loads(bytes(data).decode())
        plans = {s: decode_plans(h["plans"]) for s, h in hellos.items()}
        digests = {s: plans_digest(p) for s, p in plans.items()}
        if len(set(digests.values())) != 1:
            raise CommError(f"dealer: the servers' batch plans differ ({digests}): they do not run "
                            f"the same model")
        rings = {h["ring_bits"] for h in hellos.values()}
        if len(rings) != 1:
            raise CommError(f"dealer: the servers compute in different rings ({sorted(rings)})")
        self.ready = {s: {int(b): int(d) for b, d in h["depths"].items()} for s, h in hellos.items()}
        dealer = Dealer(self.comm, {s: AesCtrStream(seed) for s, seed in seeds.items()},
                        ring=Ring(rings.pop()))
        for s in self.servers:
            threading.Thread(target=self._consumed, args=(s,), daemon=True,
                             name=f"ringlet-dealer-acks-{s}").start()
        return dealer, plans[self.servers[0]]

    def _consumed(self, s: int) -> None:
        ch = self.comm.channels[s]
        try:
            while self.failed is None:
                msg = json.loads(bytes(ch.recv_frame(time.monotonic() + 24 * 3600.0, "acks")).decode())
                size = int(msg["consumed"][0])
                with self._cond:
                    self.ready[s][size] = max(0, self.ready[s].get(size, 0) - 1)
                    self.backlog[s] = int(msg.get("backlog", 0))
                    self._cond.notify_all()
        except (CommError, ValueError, KeyError) as exc:
            with self._cond:
                self.failed = self.failed or f"server {s}: {exc}"
                self._cond.notify_all()

    def _next_size(self, sizes) -> int | None:
        """The shape to produce next (fewest ready, the larger on ties), or None to wait."""
        ready = [(max(self.ready[s].get(b, 0) for s in self.servers), -b) for b in sizes]
        urgent = [(n, nb) for n, nb in ready if n < self.low_water]
        idle = not any(self.backlog.values())
        lacking = urgent or [(n, nb) for n, nb in ready if n < self.depth and idle]
        return -min(lacking)[1] if lacking else None

    def run(self, dealer, plans: dict[int, list[Request]], stop: threading.Event) -> None:
        """Step 3 until a link fails (raises CommError) or ``stop`` is set."""
        while not stop.is_set():
            with self._cond:
                if self.failed:
                    raise CommError(self.failed)
                size = self._next_size(sorted(plans))
                if size is None:
                    self._cond.wait(0.5)
                    continue
            key = [self.epoch, self.seq]
            self.seq += 1
            for s in self.servers:
                self.comm.send(s, [("setup", json_tensor({"size": size, "key": key}))], "pool")
            for req in plans[size]:
                dealer.send_material(req)
            self.comm.flush()
            with self._cond:
                for s in self.servers:
                    self.ready[s][size] = self.ready[s].get(size, 0) + 1
