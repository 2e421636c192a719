"""Every transport by name, and the one factory that opens a party's communicator.

=========  =====================================================================================
local      threads of one process, queues (:mod:`ringlet.comm.local`; built by the launcher)
tcp        direct TCP links, ringlet's own frames, no encryption (:mod:`ringlet.comm.mesh`); the
           default between processes (``socket`` is the same transport by its older name)
tls        direct links in TLS 1.3 with mutual certificate authentication (:mod:`ringlet.comm.mesh`)
gloo       torch.distributed gloo over TCP, rank 0 hosts the rendezvous (:mod:`ringlet.comm.tcp`);
           slower than direct links (one rendezvous, no pipelining of sends)
=========  =====================================================================================

All count the same payload bytes and rounds; framing and TLS records are counted apart.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, cast

from ringlet.comm.base import Communicator, PeerTimeoutError
from ringlet.comm.certs import StrPath, client_context, server_context
from ringlet.comm.channel import Channel
from ringlet.comm.mesh import Listener, MeshCommunicator, admit, dial
from ringlet.comm.tcp import TcpCommunicator
from ringlet.roles import Role

TRANSPORTS = ("local", "tcp", "socket", "tls", "gloo")


class _World(Protocol):
    """What a transport reads of a :class:`ringlet.session.World` (a layer above this one)."""

    @property
    def size(self) -> int: ...
    @property
    def dealer(self) -> int: ...
    @property
    def client(self) -> int | None: ...
    def role(self, rank: int) -> str: ...
    def names(self) -> dict[int, str]: ...


def party_name(world: _World, rank: int) -> str:
    """A party's name in a world: ``server-I``, ``dealer`` or ``client`` (certificate names)."""
    return Role(world.role(rank)).party_name(rank)


@dataclass(frozen=True)
class TlsFiles:
    """The CA certificate and, per party name, its certificate and key (PEM files)."""

    ca: Path
    certs: dict[str, tuple[Path, Path]]  # party name -> (cert path, key path)

    @classmethod
    def in_folder(cls, folder: StrPath, names: Iterable[str]) -> TlsFiles:
        folder = Path(folder)
        return cls(folder / "ca.pem", {n: (folder / f"{n}.pem", folder / f"{n}.key") for n in names})

    def contexts(self, name: str) -> tuple[ssl.SSLContext, ssl.SSLContext]:
        """(server context, client context) of party ``name``."""
        if name not in self.certs:
            raise ValueError(f"no certificate for party {name!r} (have: {', '.join(sorted(self.certs))})")
        cert, key = self.certs[name]
        return server_context(self.ca, cert, key), client_context(self.ca, cert, key)


@dataclass(frozen=True)
class TransportSpec:
    """How the parties of one world reach each other."""

    kind: str = "tcp"
    master: tuple[str, int] | None = None  # gloo: rank 0's rendezvous
    # tcp/tls: rank -> (host, port) it listens on
    addresses: dict[int, tuple[str, int]] = field(default_factory=dict)
    tls: TlsFiles | None = None
    deployment: str = ""  # an id every hello carries (parties of other deployments are refused)

    insecure_plain_tcp: bool = False  # gloo: allow a rendezvous that is not on loopback

    def __post_init__(self) -> None:
        if self.kind == "gloo" and self.master is not None:
            host = self.master[0]
            if not self.insecure_plain_tcp and not is_loopback(host):
                raise ValueError(f"--master {host}:{self.master[1]} is not a loopback address: the "
                                 f"gloo transport has no authentication or encryption, and any "
                                 f"process that reaches the rendezvous first can take a party's "
                                 f"place. Use --deploy (TLS 1.3, certificates), or accept that "
                                 f"risk with --insecure-plain-tcp")
        if self.kind in ("tcp", "socket") and self.master is not None:
            raise ValueError(f"transport {self.kind!r} is direct links (an address per server); a "
                             f"rendezvous at {self.master[0]}:{self.master[1]} is transport 'gloo'")
        if self.kind not in TRANSPORTS:
            raise ValueError(f"unknown transport {self.kind!r} (one of {', '.join(TRANSPORTS)})")
        if self.kind == "tls" and self.tls is None:
            raise ValueError("transport 'tls' needs certificates (a CA and one per party)")
        if self.kind == "gloo" and self.master is None:
            raise ValueError("transport 'gloo' needs the rendezvous address ADDR:PORT")


GLOO_WARNING = ("transport 'gloo' is plain TCP: no authentication and no encryption; "
                "any process that reaches the rendezvous first can join as a party and read "
                "what the parties send. Use it on one host or a private network only; "
                "--deploy / transport 'tls' links parties with TLS 1.3 and certificates.")


class PlainTcpWarning(UserWarning):
    """The gloo transport is in use (see GLOO_WARNING)."""


def warn_plain_tcp() -> None:
    """Say GLOO_WARNING once per run, on stderr."""
    import warnings
    warnings.warn(GLOO_WARNING, PlainTcpWarning, stacklevel=3)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) resolves to loopback addresses only."""
    import ipaddress
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(str(i[4][0]).split("%")[0]).is_loopback for i in infos)


def world_links(world: _World) -> set[tuple[int, int]]:
    """Pairs of ranks that exchange messages: all but dealer↔client."""
    pairs = {(a, b) for a in range(world.size) for b in range(a + 1, world.size)}
    if world.client is not None:
        pairs.discard((world.dealer, world.client))
    return pairs


def open_communicator(spec: TransportSpec, rank: int, world: _World, timeout: float = 60.0,
                      connect_timeout: float | None = None) -> Communicator:
    """This party's communicator; every link is up (or the error names who is missing)."""
    names = world.names()
    if spec.kind == "gloo":
        assert spec.master is not None  # TransportSpec checks it for gloo
        host, port = spec.master
        return TcpCommunicator(rank, world.size, host, int(port), timeout, names,
                               connect_timeout=connect_timeout)
    if spec.kind == "local":
        raise ValueError("transport 'local' is built by the launcher (ringlet.runtime.launch.run_local)")
    channels = connect_mesh(spec, rank, world, connect_timeout or timeout)
    return MeshCommunicator(rank, world.size, channels, timeout, names)


def connect_mesh(spec: TransportSpec, rank: int, world: _World, connect_timeout: float) -> dict[int, Channel]:
    """Join every link of ``rank`` in ``world`` (see :mod:`ringlet.comm.mesh`); {peer: Channel}."""
    me = party_name(world, rank)
    listening = set(spec.addresses)
    mine = [b if a == rank else a for a, b in world_links(world) if rank in (a, b)]
    accept = {p for p in mine if rank in listening and (p not in listening or p > rank)}
    dials = sorted(p for p in mine if p not in accept)
    for p in dials:
        if p not in listening:
            raise ValueError(f"{me} and {party_name(world, p)} must talk, but neither has an address")
    server_ctx: ssl.SSLContext | None = None
    client_ctx: ssl.SSLContext | None = None
    if spec.kind == "tls":
        assert spec.tls is not None  # TransportSpec checks it for tls
        server_ctx, client_ctx = spec.tls.contexts(me)
    deadline = time.monotonic() + connect_timeout
    channels: dict[int, Channel] = {}
    joined = threading.Condition()
    rejected: list[str] = []
    hello = {"rank": rank, "name": me, "world": world.size, "deployment": spec.deployment}

    def check(h: dict[str, Any], cert_name: str | None, where: str | None = None) -> str | None:
        p = h.get("rank")
        why = admit(h, cert_name, spec.deployment, spec.kind == "tls")
        if why:
            return why
        if h.get("world") != world.size:
            return f"world of {h.get('world')} parties, {me} is in a world of {world.size}"
        if p not in accept:
            return f"rank {p!r} does not connect to {me}"
        if h.get("name") != party_name(world, p):
            return f"rank {p} is {party_name(world, p)}, not {h.get('name')!r}"
        with joined:
            if p in channels:
                return f"{party_name(world, p)} has already joined"
        return None

    def on_peer(h: dict[str, Any], ch: Channel) -> None:
        with joined:
            channels[h["rank"]] = ch
            joined.notify_all()

    listener = None
    if accept:
        listener = Listener(spec.addresses[rank], server_ctx, on_peer, check,
                            timeout=min(10.0, connect_timeout), name=me,
                            on_reject=lambda where, why: rejected.append(f"{where}: {why}"))
    try:
        for p in dials:
            host, port = spec.addresses[p]
            channels[p] = dial((host, int(port)), client_ctx, party_name(world, p), hello, deadline)
        with joined:
            while not accept <= set(channels):
                left = deadline - time.monotonic()
                if left <= 0:
                    missing = ", ".join(party_name(world, p) for p in sorted(accept - set(channels)))
                    extra = f"; refused: {'; '.join(rejected[-3:])}" if rejected else ""
                    host, port = spec.addresses[rank]
                    where = f"{host}:{port}"
                    raise PeerTimeoutError(f"{me}: {missing} did not connect to {where} within "
                                           f"{connect_timeout:g} s{extra}")
                joined.wait(min(left, 0.5))
    except BaseException:
        for ch in channels.values():
            ch.close()
        raise
    finally:
        if listener is not None:
            listener.close()
    return channels


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return cast(int, s.getsockname()[1])
