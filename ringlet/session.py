"""A party's view of one secure computation: who it is, how it talks, its randomness, its dealer.

Ranks: servers 0 … p−1 compute on shares; the dealer is rank p; an optional client (input owner
and sole receiver of outputs) is rank p+1. A :class:`Session` is passed explicitly to every protocol
— there is no global state.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch

from ringlet import prng
from ringlet.comm.base import CommStats, Communicator
from ringlet.offline.kind import Kinds
from ringlet.offline.link import DealerLink
from ringlet.prng import AesCtrStream
from ringlet.ring import FixedPoint
from ringlet.roles import Role
from ringlet.sharing import ArithmeticShare


@dataclass(frozen=True)
class World:
    """The parties of a computation: ``num_servers`` servers, a dealer, optionally a client."""

    num_servers: int
    has_client: bool = False

    def __post_init__(self) -> None:
        if self.num_servers < 2:
            raise ValueError(f"need at least 2 servers, got {self.num_servers}")

    @property
    def dealer(self) -> int:
        return self.num_servers

    @property
    def client(self) -> int | None:
        return self.num_servers + 1 if self.has_client else None

    @property
    def size(self) -> int:
        return self.num_servers + 1 + int(self.has_client)

    @property
    def servers(self) -> range:
        return range(self.num_servers)

    def role(self, rank: int) -> Role:
        if 0 <= rank < self.num_servers:
            return Role.SERVER
        if rank == self.dealer:
            return Role.DEALER
        if rank == self.client:
            return Role.CLIENT
        raise ValueError(f"rank {rank} is not in a world of {self.size} parties")

    def names(self) -> dict[int, str]:
        return {r: str(self.role(r)) for r in range(self.size)}


@dataclass
class Seeds:
    """One party's seeds: its own stream, one per peer it shares randomness with, the dealer's."""

    own: bytes
    pairs: dict[int, bytes]
    dealer: dict[int, bytes]  # for a server: {its rank: seed}; for the dealer: every server's


def establish_seeds(comm: Communicator, world: World, master: bytes | None = None) -> Seeds:
    """Agree on seeds: pairwise among servers and client, and dealer↔server.

    With ``master`` (tests, reproducible runs) every seed is derived from it and nothing is sent.
    Otherwise the lower rank of each pair draws the seed from the OS and sends it (tag ``setup``);
    the dealer sends each server its seed.
    """
    rank = comm.rank
    role = world.role(rank)
    peers = [r for r in range(world.size) if r != world.dealer and r != rank]
    if master is not None:
        own = prng.derive_seed(master, f"own-{rank}")
        if role == "dealer":
            return Seeds(own, {}, {s: prng.derive_seed(master, f"dealer-{s}") for s in world.servers})
        pairs = {p: prng.derive_seed(master, f"pair-{min(p, rank)}-{max(p, rank)}") for p in peers}
        dealer = {rank: prng.derive_seed(master, f"dealer-{rank}")} if role == "server" else {}
        return Seeds(own, pairs, dealer)
    own = prng.new_seed()
    if role == "dealer":
        dealer = {s: prng.new_seed() for s in world.servers}
        for s, seed in dealer.items():
            comm.send(s, [("setup", _seed_tensor(seed))], "setup")
        return Seeds(own, {}, dealer)
    pairs = {}
    for p in peers:
        if rank < p:
            pairs[p] = prng.new_seed()
            comm.send(p, [("setup", _seed_tensor(pairs[p]))], "setup")
    for p in peers:
        if p < rank:
            (t,) = comm.recv(p, "setup")
            pairs[p] = bytes(t.tolist())
    dealer = {}
    if role == "server":
        (t,) = comm.recv(world.dealer, "setup")
        dealer = {rank: bytes(t.tolist())}
    return Seeds(own, pairs, dealer)


def _seed_tensor(seed: bytes) -> torch.Tensor:
    return torch.tensor(list(seed), dtype=torch.uint8)


class Session:
    """Everything a protocol needs on one party: rank, world, communicator, randomness, dealer."""

    def __init__(self, comm: Communicator, world: World, seeds: Seeds, kinds: Kinds,
                 fixed: FixedPoint | None = None) -> None:
        self.comm = comm
        self.world = world
        self.rank = comm.rank
        self.role = world.role(self.rank)
        self.fixed = fixed or FixedPoint()
        self.ring = self.fixed.ring
        self.own = AesCtrStream(seeds.own)
        self.pairs = {p: AesCtrStream(s) for p, s in seeds.pairs.items()}
        self.offline: DealerLink | None = None
        if self.role == "server":
            self.offline = DealerLink(comm, self.rank, AesCtrStream(seeds.dealer[self.rank]),
                                      world.dealer, kinds, self.ring)

    # convenience --------------------------------------------------------------------------------
    @property
    def stats(self) -> CommStats:
        return self.comm.stats

    @property
    def num_parties(self) -> int:
        """Number of servers (the parties that hold shares)."""
        return self.world.num_servers

    @property
    def is_server(self) -> bool:
        return self.role == "server"

    def others(self) -> list[int]:
        """The other servers."""
        return [s for s in self.world.servers if s != self.rank]

    @property
    def dealer(self) -> DealerLink:
        """This server's link to the dealer (only servers have one)."""
        if self.offline is None:
            raise RuntimeError(f"dealer material is for servers only, not for the {self.role} "
                               f"(rank {self.rank})")
        return self.offline

    def require_server(self, what: str) -> None:
        if not self.is_server:
            raise RuntimeError(f"{what} runs on servers only, not on the {self.role} (rank {self.rank})")

    def share(self, data: torch.Tensor, frac: int | None = None) -> ArithmeticShare:
        """Wrap this server's int64 share tensor."""
        return ArithmeticShare(data, self.rank, self.fixed.frac_bits if frac is None else frac)

    def barrier(self, tag: str = "setup", among: Iterable[int] | None = None) -> None:
        """Wait until every non-dealer party (or every party in ``among``) reaches this point."""
        group = range(self.world.size) if among is None else among
        parties = [r for r in group if r not in (self.world.dealer, self.rank)]
        one = torch.zeros(1, dtype=torch.uint8)
        self.comm.round(tag, {p: [(tag, one)] for p in parties}, parties, step="barrier")
