"""``ringlet bench``: measurements that print JSON with the command that produced them."""

from __future__ import annotations

from ringlet.cli.common import TRANSPORT_CHOICES, TRANSPORT_HELP, add_debug, command_line, print_json


def add_parser(sub, name):
    p = sub.add_parser(name, help="benchmarks (JSON output)")
    bsub = p.add_subparsers(dest="bench", metavar="BENCH")
    core = bsub.add_parser("core", help="CSPRNG throughput, secure conv vs plaintext, per-op costs")
    core.add_argument("--parties", type=int, default=2)
    core.add_argument("--transport", choices=TRANSPORT_CHOICES, default="local",
                   help=TRANSPORT_HELP)
    core.add_argument("--batch", type=int, default=8)
    core.add_argument("--json", action="store_true", help="print JSON (the default output)")
    add_debug(core)
    core.set_defaults(run=run_core)
    link = bsub.add_parser("link", help="the link shaper's accuracy (and a real tbf link with --real)")
    link.add_argument("--profile", default="wan", help="lan, highbw, wan, wan-rtt")
    link.add_argument("--rtt-ms", type=float)
    link.add_argument("--megabytes", type=float, default=8.0)
    link.add_argument("--rounds", type=int, default=20)
    link.add_argument("--real", action="store_true", help="also through network namespaces + tbf (root)")
    link.add_argument("--json", action="store_true")
    add_debug(link)
    link.set_defaults(run=run_link)
    for module in ("relu", "poly", "suite", "scale", "sharing", "activations", "serve", "transformer",
                   "threads"):
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


def run_link(args):
    from ringlet.bench.netlink import link_bench
    print_json({"command": command_line(), **link_bench(args.profile, args.rtt_ms, args.megabytes,
                                                        args.rounds, args.real)})
    return 0
