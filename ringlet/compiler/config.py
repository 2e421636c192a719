"""Per-activation ReLU configuration: which bits each ReLU keeps and which protocol computes it.

File format (JSON; the search writes it, the compiler reads it)::

    {"version": 2,
     "default": SETTING,                        # optional; missing means "exact"
     "protocol": "gmw" | "fss",                 # optional: the default protocol of every ReLU
     "groups": {"GROUP": ["relu name", ...]},   # optional
     "layers": {"relu name or GROUP": SETTING}, # optional
     "ring_bits": L, "frac_bits": F}            # optional: the ring Z_2^L and fixed point F

SETTING is ``"exact"`` (all 64 bits), ``"identity"`` (no bits: the ReLU becomes the identity),
``{"k": K, "m": M}`` (keep bits [k:m], 0 ≤ m ≤ k ≤ 64) or ``{"bits": "exact" | "identity"}``; a dict
may add ``"protocol": P`` (a registered ReLU protocol, :mod:`ringlet.protocols.catalog`), and
``{"protocol": P}`` alone sets only the protocol, keeping the bits the level below gives.
``layers[name]`` overrides ``layers[GROUP]``, which overrides ``default`` (for the protocol: the
top-level ``"protocol"``, or the default SETTING's own, not both); the bits and the protocol resolve
independently, and a ReLU no level gives a protocol has none (the command line's default applies).
ReLU names are module paths (``layer1.0.relu1``) or, for functional ReLUs, the torch.fx node name.
``ring_bits`` (32…64) and ``frac_bits`` (the eco-ring search writes both) make a private run use
that ring and fixed point instead of the model's own. Other top-level keys (e.g. the search's
provenance) are kept as is.

Version 1 is the same without protocols (no ``"protocol"`` key anywhere); it still loads, and is
saved as version 2 with the same meaning. Every problem is reported with the entry that caused it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from ringlet.protocols.catalog import relu_protocols

VERSION = 2  # the version this ringlet writes
READ_VERSIONS = (1, 2)  # the versions it reads
Setting = str | dict
Bits = tuple[int, int]
_RESERVED = ("version", "default", "protocol", "groups", "layers")
_READS = f"this ringlet reads versions {', '.join(map(str, READ_VERSIONS))}"


class ConfigError(ValueError):
    """A ReLU configuration that is malformed or does not fit the model."""


def check_protocol(protocol, where: str) -> str:
    """``protocol`` if it names a registered ReLU protocol, else a ConfigError naming ``where``."""
    # the registry imports torch; reading a config file does not need it until here
    names = relu_protocols().names()
    if not isinstance(protocol, str) or protocol not in names:
        raise ConfigError(f"{where}: unknown protocol {protocol!r}; use one of {', '.join(names)}")
    return protocol


def parse_entry(value, where: str) -> tuple[Bits | None, str | None]:
    """A SETTING → ((k, m) or None, protocol or None): None where the entry does not set it
    (``{"protocol": P}`` sets no bits, ``"exact"`` no protocol). ``identity`` is (0, 0)."""
    if value == "exact":
        return (64, 0), None
    if value == "identity":
        return (0, 0), None
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: a setting is \"exact\", \"identity\" or {{\"k\": K, \"m\": M}} "
                          f"(optionally with \"protocol\"), got {value!r}")
    unknown = set(value) - {"k", "m", "bits", "protocol"}
    if unknown or not value or ("bits" in value and ("k" in value or "m" in value)) \
            or ("m" in value and "k" not in value):
        raise ConfigError(f"{where}: a bit setting is {{\"k\": K, \"m\": M}} or {{\"bits\": \"exact\" | "
                          f"\"identity\"}}, optionally with \"protocol\": P, or {{\"protocol\": P}} "
                          f"alone; got {value!r}")
    protocol = check_protocol(value["protocol"], where) if "protocol" in value else None
    if "bits" in value:
        if value["bits"] not in ("exact", "identity"):
            raise ConfigError(f"{where}: \"bits\" is \"exact\" or \"identity\", got {value['bits']!r}")
        return parse_entry(value["bits"], where)[0], protocol
    if "k" not in value:
        return None, protocol
    k, m = value["k"], value.get("m", 0)
    if not isinstance(k, int) or not isinstance(m, int) or isinstance(k, bool) or isinstance(m, bool):
        raise ConfigError(f"{where}: k and m must be integers, got {value!r}")
    if k > 64:
        raise ConfigError(f"{where}: k = {k} > 64 (a ring has at most 64 bits)")
    if m < 0:
        raise ConfigError(f"{where}: m = {m} < 0")
    if k < m:
        raise ConfigError(f"{where}: k = {k} < m = {m}")
    return (k, m), protocol


def parse_setting(value, where: str) -> Bits:
    """A SETTING → (k, m), ignoring any protocol; ``identity`` is (0, 0). A protocol-only
    SETTING (no bits) is a ConfigError: use :func:`parse_entry` where that is allowed."""
    bits, _ = parse_entry(value, where)
    if bits is None:
        raise ConfigError(f"{where}: {value!r} sets only a protocol, no bits")
    return bits


def setting_of(k: int, m: int, protocol: str | None = None) -> Setting:
    """The SETTING for bits [k:m] (and ``protocol``, if given)."""
    bits: str | dict[str, int]
    if (k, m) == (64, 0):
        bits = "exact"
    elif k == m:
        bits = "identity"
    else:
        bits = {"k": k, "m": m}
    if protocol is None:
        return bits
    check_protocol(protocol, "setting_of")
    return {**bits, "protocol": protocol} if isinstance(bits, dict) else {"bits": bits, "protocol": protocol}


@dataclass(frozen=True)
class ReluConfig:
    """A parsed configuration (not yet checked against a model: see :meth:`resolve`).

    ``protocol`` is the top-level default protocol (None: none set); ``version`` is kept for
    callers that pass it, and files are always written as :data:`VERSION`."""

    default: Setting = "exact"
    groups: dict = field(default_factory=dict)
    layers: dict = field(default_factory=dict)
    version: int = VERSION
    extra: dict = field(default_factory=dict)  # other top-level keys (e.g. provenance), kept as is
    report: dict | None = field(default=None, compare=False, repr=False)  # a search's report (not saved)
    protocol: str | None = None  # the default protocol of every ReLU

    @classmethod
    def from_dict(cls, data: dict, source: str = "config") -> ReluConfig:
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: expected a JSON object, got {type(data).__name__}")
        if "version" not in data:
            raise ConfigError(f"{source}: missing \"version\" ({_READS})")
        version = data["version"]
        if isinstance(version, bool) or version not in READ_VERSIONS:
            raise ConfigError(f"{source}: unknown version {version!r} ({_READS})")
        default = data.get("default", "exact")
        groups = data.get("groups", {})
        if not isinstance(groups, dict):
            raise ConfigError(f"{source}: \"groups\" must be an object of name → list of ReLU names")
        for g, members in groups.items():
            if not isinstance(members, list) or not all(isinstance(x, str) for x in members):
                raise ConfigError(f"{source}: group {g!r} must be a list of ReLU names")
        layers = data.get("layers", {})
        if not isinstance(layers, dict):
            raise ConfigError(f"{source}: \"layers\" must be an object of name → setting")
        entries = [(f"{source}: default", default)] + [(f"{source}: layers[{n!r}]", v) for n, v in layers.items()]
        if version == 1:
            if "protocol" in data:
                raise ConfigError(f"{source}: \"protocol\": a protocol needs version 2 (this file is version 1)")
            for where, value in entries:
                if isinstance(value, dict) and "protocol" in value:
                    raise ConfigError(f"{where}: a protocol needs version 2 (this file is version 1)")
        protocol = data.get("protocol")
        if "protocol" in data:
            check_protocol(protocol, f"{source}: \"protocol\"")
        for where, value in entries:
            parse_entry(value, where)
        extra = {k: v for k, v in data.items() if k not in _RESERVED}
        ring_bits, frac_bits = extra.get("ring_bits"), extra.get("frac_bits")
        for key, value, lo, hi in (("ring_bits", ring_bits, 32, 64), ("frac_bits", frac_bits, 0, 62)):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                      or not lo <= value <= hi):
                raise ConfigError(f"{source}: \"{key}\" must be an integer in {lo}..{hi}, got {value!r}")
        if ring_bits is not None and frac_bits is not None and frac_bits > ring_bits - 2:
            raise ConfigError(f"{source}: frac_bits = {frac_bits} does not fit a {ring_bits}-bit ring")
        cfg = cls(default, dict(groups), dict(layers), VERSION, extra, protocol=protocol)
        cfg._default_entry(source)
        return cfg

    @property
    def ring_bits(self) -> int | None:
        return self.extra.get("ring_bits")

    @property
    def frac_bits(self) -> int | None:
        return self.extra.get("frac_bits")

    @classmethod
    def load(cls, path: str | os.PathLike) -> ReluConfig:
        path = Path(path)
        if path.is_dir():
            raise ConfigError(f"ReLU config {path} is a directory, not a JSON file")
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"ReLU config {path} not found") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"ReLU config {path}: cannot be read ({exc})") from None
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: not valid JSON ({exc})") from None
        return cls.from_dict(data, str(path))

    def to_dict(self) -> dict:
        out = {"version": VERSION, "default": self.default}
        if self.protocol is not None:
            out["protocol"] = self.protocol
        if self.groups:
            out["groups"] = self.groups
        if self.layers:
            out["layers"] = self.layers
        out.update({k: v for k, v in self.extra.items() if k not in _RESERVED})
        return out

    def save(self, path: str | os.PathLike) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    def resolve(self, relu_names: list[str], source: str = "config") -> dict[str, Bits]:
        """(k, m) for every ReLU of the model; unknown names are errors naming the entry."""
        return self._resolve(relu_names, source)[0]

    def resolve_protocols(self, relu_names: list[str], source: str = "config") -> dict[str, str | None]:
        """The protocol of every ReLU of the model, None where no level sets one (so the caller's
        default applies); unknown names are errors naming the entry."""
        return self._resolve(relu_names, source)[1]

    def _default_entry(self, source: str) -> tuple[Bits, str | None]:
        bits, protocol = parse_entry(self.default, f"{source}: default")
        if self.protocol is not None:
            check_protocol(self.protocol, f"{source}: \"protocol\"")
            if protocol is not None:
                raise ConfigError(f"{source}: default sets protocol {protocol!r} and \"protocol\" sets "
                                  f"{self.protocol!r}; give the default protocol once")
            protocol = self.protocol
        return (64, 0) if bits is None else bits, protocol

    def _resolve(self, relu_names: list[str], source: str) -> tuple[dict[str, Bits], dict[str, str | None]]:
        """The bits and the protocol of every ReLU, each with its own precedence
        (layers[name] > layers[GROUP] > default)."""
        known = set(relu_names)
        for g, members in self.groups.items():
            if g in known:
                raise ConfigError(f"{source}: group name {g!r} is also a ReLU name")
            for name in members:
                if name not in known:
                    raise ConfigError(f"{source}: group {g!r} names {name!r}, which is not a ReLU of "
                                      f"the model (ReLUs: {_preview(relu_names)})")
        d_bits, d_protocol = self._default_entry(source)
        bits: dict[str, Bits] = dict.fromkeys(relu_names, d_bits)
        protocols: dict[str, str | None] = dict.fromkeys(relu_names, d_protocol)

        def apply(names, value, where):
            b, p = parse_entry(value, where)
            for name in names:
                if b is not None:
                    bits[name] = b
                if p is not None:
                    protocols[name] = p

        for g, members in self.groups.items():
            if g in self.layers:
                apply(members, self.layers[g], f"{source}: layers[{g!r}]")
        for name, value in self.layers.items():
            if name in self.groups:
                continue
            if name not in known:
                raise ConfigError(f"{source}: layers names {name!r}, which is neither a ReLU of the "
                                  f"model nor a group (ReLUs: {_preview(relu_names)})")
            apply([name], value, f"{source}: layers[{name!r}]")
        return bits, protocols


def _preview(names: list[str], n: int = 6) -> str:
    return ", ".join(names[:n]) + (f", … ({len(names)} in all)" if len(names) > n else "")


def uniform(k: int, m: int, protocol: str | None = None) -> ReluConfig:
    """The same bits (and, if given, the same protocol) for every ReLU."""
    if protocol is not None:
        check_protocol(protocol, "uniform")
    return ReluConfig(default=setting_of(k, m), protocol=protocol)


def as_config(relu_config) -> ReluConfig:
    """A ReluConfig from a ReluConfig, its JSON dict, a file path or None (every ReLU exact)."""
    if relu_config is None:
        return ReluConfig()
    if isinstance(relu_config, ReluConfig):
        return relu_config
    if isinstance(relu_config, dict):
        return ReluConfig.from_dict(relu_config, "relu_config")
    if isinstance(relu_config, (str, os.PathLike)):
        return ReluConfig.load(relu_config)
    raise ConfigError(f"relu_config: expected a ReluConfig, a dict or a path, got {type(relu_config).__name__}")
