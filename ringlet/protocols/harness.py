"""Run a program on every party of a world: one party's body, and a world of threads.

A *program* is a function ``program(sess) -> result`` that every server runs (SPMD); the optional
client runs ``client(sess) -> result``; the dealer runs its service loop. With ``pregenerate=True``
the computation runs once to record its request plan, the dealer then produces all material for
that plan, and the computation runs again: only this second run is the *online* phase that
``seconds_online`` and the online byte counts describe.

:func:`run_party` is one party on an open communicator (any transport); :func:`run_threads` runs a
whole world as threads of this process (what :func:`ringlet.runtime.launch.run_local` does for
``transport="local"``, and what :mod:`ringlet.protocols.tuning` measures with). Processes and the
other transports are :mod:`ringlet.runtime.launch`'s.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from ringlet.comm.base import CommError, CommStats
from ringlet.comm.local import LocalHub
from ringlet.comm.shaper import LinkShaper
from ringlet.offline.dealer import Dealer
from ringlet.prng import AesCtrStream
from ringlet.protocols.catalog import material_kinds
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
        client = self.world.client
        return self.reports[client].result if client is not None else None

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
        comm.shaper = LinkShaper(link)
    rank = comm.rank
    report = PartyReport(rank, world.role(rank))
    seeds = establish_seeds(comm, world, master_seed)
    if report.role == "dealer":
        dealer = Dealer(comm, {s: AesCtrStream(seed) for s, seed in seeds.dealer.items()},
                        material_kinds(), ring=FixedPoint(frac_bits, ring_bits).ring)
        t0 = time.perf_counter()
        dealer.serve()
        report.seconds_offline = time.perf_counter() - t0
        report.total = comm.stats.copy()
        report.peak_rss_mb = _peak_rss_mb()
        return report
    sess = Session(comm, world, seeds, material_kinds(), FixedPoint(frac_bits, ring_bits))
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


def run_threads(program: Program, parties: int = 2, *, client: Program | None = None,
                timeout: float = 60.0, master_seed: bytes | None = None, pregenerate: bool = False,
                frac_bits: int = 16, threads: int = 0, link=None, ring_bits: int = 64) -> RunResult:
    """Run ``program`` on ``parties`` servers (+ dealer, + client) as threads of this process;
    raises :class:`PartyError` naming the failing party if any fails."""
    world = World(parties, has_client=client is not None)
    FixedPoint(frac_bits, ring_bits)  # a bad format fails here, before any party starts
    args = (world, program, client, master_seed, pregenerate, frac_bits, threads, link, ring_bits)
    return collect(world, world_of_threads(world, args, timeout))


def collect(world: World, reports: dict[int, PartyReport]) -> RunResult:
    """The run's result, or :class:`PartyError` naming the party whose failure came first."""
    if any(r.error for r in reports.values()):
        raise PartyError(_root_cause(reports, world))
    return RunResult(world, reports)


def world_of_threads(world: World, args, timeout: float) -> dict[int, PartyReport]:
    hub = LocalHub(world.size)
    reports: dict[int, PartyReport] = {}

    def body(rank: int) -> None:
        comm = hub.communicator(rank, timeout, world.names())
        try:
            reports[rank] = run_party(comm, *args)
        except BaseException as exc:  # noqa: BLE001 - reported to the caller
            hub.fail(rank, f"{type(exc).__name__}: {exc}")
            reports[rank] = PartyReport(rank, world.role(rank), error=format_error(exc),
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


def format_error(exc: BaseException) -> str:
    if isinstance(exc, (CommError, ValueError, TimeoutError)):
        return f"{type(exc).__name__}: {exc}"
    return f"{type(exc).__name__}: {exc}\n{''.join(traceback.format_tb(exc.__traceback__)[-3:])}"
