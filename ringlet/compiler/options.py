"""How a secure run computes: one options object from the command line, a deployment's ``[model]``
section and API keywords down to every party.

Each field of :class:`SecureOptions` declares, in its metadata, its command-line flag(s), help and
choices, and the key it has in a dict (a deployment file, ``pm.infer(x, relu_protocol="fss")``):
:meth:`SecureOptions.add_arguments` builds the flags from the fields, :meth:`SecureOptions.from_args`
and :meth:`SecureOptions.from_dict` read them back, and every consumer (``ringlet infer``,
``ringlet party``, ``ringlet serve``, :func:`ringlet.jobs.infer.run_inference`,
:meth:`ringlet.private.PrivateModel.infer`, :func:`ringlet.sources.server_model`) passes the object
through — a new option is one field here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from ringlet.comm.shaper import parse_profile
from ringlet.protocols.arith.poly import METHODS as POLY_METHODS
from ringlet.protocols.base import SELECTS
from ringlet.protocols.catalog import relu_protocols, sign_families
from ringlet.protocols.tuning.linear import CHOICES as BACKEND_CHOICES


def _adders() -> tuple[str, ...]:
    return sign_families().names()


def _relu_protocols() -> tuple[str, ...]:
    return (*relu_protocols().names(), "auto")


def _adder_help() -> str:
    return "the sign circuit: " + "; ".join(f"{f.name}: {f.summary}" for f in sign_families())


def _protocol_help() -> str:
    return ("every ReLU layer's protocol (default: the config's, else gmw): "
            + "; ".join(f"{p.name}: {p.summary}" for p in relu_protocols())
            + "; auto: per layer, the faster by a cost model measured on this machine (it prints "
              "what it chose and why)")


def option(default, flags: tuple[str, ...] = (), help: str | Callable[[], str] = "", *,
           choices: tuple | Callable[[], tuple] | None = None, key: str | None = None,
           switch: bool = False):
    """A field of :class:`SecureOptions` with what the command line and dicts need to know.

    ``flags``: its flags (none: API and files only); ``key``: its name in a dict (default: the
    field's); ``switch``: a flag without a value that sets True.
    """
    meta = {"flags": flags, "help": help, "choices": choices, "key": key, "switch": switch}
    return field(default=default, metadata=meta)


def _resolved(value):
    return value() if callable(value) else value


@dataclass(frozen=True)
class SecureOptions:
    """Protocol choices for a whole model (see the module docstring)."""

    adder: str = option("carry-tree", ("--adder",), _adder_help, choices=_adders)
    select: str = option("fused", ("--select",), "the select after the sign: fused (bit injection, "
                         "the truncation folded in) or b2a-mult (CrypTen's)", choices=SELECTS)
    truncation: str | None = option(
        None, ("--truncation",), "standalone truncations (default: local for 2 servers, dealer "
        "otherwise)", choices=("local", "dealer"))
    backend: str = option(
        "auto", ("--linear-backend",), "exact backend of public-weight conv/linear layers: int64, "
        "float64 limbs (NCHW, channels_last, im2col), or auto: the fastest measured on this machine "
        "per layer shape (cached in $RINGLET_CACHE_DIR, default ~/.cache/ringlet; never changes "
        "results)", choices=BACKEND_CHOICES, key="linear_backend")
    private_weights: bool = option(False, ("--private-weights",), "secret-share the weights from "
                                   "server 0 (the model owner)", switch=True)
    poly_method: str = option("espn", ("--poly-method",), "evaluation of polynomial activations",
                              choices=POLY_METHODS)
    poly_frac: int | None = option(None)  # input bits of the one-round methods (None: the largest safe)
    poly_out_truncation: str = option(
        "dealer", ("--poly-out-truncation",), "a polynomial's final truncation: exact (+1 round) or "
        "local (rare failures)", choices=("dealer", "local"))
    relu_protocol: str | None = option(None, ("--relu-protocol", "--protocol"), _protocol_help,
                                       choices=_relu_protocols)
    auto_link: str | None = option(
        None, ("--auto-link",), "the link auto's cost model assumes: lan, highbw, wan, wan-rtt or "
        "NAME@<rtt>ms (default: the run's --link, else lan)")

    def __post_init__(self):
        for f in dataclasses.fields(self):
            value, choices = getattr(self, f.name), _resolved(f.metadata["choices"])
            if choices is not None and value is not None and value not in choices:
                raise ValueError(f"{f.metadata['key'] or f.name} {value!r}: use one of "
                                 f"{', '.join(map(str, choices))}")
        if self.auto_link is not None:
            parse_profile(self.auto_link)  # an unknown profile is an error naming the known ones

    # -- the command line --------------------------------------------------------------------------
    @classmethod
    def add_arguments(cls, parser, only: tuple[str, ...] | None = None) -> None:
        """Add a flag for every field that has one (``only``: those fields)."""
        for f in dataclasses.fields(cls):
            meta = f.metadata
            if not meta["flags"] or (only is not None and f.name not in only):
                continue
            kw: dict = {"dest": _key(f), "help": _resolved(meta["help"])}
            if meta["switch"]:
                kw["action"] = "store_true"
            else:
                kw["default"] = f.default
                if meta["choices"] is not None:
                    kw["choices"] = _resolved(meta["choices"])
            parser.add_argument(*meta["flags"], **kw)

    @classmethod
    def from_args(cls, args, **overrides) -> SecureOptions:
        """The options of parsed flags (absent or None flags keep the defaults)."""
        values = {_key(f): getattr(args, _key(f)) for f in dataclasses.fields(cls)
                  if hasattr(args, _key(f))}
        return cls.from_dict({**values, **overrides})

    # -- dicts: a deployment's [model] section, API keywords -----------------------------------------
    @classmethod
    def keys(cls) -> tuple[str, ...]:
        return tuple(_key(f) for f in dataclasses.fields(cls))

    @classmethod
    def from_dict(cls, values: Mapping, where: str = "options") -> SecureOptions:
        """From a dict by keys (a field's name also works); None keeps the default; an unknown
        key is an error naming ``where`` and the known keys."""
        by_key = {_key(f): f.name for f in dataclasses.fields(cls)}
        names = set(by_key.values())
        out = {}
        for key, value in values.items():
            name = by_key.get(key) or (key if key in names else None)
            if name is None:
                raise ValueError(f"{where}: unknown option {key!r} (known: {', '.join(cls.keys())})")
            if value is not None:
                out[name] = value
        return cls(**out)

    def to_dict(self) -> dict:
        return {_key(f): getattr(self, f.name) for f in dataclasses.fields(self)}

    def replace(self, **changes) -> SecureOptions:
        """A copy with ``changes`` (by key or field name; None keeps the current value)."""
        return self.from_dict({**self.to_dict(), **{k: v for k, v in changes.items() if v is not None}})


def _key(f) -> str:
    return f.metadata["key"] or f.name
