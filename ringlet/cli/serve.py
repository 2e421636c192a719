"""``ringlet serve --deploy D --role server --rank I`` or ``--role dealer``: a long-running party.

Servers listen on their deployment address (TLS 1.3 with mutual authentication unless the
deployment turns TLS off) and serve until SIGTERM, which drains: accepted queries are answered,
new ones refused. The dealer keeps the servers' pools of offline material full.
"""

from __future__ import annotations

from ringlet.cli.common import add_debug


def add_parser(sub, name):
    p = sub.add_parser(name, help="run a server or the dealer of a deployment until SIGTERM")
    p.add_argument("--deploy", required=True, help="the deployment file (TOML or JSON)")
    p.add_argument("--role", choices=["server", "dealer"], required=True)
    p.add_argument("--rank", type=int, help="server: its rank 0..P-1")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: cores / servers)")
    p.add_argument("--nice", type=int, default=0,
                   help="lower this process's CPU priority by N (a dealer beside the servers on one "
                        "host: it fills the pools with the cycles the online phase leaves)")
    add_debug(p)
    p.set_defaults(run=run)


def run(args):
    import os

    import torch

    from ringlet import deploy
    from ringlet.runtime.launch import party_threads
    d = deploy.load(args.deploy)
    threads = party_threads(args.threads or 0, "tcp", len(d.servers))
    torch.set_num_threads(threads)
    if args.nice:
        os.nice(args.nice)
    if args.role == "dealer":
        if args.rank is not None and args.rank != len(d.servers):
            raise ValueError(f"--rank {args.rank}: the dealer takes no rank (it is rank {len(d.servers)})")
        from ringlet.serve.dealer import DealerNode
        node = DealerNode(d)
        node.install_signals()
        return _exit(node.run())
    if args.rank is None:
        raise ValueError("--role server needs --rank I")
    from ringlet.serve.server import ServerNode
    node = ServerNode(d, args.rank)
    node.install_signals()
    node.start()
    return _exit(node.wait())


def _exit(code: int):
    """End the process now: every link is closed and every answer sent, and daemon threads that
    used torch must not meet its C++ destructors at interpreter exit (that aborts the process)."""
    import os
    import sys
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
