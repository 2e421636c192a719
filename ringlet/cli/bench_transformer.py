"""``ringlet bench transformer``: a ViT and a BERT-style encoder privately (JSON)."""

from __future__ import annotations

from ringlet.cli.common import TRANSPORT_CHOICES, TRANSPORT_HELP, add_debug, command_line, print_json


def add_parser(sub, name):
    p = sub.add_parser(name, help="ViT and BERT-style encoder: online seconds, MB, rounds, error, "
                                  "per-operator shares, against the field's figures")
    p.add_argument("--models", default="vit,bert", help="comma-separated: vit, bert")
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--tokens", type=int, default=128, help="BERT's sequence length")
    p.add_argument("--inputs", type=int, default=1, help="samples per private run")
    p.add_argument("--transport", choices=TRANSPORT_CHOICES, default="tcp", help=TRANSPORT_HELP)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print JSON (the default output)")
    add_debug(p)
    p.set_defaults(run=run)


def run(args):
    from ringlet.bench.transformer import transformer_bench
    models = tuple(m.strip() for m in args.models.split(",") if m.strip())
    bad = [m for m in models if m not in ("vit", "bert")]
    if bad:
        raise SystemExit(f"--models: unknown {', '.join(bad)} (vit, bert)")
    print_json({"command": command_line(),
                **transformer_bench(models, args.layers, args.width, args.tokens, args.inputs,
                                    args.transport, args.seed)})
    return 0
