"""``ringlet demo``: the main job on bundled defaults (see README)."""

from __future__ import annotations

from ringlet.cli.common import TRANSPORT_CHOICES, TRANSPORT_HELP, add_debug, print_json


def add_parser(sub, name):
    p = sub.add_parser(name, help="run the bundled demonstration")
    p.add_argument("--parties", type=int, default=2)
    p.add_argument("--transport", choices=TRANSPORT_CHOICES, default="local",
                   help=TRANSPORT_HELP)
    p.add_argument("--samples", type=int, default=256, help="test images for the inference demo")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--model", help="checkpoint (default: the shipped resnet20-fmnist)")
    p.add_argument("--core", action="store_true", help="the protocol-level demo instead")
    p.add_argument("--json", action="store_true", help="print the JSON summary only")
    add_debug(p)
    p.set_defaults(run=run)


def run(args):
    from ringlet.demo import core_demo, inference_demo
    log = None if args.json else print
    if args.core:
        summary = core_demo(args.parties, args.transport, log=log)
    else:
        summary = inference_demo(args.samples, args.batch, args.parties, args.transport, args.model, log)
    if args.json:
        print_json(summary)
    return 0
