"""``ringlet infer``: private inference of a model on a dataset or an .npy input (JSON report)."""

from __future__ import annotations

from ringlet.cli.common import (
    TRANSPORT_CHOICES,
    TRANSPORT_HELP,
    add_compile,
    add_data,
    add_debug,
    add_model,
    add_secure_options,
    command_line,
    compile_kwargs,
    data_kwargs,
    print_json,
    relu_config_help,
)


def add_parser(sub, name):
    p = sub.add_parser(name, help="private inference: client, servers and dealer on this machine")
    add_model(p, " (seeded random weights, BatchNorm calibrated on public data)")
    p.add_argument("--relu-config", help=relu_config_help())
    add_data(p)
    add_compile(p)
    p.add_argument("--samples", type=int, help="first N test inputs (default: all)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--parties", type=int, default=2, help="number of servers")
    p.add_argument("--transport", choices=TRANSPORT_CHOICES, default="local",
                   help=TRANSPORT_HELP)
    add_secure_options(p)
    p.add_argument("--no-pregenerate", action="store_true",
                   help="let the dealer answer during the online phase instead of before it")
    p.add_argument("--results", help="stream per-batch predictions to this JSON-lines file, so an "
                   "interrupted run keeps what it finished (default: runs/infer-TIME.jsonl)")
    p.add_argument("--no-results", action="store_true", help="do not stream per-batch results")
    p.add_argument("--output", help="write the logits as .npy")
    p.add_argument("--threads", type=int, default=0,
                   help="torch threads per party (0: automatic; over tcp the cores divided by the servers)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds any party waits for a message")
    p.add_argument("--seed", type=int, default=0, help="seed of a zoo model's random weights")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--json", action="store_true", help="print the JSON report (default: a summary)")
    add_debug(p)
    p.set_defaults(run=run)


def _results_path(args):
    """A function giving the results file, made only once the model and data are ready."""
    if args.no_results:
        return None
    import sys
    from pathlib import Path

    def make() -> str:
        if args.results:
            path = Path(args.results)
        else:
            import time
            path = Path("runs") / f"infer-{time.strftime('%Y%m%d-%H%M%S')}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
        print(f"per-batch results → {path}", file=sys.stderr)
        return str(path)
    return make


def run(args):
    from ringlet.compiler.options import SecureOptions
    from ringlet.jobs.infer import run_inference
    from ringlet.runtime.programs import save_logits
    from ringlet.search.api import _check_writable
    _check_writable(args.output, args.results)
    report, logits = run_inference(
        args.model, samples=args.samples, relu_config=args.relu_config, batch=args.batch,
        parties=args.parties, transport=args.transport, options=SecureOptions.from_args(args),
        pregenerate=not args.no_pregenerate, results_path=_results_path(args),
        progress=not args.no_progress, threads=args.threads, timeout=args.timeout, seed=args.seed,
        weights=args.weights, **compile_kwargs(args), **data_kwargs(args))
    if args.output:
        save_logits(args.output, logits)
    report = {"command": command_line(), **report}
    if args.json:
        print_json(report)
    else:
        acc = (f"accuracy {report['accuracy']:.4f} (plaintext {report['plaintext_accuracy']:.4f}), "
               if "accuracy" in report else "")
        print(f"{report['samples']} images: {acc}argmax agreement {report['argmax_agreement']:.4f}, "
              f"max |logit error| {report['max_abs_logit_error']:.2e}")
        print(f"online: {report['bytes_sent_per_party'] / 1e6:.2f} MB sent per server, "
              f"{report['rounds']} rounds, {report['seconds_online']:.2f} s "
              f"({report['images_per_second']:.1f} images/s); offline {report['offline_bytes'] / 1e6:.1f} MB")
    return 0
