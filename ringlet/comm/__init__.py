"""Communicators: in-process (threads), direct TCP / TLS links (ringlet's own frames) and
torch.distributed gloo, with exact accounting."""

from ringlet.comm.base import (
                               TAGS,
                               CommError,
                               CommStats,
                               Communicator,
                               PeerFailedError,
                               PeerTimeoutError,
                               ProtocolMismatchError,
)
from ringlet.comm.local import LocalHub

__all__ = ["TAGS", "CommError", "CommStats", "Communicator", "PeerFailedError", "PeerTimeoutError",
           "ProtocolMismatchError", "LocalHub"]
