"""The roles of the parties of a computation, and their names (a party is its certificate's name).

Ranks: servers 0 … p−1 (``server-I``), the dealer p (``dealer``), an optional client p+1
(``client``, or any name beginning with it in a deployment: ``client-b``).
"""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    SERVER = "server"
    DEALER = "dealer"
    CLIENT = "client"

    @classmethod
    def of_name(cls, name: str) -> Role | None:
        """The role a party name stands for (``server-3``, ``dealer``, ``client-b``), else None."""
        if name.startswith("server-") and name[7:].isdigit():
            return cls.SERVER
        if name == "dealer":
            return cls.DEALER
        if name.startswith("client"):
            return cls.CLIENT
        return None

    def party_name(self, rank: int) -> str:
        """The name of the party of this role at ``rank`` (a server's carries its rank)."""
        return f"server-{rank}" if self is Role.SERVER else str(self)
