"""``ringlet report``: markdown tables and PNG plots from a results JSON."""

from __future__ import annotations

from ringlet.cli.common import add_debug


def add_parser(sub, name):
    p = sub.add_parser(name, help="render a suite results JSON into markdown and PNG plots")
    p.add_argument("results", help="JSON written by ringlet bench suite")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--extra", nargs="+", action="extend", default=[],
                   help="more results: bench scale / sharing / poly JSON")
    add_debug(p)
    p.set_defaults(run=run)


def run(args):
    from ringlet.report import write_report
    path = write_report(args.results, args.out, args.extra)
    print(f"report written to {path}")
    return 0
