"""Argument helpers shared by several commands."""

from __future__ import annotations

import json
import sys

from ringlet.protocols.piecewise import SMOOTH_METHODS


def add_data_dir(parser) -> None:
    parser.add_argument("--data-dir", default=None,
                        help="folder with dataset files (default: $RINGLET_DATA; Fashion-MNIST is "
                             "also found in the Debian package's folder)")


def add_model(parser, help_extra: str = "") -> None:
    parser.add_argument("--model", required=True,
                        help="a saved PrivateModel folder, a checkpoint (path or shipped stem), "
                             "package.module:factory (with --weights), an ONNX file (model.onnx), "
                             "or a zoo name" + help_extra)
    parser.add_argument("--weights", help="with --model package.module:factory: its weights "
                                          "(.safetensors; never a pickle)")


def add_data(parser, *, test: bool = False, dataset_required: bool = False) -> None:
    """--dataset / --data-dir, or --input X.npy [--labels Y.npy]; normalisation and image size."""
    parser.add_argument("--dataset", required=dataset_required,
                        help="dataset name (imagefolder: any ImageFolder tree given by --data-dir); "
                             "default: the model's own")
    parser.add_argument("--input", help="inputs as .npy: uint8 pixels (normalised with the model's "
                                        "normalisation) or float model inputs, N×C×H×W or C×H×W")
    parser.add_argument("--labels", help="with --input: integer labels as .npy (N)")
    if test:
        parser.add_argument("--test-input", help="test inputs as .npy (with --test-labels)")
        parser.add_argument("--test-labels", help="test labels as .npy")
    parser.add_argument("--normalize", help="MEAN,STD (per channel with '/': 0.49/0.48/0.45,0.25/0.24/"
                                            "0.26), none ([0, 1] pixels) or raw (0..255); default: "
                                            "the model's stored normalisation")
    parser.add_argument("--image-size", type=_size, help="H,W: resize ImageFolder images")
    add_data_dir(parser)


def add_compile(parser) -> None:
    parser.add_argument("--frac-bits", type=int, default=None,
                        help="fixed-point fractional bits (default: 16, or a saved model's)")
    parser.add_argument("--ring-bits", type=int, default=None,
                        help="the ring Z_2^L of every share, 32..64 (default: 64, or a saved "
                             "model's; an activation config with ring_bits overrides it)")
    parser.add_argument("--smooth", choices=list(SMOOTH_METHODS), default=None,
                        help="sigmoid, tanh, SiLU, GELU, Softplus, ELU, Mish, Hardswish: accurate "
                             "(default: breakpoints and pieces, error ≤ 1e-3), piecewise (two "
                             "breakpoints, cheaper, error up to 0.05) or poly (one polynomial)")
    parser.add_argument("--input-bound", type=float,
                        help="the largest |input| the model must accept (default: from its "
                             "normalisation or public calibration data)")


def add_linear_backend(parser) -> None:
    """--linear-backend: the exact backend of public-weight conv/linear layers (a secure run)."""
    from ringlet.compiler.options import SecureOptions
    SecureOptions.add_arguments(parser, only=("backend",))


def add_relu_protocol(parser) -> None:
    """--adder (a registered sign family), --select, --relu-protocol and --auto-link."""
    from ringlet.compiler.options import SecureOptions
    SecureOptions.add_arguments(parser, only=("adder", "select", "relu_protocol", "auto_link"))


def add_relu_protocol_choice(parser) -> None:
    """--relu-protocol (a registered ReLU protocol, or auto) and --auto-link."""
    from ringlet.compiler.options import SecureOptions
    SecureOptions.add_arguments(parser, only=("relu_protocol", "auto_link"))


def add_secure_options(parser) -> None:
    """Every flag of :class:`~ringlet.compiler.options.SecureOptions` (a private run's protocols)."""
    from ringlet.compiler.options import SecureOptions
    SecureOptions.add_arguments(parser)


def relu_protocol_choices() -> tuple[str, ...]:
    """Every registered ReLU protocol, and auto."""
    from ringlet.protocols.catalog import relu_protocols
    return (*relu_protocols().names(), "auto")


def _size(text: str) -> tuple[int, int]:
    import argparse
    try:
        h, w = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected H,W") from None
    if h < 1 or w < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: sizes must be positive")
    return h, w


def compile_kwargs(args) -> dict:
    return {"frac_bits": args.frac_bits, "ring_bits": args.ring_bits, "smooth": args.smooth,
            "input_bound": args.input_bound}


def data_kwargs(args) -> dict:
    """The keyword arguments of the library calls for the options of :func:`add_data`."""
    out = {"dataset": args.dataset, "input_path": args.input, "labels_path": args.labels,
           "normalize": args.normalize, "image_size": args.image_size, "data_dir": args.data_dir}
    if hasattr(args, "test_input"):
        out.update(test_input=args.test_input, test_labels=args.test_labels)
    return out


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
    import os
    import shlex
    prog = os.path.basename(sys.argv[0]) if sys.argv else "ringlet"
    if prog in ("__main__.py", "-c"):
        prog = "ringlet"
    return " ".join([prog] + [shlex.quote(a) for a in sys.argv[1:]])


# ringlet.comm.transport.TRANSPORTS, spelled out so that building the parser imports no torch
TRANSPORT_CHOICES = ("local", "tcp", "socket", "tls", "gloo")
TRANSPORT_HELP = ("local: threads of one process; tcp: one process per party, direct links on "
                  "loopback, plain (socket: the same); tls: direct links in TLS 1.3 with "
                  "certificates; gloo: torch.distributed over plain TCP (NO authentication or "
                  "encryption: any local process can join the rendezvous)")


def relu_config_help(extra: str = "") -> str:
    """The help of every --relu-config flag, with the config format's version from the code."""
    from ringlet.compiler.config import READ_VERSIONS, VERSION
    return (f"per-ReLU bits, gReLU groups and protocols: JSON as `ringlet search` writes it (version "
            f"{VERSION}; versions {', '.join(map(str, READ_VERSIONS))} are read){extra}")
