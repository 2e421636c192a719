"""``ringlet bench activations``: ReLU configurations against a polynomial model, with latency."""

from __future__ import annotations

from ringlet.cli.common import add_debug, command_line, print_json


def add_parser(sub, name):
    p = sub.add_parser(name, help="ReLU exact/eco/8-64 vs polynomial (ESPN) under LAN/WAN + latency")
    p.add_argument("--model", default="resnet20")
    p.add_argument("--poly-model", help="polynomial checkpoint (default: MODEL-DATASET-poly4)")
    p.add_argument("--configs", default="exact,eco,8/64,poly,poly-local,poly-local@honeybadger",
                   help="exact, eco, 8/64 (ReLU model); poly (ESPN, 2 rounds/layer), poly-local "
                        "(1 round); poly[-local]@METHOD")
    p.add_argument("--links", default="lan,wan")
    p.add_argument("--latencies", default="0,25,50,100", help="added round-trip times in ms")
    p.add_argument("--samples", type=int, default=32)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--poly-method", default="espn")
    p.add_argument("--out", help="write the JSON (and a PNG beside it)")
    p.add_argument("--json", action="store_true")
    add_debug(p)
    p.set_defaults(run=run)


def run(args):
    import sys

    from ringlet.bench.activations import run_activations
    result = run_activations(args.model, args.poly_model, args.configs.split(","),
                             args.links.split(","), [int(v) for v in args.latencies.split(",")],
                             args.samples, args.batch, args.poly_method, args.out,
                             log=lambda s: print(s, file=sys.stderr), command=command_line())
    if args.json or not args.out:
        print_json(result)
    return 0
