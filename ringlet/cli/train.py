"""``ringlet train``: train a zoo model on a named dataset and write a checkpoint."""

from __future__ import annotations

from pathlib import Path

from ringlet.cli.common import _size, add_data_dir, add_debug, command_line, print_json


def add_parser(sub, name):
    p = sub.add_parser(name, help="train a zoo model (plaintext) and save a checkpoint")
    p.add_argument("--model", required=True,
                   help="zoo model name (from scratch), a checkpoint (continue), or "
                        "package.module:factory (your own module; --weights to start from)")
    p.add_argument("--weights", help="with a factory: initial weights (.safetensors)")
    p.add_argument("--dataset", required=True,
                   help="dataset name, e.g. fashion-mnist, or imagefolder with --data-dir")
    p.add_argument("--normalize", help="MEAN,STD, none or raw (default: the dataset's statistics)")
    p.add_argument("--image-size", type=_size, help="H,W: resize ImageFolder images")
    p.add_argument("--epochs", type=int, required=True)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--optimizer", choices=("sgd", "adamw"), default="sgd",
                   help="sgd (with --momentum) or adamw (for transformers)")
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--warmup-epochs", type=float, default=0.0)
    p.add_argument("--no-augment", action="store_true", help="no random crop / flip")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    p.add_argument("--train-samples", type=int, default=None, help="use only the first N training images")
    p.add_argument("--out", required=True, help="output folder (checkpoint NAME-DATASET.* and resume state)")
    p.add_argument("--name", help="checkpoint stem (default NAME-DATASET; derived models need their own)")
    p.add_argument("--sharing-config", help="turn ReLUs into gReLUs first (ReLU-sharing JSON)")
    p.add_argument("--poly", help="turn all ReLUs into polynomials first: degree=4,range=5")
    p.add_argument("--pillar", type=float, help="PILLAR penalty coefficient (with --poly), e.g. 5e-5")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    add_data_dir(p)
    add_debug(p)
    p.set_defaults(run=run)


def run(args):
    from ringlet.jobs.train import train_zoo_model
    result = train_zoo_model(
        model=args.model, dataset=args.dataset, epochs=args.epochs, batch=args.batch, lr=args.lr,
        momentum=args.momentum, optimizer=args.optimizer, weight_decay=args.weight_decay,
        warmup_epochs=args.warmup_epochs,
        augment=not args.no_augment, seed=args.seed, threads=args.threads, out=Path(args.out),
        data_dir=args.data_dir, train_samples=args.train_samples, progress=not args.no_progress,
        command=command_line(), sharing=args.sharing_config, poly=_poly(args.poly),
        pillar=args.pillar, name=args.name, weights=args.weights, normalize=args.normalize,
        image_size=args.image_size)
    if args.json:
        print_json(result)
    else:
        print(f"test accuracy {result['test_accuracy']:.4f}; checkpoint {result['checkpoint']}")
    return 0


def _poly(text):
    if not text:
        return None
    out = {}
    for part in text.split(","):
        key, _, value = part.partition("=")
        if key not in ("degree", "range") or not value:
            raise ValueError(f"--poly {text!r}: expected degree=D,range=R")
        out[key] = float(value) if key == "range" else int(value)
    return out
