"""Argument helpers shared by several commands."""

from __future__ import annotations

import json
import sys


def add_data_dir(parser) -> None:
    parser.add_argument("--data-dir", default=None,
                        help="folder with dataset files (default: $RINGLET_DATA; Fashion-MNIST is "
                             "also found in the Debian package's folder)")


def add_debug(parser) -> None:
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")


def print_json(obj) -> None:
    json.dump(obj, sys.stdout, indent=2, sort_keys=False, default=_default)
    sys.stdout.write("\n")
    sys.stdout.flush()


def _default(obj):
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def command_line() -> str:
    """The command as typed (for reproducibility records)."""
    import shlex
    import os
    prog = os.path.basename(sys.argv[0]) if sys.argv else "ringlet"
    if prog in ("__main__.py", "-c"):
        prog = "ringlet"
    return " ".join([prog] + [shlex.quote(a) for a in sys.argv[1:]])
