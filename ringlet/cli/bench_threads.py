"""``ringlet bench threads``: one party's local work at 1 and more threads (JSON)."""

from __future__ import annotations

from ringlet.cli.common import add_debug, command_line, print_json


def add_parser(sub, name):
    p = sub.add_parser(name, help="one party's local work (convs, bit planes, DCF, CSPRNG) at 1 "
                                  "and more threads, the other parties idle")
    p.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--json", action="store_true", help="print JSON (the default output)")
    add_debug(p)
    p.set_defaults(run=run)


def run(args):
    from ringlet.bench.threads import thread_scaling
    counts = tuple(int(t) for t in args.threads.split(",") if t.strip())
    if not counts or min(counts) < 1:
        raise SystemExit(f"--threads {args.threads!r}: positive integers, e.g. 1,2")
    print_json({"command": command_line(), **thread_scaling(counts, args.repeats)})
    return 0
