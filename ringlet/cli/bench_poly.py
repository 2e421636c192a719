"""``ringlet bench poly``: secure polynomial evaluation, exact counts and error (JSON)."""

from __future__ import annotations

from ringlet.cli.common import TRANSPORT_CHOICES, TRANSPORT_HELP, add_debug, command_line, print_json


def add_parser(sub, name):
    p = sub.add_parser(name, help="secure polynomial activation: rounds, bits, error")
    p.add_argument("--n", type=int, default=1 << 20)
    p.add_argument("--degree", type=int, default=4)
    p.add_argument("--method", choices=["espn", "espn-beaver", "honeybadger", "horner"], default="espn")
    p.add_argument("--range", type=float, default=5.0, help="inputs uniform on [-R, R]")
    p.add_argument("--parties", type=int, default=2)
    p.add_argument("--frac", type=int, help="input fractional bits of the one-round methods")
    p.add_argument("--out-truncation", choices=["dealer", "local"], default="dealer",
                   help="the final truncation: exact (+1 round) or local (1 round, rare failures)")
    p.add_argument("--transport", choices=TRANSPORT_CHOICES, default="local",
                   help=TRANSPORT_HELP)
    p.add_argument("--json", action="store_true")
    add_debug(p)
    p.set_defaults(run=run)


def run(args):
    from ringlet.bench.poly import run_poly_bench
    print_json({"command": command_line(),
                **run_poly_bench(args.n, args.degree, args.method, args.range, args.parties,
                                 args.frac, args.out_truncation, args.transport)})
    return 0
