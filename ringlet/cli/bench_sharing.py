"""``ringlet bench sharing``: the ReLU-sharing reproduction (tables into the report)."""

from __future__ import annotations

from ringlet.cli.common import add_debug, command_line, print_json


def add_parser(sub, name):
    p = sub.add_parser(name, help="ReLU sharing: accuracy and cost per gReLU variant")
    p.add_argument("--epochs", type=int, default=3,
                   help="finetuning epochs of a variant whose checkpoint is not in models/ yet")
    p.add_argument("--lr", type=float, default=0.01, help="finetuning learning rate")
    p.add_argument("--variants", help="comma-separated Fashion-MNIST variants (default: all)")
    p.add_argument("--samples", type=int, default=64, help="test images per private inference")
    p.add_argument("--minionn-samples", type=int, default=2)
    p.add_argument("--out", help="write the JSON (with its markdown section) here")
    p.add_argument("--json", action="store_true")
    add_debug(p)
    p.set_defaults(run=run)


def run(args):
    import json
    import sys
    from pathlib import Path

    from ringlet.bench.sharing import run_sharing
    result = run_sharing(args.epochs, args.samples, args.minionn_samples,
                         log=lambda s: print(s, file=sys.stderr), command=command_line(),
                         variants=args.variants.split(",") if args.variants else None, lr=args.lr)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
    if args.json or not args.out:
        print_json(result)
    else:
        print(result["markdown"])
    return 0
