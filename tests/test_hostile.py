"""Hostile clients against a loopback deployment of the tiny model (issue 26): one test per attack.

Each test holds a real client certificate of the deployment (``client-b``) and asserts, around
its attack: honest clients' answers equal plaintext with bounded latency, both servers alive,
server RSS growth under 200 MB, and file descriptors and threads back to their baseline.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from serving import HERE, LocalDeployment, inputs, wait_until

from ringlet.comm.base import CommError, PeerFailedError
from ringlet.comm.mesh import dial
from ringlet.ring import Ring
from ringlet.serve import wire
from ringlet.serve.wire import QueryError

pytestmark = pytest.mark.slow
SERVERS = ("server-0", "server-1")
QUERY_TIMEOUT = 3.0


@pytest.fixture(scope="module")
def dep(tmp_path_factory):
    d = LocalDeployment(tmp_path_factory.mktemp("hostile"), max_wait_ms=30, query_timeout=QUERY_TIMEOUT,
                        timeouts={"idle": 4, "frame": 2, "message": 10},
                        limits={"in_flight": 8, "links": 4}, metrics_all=True)
    try:
        yield d.start_all()
    finally:
        d.close()


def usage(dep) -> dict:
    """{server: (RSS MB, open fds, threads)} read from /proc."""
    out = {}
    for name in SERVERS:
        pid = dep.procs[name].pid
        status = Path(f"/proc/{pid}/status").read_text()
        rss = int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024
        threads = int(re.search(r"Threads:\s+(\d+)", status).group(1))
        out[name] = (rss, len(os.listdir(f"/proc/{pid}/fd")), threads)
    return out


def honest(dep, n: int = 4, seed: int = 0, limit_s: float = 2.5) -> list[float]:
    """``n`` honest queries, each checked against plaintext torch; their latencies."""
    x = inputs(n, seed=seed)
    ref = dep.plain(x)
    latencies = []
    with dep.client("client") as c:
        for i in range(n):
            t0 = time.monotonic()
            out = c.query(x[i:i + 1])
            latencies.append(time.monotonic() - t0)
            assert float((out - ref[i:i + 1]).abs().max()) < 0.01, (out, ref[i:i + 1])
    assert max(latencies) < limit_s, latencies
    return latencies


@contextlib.contextmanager
def guarded(dep):
    """Around an attack: honest queries before and after, servers alive, resources back."""
    honest(dep, 2, seed=1)
    time.sleep(0.3)
    base = usage(dep)
    yield
    for name in SERVERS:
        assert dep.procs[name].poll() is None, f"{name} died\n{dep.logs()}"
    honest(dep, 4, seed=2)

    def settled():
        now = usage(dep)
        return all(now[s][1] <= base[s][1] + 2 and now[s][2] <= base[s][2] + 2 for s in SERVERS)
    try:
        wait_until(settled, 15, "file descriptors and threads back to their baseline")
    except TimeoutError:
        raise AssertionError(f"before {base}, after {usage(dep)}") from None
    now = usage(dep)
    for s in SERVERS:
        assert now[s][0] - base[s][0] < 200, (s, base[s], now[s])


def raw_link(dep, server: int, name: str = "client-b"):
    ctx = dep.d.tls_files().contexts(name)[1]
    hello = {"rank": -1, "name": name, "deployment": dep.d.name}
    return dial(dep.d.server(server).address, ctx, f"server-{server}", hello, time.monotonic() + 10)


def send_query(ch, qid: str, rows: int, share_rows: int | None = None) -> None:
    share = Ring(64).wire(torch.zeros(share_rows or rows, 1, 8, 8, dtype=torch.int64)).numpy()
    wire.send(ch, {"op": "query", "id": qid, "rows": rows}, share)


def answers(ch, n: int, timeout: float = 15.0) -> list[dict]:
    return [wire.recv(ch, timeout, "an answer", payload_limit=1 << 20)[0] for _ in range(n)]


def closed_by_server(ch, within: float) -> bool:
    """Whether the server closes ``ch`` within ``within`` seconds (frames before that are read)."""
    deadline = time.monotonic() + within
    try:
        while True:
            ch.recv_frame(deadline, "anything", limit=1 << 20)
    except PeerFailedError:
        return True
    except CommError:
        return False


def test_halves_that_differ_in_rows_are_refused_on_both_servers(dep):
    """Attack 1 and 2: rows 1 at server 0 and 2 (or 4) at server 1 for one id, in a batch with
    honest queries: refused on both servers naming the field; the honest rows stay in place."""
    x = inputs(12, seed=31)
    ref = dep.plain(x)
    with guarded(dep):
        links = [raw_link(dep, 0), raw_link(dep, 1)]
        with dep.client("client") as c:
            c.query(x[:1])  # the honest client's links are up before the attack
            for k, (rows0, rows1) in enumerate([(1, 2), (1, 4), (2, 1), (1, 2)]):
                qid = f"mismatch-{k}"
                send_query(links[0], qid, rows0)
                send_query(links[1], qid, rows1)
                futures = [(i, c.submit(x[i:i + 1])) for i in range(3 * k, 3 * k + 3)]
                for i, fut in futures:
                    assert float((fut.result(10) - ref[i:i + 1]).abs().max()) < 0.01
                for ch in links:
                    (h,) = answers(ch, 1)
                    assert h["op"] == "error" and h["kind"] == "bad_input" and h["id"] == qid, h
                    assert f"rows: {rows0} at server-0, {rows1} at server-1" in h["message"], h
        for ch in links:
            ch.close()


def test_oversized_frames_close_only_their_link(dep):
    """Attack 3: a length of 2^32-1 as the hello, as a query header and as a payload."""
    with guarded(dep):
        for _ in range(3):
            ctx = dep.d.tls_files().contexts("client-b")[1]
            sock = socket.create_connection(dep.d.server(0).address, timeout=5)
            from ringlet.comm.channel import Channel
            ch = Channel.open(sock, "server-0", ctx, False, 5)
            ch._write(struct.pack("<I", 0xFFFFFFFF))  # as the hello
            assert closed_by_server(ch, 5)
            ch.close()
            for server in (0, 1):
                ch = raw_link(dep, server)
                ch._write(struct.pack("<I", 0xFFFFFFFF))  # as a query header
                assert closed_by_server(ch, 5)
                ch.close()
                ch = raw_link(dep, server)
                ch.send(b'{"op": "query", "id": "big", "rows": 1}')
                ch._write(struct.pack("<I", 0xFFFFFFF0))  # as its payload
                assert closed_by_server(ch, 5)
                ch.close()
    m = dep.metrics(0)
    assert m['ringlet_link_errors_total{kind="oversized",party="server-0"}'] >= 6


def test_shares_sent_to_server_0_only_stall_no_one(dep):
    """Attack 4: two shares a second at server 0 only; honest queries meanwhile keep their pace,
    and each lone share is answered 'timeout' naming server-1 at its deadline."""
    with guarded(dep):
        ch = raw_link(dep, 0)
        sent = 0
        t_end = time.monotonic() + 4
        latencies = []
        while time.monotonic() < t_end:
            slot = time.monotonic() + 0.5  # two a second: under the limit of 8 in flight
            send_query(ch, f"lone0-{sent}", 1)
            sent += 1
            latencies += honest(dep, 2, seed=sent)
            time.sleep(max(0.0, slot - time.monotonic()))
        got = answers(ch, sent, timeout=QUERY_TIMEOUT + 10)
        assert all(h["kind"] == "timeout" and "server-1 never received its share" in h["message"]
                   for h in got), got
        assert len(latencies) >= 6 and max(latencies) < 2.5, latencies
        ch.close()


def test_shares_sent_to_server_1_only_expire_and_the_limit_per_client_holds(dep):
    """Attack 5: ten shares at server 1 only: eight are kept (the limit in flight), two refused
    at once; the eight expire at their deadline naming server-0; nothing stays waiting."""
    with guarded(dep):
        ch = raw_link(dep, 1)
        for k in range(10):
            send_query(ch, f"lone1-{k}", 1)
        got = answers(ch, 10, timeout=QUERY_TIMEOUT + 10)
        kinds = sorted(h["kind"] for h in got)
        assert kinds == ["limit"] * 2 + ["timeout"] * 8, got
        assert all("server-0 never ordered it" in h["message"] for h in got if h["kind"] == "timeout")
        with dep.client() as c:
            assert [s["waiting"] for s in c.status()] == [0, 0]
        ch.close()


def test_a_dealer_that_dies_mid_entry_is_reconciled(dep):
    """Attack 6: a dealer streams an entry to server 0 only and dies; server 0 holds an entry
    server 1 lacks. It is never ordered, and the next dealer's epoch drops it everywhere."""
    from ringlet.comm.mesh import MeshCommunicator
    from ringlet.protocols.catalog import material_kinds
    from ringlet.serve.pool import DealerPool, json_tensor
    with guarded(dep):
        dep.kill("dealer")
        hello = {"rank": 2, "name": "dealer", "deployment": dep.d.name}
        ctx = dep.d.tls_files().contexts("dealer")[1]
        deadline = time.monotonic() + 15
        channels = {}
        for r in (0, 1):
            while r not in channels:
                try:
                    channels[r] = dial(dep.d.server(r).address, ctx, f"server-{r}", hello,
                                       time.monotonic() + 5)
                except CommError:
                    assert time.monotonic() < deadline, "the servers kept the killed dealer's place"
                    time.sleep(0.2)
        comm = MeshCommunicator(2, 3, channels, 10, {0: "server-0", 1: "server-1"})
        pool = DealerPool(comm, [0, 1], 1, "dying", lambda m: None, material_kinds())
        dealer, plans = pool.start(10)

        class ToServer0Only:  # the dealer dies before server 1's part of the entry leaves
            def send(self, dst, items, step=""):
                if dst == 0:
                    comm.send(dst, items, step)

            def flush(self):
                comm.flush()
        for s in (0, 1):
            comm.send(s, [("setup", json_tensor({"size": 1, "key": ["dying", 0]}))], "pool")
        dealer.comm = ToServer0Only()
        for req in plans[1]:
            dealer.send_material(req)
        comm.flush()
        time.sleep(0.5)
        comm.close()
        x = inputs(5, seed=41)
        with dep.client() as c:  # the two old entries of shape 1 serve; the orphan is never
            for i in range(2):  # ordered
                assert float((c.query(x[i:i + 1]) - dep.plain(x[i:i + 1])).abs().max()) < 0.01
            with pytest.raises(QueryError) as err:
                c.query(x[2:3])
            assert err.value.kind == "busy" and "no dealer is linked" in str(err.value), str(err.value)
        dep.start("dealer")
        dep.wait_ready(60)
        assert "1 entries held by only some servers dropped" in dep.log("dealer")
        assert "dropped 1 pool entries that another server lacks" in dep.log("server-0")


def test_a_second_dealer_is_refused_naming_both(dep):
    cmd = [sys.executable, "-m", "ringlet.cli.main", "serve", "--deploy", str(dep.path),
           "--role", "dealer", "--threads", "1"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), *sys.path]))
    log = dep.folder / "dealer2.log"
    with guarded(dep):
        with open(log, "wb") as fh:
            proc = subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT)
        try:
            wait_until(lambda: "a dealer is already linked" in log.read_text(), 30,
                       "the second dealer was not refused")
        finally:
            proc.kill()
            proc.wait(10)
    text = log.read_text()
    assert "a deployment has one dealer" in text and "(from 127.0.0.1:" in text
    assert "the dealer at 127.0.0.1:" in text


def test_a_stalled_dealer_is_dropped_and_its_return_starts_a_new_epoch(dep):
    """Attack 6 (stall): SIGSTOP the dealer longer than the message timeout, then SIGCONT."""
    with guarded(dep):
        before = dep.log("dealer").count("linked to 2 servers")
        dep.kill("dealer", signal.SIGSTOP)
        try:
            wait_until(lambda: "the dealer went silent" in dep.log("server-0") and
                       "the dealer went silent" in dep.log("server-1"), 30,
                       "the servers did not drop the silent dealer")
        finally:
            dep.kill("dealer", signal.SIGCONT)
        wait_until(lambda: dep.log("dealer").count("linked to 2 servers") > before, 30,
                   "the dealer did not link again")
        dep.wait_ready(60)


def test_garbled_hellos_and_fields_leave_no_thread_or_socket_behind(dep):
    """Attack 7: hellos nested 60 000 deep, hellos that are not objects, ``rows: true``."""
    ctx = dep.d.tls_files().contexts("client-b")[1]
    from ringlet.comm.channel import Channel
    with guarded(dep):
        for k in range(20):
            sock = socket.create_connection(dep.d.server(k % 2).address, timeout=5)
            ch = Channel.open(sock, "server", ctx, False, 5)
            ch.send(b"[" * 60000 if k % 4 < 2 else b"[1, 2, 3]")
            assert closed_by_server(ch, 5)
            ch.close()
        for k in range(10):
            ch = raw_link(dep, k % 2)
            wire.send(ch, {"op": "query", "id": f"typed-{k}", "rows": True}, b"\0" * 512)
            (h,) = answers(ch, 1)
            assert h["kind"] == "bad_input" and "rows True" in h["message"], h
            wire.send(ch, {"op": "query", "id": f"typed-{k}", "rows": 1.0}, b"\0" * 512)
            (h,) = answers(ch, 1)
            assert h["kind"] == "bad_input", h
            ch.close()


def test_idle_slow_and_too_many_links_are_closed(dep):
    with guarded(dep):
        idle = raw_link(dep, 0)
        t0 = time.monotonic()
        assert closed_by_server(idle, 10) and time.monotonic() - t0 > 3  # [timeouts] idle = 4
        idle.close()
        slow = raw_link(dep, 1)
        header = b'{"op": "info"}' + b" " * 86
        slow._write(struct.pack("<I", len(header)))
        t0 = time.monotonic()
        for b in header[:8]:  # one byte every half second: over the frame limit of 2 s
            try:
                slow._write(bytes([b]))
            except OSError:
                break
            time.sleep(0.5)
        assert closed_by_server(slow, 5) and time.monotonic() - t0 < 8
        slow.close()
        links = [raw_link(dep, 0) for _ in range(4)]  # [limits] links = 4
        extra = raw_link(dep, 0)
        (h,) = answers(extra, 1)
        assert h["kind"] == "limit" and "client-b already holds 4 links" in h["message"], h
        for ch in [*links, extra]:
            ch.close()


def test_the_client_names_the_server_that_did_not_answer(dep):
    from concurrent.futures import Future

    from ringlet.serve.client import Client, _Pending
    c = Client(dep.d)
    pend = _Pending(1, 2)
    pend.parts[0] = torch.zeros(1)
    c._pending["q1"] = pend
    err = c._late(pend.future, 2.0)
    assert err.kind == "timeout" and isinstance(err, TimeoutError)
    assert "server-1 did not answer within 2 s (server-0 did)" in str(err)
    assert pend.future.done() and "q1" not in c._pending
    assert "no answer" in str(c._late(Future(), 1.0))


def test_a_client_certificate_made_later_is_usable_by_name(dep):
    out = subprocess.run([sys.executable, "-m", "ringlet.cli.main", "certs", "--deploy",
                          str(dep.path), "--clients", "client-late"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    x = inputs(1, seed=43)
    with dep.client("client-late") as c:  # not a party of the file: its certificate is in the folder
        assert float((c.query(x) - dep.plain(x)).abs().max()) < 0.01


def test_sigterm_drain_is_bounded_by_the_query_timeout(dep):
    """Shares only server 1 holds do not keep its drain from ending."""
    ch = raw_link(dep, 1)
    for k in range(5):
        send_query(ch, f"drain-{k}", 1)
    time.sleep(0.3)
    t0 = time.monotonic()
    dep.procs["server-1"].send_signal(signal.SIGTERM)
    assert dep.procs["server-1"].wait(QUERY_TIMEOUT + 10) == 0
    assert time.monotonic() - t0 < QUERY_TIMEOUT + 5
    ch.close()
    dep.start("server-1")
    dep.wait_ready(90)
    honest(dep, 2, seed=5)
