"""``ringlet`` entry point: dispatches to one module per command."""

from __future__ import annotations

import argparse
import importlib
import sys

# command name -> module under ringlet.cli (imported only when the command runs)
COMMANDS = {
    "demo": "demo",
    "train": "train",
    "eval": "evaluate",
    "bench": "bench",
    "infer": "infer",
    "party": "party",
    "serve": "serve",
    "query": "query",
    "certs": "certs",
    "search": "search",
    "finetune": "finetune",
    "report": "report",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ringlet", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in COMMANDS.items():
        try:
            mod = importlib.import_module(f"ringlet.cli.{module}")
        except ModuleNotFoundError as exc:
            if exc.name == f"ringlet.cli.{module}":
                continue  # command not built yet
            raise
        mod.add_parser(sub, name)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return 2
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, RuntimeError, TimeoutError, ConnectionError) as exc:
        if getattr(args, "debug", False):
            raise
        print(f"ringlet {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
