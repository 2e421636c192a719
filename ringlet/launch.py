"""Run a secure computation with every party on this machine: threads, or processes over TCP.

A *program* is a function ``program(sess) -> result`` that every server runs (SPMD); the optional
client runs ``client(sess) -> result``; the dealer runs its service loop. With ``pregenerate=True``
the computation runs once to record its request plan, the dealer then produces all material for
that plan, and the computation runs again: only this second run is the *online* phase that
``seconds_online`` and the online byte counts describe.
"""

from __future__ import annotations

import os
import pickle
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ringlet.comm.base import CommError, CommStats, PeerFailedError
from ringlet.comm.local import LocalHub
from ringlet.offline import Dealer
from ringlet.prng import AesCtrStream
from ringlet.ring import FixedPoint
from ringlet.session import Session, World, establish_seeds

Program = Callable[[Session], Any]


class PartyError(RuntimeError):
    """A party of a local run failed; the message names it and gives its error."""


@dataclass
class PartyReport:
    """What one party did: its result, online and total traffic, and times."""

    rank: int
    role: str
    result: Any = None
    online: CommStats = field(default_factory=CommStats)
    offline: CommStats = field(default_factory=CommStats)  # the pre-generation phase, if any
    total: CommStats = field(default_factory=CommStats)
    seconds_online: float = 0.0
    seconds_offline: float = 0.0
    error: str | None = None
    error_type: str | None = None
    peak_rss_mb: float = 0.0  # the process's peak resident memory (all parties, for threads)
    tls_overhead_bytes: int = 0  # bytes on this party's links beyond the frames (TLS records)


@dataclass
class RunResult:
    """Reports of every party of a run, by rank."""

    world: World
    reports: dict[int, PartyReport]

    @property
    def servers(self) -> list[PartyReport]:
        return [self.reports[r] for r in self.world.servers]

    @property
    def results(self) -> list[Any]:
        """Results of the servers, by rank."""
        return [r.result for r in self.servers]

    @property
    def client_result(self) -> Any:
        return self.reports[self.world.client].result if self.world.has_client else None

    def max_sent(self, exclude=("offline", "setup", "input", "output")) -> int:
        """Online bytes sent, the maximum over servers (server↔server traffic)."""
        return max(r.online.bytes_sent(exclude=exclude) for r in self.servers)

    def rounds(self, exclude=("offline", "setup", "input", "output")) -> int:
        return max(r.online.total_rounds(exclude=exclude) for r in self.servers)

    def offline_bytes(self) -> int:
        """Dealer material (corrections) received by all servers for the online computation."""
        return sum(r.offline.bytes_received(tags=("offline",)) +
                   r.online.bytes_received(tags=("offline",)) for r in self.servers)

    @property
    def seconds_online(self) -> float:
        return max(r.seconds_online for r in self.servers)

    @property
    def seconds_offline(self) -> float:
        return max(r.seconds_offline for r in self.servers)


def run_party(comm, world: World, program: Program | None, client: Program | None,
              master_seed: bytes | None, pregenerate: bool, frac_bits: int,
              threads: int = 0, link=None, ring_bits: int = 64) -> PartyReport:
    """Run one party (server program, client program or the dealer) on an open communicator.

    ``link`` (a :class:`~ringlet.comm.shaper.LinkProfile`) shapes every message this party sends.
    """
    if threads:
        torch.set_num_threads(threads)
    if link is not None:
        from ringlet.comm.shaper import LinkShaper
        comm.shaper = LinkShaper(link)
    rank = comm.rank
    report = PartyReport(rank, world.role(rank))
    seeds = establish_seeds(comm, world, master_seed)
    if report.role == "dealer":
        dealer = Dealer(comm, {s: AesCtrStream(seed) for s, seed in seeds.dealer.items()},
                        ring=FixedPoint(frac_bits, ring_bits).ring)
        t0 = time.perf_counter()
        dealer.serve()
        report.seconds_offline = time.perf_counter() - t0
        report.total = comm.stats.copy()
        report.peak_rss_mb = _peak_rss_mb()
        return report
    sess = Session(comm, world, seeds, FixedPoint(frac_bits, ring_bits))
    fn = program if report.role == "server" else client
    if fn is None:
        raise ValueError(f"no program given for the {report.role}")
    try:
        if pregenerate:
            fn(sess)  # recording run: the plan of dealer requests
            before = comm.stats.copy()
            t0 = time.perf_counter()
            if sess.offline is not None:
                sess.offline.pregenerate(sess.offline.plan)
            report.seconds_offline = time.perf_counter() - t0
            report.offline = comm.stats.minus(before)
        sess.barrier()
        before = comm.stats.copy()
        t0 = time.perf_counter()
        report.result = fn(sess)
        report.seconds_online = time.perf_counter() - t0
        report.online = comm.stats.minus(before)
        sess.barrier()
    finally:
        if sess.offline is not None and rank == 0:
            try:
                sess.offline.stop_dealer()
                comm._flush()
            except CommError:
                pass
    report.total = comm.stats.copy()
    report.peak_rss_mb = _peak_rss_mb()
    return report


def _peak_rss_mb() -> float:
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _root_cause(reports: dict[int, PartyReport], world: World) -> str:
    failed = [r for r in reports.values() if r.error]
    primary = [r for r in failed if r.error_type not in ("PeerFailedError",)] or failed
    lines = [f"{world.role(r.rank)} {r.rank}: {r.error}" for r in primary]
    return "; ".join(lines)


def run_local(program: Program, parties: int = 2, *, client: Program | None = None,
              transport: str = "local", timeout: float = 60.0, master_seed: bytes | None = None,
              pregenerate: bool = False, frac_bits: int = 16, threads: int = 0,
              port: int | None = None, link=None, ring_bits: int = 64) -> RunResult:
    """Run ``program`` on ``parties`` servers (+ dealer, + client if given) on this machine.

    ``transport``: ``local`` (threads in this process) or one process per party over loopback:
    ``tcp`` (gloo), ``socket`` (direct links) or ``tls`` (direct links in TLS 1.3, with a development
    CA and party certificates made for the run); ``program`` and ``client`` must then be importable
    top-level functions.
    ``link`` shapes every party's messages with a link profile (bandwidth, round-trip time).
    ``threads`` (torch threads per party; 0 = automatic): with ``tcp`` every party is a process, and
    the servers compute at the same time, so each gets the cores divided by the number of servers —
    torch's default (all cores in every process) oversubscribes the machine and runs many times
    slower. With ``local`` the parties share one process and torch's default is kept.
    Raises :class:`PartyError` naming the failing party if any party fails.
    """
    if not timeout > 0:
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout}")
    world = World(parties, has_client=client is not None)
    if threads == 0 and transport != "local":
        threads = max(1, (os.cpu_count() or 1) // parties)
    FixedPoint(frac_bits, ring_bits)  # a bad format fails here, before any party starts
    args = (world, program, client, master_seed, pregenerate, frac_bits, threads, link, ring_bits)
    if transport == "local":
        reports = _run_threads(world, args, timeout)
    elif transport in ("tcp", "socket", "tls"):
        reports = _run_processes(world, args, timeout, port, transport)
    else:
        raise ValueError(f"unknown transport {transport!r} (local, tcp, socket or tls)")
    if any(r.error for r in reports.values()):
        raise PartyError(_root_cause(reports, world))
    return RunResult(world, reports)


def _run_threads(world: World, args, timeout: float) -> dict[int, PartyReport]:
    hub = LocalHub(world.size)
    reports: dict[int, PartyReport] = {}

    def body(rank: int) -> None:
        comm = hub.communicator(rank, timeout, world.names())
        try:
            reports[rank] = run_party(comm, *args)
        except BaseException as exc:  # noqa: BLE001 - reported to the caller
            hub.fail(rank, f"{type(exc).__name__}: {exc}")
            reports[rank] = PartyReport(rank, world.role(rank), error=_format(exc),
                                        error_type=type(exc).__name__)

    threads = [threading.Thread(target=body, args=(r,), name=f"ringlet-{world.role(r)}-{r}",
                                daemon=True) for r in range(world.size)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return reports


def _format(exc: BaseException) -> str:
    if isinstance(exc, (CommError, ValueError, TimeoutError)):
        return f"{type(exc).__name__}: {exc}"
    return f"{type(exc).__name__}: {exc}\n{''.join(traceback.format_tb(exc.__traceback__)[-3:])}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _process_body(rank: int, spec, timeout: float, args) -> PartyReport:
    from ringlet.comm.transport import open_communicator
    world = args[0]
    comm = None
    try:
        comm = open_communicator(spec, rank, world, timeout)
        report = run_party(comm, *args)
        report.tls_overhead_bytes = comm.tls_overhead_bytes()
    except BaseException as exc:  # noqa: BLE001
        report = PartyReport(rank, world.role(rank), error=_format(exc), error_type=type(exc).__name__)
    if comm is not None:
        try:
            comm.close()
        except CommError:
            pass
    return report


def child_main(job_path: str) -> None:
    """A party process of :func:`_run_processes`: run the job its parent wrote, write the report.

    The job and the report are pickled by our own parent and by this process (a private temporary
    folder; nothing untrusted is unpickled). Started as ``python -c``, the process never imports
    the user's ``__main__``, so a plain script without an ``if __name__ == "__main__"`` guard can
    call ``transport="tcp"``.
    """
    job = Path(job_path)
    rank, spec, timeout, args = pickle.loads(job.read_bytes())
    report = _process_body(rank, spec, timeout, args)
    out = job.with_suffix(".report")
    tmp = out.with_suffix(".part")
    tmp.write_bytes(pickle.dumps(report))  # tensors inline
    tmp.replace(out)


def _check_importable(fn, what: str) -> None:
    target = getattr(fn, "func", fn)
    if getattr(target, "__module__", None) == "__main__":
        raise ValueError(f"with transport='tcp' every party is a new process: the {what} program "
                         f"{getattr(target, '__name__', target)!r} must be importable (defined in a "
                         f"module, not in the script being run)")


def _loopback_spec(world: World, transport: str, port: int | None, tmp: str):
    from ringlet.comm.transport import TlsFiles, TransportSpec, party_name
    if transport == "tcp":
        from ringlet.comm.transport import warn_plain_tcp
        warn_plain_tcp()
        return TransportSpec("tcp", master=("127.0.0.1", port or free_port()))
    addresses = {r: ("127.0.0.1", free_port()) for r in world.servers}
    tls = None
    if transport == "tls":
        from ringlet.comm.certs import make_dev_certs
        names = [party_name(world, r) for r in range(world.size)]
        make_dev_certs(Path(tmp) / "certs", names)
        tls = TlsFiles.in_folder(Path(tmp) / "certs", names)
    return TransportSpec(transport, addresses=addresses, tls=tls, deployment=f"local-{os.getpid()}")


def _run_processes(world: World, args, timeout: float, port: int | None,
                   transport: str = "tcp") -> dict[int, PartyReport]:
    _, program, client = args[:3]
    _check_importable(program, "server")
    if client is not None:
        _check_importable(client, "client")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    reports: dict[int, PartyReport] = {}
    with tempfile.TemporaryDirectory(prefix="ringlet-run-") as tmp:
        spec = _loopback_spec(world, transport, port, tmp)
        procs = {}
        for rank in range(world.size):
            job = Path(tmp) / f"party-{rank}.job"
            # each process gets its own role's program only: the client's inputs never reach a
            # server's or the dealer's process, the servers' model never the client's
            role = world.role(rank)
            mine = (args[0], program if role == "server" else None, client if role == "client" else None,
                    *args[3:])
            job.write_bytes(pickle.dumps((rank, spec, timeout, mine)))
            procs[rank] = subprocess.Popen(
                [sys.executable, "-c", f"from ringlet.launch import child_main; child_main({str(job)!r})"],
                env=env)
        # every party bounds each of its own waits by ``timeout``, so a stuck run ends on its own;
        # here we only collect the reports, and notice processes that die without one
        while len(reports) < world.size:
            for rank, proc in procs.items():
                if rank in reports:
                    continue
                out = Path(tmp) / f"party-{rank}.report"
                if out.is_file():
                    reports[rank] = pickle.loads(out.read_bytes())
                elif proc.poll() is not None and not out.is_file():
                    reports[rank] = PartyReport(rank, world.role(rank), error_type="ProcessDied",
                                                error=f"process exited with code {proc.returncode} "
                                                      f"without a report")
            time.sleep(0.05)
        for proc in procs.values():
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
    return reports


__all__ = ["run_local", "RunResult", "PartyReport", "PartyError", "free_port", "PeerFailedError"]
