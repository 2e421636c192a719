"""``ringlet bench relu``: one secure ReLU/DReLU layer, exact counts and online time (JSON)."""

from __future__ import annotations

from ringlet.cli.common import (
    TRANSPORT_CHOICES,
    TRANSPORT_HELP,
    add_debug,
    add_relu_protocol,
    command_line,
    print_json,
)


def add_parser(sub, name):
    p = sub.add_parser(name, help="secure ReLU: bits, rounds, time, correctness")
    p.add_argument("--n", type=int, default=1 << 20, help="number of elements (ignored with --input)")
    p.add_argument("--bits", default="exact", help="K:M (kept bits [k:m]) or 'exact' (default)")
    add_relu_protocol(p)
    p.add_argument("--op", choices=["relu", "drelu"], default="relu")
    p.add_argument("--shift", type=int, default=0,
                   help="the input carries SHIFT more fractional bits (a conv output) and the ReLU "
                        "truncates them (fused: still one select / one FSS round)")
    p.add_argument("--parties", type=int, default=2)
    p.add_argument("--transport", choices=TRANSPORT_CHOICES, default="local",
                   help=TRANSPORT_HELP)
    p.add_argument("--input", help="float32/float64 .npy of any shape (default: uniform on [-8, 8))")
    p.add_argument("--output", help="write the revealed result (decoded) as .npy of the same shape")
    p.add_argument("--baseline", action="store_true",
                   help="also run the kogge-stone + b2a-mult baseline on the same inputs")
    p.add_argument("--gmw", action="store_true",
                   help="also run exact gmw (carry tree, fused select) on the same inputs")
    p.add_argument("--threads", type=int, default=0, help="torch threads per party (0: default)")
    p.add_argument("--json", action="store_true", help="print JSON (the default output)")
    add_debug(p)
    p.set_defaults(run=run)


def run(args):
    import numpy as np

    from ringlet.bench.relu import default_input, parse_bits, run_relu_bench
    from ringlet.protocols.relu import ReluSpec
    if args.input:
        values = np.load(args.input, allow_pickle=False)
        if values.dtype not in (np.float32, np.float64):
            raise ValueError(f"--input {args.input}: expected float32/float64, got {values.dtype}")
    else:
        if args.n < 1:
            raise ValueError(f"--n must be positive, got {args.n}")
        values = default_input(args.n)
    k, m = parse_bits(args.bits)
    protocol = args.relu_protocol or "gmw"
    if protocol == "auto":
        raise ValueError("bench relu measures one protocol: --protocol gmw or fss")
    spec = ReluSpec(k, m, args.adder, args.select, protocol)
    report, out = run_relu_bench(values, spec, args.parties, args.transport, args.op,
                                 threads=args.threads, shift=args.shift)
    result = {"command": command_line(), **report}
    if args.gmw:
        ref, _ = run_relu_bench(values, ReluSpec(), args.parties, args.transport, args.op,
                                threads=args.threads, shift=args.shift)
        result["gmw_exact"] = ref
        result["speedup_vs_gmw_exact"] = ref["seconds_online"] / report["seconds_online"]
    if args.baseline:
        base, _ = run_relu_bench(values, ReluSpec(64, 0, "kogge-stone", "b2a-mult"), args.parties,
                                 args.transport, args.op, threads=args.threads, shift=args.shift)
        result["baseline"] = base
        result["speedup_vs_baseline"] = base["seconds_online"] / report["seconds_online"]
        result["comm_reduction_vs_baseline"] = (base["bits_sent_per_element"] /
                                                max(report["bits_sent_per_element"], 1e-9))
    if args.output:
        scale = 1.0 if args.op == "drelu" else 2.0 ** 16
        np.save(args.output, (out.double() / scale).numpy().reshape(values.shape))
    print_json(result)
    return 0
