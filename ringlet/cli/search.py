"""``ringlet search``: find the bits [k:m] every ReLU keeps (HummingBird eco / budget)."""

from __future__ import annotations

from ringlet.cli.common import (
    add_compile,
    add_data,
    add_debug,
    add_model,
    command_line,
    compile_kwargs,
    data_kwargs,
    print_json,
)


def add_parser(sub, name):
    p = sub.add_parser(name, help="search per-ReLU kept bits (eco or under a budget)")
    add_model(p)
    add_data(p, test=True)
    add_compile(p)
    p.add_argument("--mode", choices=["eco", "eco-ring", "budget"], required=True,
                   help="eco: the fewest safe bits per ReLU; eco-ring: the same in the smallest ring "
                        "and fixed point that hold the model (writes ring_bits and frac_bits); "
                        "budget: the best accuracy under --budget")
    p.add_argument("--budget", help="budget mode: kept bits per ReLU, e.g. 8/64")
    p.add_argument("--groups", default="stages", help="stages (default), layers, or a JSON file")
    p.add_argument("--val-samples", type=int, default=1024,
                   help="validation images (training split; with --input: the first N inputs)")
    p.add_argument("--naive", action="store_true", help="add the naive same-bits ablation to the report")
    p.add_argument("--margin", type=int, default=0, help="eco: extra safety bits above the needed k")
    p.add_argument("--ring-margin", type=int, default=None,
                   help="eco-ring: safety bits above the largest validation value (default 3)")
    p.add_argument("--ring-frac", choices=["keep", "search"], default="keep",
                   help="eco-ring: keep the model's fractional bits (accuracy of the 64-bit ring by "
                        "construction; default) or search fewer (a smaller ring; validation decides)")
    p.add_argument("--min-accuracy", type=float, help="budget: early stop 1 threshold (validation)")
    p.add_argument("--widths", help="budget: comma-separated widths to try (default 0,1,2,4,6,8,12,16,"
                                    "32,64)")
    p.add_argument("--m-scan", choices=["coarse", "full"], default="coarse",
                   help="budget: try every m in 0..15 (full, as the paper) or every third m and the "
                        "neighbours of the best (coarse, default)")
    p.add_argument("--parties", type=int, default=2, help="servers assumed by the rule (carry loss)")
    p.add_argument("--time-limit", type=float, help="budget: stop the DFS after this many seconds")
    p.add_argument("--test-samples", type=int, help="evaluate on the first N test images only")
    p.add_argument("--out", required=True, help="the per-ReLU configuration to write (JSON)")
    p.add_argument("--report", help="the search report to write (JSON)")
    p.add_argument("--plot", help="PNG of kept bits per group (the paper's Figure 12)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--json", action="store_true", help="print the report")
    add_debug(p)
    p.set_defaults(run=run)


def run(args):
    from ringlet.jobs.search import run_search
    from ringlet.search import hummingbird as hb
    widths = tuple(int(w) for w in args.widths.split(",")) if args.widths else hb.DEFAULT_WIDTHS
    report = run_search(args.model, mode=args.mode, budget=args.budget,
                        groups=args.groups, val_samples=args.val_samples, naive=args.naive,
                        margin=args.margin, parties=args.parties, min_accuracy=args.min_accuracy,
                        widths=widths, out=args.out, report_path=args.report, plot=args.plot,
                        progress=not args.no_progress, time_limit=args.time_limit,
                        test_samples=args.test_samples, command=command_line(), m_scan=args.m_scan,
                        weights=args.weights, ring_margin=args.ring_margin, ring_frac=args.ring_frac,
                        **data_kwargs(args), **compile_kwargs(args))
    if args.json:
        print_json(report)
    else:
        key = "budget_accuracy" if args.mode == "budget" else "eco_accuracy"
        fmt = lambda v: "n/a (no test data)" if v is None else f"{v:.4f}"  # noqa: E731
        print(f"exact {fmt(report['exact_accuracy'])}, {args.mode} {fmt(report[key])}"
              + (f", naive {fmt(report['naive_accuracy'])}" if "naive_accuracy" in report else "")
              + f"; kept {report['kept_bits_per_relu']:.2f} bits per ReLU; "
              f"{report['configs_evaluated']} configurations in {report['search_seconds']:.0f} s; "
              f"config → {args.out}"
              + (f"; ring {report['eco_ring']['ring_bits']} bits, f = {report['eco_ring']['frac_bits']}"
                 if "eco_ring" in report else ""))
    return 0
