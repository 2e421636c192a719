"""A real shaped link between network namespaces (root only), and the shaper's accuracy check.

``tc netem`` is unavailable here, but the token-bucket ``tbf`` qdisc works inside a namespace: two
namespaces joined by a veth pair, each end rate-limited to the profile's bandwidth. There is no way
to add latency this way, so only bandwidth profiles are real (``lan``, ``highbw``, ``wan``).

``ringlet bench link`` times a transfer of M megabytes and R small rounds between two parties through
the transport shaper and, with ``--real``, through the namespaces, next to the expected time.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from typing import Any

from ringlet.comm.shaper import LinkProfile, profile
from ringlet.comm.transport import TransportSpec, free_port, open_communicator
from ringlet.runtime.launch import run_local


def can_use_namespaces() -> bool:
    return os.geteuid() == 0 and shutil.which("ip") is not None and shutil.which("tc") is not None


def _sh(*cmd: str) -> None:
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed: {res.stderr.strip()}")


@contextmanager
def shaped_namespaces(link: LinkProfile, tag: str | None = None):
    """Namespaces A (10.79.x.1) and B (10.79.x.2) joined by a veth pair shaped by ``tbf``."""
    if not can_use_namespaces():
        raise RuntimeError("a real shaped link needs root, iproute2 and tc (network namespaces)")
    if link.rtt_s:
        raise ValueError(f"profile {link.name}: tbf cannot add latency; use a bandwidth-only profile")
    tag = tag or str(os.getpid() % 50000)
    na, nb, va, vb = f"rga{tag}", f"rgb{tag}", f"va{tag}", f"vb{tag}"
    net = 10 + int(tag) % 200
    rate = int(link.bandwidth_bps)
    burst = max(int(rate / 8 * 0.004), 64 * 1024)  # 4 ms of traffic, at least 64 KiB
    _sh("ip", "netns", "add", na)
    try:
        _sh("ip", "netns", "add", nb)
        _sh("ip", "link", "add", va, "netns", na, "type", "veth", "peer", "name", vb, "netns", nb)
        for ns, dev, ip in ((na, va, f"10.79.{net}.1/24"), (nb, vb, f"10.79.{net}.2/24")):
            _sh("ip", "netns", "exec", ns, "ip", "addr", "add", ip, "dev", dev)
            _sh("ip", "netns", "exec", ns, "ip", "link", "set", dev, "up")
            _sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
            _sh("ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", dev, "root", "tbf", "rate",
                f"{rate}bit", "burst", str(burst), "latency", "100ms")
        yield {"a": na, "b": nb, "ip_a": f"10.79.{net}.1", "ip_b": f"10.79.{net}.2"}
    finally:
        subprocess.run(["ip", "netns", "del", na], capture_output=True)
        subprocess.run(["ip", "netns", "del", nb], capture_output=True)


def _exchange(comm, peer: int, megabytes: float, rounds: int) -> float:
    import torch
    big = torch.zeros(int(megabytes * 1e6) // 8, dtype=torch.int64)
    small = torch.zeros(1, dtype=torch.int64)
    comm.round("other", {peer: [("other", small)]}, [peer], "warmup")
    t0 = time.perf_counter()
    comm.round("other", {peer: [("other", big)]}, [peer], "bulk")
    for _ in range(rounds):
        comm.round("other", {peer: [("other", small)]}, [peer], "ping")
    return time.perf_counter() - t0


class _Pair:
    """The world of the link test: two parties and nobody else (what open_communicator reads of a
    :class:`ringlet.session.World`; the tcp transport reads ``size`` and ``names`` only)."""

    size = 2
    dealer = 2  # no party is the dealer
    client = None

    def role(self, rank: int) -> str:
        return "server"

    def names(self) -> dict[int, str]:
        return {0: "server-0", 1: "server-1"}


def _transfer_main(rank: int, master: str, megabytes: float, rounds: int) -> None:
    """Entry point of one process of the real-link transfer (``python -m ringlet.bench.netlink``)."""
    host, port = master.rsplit(":", 1)
    # two network namespaces made by this bench, on this host: gloo off loopback is meant here
    spec = TransportSpec("gloo", master=(host, int(port)), insecure_plain_tcp=True)
    comm = open_communicator(spec, rank, _Pair(), 120)
    seconds = _exchange(comm, 1 - rank, megabytes, rounds)
    comm.close()
    print(f"{seconds:.6f}")


def measure_shaper(link: LinkProfile, megabytes: float = 8.0, rounds: int = 20) -> float:
    res = run_local(lambda sess: _exchange(sess.comm, 1 - sess.rank, megabytes, rounds), 2, link=link)
    return max(res.results)


def measure_real(link: LinkProfile, megabytes: float = 8.0, rounds: int = 20) -> float:
    with shaped_namespaces(link) as ns:
        master = f"{ns['ip_a']}:{free_port()}"
        cmd = [sys.executable, "-m", "ringlet.bench.netlink"]
        procs = [subprocess.Popen(["ip", "netns", "exec", ns[side]] + cmd + [str(r), master,
                                                                          str(megabytes), str(rounds)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for r, side in ((0, "a"), (1, "b"))]
        outs = [p.communicate(timeout=300) for p in procs]
        for p, (_out, err) in zip(procs, outs):
            if p.returncode:
                raise RuntimeError(f"real-link transfer failed: {err.strip()[-500:]}")
        return max(float(out.strip().splitlines()[-1]) for out, _ in outs)


def link_bench(name: str, rtt_ms: float | None = None, megabytes: float = 8.0, rounds: int = 20,
               real: bool = False) -> dict:
    link = profile(name, rtt_ms)
    # a symmetric round costs the transfer plus one one-way latency (RTT / 2)
    expected = link.transfer_seconds(int(megabytes * 1e6)) + (rounds + 1) * link.rtt_s / 2
    out: dict[str, Any] = {"link": link.to_dict(), "megabytes": megabytes, "rounds": rounds,
           "expected_seconds": expected,
           "shaper_seconds": measure_shaper(link, megabytes, rounds)}
    out["shaper_error"] = out["shaper_seconds"] / out["expected_seconds"] - 1
    if real:
        out["real_seconds"] = measure_real(link, megabytes, rounds)
        out["real_error"] = out["real_seconds"] / out["expected_seconds"] - 1
    return out


if __name__ == "__main__":  # pragma: no cover - run by measure_real in a namespace
    _transfer_main(int(sys.argv[1]), sys.argv[2], float(sys.argv[3]), int(sys.argv[4]))


def run_real_inference(model: str, link: LinkProfile, samples: int, batch: int,
                       party_args: list[str], dataset: str | None = None, timeout: float = 900) -> dict:
    """A private inference with server 1 behind a real shaped link (server 0, dealer and client in
    namespace A, server 1 in namespace B); returns server 0's JSON report. ``timeout`` bounds every
    message wait: the client waits for a whole batch, which on a slow link takes minutes."""
    import json

    with shaped_namespaces(link) as ns:
        master = f"{ns['ip_a']}:{free_port()}"
        base = [sys.executable, "-m", "ringlet.cli.main", "party", "--world-size", "2",
                "--master", master, "--timeout", str(timeout)]
        spec = [(ns["a"], ["--role", "server", "--rank", "0", "--model", model, "--json"] + party_args),
                (ns["b"], ["--role", "server", "--rank", "1", "--model", model] + party_args),
                (ns["a"], ["--role", "dealer"])]
        procs = [subprocess.Popen(["ip", "netns", "exec", n] + base + a, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for n, a in spec]
        client = ["--role", "client", "--samples", str(samples), "--batch", str(batch), "--json"]
        if dataset:
            client += ["--dataset", dataset]
        res = subprocess.run(["ip", "netns", "exec", ns["a"]] + base + client, capture_output=True,
                             text=True, timeout=4 * timeout)
        outs = [p.communicate(timeout=timeout) for p in procs]
        if res.returncode or any(p.returncode for p in procs):
            errs = [res.stderr] + [e for _, e in outs]
            raise RuntimeError("real-link inference failed: " + " | ".join(e.strip()[-300:] for e in errs if e))
        return {**json.loads(outs[0][0]), "client": json.loads(res.stdout)}
