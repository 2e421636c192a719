"""``ringlet serve`` on loopback processes: queries under concurrency, and every fault of issue 16."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch
from serving import HERE, LocalDeployment, inputs, wait_until

from ringlet.serve.wire import QueryError

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def dep(tmp_path_factory):
    d = LocalDeployment(tmp_path_factory.mktemp("serve"))
    try:
        yield d.start_all()
    finally:
        d.close()


def _close(out, ref, tol=0.01):
    return out.shape == ref.shape and float((out - ref).abs().max()) < tol


def test_concurrent_clients_get_their_own_logits(dep):
    x = inputs(36, seed=3)
    ref = dep.plain(x)
    results: dict = {}

    def one(name, lo, hi):
        with dep.client(name) as c:
            futures = []
            pos = lo
            while pos < hi:  # queries of 1, 2 or 3 rows, all in flight at once
                rows = 1 + pos % 3
                futures.append((pos, min(pos + rows, hi), c.submit(x[pos:min(pos + rows, hi)])))
                pos += rows
            for a, b, fut in futures:
                results[(a, b)] = fut.result(30)

    before = dep.metrics()
    threads = [threading.Thread(target=one, args=(name, 12 * i, 12 * (i + 1)))
               for i, name in enumerate(["client", "client-b", "client"])]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sum(b - a for a, b in results) == 36
    for (a, b), out in results.items():
        assert _close(out, ref[a:b]), (a, b, out, ref[a:b])
    after = dep.metrics()
    q, b = 'ringlet_queries_total{party="server-0"}', 'ringlet_batch_size_sum{party="server-0"}'
    assert after[q] - before[q] == len(results)
    rows = after[b] - before[b]
    assert rows == 36  # every row was computed once, in batches of at most max_batch
    assert after['ringlet_up{party="server-0"}'] == 1


def test_healthz_and_bad_queries(dep):
    import json
    import urllib.request
    host, port = dep.d.server(0).metrics
    health = json.loads(urllib.request.urlopen(f"http://{host}:{port}/healthz", timeout=5).read())
    assert health["ok"] and health["peers"] == [1] and health["dealer"]
    with dep.client() as c:
        with pytest.raises(ValueError, match="the model takes"):
            c.submit(torch.zeros(1, 3, 8, 8))
        with pytest.raises(ValueError, match="1..4 inputs"):
            c.submit(torch.zeros(5, 1, 8, 8))
        from ringlet.compiler.ranges import InputRangeError
        with pytest.raises(InputRangeError):
            c.submit(torch.full((1, 1, 8, 8), 100.0))


def test_a_client_killed_mid_query_leaves_the_others_and_its_batch_complete(dep):
    code = ("import sys, os, torch\n"
            "from ringlet.serve.client import Client\n"
            f"c = Client({str(dep.path)!r})\n"
            "c.submit(torch.zeros(3, 1, 8, 8))\n"
            "[ch.flush(5) for ch in c._links.values()]\n"
            "os._exit(0)\n")
    before = dep.metrics()['ringlet_batch_size_sum{party="server-0"}']
    x = inputs(4, seed=5)
    with dep.client("client-b") as other:
        fut = other.submit(x)
        subprocess.run([sys.executable, "-c", code], check=True, timeout=60,
                       env={"PYTHONPATH": ":".join([str(HERE), *sys.path])})
        assert _close(fut.result(30), dep.plain(x))
        wait_until(lambda: dep.metrics()['ringlet_batch_size_sum{party="server-0"}'] >= before + 7, 20,
                   "the killed client's query was not computed")
        assert _close(other.query(x[:1]), dep.plain(x[:1]))


def test_an_impostor_without_a_valid_certificate_is_rejected(dep, tmp_path):
    from ringlet.comm.base import PeerFailedError
    from ringlet.comm.certs import client_context, make_self_signed
    from ringlet.comm.mesh import dial
    cert, key = make_self_signed(tmp_path, "server-1")
    ctx = client_context(dep.d.ca, cert, key)
    hello = {"rank": 1, "name": "server-1", "deployment": dep.d.name}
    with pytest.raises(PeerFailedError):
        dial(dep.d.server(0).address, ctx, "server-0", hello, time.monotonic() + 5).recv_frame(
            time.monotonic() + 5, "anything")
    # a valid certificate of another name is not a server either
    from ringlet.comm.transport import TlsFiles
    client_ctx = TlsFiles.in_folder(dep.d.ca.parent, ["client"]).contexts("client")[1]
    with pytest.raises(PeerFailedError, match="certificate is for 'client'"):
        dial(dep.d.server(0).address, client_ctx, "server-0", hello, time.monotonic() + 5)
    x = inputs(2, seed=7)
    with dep.client() as c:  # the deployment serves on, undisturbed
        assert _close(c.query(x), dep.plain(x))
    assert "refused" in dep.log("server-0")


def test_sigterm_drains_then_refuses(tmp_path):
    dep = LocalDeployment(tmp_path, tls=False).start_all()
    try:
        x = inputs(8, seed=9)
        with dep.client() as c:
            c.query(x[:1])  # the client's links are up
            dep.kill("server-1", signal.SIGSTOP)  # no batch completes until every query is in
            futures = [c.submit(x[i:i + 1]) for i in range(8)]
            wait_until(lambda: dep.health(0)["waiting"] == 8, 30, "server-0 did not hold the 8 queries")
            dep.procs["server-0"].send_signal(signal.SIGTERM)
            wait_until(lambda: dep.metrics(0)['ringlet_draining{party="server-0"}'] == 1, 30,
                       "server-0 did not start draining")
            assert dep.health(0)["waiting"] == 8  # the drain begins with every query pending
            dep.kill("server-1", signal.SIGCONT)
            answered = [f.result(30) for f in futures]  # accepted queries are answered
            assert all(_close(a, dep.plain(x[i:i + 1])) for i, a in enumerate(answered))
            assert dep.procs["server-0"].wait(30) == 0
            with pytest.raises(QueryError, match="server-0"):
                c.query(x[:1])
    finally:
        dep.close()


def test_a_killed_server_is_named_and_the_pair_relinks_after_a_restart(tmp_path):
    dep = LocalDeployment(tmp_path, query_timeout=15).start_all()
    try:
        x = inputs(3, seed=11)
        with dep.client() as c:
            assert _close(c.query(x), dep.plain(x))
            dep.kill("server-1", signal.SIGSTOP)  # hung: queries stay pending …
            futures = [c.submit(x[i:i + 1]) for i in range(3)]
            wait_until(lambda: dep.health(0)["waiting"] == 3, 30, "server-0 did not hold the 3 queries")
            dep.kill("server-1")  # … then dead
            for f in futures:  # its death is seen ("… is gone"), not a timeout (query 15 s, message 20 s)
                with pytest.raises(QueryError, match="server-1") as err:
                    f.result(60)
                assert err.value.kind == "peer_failed" and re.search(r"server-1\)? is gone", str(err.value)), \
                    (err.value.kind, str(err.value))
        dep.start("server-1")
        dep.wait_ready(90)  # no manual step: the pair and the dealer link up again
        with dep.client() as c:
            assert _close(c.query(x), dep.plain(x))
    finally:
        dep.close()


def test_a_killed_dealer_leaves_the_pool_then_busy(tmp_path):
    dep = LocalDeployment(tmp_path, tls=False, metrics=False, max_batch=1, sizes=(1,), depth=2,
                          query_timeout=3).start_all()
    try:
        x = inputs(3, seed=13)
        dep.kill("dealer")
        with dep.client() as c:
            for i in range(2):  # the pool holds two batches
                assert _close(c.query(x[i:i + 1]), dep.plain(x[i:i + 1]))
            with pytest.raises(QueryError, match="busy") as err:
                c.query(x[2:3])  # answered by server-0 at the deadline, not the client's own timeout
            assert err.value.kind == "busy" and "no dealer is linked" in str(err.value), str(err.value)
        dep.start("dealer")
        dep.wait_ready(60)
        with dep.client() as c:
            assert _close(c.query(x[2:3]), dep.plain(x[2:3]))
    finally:
        dep.close()


def test_a_server_with_another_model_is_refused_at_start(tmp_path):
    from serving import save_weights
    dep = LocalDeployment(tmp_path, tls=False, metrics=False)
    try:
        save_weights(tmp_path / "other.safetensors", seed=2)
        other = dep.variant("other.toml", weights="other.safetensors")
        dep.start("server-0")
        dep.start("dealer")
        bad = dep.start("server-1", other)
        assert bad.wait(90) == 1
        assert "weights" in dep.log("server-1") and "differ" in dep.log("server-1")
        assert dep.procs["server-0"].poll() is None  # server 0 waits for a server with its model
        dep.start("server-1")
        dep.wait_ready(60)
        x = inputs(2, seed=15)
        with dep.client() as c:
            assert _close(c.query(x), dep.plain(x))
    finally:
        dep.close()


def test_a_deployment_that_is_not_up_is_an_error_naming_the_server(tmp_path):
    dep = LocalDeployment(tmp_path, tls=False, metrics=False)
    dep.raw["timeouts"]["connect"] = 2
    from ringlet import deploy
    d = deploy.from_dict(dep.raw, dep.path)
    from ringlet.serve.client import Client
    # the connect timeout (2 s) ends the wait, not the query timeout: the error says which
    with pytest.raises(QueryError, match=r"server-0: cannot connect \(server-0 at 127\.0\.0\.1:\d+ did not "
                                         r"answer within the connect timeout") as err:
        Client(d).query(inputs(1))
    assert err.value.kind == "unavailable"


def test_ringlet_query_and_certs_on_the_command_line(dep, tmp_path):
    import json

    import numpy as np
    from PIL import Image
    env = {"PYTHONPATH": ":".join([str(HERE), *sys.path])}
    x = inputs(2, seed=17)
    np.save(tmp_path / "x.npy", x.numpy())
    out = subprocess.run([sys.executable, "-m", "ringlet.cli.main", "query", "--deploy", str(dep.path),
                          "--input", str(tmp_path / "x.npy"), "--json"],
                         capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert _close(torch.tensor(got["logits"], dtype=torch.float64), dep.plain(x))
    pixels = (np.arange(64, dtype=np.uint8) * 4).reshape(8, 8)
    Image.fromarray(pixels).save(tmp_path / "img.png")
    out = subprocess.run([sys.executable, "-m", "ringlet.cli.main", "query", "--deploy", str(dep.path),
                          "--input", str(tmp_path / "img.png"), "--json"],
                         capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    img = torch.tensor(pixels, dtype=torch.float64).reshape(1, 1, 8, 8) / 255  # no normalisation stored
    assert _close(torch.tensor(json.loads(out.stdout)["logits"], dtype=torch.float64), dep.plain(img))
    # certs for one more client, signed by the deployment's CA; existing ones kept
    out = subprocess.run([sys.executable, "-m", "ringlet.cli.main", "certs", "--deploy", str(dep.path),
                          "--clients", "client-c", "--json"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    made = json.loads(out.stdout)
    assert made["made"] == ["client-c"] and "server-0" in made["kept"]
    from ringlet import deploy
    from ringlet.serve.client import Client
    raw = {**dep.raw, "parties": {**dep.raw["parties"], "client-c": {}}}
    with Client(deploy.from_dict(raw, dep.path), "client-c") as c:  # the new client is served
        assert _close(c.query(x[:1]), dep.plain(x[:1]))


def test_the_async_client_and_the_bytes_metrics(dep):
    import asyncio

    from ringlet.serve.client import AsyncClient
    x = inputs(6, seed=19)

    async def main():
        client = AsyncClient(dep.d)
        try:
            return await asyncio.gather(*(client.query(x[i:i + 2]) for i in range(0, 6, 2)))
        finally:
            client.close()
    before = dep.metrics()
    outs = asyncio.run(main())
    assert all(_close(o, dep.plain(x[i:i + 2])) for o, i in zip(outs, range(0, 6, 2)))
    after = dep.metrics()
    key = 'ringlet_bytes_total{direction="received",link="clients",party="server-0"}'
    assert after[key] - before.get(key, 0) == 6 * 64 * 8  # each server: one 64-bit share per pixel
    sent = 'ringlet_bytes_total{direction="sent",link="clients",party="server-0"}'
    assert after[sent] - before.get(sent, 0) == 6 * 10 * 8  # its share of 10 logits per row
