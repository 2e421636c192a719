"""``ringlet eval``: test accuracy of a model, plaintext or under a ReLU configuration (simulated)."""

from __future__ import annotations

from ringlet.cli.common import (
    add_compile,
    add_data,
    add_debug,
    add_model,
    compile_kwargs,
    data_kwargs,
    print_json,
)


def add_parser(sub, name):
    p = sub.add_parser(name, help="test accuracy: plaintext, or the share-level simulator's with a config")
    add_model(p)
    add_data(p)
    add_compile(p)
    p.add_argument("--samples", type=int, default=None, help="first N test inputs (default: all)")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--relu-config", help="evaluate with the share-level simulator applying this ReLU "
                   "config (the accuracy a private run with it should reach)")
    p.add_argument("--parties", type=int, default=2, help="servers simulated with --relu-config")
    p.add_argument("--json", action="store_true")
    add_debug(p)
    p.set_defaults(run=run)


def run(args):
    from ringlet.jobs.train import evaluate_model
    result = evaluate_model(args.model, samples=args.samples, batch=args.batch, weights=args.weights,
                            relu_config=args.relu_config, parties=args.parties,
        **data_kwargs(args), **compile_kwargs(args))
    if args.json:
        print_json(result)
    else:
        where = result.get("dataset") or result.get("input")
        print(f"{result['model']} on {where}: accuracy {result['accuracy']:.4f} "
              f"over {result['samples']} test inputs" + (" (simulated)" if args.relu_config else ""))
    return 0
