"""``ringlet bench serve``: a loopback deployment under concurrent clients, against one-shot inference."""

from __future__ import annotations

import argparse

from ringlet.cli.common import (
    add_data_dir,
    add_debug,
    command_line,
    print_json,
    relu_config_help,
    relu_protocol_choices,
)


def _ints(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected integers such as 1,8,32") from None
    if not values:
        raise argparse.ArgumentTypeError("give at least one batch shape")
    return values


def _shape(text: str) -> list[int]:
    values = _ints(text)
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: sizes must be positive")
    return values


def add_parser(sub, name):
    p = sub.add_parser(name, help="serving throughput, latency and correctness of a loopback "
                                  "deployment (JSON)")
    p.add_argument("--model", required=True, help="the deployment's [model] source")
    p.add_argument("--weights", help="with --model package.module:factory: its .safetensors")
    p.add_argument("--input-shape", type=_shape, metavar="C,H,W",
                   help="when the model records no input shape (a factory without ringlet's JSON)")
    p.add_argument("--relu-config", help=relu_config_help())
    p.add_argument("--relu-protocol", choices=relu_protocol_choices(), default=None,
                   help="every ReLU layer's protocol (default: the config's, else gmw)")
    p.add_argument("--clients", type=int, required=True, help="concurrent clients (threads)")
    p.add_argument("--queries", type=int, required=True, help="queries per client")
    p.add_argument("--rows", type=int, default=1, help="inputs per query")
    p.add_argument("--max-batch", type=int, default=32, help="rows per batch")
    p.add_argument("--max-wait-ms", type=float, default=10.0, help="server 0's wait to fill a batch")
    p.add_argument("--sizes", type=_ints, default=None,
                   help="batch shapes (default: 1,8,32 up to --max-batch; --max-batch is added)")
    p.add_argument("--pool-depth", type=int, default=2, help="dealer entries ready per batch shape")
    p.add_argument("--tls", action=argparse.BooleanOptionalAction, default=True,
                   help="TLS 1.3 with mutual authentication (default), or plain TCP")
    p.add_argument("--dataset", help="inputs: its first test images (default: the model's dataset; "
                                     "none: N(0, 1) inputs clipped to ±input bound)")
    add_data_dir(p)
    p.add_argument("--input-bound", type=float, help="the largest |input| the model must accept")
    p.add_argument("--window", type=int, default=None,
                   help="queries in flight per client (default: all of them at once)")
    p.add_argument("--hostile", type=float, nargs="?", const=60.0, default=None, metavar="SECONDS",
                   help="then two phases of SECONDS each (default 60): the honest clients alone, "
                        "and beside a hostile client cycling attacks while each party is killed "
                        "and restarted once (key 'hostile')")
    p.add_argument("--json", action="store_true", help="print JSON (the default output)")
    p.add_argument("--out", help="also write the JSON here")
    add_debug(p)
    p.set_defaults(run=run)


def run(args):
    import json
    from pathlib import Path

    from ringlet.bench.serve import run_serve_bench
    result = run_serve_bench(
        args.model, clients=args.clients, queries=args.queries, weights=args.weights,
        input_shape=args.input_shape, relu_config=args.relu_config,
        relu_protocol=args.relu_protocol, rows=args.rows, max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms, sizes=args.sizes, pool_depth=args.pool_depth, tls=args.tls,
        dataset=args.dataset, data_dir=args.data_dir, input_bound=args.input_bound,
        window=args.window, hostile_seconds=args.hostile, command=command_line())
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print_json(result)
    return 0
