"""``ringlet bench``: measurements that print JSON with the command that produced them."""

from __future__ import annotations

from ringlet.cli.common import add_debug, command_line, print_json


def add_parser(sub, name):
    p = sub.add_parser(name, help="benchmarks (JSON output)")
    bsub = p.add_subparsers(dest="bench", metavar="BENCH")
    core = bsub.add_parser("core", help="CSPRNG throughput, secure conv vs plaintext, per-op costs")
    core.add_argument("--parties", type=int, default=2)
    core.add_argument("--transport", choices=["local", "tcp"], default="local")
    core.add_argument("--batch", type=int, default=8)
    core.add_argument("--json", action="store_true", help="print JSON (the default output)")
    add_debug(core)
    core.set_defaults(run=run_core)
    for module in ("relu", "poly", "suite"):
        try:
            mod = __import__(f"ringlet.cli.bench_{module}", fromlist=["add_parser"])
        except ModuleNotFoundError:
            continue
        mod.add_parser(bsub, module)
    p.set_defaults(run=lambda args: p.print_help() or 2)


def run_core(args):
    from ringlet.bench.core import bench_core
    result = bench_core(args.parties, args.transport, args.batch)
    print_json({"command": command_line(), **result})
    return 0
