"""Per-activation ReLU configuration: which bits each ReLU keeps.

File format (JSON; the search writes it, the compiler reads it)::

    {"version": 1,
     "default": SETTING,                        # optional; missing means "exact"
     "groups": {"GROUP": ["relu name", ...]},   # optional
     "layers": {"relu name or GROUP": SETTING}, # optional
     "ring_bits": L, "frac_bits": F}            # optional: the ring Z_2^L and fixed point F

SETTING is ``"exact"`` (all 64 bits), ``"identity"`` (no bits: the ReLU becomes the identity) or
``{"k": K, "m": M}`` (keep bits [k:m], 0 ≤ m ≤ k ≤ 64). ``layers`` overrides ``groups``, which
overrides ``default``. ReLU names are module paths (``layer1.0.relu1``) or, for functional ReLUs,
the torch.fx node name. ``ring_bits`` (32…64) and ``frac_bits`` (the eco-ring search writes both)
make a private run use that ring and fixed point instead of the model's own. Every problem is
reported with the entry that caused it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

VERSION = 1
Setting = str | dict


class ConfigError(ValueError):
    """A ReLU configuration that is malformed or does not fit the model."""


def parse_setting(value, where: str) -> tuple[int, int]:
    """A SETTING → (k, m); ``identity`` is (0, 0)."""
    if value == "exact":
        return 64, 0
    if value == "identity":
        return 0, 0
    if isinstance(value, dict):
        unknown = set(value) - {"k", "m"}
        if unknown or "k" not in value:
            raise ConfigError(f"{where}: a bit setting is {{\"k\": K, \"m\": M}}, got {value!r}")
        k, m = value["k"], value.get("m", 0)
        if not isinstance(k, int) or not isinstance(m, int) or isinstance(k, bool) or isinstance(m, bool):
            raise ConfigError(f"{where}: k and m must be integers, got {value!r}")
        if k > 64:
            raise ConfigError(f"{where}: k = {k} > 64 (a ring has at most 64 bits)")
        if m < 0:
            raise ConfigError(f"{where}: m = {m} < 0")
        if k < m:
            raise ConfigError(f"{where}: k = {k} < m = {m}")
        return k, m
    raise ConfigError(f"{where}: a setting is \"exact\", \"identity\" or {{\"k\": K, \"m\": M}}, "
                      f"got {value!r}")


def setting_of(k: int, m: int) -> Setting:
    if (k, m) == (64, 0):
        return "exact"
    if k == m:
        return "identity"
    return {"k": k, "m": m}


@dataclass(frozen=True)
class ReluConfig:
    """A parsed configuration (not yet checked against a model: see :meth:`resolve`)."""

    default: Setting = "exact"
    groups: dict = field(default_factory=dict)
    layers: dict = field(default_factory=dict)
    version: int = VERSION
    extra: dict = field(default_factory=dict)  # other top-level keys (e.g. provenance), kept as is
    report: dict | None = field(default=None, compare=False, repr=False)  # a search's report (not saved)

    @classmethod
    def from_dict(cls, data: dict, source: str = "config") -> "ReluConfig":
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: expected a JSON object, got {type(data).__name__}")
        if "version" not in data:
            raise ConfigError(f"{source}: missing \"version\" (this ringlet reads version {VERSION})")
        if data["version"] != VERSION:
            raise ConfigError(f"{source}: unknown version {data['version']!r} "
                              f"(this ringlet reads version {VERSION})")
        default = data.get("default", "exact")
        parse_setting(default, f"{source}: default")
        groups = data.get("groups", {})
        if not isinstance(groups, dict):
            raise ConfigError(f"{source}: \"groups\" must be an object of name → list of ReLU names")
        for g, members in groups.items():
            if not isinstance(members, list) or not all(isinstance(x, str) for x in members):
                raise ConfigError(f"{source}: group {g!r} must be a list of ReLU names")
        layers = data.get("layers", {})
        if not isinstance(layers, dict):
            raise ConfigError(f"{source}: \"layers\" must be an object of name → setting")
        for name, value in layers.items():
            parse_setting(value, f"{source}: layers[{name!r}]")
        extra = {k: v for k, v in data.items() if k not in ("version", "default", "groups", "layers")}
        ring_bits, frac_bits = extra.get("ring_bits"), extra.get("frac_bits")
        for key, value, lo, hi in (("ring_bits", ring_bits, 32, 64), ("frac_bits", frac_bits, 0, 62)):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                      or not lo <= value <= hi):
                raise ConfigError(f"{source}: \"{key}\" must be an integer in {lo}..{hi}, got {value!r}")
        if ring_bits is not None and frac_bits is not None and frac_bits > ring_bits - 2:
            raise ConfigError(f"{source}: frac_bits = {frac_bits} does not fit a {ring_bits}-bit ring")
        return cls(default, dict(groups), dict(layers), VERSION, extra)

    @property
    def ring_bits(self) -> int | None:
        return self.extra.get("ring_bits")

    @property
    def frac_bits(self) -> int | None:
        return self.extra.get("frac_bits")

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ReluConfig":
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
        out = {"version": self.version, "default": self.default}
        if self.groups:
            out["groups"] = self.groups
        if self.layers:
            out["layers"] = self.layers
        out.update(self.extra)
        return out

    def save(self, path: str | os.PathLike) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    def resolve(self, relu_names: list[str], source: str = "config") -> dict[str, tuple[int, int]]:
        """(k, m) for every ReLU of the model; unknown names are errors naming the entry."""
        known = set(relu_names)
        for g, members in self.groups.items():
            if g in known:
                raise ConfigError(f"{source}: group name {g!r} is also a ReLU name")
            for name in members:
                if name not in known:
                    raise ConfigError(f"{source}: group {g!r} names {name!r}, which is not a ReLU of "
                                      f"the model (ReLUs: {_preview(relu_names)})")
        out = {name: parse_setting(self.default, f"{source}: default") for name in relu_names}
        for g, members in self.groups.items():
            if g in self.layers:
                for name in members:
                    out[name] = parse_setting(self.layers[g], f"{source}: layers[{g!r}]")
        for name, value in self.layers.items():
            if name in self.groups:
                continue
            if name not in known:
                raise ConfigError(f"{source}: layers names {name!r}, which is neither a ReLU of the "
                                  f"model nor a group (ReLUs: {_preview(relu_names)})")
            out[name] = parse_setting(value, f"{source}: layers[{name!r}]")
        return out


def _preview(names: list[str], n: int = 6) -> str:
    return ", ".join(names[:n]) + (f", … ({len(names)} in all)" if len(names) > n else "")


def uniform(k: int, m: int) -> ReluConfig:
    """The same bits for every ReLU."""
    return ReluConfig(default=setting_of(k, m))
