"""``ringlet eval``: plaintext accuracy of a checkpoint or zoo model on a dataset's test split."""

from __future__ import annotations

from ringlet.cli.common import add_data_dir, add_debug, print_json


def add_parser(sub, name):
    p = sub.add_parser(name, help="plaintext test accuracy of a checkpoint")
    p.add_argument("--model", required=True, help="checkpoint path (.safetensors/.json/stem) or zoo name")
    p.add_argument("--dataset", required=True)
    p.add_argument("--samples", type=int, default=None, help="first N test images (default: all)")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--relu-config", help="evaluate with the share-level simulator applying this ReLU "
                   "config (the accuracy a private run with it should reach)")
    p.add_argument("--parties", type=int, default=2, help="servers simulated with --relu-config")
    p.add_argument("--json", action="store_true")
    add_data_dir(p)
    add_debug(p)
    p.set_defaults(run=run)


def run(args):
    if args.relu_config:
        from ringlet.search.api import simulated_accuracy
        result = simulated_accuracy(args.model, args.relu_config, args.dataset, args.samples,
                                    args.parties, args.data_dir)
    else:
        from ringlet.train.api import evaluate_model
        result = evaluate_model(args.model, args.dataset, samples=args.samples, batch=args.batch,
                                data_dir=args.data_dir)
    if args.json:
        print_json(result)
    else:
        print(f"{result['model']} on {result['dataset']}: accuracy {result['accuracy']:.4f} "
              f"over {result['samples']} test images")
    return 0
