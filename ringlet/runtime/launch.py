"""Run a secure computation with every party on this machine: threads, or processes over TCP.

Programs, party reports and the party body are :mod:`ringlet.protocols.harness`'s; this module adds
one process per party over loopback links (``tcp``, ``socket``, ``tls``).
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ringlet.comm.base import CommError, PeerFailedError
from ringlet.comm.certs import make_dev_certs
from ringlet.comm.transport import TlsFiles, TransportSpec, free_port, open_communicator, party_name, warn_plain_tcp
from ringlet.protocols.harness import (
    PartyError,
    PartyReport,
    Program,
    RunResult,
    collect,
    format_error,
    run_party,
    world_of_threads,
)
from ringlet.ring import FixedPoint
from ringlet.session import World


def run_local(program: Program, parties: int = 2, *, client: Program | None = None,
              transport: str = "local", timeout: float = 60.0, master_seed: bytes | None = None,
              pregenerate: bool = False, frac_bits: int = 16, threads: int = 0,
              port: int | None = None, link=None, ring_bits: int = 64) -> RunResult:
    """Run ``program`` on ``parties`` servers (+ dealer, + client if given) on this machine.

    ``transport``: ``local`` (threads in this process) or one process per party over loopback:
    ``tcp`` (direct links; ``socket`` is its older name), ``tls`` (direct links in TLS 1.3, with a
    development CA and party certificates made for the run) or ``gloo`` (torch.distributed);
    ``program`` and ``client`` must then be importable top-level functions.
    ``link`` shapes every party's messages with a link profile (bandwidth, round-trip time).
    ``threads`` (torch threads per party; 0 = automatic): between processes every party is one, and
    the servers compute at the same time, so each gets the cores divided by the number of servers —
    torch's default (all cores in every process) oversubscribes the machine and runs many times
    slower. With ``local`` the parties share one process and torch's default is kept.
    Raises :class:`PartyError` naming the failing party if any party fails.
    """
    if not timeout > 0:
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout}")
    world = World(parties, has_client=client is not None)
    threads = party_threads(threads, transport, parties)
    FixedPoint(frac_bits, ring_bits)  # a bad format fails here, before any party starts
    args = (world, program, client, master_seed, pregenerate, frac_bits, threads, link, ring_bits)
    if transport == "local":
        reports = world_of_threads(world, args, timeout)
    elif transport in ("tcp", "socket", "tls", "gloo"):
        reports = _run_processes(world, args, timeout, port, transport)
    else:
        raise ValueError(f"unknown transport {transport!r} (local, tcp, tls or gloo)")
    return collect(world, reports)


def party_threads(threads: int, transport: str, parties: int) -> int:
    """Torch threads per party: ``threads`` if given; between processes the cores divided by the
    servers (they compute at the same time); 0 (torch's default) for threads of one process."""
    if threads == 0 and transport != "local":
        return max(1, (os.cpu_count() or 1) // parties)
    return threads


def _process_body(rank: int, spec, timeout: float, args) -> PartyReport:
    world = args[0]
    comm = None
    try:
        comm = open_communicator(spec, rank, world, timeout)
        report = run_party(comm, *args)
        report.tls_overhead_bytes = comm.tls_overhead_bytes()
    except BaseException as exc:  # noqa: BLE001
        report = PartyReport(rank, world.role(rank), error=format_error(exc),
                             error_type=type(exc).__name__)
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
        raise ValueError(f"with a transport between processes every party is a new process: the "
                         f"{what} program {getattr(target, '__name__', target)!r} must be importable "
                         f"(defined in a module, not in the script being run)")


def _loopback_spec(world: World, transport: str, port: int | None, tmp: str):
    if transport == "gloo":
        warn_plain_tcp()
        return TransportSpec("gloo", master=("127.0.0.1", port or free_port()))
    addresses = {r: ("127.0.0.1", free_port()) for r in world.servers}
    tls = None
    if transport == "tls":
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
                [sys.executable, "-c", f"from ringlet.runtime.launch import child_main; child_main({str(job)!r})"],
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
