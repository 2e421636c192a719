"""``ringlet bench suite``: models × configurations × links on the same inputs (one JSON)."""

from __future__ import annotations

from ringlet.cli.common import add_data_dir, add_debug, command_line, print_json


def add_parser(sub, name):
    from ringlet.cli.common import add_linear_backend
    p = sub.add_parser(name, help="the evaluation suite (HummingBird's Section 5)")
    p.add_argument("--models", default="resnet20", help="comma-separated shipped models")
    from ringlet.bench.suite import CONFIGS, known_configs
    p.add_argument("--configs", default=",".join(CONFIGS),
                   help=f"comma-separated, of: {', '.join(known_configs())}")
    p.add_argument("--links", default="lan,wan", help="lan, highbw, wan, wan-rtt")
    p.add_argument("--rtt-ms", type=float, help="round-trip time of wan-rtt (default 50)")
    p.add_argument("--samples", type=int, default=64, help="test images per run")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--parties", type=int, default=2)
    add_linear_backend(p)
    from ringlet.cli.common import add_relu_protocol_choice
    add_relu_protocol_choice(p)  # for every configuration that names no protocol (not the baseline)
    p.add_argument("--out", help="write the JSON here (updated after every run)")
    p.add_argument("--real-links", action="store_true",
                   help="also run every bandwidth-only link through network namespaces + tbf (root)")
    p.add_argument("--json", action="store_true", help="print the JSON")
    add_data_dir(p)
    add_debug(p)
    p.set_defaults(run=run)


def run(args):
    import sys

    from ringlet.bench.suite import run_suite
    result = run_suite([m for m in args.models.split(",") if m], args.configs.split(","),
                       args.links.split(","), args.samples, args.batch, args.parties, args.rtt_ms,
                       args.out, args.data_dir, log=lambda s: print(s, file=sys.stderr),
                       command=command_line(), real=args.real_links,
                       linear_backend=args.linear_backend, relu_protocol=args.relu_protocol)
    if args.json or not args.out:
        print_json(result)
    return 0
