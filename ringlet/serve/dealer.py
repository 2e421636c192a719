"""``ringlet serve --role dealer``: keeps every server's pool of offline material full.

The dealer dials every server (retrying: servers may start later or restart), links up with fresh
seeds, receives their batch plans (refused if they differ) and produces entries until each
server holds ``[pool] depth`` of every batch shape (:mod:`ringlet.serve.pool`). When a link
fails it drops all of them and dials again with a new epoch; SIGTERM stops it.
"""

from __future__ import annotations

import secrets
import signal
import sys
import threading
import time

from ringlet.comm.base import CommError
from ringlet.comm.mesh import MeshCommunicator, dial
from ringlet.protocols.catalog import material_kinds
from ringlet.serve.pool import DealerPool


class DealerNode:
    def __init__(self, deploy, log=None):
        self.d = deploy
        self.p = len(deploy.servers)
        self.log = log or (lambda msg: print(f"[dealer] {msg}", file=sys.stderr, flush=True))
        self.client_ctx = deploy.tls_files().contexts("dealer")[1] if deploy.tls else None
        self.stop = threading.Event()
        self.epochs = 0

    def install_signals(self) -> None:
        signal.signal(signal.SIGTERM, lambda *_: self.stop.set())
        signal.signal(signal.SIGINT, lambda *_: self.stop.set())

    def _link(self) -> dict | None:
        channels = {}
        hello = {"rank": self.p, "name": "dealer", "deployment": self.d.name}
        try:
            for r in range(self.p):
                while r not in channels:
                    if self.stop.is_set():
                        return None
                    try:
                        channels[r] = dial(self.d.server(r).address, self.client_ctx, f"server-{r}",
                                           hello, time.monotonic() + self.d.connect_timeout)
                    except CommError as exc:
                        self.log(f"waiting for server-{r}: {exc}")
        except BaseException:
            for ch in channels.values():
                ch.close()
            raise
        return channels

    def run(self) -> int:
        while not self.stop.is_set():
            channels = self._link()
            if channels is None:
                break
            comm = MeshCommunicator(self.p, self.p + 1, channels, self.d.message_timeout,
                                    {r: f"server-{r}" for r in range(self.p)} | {self.p: "dealer"})
            epoch = secrets.token_hex(4)
            self.epochs += 1
            pool = DealerPool(comm, list(range(self.p)), self.d.pool_depth, epoch, self.log,
                              material_kinds(), self.d.pool_low_water)
            try:
                dealer, plans = pool.start(self.d.message_timeout)
                self.log(f"linked to {self.p} servers (epoch {epoch}); batch shapes {sorted(plans)}, "
                         f"pool depth {self.d.pool_depth}")
                pool.run(dealer, plans, self.stop)
            except CommError as exc:
                self.log(f"a server link ended ({exc}); linking again")
            except (KeyError, TypeError, ValueError) as exc:  # a malformed message: this epoch ends
                self.log(f"a server sent what the dealer cannot read ({type(exc).__name__}: {exc}); "
                         f"linking again")
            finally:
                pool.failed = pool.failed or "closed"
                comm.close()
            time.sleep(0.2)
        return 0
