"""``ringlet bench scale``: time, bytes and memory against batch size and number of servers."""

from __future__ import annotations

from ringlet.cli.common import TRANSPORT_CHOICES, TRANSPORT_HELP, add_debug, command_line, print_json


def add_parser(sub, name):
    p = sub.add_parser(name, help="scaling with batch size and servers")
    p.add_argument("--model", default="resnet20")
    p.add_argument("--batches", default="1,2,4,8,16,32,64")
    p.add_argument("--servers", default="2,3,4")
    p.add_argument("--fixed-batch", type=int, default=8, help="batch of the servers sweep")
    p.add_argument("--transport", choices=TRANSPORT_CHOICES, default="tcp",
                   help=TRANSPORT_HELP)
    p.add_argument("--out", help="also write the JSON here")
    p.add_argument("--json", action="store_true")
    add_debug(p)
    p.set_defaults(run=run)


def run(args):
    import json
    import sys
    from pathlib import Path

    from ringlet.bench.scale import run_scale
    result = run_scale(args.model, [int(b) for b in args.batches.split(",")],
                       [int(s) for s in args.servers.split(",")], args.fixed_batch, args.transport,
                       log=lambda s: print(s, file=sys.stderr), command=command_line())
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
    print_json(result)
    return 0
