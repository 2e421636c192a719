"""``ringlet finetune``: retrain with the approximate ReLUs of a configuration in place."""

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
    relu_config_help,
)


def add_parser(sub, name):
    p = sub.add_parser(name, help="finetune a checkpoint with approximate ReLUs (straight-through)")
    add_model(p)
    add_data(p, test=True)
    add_compile(p)
    p.add_argument("--relu-config", required=True, help=relu_config_help())
    p.add_argument("--epochs", type=int, required=True)
    p.add_argument("--out", required=True, help="output checkpoint path (stem)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--parties", type=int, default=2)
    p.add_argument("--train-samples", type=int)
    p.add_argument("--test-samples", type=int, help="evaluate on the first N test images only")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-augment", action="store_true", help="no random crop / flip")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--json", action="store_true")
    add_debug(p)
    p.set_defaults(run=run)


def run(args):
    from ringlet.jobs.search import run_finetune
    result = run_finetune(args.model, args.relu_config, args.epochs, args.out, lr=args.lr,
                          batch=args.batch, parties=args.parties, progress=not args.no_progress,
                          seed=args.seed, train_samples=args.train_samples,
                          test_samples=args.test_samples, command=command_line(),
                          weights=args.weights, augment=not args.no_augment,
        **data_kwargs(args), **compile_kwargs(args))
    if args.json:
        print_json({"command": command_line(), **result})
    else:
        if result["accuracy_before"] is None:
            print(f"finetuned {args.epochs} epochs (no test data); checkpoint {result['checkpoint']}")
        else:
            print(f"simulated test accuracy {result['accuracy_before']:.4f} → "
                  f"{result['accuracy_after']:.4f} after {args.epochs} epochs; checkpoint "
                  f"{result['checkpoint']}")
    return 0
