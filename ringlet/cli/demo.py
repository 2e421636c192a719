"""``ringlet demo``: the main job on bundled defaults (see README)."""

from __future__ import annotations

from ringlet.cli.common import add_debug, print_json


def add_parser(sub, name):
    p = sub.add_parser(name, help="run the bundled demonstration")
    p.add_argument("--parties", type=int, default=2)
    p.add_argument("--transport", choices=["local", "tcp"], default="local")
    p.add_argument("--json", action="store_true", help="print the JSON summary only")
    add_debug(p)
    p.set_defaults(run=run)


def run(args):
    from ringlet.demo import core_demo
    summary = core_demo(args.parties, args.transport, log=None if args.json else print)
    if args.json:
        print_json(summary)
    return 0
