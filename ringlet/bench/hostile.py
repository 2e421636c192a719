"""``ringlet bench serve --hostile``: honest clients at full rate beside a hostile client and kills.

Two phases of the same length on the same loopback deployment, measured in one command:

* **clean**: ``clients`` honest clients query for ``seconds`` (each keeps ``window`` queries in
  flight, cycling through its inputs);
* **hostile**: the same honest load, while one client holding a real certificate of the deployment
  (``client-b``) cycles :data:`ATTACKS` and each party is killed (SIGKILL) and restarted once:
  server 1 at 15 % of the phase, the dealer at 45 %, server 0 at 70 % (each after the deployment
  served again following the previous kill).

Every honest answer is checked against plaintext (``wrong``); a query with neither an answer nor an
error by the client's deadline is ``lost``. An honest client that gets an error waits 0.1 s before
its next query (a client's back-off, not a flood while a server restarts). Errors are counted by
kind, and ``errors_naming_a_party`` counts those whose message names server-0, server-1 or the
dealer (every error a killed party causes should). ``honest_ratio`` is the hostile phase's honest
throughput over the clean phase's.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from typing import Any

import torch

from ringlet.bench.load import run_client, score
from ringlet.comm.base import CommError
from ringlet.comm.channel import Channel
from ringlet.comm.mesh import dial
from ringlet.ring import Ring
from ringlet.serve import wire

PARTY_NAMES = ("server-0", "server-1", "dealer")
KILLS = (("server-1", 0.15), ("dealer", 0.45), ("server-0", 0.70))


def _link(d, server: int, name: str):
    ctx = d.tls_files().contexts(name)[1] if d.tls else None
    hello = {"rank": -1, "name": name, "deployment": d.name}
    return dial(d.server(server).address, ctx, f"server-{server}", hello, time.monotonic() + 5)


def _share(d, rows: int, shape) -> bytes:
    return Ring(64).wire(torch.zeros(rows, *shape, dtype=torch.int64)).numpy().tobytes()


def _query(ch, qid: str, rows: int, payload: bytes) -> None:
    wire.send(ch, {"op": "query", "id": qid, "rows": rows}, payload)


def rows_mismatch(d, name, shape, k):
    """One id, rows 1 at server 0 and 2 at server 1 (both halves otherwise well formed)."""
    links = [_link(d, 0, name), _link(d, 1, name)]
    _query(links[0], f"h{k}", 1, _share(d, 1, shape))
    _query(links[1], f"h{k}", 2, _share(d, 2, shape))
    return links


def lone_share(server: int):
    def attack(d, name, shape, k):
        ch = _link(d, server, name)
        _query(ch, f"h{k}", 1, _share(d, 1, shape))
        return [ch]
    attack.__name__ = f"lone_share_{server}"
    return attack


def oversized(d, name, shape, k):
    """A frame of 2^32-1 bytes announced as a query header."""
    ch = _link(d, k % 2, name)
    ch._write(struct.pack("<I", 0xFFFFFFFF))
    return [ch]


def _raw_link(d, name, k):
    """A TLS link with no hello yet (the hello is the attack)."""
    ctx = d.tls_files().contexts(name)[1] if d.tls else None
    sock = socket.create_connection(d.server(k % 2).address, timeout=5)
    return Channel.open(sock, "server", ctx, False, 5)


def oversized_hello(d, name, shape, k):
    ch = _raw_link(d, name, k)
    ch._write(struct.pack("<I", 0xFFFFFFFF))
    return [ch]


def nested_hello(d, name, shape, k):
    ch = _raw_link(d, name, k)
    ch.send(b"[" * 60000)
    return [ch]


def typed_fields(d, name, shape, k):
    """``rows: true`` and ``rows: 1.0`` with a payload of the right size."""
    ch = _link(d, k % 2, name)
    payload = _share(d, 1, shape)
    wire.send(ch, {"op": "query", "id": f"h{k}", "rows": True}, payload)
    wire.send(ch, {"op": "query", "id": f"h{k}f", "rows": 1.0}, payload)
    return [ch]


def claims_dealer(d, name, shape, k):
    """A client certificate that says it is the dealer."""
    ctx = d.tls_files().contexts(name)[1] if d.tls else None
    hello = {"rank": len(d.servers), "name": "dealer", "deployment": d.name}
    return [dial(d.server(k % 2).address, ctx, f"server-{k % 2}", hello, time.monotonic() + 5)]


ATTACKS = (rows_mismatch, lone_share(0), lone_share(1), oversized, oversized_hello, nested_hello,
           typed_fields, claims_dealer)


def hostile_client(d, name: str, shape, stop: threading.Event, counts: dict, pause: float = 0.2):
    """Cycle :data:`ATTACKS` until ``stop``; links are closed a moment after each attack."""
    k, held = 0, []
    while not stop.is_set():
        attack = ATTACKS[k % len(ATTACKS)]
        try:
            held.append((time.monotonic() + 2.0, attack(d, name, shape, k)))
            counts[attack.__name__] = counts.get(attack.__name__, 0) + 1
        except (CommError, OSError, ValueError):
            counts["refused_or_failed"] = counts.get("refused_or_failed", 0) + 1
        k += 1
        now = time.monotonic()
        for item in [h for h in held if h[0] <= now]:
            held.remove(item)
            for ch in item[1]:
                ch.close()
        stop.wait(pause)
    for _, links in held:
        for ch in links:
            ch.close()


def _phase(d, per_client, window: int, seconds: float, during=None) -> tuple[list, float]:
    records: list[list[dict[str, Any]]] = [[] for _ in per_client]
    t0 = time.perf_counter()
    until = t0 + seconds
    threads = [threading.Thread(target=run_client, name=f"bench-honest-{c}",
                                args=(d, xs, window, d.query_timeout + 5.0, records[c], lambda: None),
                                kwargs={"until": until, "backoff": 0.1})
               for c, xs in enumerate(per_client)]
    for t in threads:
        t.start()
    if during is not None:
        during(t0, until)
    for t in threads:
        t.join()
    return [r for rs in records for r in rs], time.perf_counter() - t0


def summarize(records: list, reference: torch.Tensor, rows: int, seconds: float) -> dict:
    out = score(records, reference, rows)
    out["throughput"] = out["answered"] * rows / seconds if seconds > 0 else None
    errs = [r for r in records if r["result"] is None and r["error"] is not None]
    out["errors_naming_a_party"] = sum(any(p in (r["message"] or "") for p in PARTY_NAMES)
                                       for r in errs)
    out["error_examples"] = sorted({(r["message"] or "")[:160] for r in errs})[:6]
    out["seconds"] = seconds
    return out


def run_hostile(d, quick, procs: dict, restart, wait_ready, per_client: list, window: int,
                seconds: float, reference: torch.Tensor, rows: int, shape, log) -> dict:
    """Both phases on a running deployment (see the module docstring); the ``hostile`` report."""
    log(f"clean phase: {len(per_client)} honest clients for {seconds:g} s")
    clean, clean_s = _phase(d, per_client, window, seconds)
    counts: dict[str, int] = {}
    kills: list[dict[str, Any]] = []
    stop = threading.Event()

    def chaos(t0: float, until: float) -> None:
        attacker = threading.Thread(target=hostile_client, args=(d, "client-b", shape, stop, counts),
                                    daemon=True, name="bench-hostile")
        attacker.start()
        try:
            for name, at in KILLS:
                time.sleep(max(0.0, t0 + at * (until - t0) - time.perf_counter()))
                t_kill = time.perf_counter()
                procs[name].kill()
                procs[name].wait()
                procs[name] = restart(name)
                try:
                    wait_ready(procs, 120.0)
                    ready = time.perf_counter() - t_kill
                except (TimeoutError, RuntimeError) as exc:
                    ready = None
                    log(f"after killing {name}: {exc}")
                kills.append({"party": name, "at_s": round(t_kill - t0, 2),
                              "serving_again_after_s": round(ready, 2) if ready else None})
                log(f"killed and restarted {name}; serving again after {ready and round(ready, 1)} s")
        finally:
            time.sleep(max(0.0, until - time.perf_counter()))
            stop.set()
            attacker.join(10.0)
    log(f"hostile phase: the same load, a hostile client and {len(KILLS)} kills")
    attacked, attacked_s = _phase(d, per_client, window, seconds, chaos)
    clean_r = summarize(clean, reference, rows, clean_s)
    hostile_r = summarize(attacked, reference, rows, attacked_s)
    ratio = (hostile_r["throughput"] / clean_r["throughput"]
             if clean_r["throughput"] and hostile_r["throughput"] else None)
    return {"clean": clean_r, "attacked": hostile_r, "attacks": counts, "kills": kills,
            "honest_ratio": ratio, "seconds_per_phase": seconds}
