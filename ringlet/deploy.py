"""The deployment file of ``ringlet serve``, ``ringlet query`` and ``ringlet certs`` (TOML or JSON).

    version = 1
    name = "fmnist"                     # every link's hello carries it: other deployments are refused

    [tls]                               # omit, or enabled = false, for plain TCP (tests, one host)
    folder = "certs"                    # ca.pem and, per party, NAME.pem + NAME.key (ringlet certs)

    [parties.server-0]
    address = "127.0.0.1:7300"          # where it listens: the other server, the dealer, clients
    metrics = "127.0.0.1:9300"          # /healthz and /metrics (optional)
    [parties.server-1]
    address = "127.0.0.1:7301"
    [parties.dealer]                    # dials the servers; listens nowhere
    [parties.client]                    # a client certificate (clients dial the servers)

    [model]                             # a saved model, a checkpoint, a zoo name or module:factory
    source = "resnet20-fmnist"
    weights = ""                        # with module:factory: its .safetensors
    input_shape = [1, 28, 28]           # when the model does not record it
    relu_config = ""                    # per-ReLU bits (HummingBird), gReLU groups, protocols
    relu_protocol = "gmw"               # gmw | fss | auto; and any other protocol option
                                        # (ringlet.compiler.options.SecureOptions: linear_backend,
                                        # adder, select, truncation, poly_method, …)
    dataset = ""                        # public calibration data (default: the model's dataset)
    frac_bits = 16
    ring_bits = 64

    [batching]
    max_batch = 32                      # rows per batch
    max_wait_ms = 10                    # how long server 0 waits to fill a batch
    sizes = [1, 8, 32]                  # batch shapes (a batch is padded to the next one)

    [pool]
    depth = 2                           # dealer material ready ahead, per batch shape
    low_water = 1                       # below it the dealer refills at once; above, when idle

    [timeouts]                          # seconds
    connect = 30                        # a link's TCP connect + TLS handshake + hello
    message = 60                        # any protocol message
    query = 60                          # a query's deadline (then "busy" or "timeout")
    idle = 600                          # a client link with no frame this long is closed
    frame = 30                          # a client frame, once announced, must arrive in this

    [limits]                            # per client certificate, at each server
    in_flight = 64                      # queries accepted and not yet answered
    links = 16                          # open links

Paths are relative to the file's folder. Unknown keys are errors, named with their section.

A deployment file is code as much as configuration: ``source = "package.module:factory"`` makes
``ringlet serve`` import that module and run it, and its folders (certificates and keys, weights)
are read as they are. Keep it, and everything it names, writable only by whoever runs the servers.
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from ringlet.comm.transport import TlsFiles
from ringlet.compiler.options import SecureOptions

VERSION = 1
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_MODEL_KEYS = {"source", "weights", "input_shape", "relu_config", "dataset", "frac_bits", "ring_bits",
               "smooth", "input_bound", "data_dir"}
_SECTIONS = {
    # and every key of SecureOptions (the protocols: relu_protocol, linear_backend, adder, …)
    "model": _MODEL_KEYS | set(SecureOptions.keys()),
    "batching": {"max_batch", "max_wait_ms", "sizes"},
    "pool": {"depth", "low_water"},
    "timeouts": {"connect", "message", "query", "idle", "frame"},
    "limits": {"in_flight", "links"},
    "tls": {"enabled", "folder", "ca"},
}
_PARTY_KEYS = {"address", "metrics", "cert", "key"}


class DeploymentError(ValueError):
    """The deployment file is malformed; the message names the file, section and key."""


def parse_address(text: str, where: str) -> tuple[str, int]:
    host, sep, port = str(text).rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise DeploymentError(f"{where}: {text!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


@dataclass
class Party:
    name: str
    address: tuple[str, int] | None = None
    metrics: tuple[str, int] | None = None
    cert: Path | None = None
    key: Path | None = None


@dataclass
class Deployment:
    path: Path
    name: str
    parties: dict[str, Party]
    model: dict
    tls: bool = True
    ca: Path | None = None
    max_batch: int = 32
    max_wait_ms: float = 10.0
    sizes: tuple[int, ...] = ()
    pool_depth: int = 2
    pool_low_water: int = 1
    connect_timeout: float = 30.0
    message_timeout: float = 60.0
    query_timeout: float = 60.0
    idle_timeout: float = 600.0
    frame_timeout: float = 30.0
    max_in_flight: int = 64
    max_links: int = 16
    raw: dict = field(default_factory=dict)

    @property
    def servers(self) -> list[Party]:
        out = sorted((p for n, p in self.parties.items() if n.startswith("server-")),
                     key=lambda p: int(p.name.split("-", 1)[1]))
        return out

    def server(self, rank: int) -> Party:
        name = f"server-{rank}"
        if name not in self.parties:
            raise DeploymentError(f"{self.path}: no [parties.{name}] (servers: "
                                  f"{', '.join(p.name for p in self.servers)})")
        return self.parties[name]

    def tls_files(self):
        """The :class:`~ringlet.comm.transport.TlsFiles` of every party (None without TLS), and of
        every client whose certificate lies in the folder (``ringlet certs --clients NAME``)."""
        if not self.tls:
            return None
        certs = {}
        if self.ca is not None and self.ca.parent.is_dir():
            for pem in sorted(self.ca.parent.glob("client*.pem")):
                key = pem.with_suffix(".key")
                if key.is_file() and _NAME.match(pem.stem):
                    certs[pem.stem] = (pem, key)
        certs.update({n: (p.cert, p.key) for n, p in self.parties.items()})
        return TlsFiles(self.ca, certs)

    def bucket(self, rows: int) -> int:
        """The batch shape a batch of ``rows`` rows is padded to."""
        for size in self.sizes:
            if size >= rows:
                return size
        raise ValueError(f"a batch of {rows} rows is larger than max_batch {self.max_batch}")


def load(path) -> Deployment:
    """Read and check a deployment file (``.toml`` or ``.json``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"deployment file {path} not found")
    text = path.read_text()
    try:
        raw = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise DeploymentError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'TOML'}: {exc}") from None
    return from_dict(raw, path)


def from_dict(raw: dict, path: Path) -> Deployment:
    base = path.parent
    where = str(path)
    unknown = set(raw) - {"version", "name", "parties", *_SECTIONS}
    if unknown:
        raise DeploymentError(f"{where}: unknown top-level keys {sorted(unknown)}")
    if raw.get("version") != VERSION:
        raise DeploymentError(f"{where}: version = {raw.get('version')!r}; this ringlet reads version {VERSION}")
    name = str(raw.get("name", ""))
    if not _NAME.match(name):
        raise DeploymentError(f"{where}: name = {name!r}: letters, digits, '.', '_' or '-'")
    for section, keys in _SECTIONS.items():
        extra = set(raw.get(section, {})) - keys
        if extra:
            raise DeploymentError(f"{where}: [{section}] has unknown keys {sorted(extra)} "
                                  f"(known: {', '.join(sorted(keys))})")
    tls = dict(raw.get("tls", {}))
    enabled = bool(tls.get("enabled", True))
    folder = base / tls.get("folder", "certs")
    parties = {}
    for pname, spec in (raw.get("parties") or {}).items():
        if not _NAME.match(pname):
            raise DeploymentError(f"{where}: party name {pname!r} is not a valid certificate name")
        extra = set(spec) - _PARTY_KEYS
        if extra:
            raise DeploymentError(f"{where}: [parties.{pname}] has unknown keys {sorted(extra)}")
        parties[pname] = Party(
            pname,
            parse_address(spec["address"], f"{where} [parties.{pname}] address") if "address" in spec else None,
            parse_address(spec["metrics"], f"{where} [parties.{pname}] metrics") if "metrics" in spec else None,
            base / spec["cert"] if "cert" in spec else folder / f"{pname}.pem",
            base / spec["key"] if "key" in spec else folder / f"{pname}.key")
    servers = sorted(n for n in parties if n.startswith("server-"))
    if len(servers) < 2 or servers != [f"server-{i}" for i in range(len(servers))]:
        raise DeploymentError(f"{where}: [parties] needs server-0, server-1, … (has {sorted(parties)})")
    for s in servers:
        if parties[s].address is None:
            raise DeploymentError(f"{where}: [parties.{s}] needs an address (servers listen)")
    if "dealer" not in parties:
        raise DeploymentError(f"{where}: [parties.dealer] is missing")
    model = dict(raw.get("model", {}))
    try:  # the protocol options are checked here, naming the file
        SecureOptions.from_dict({k: v for k, v in model.items() if k in SecureOptions.keys()})
    except ValueError as exc:
        raise DeploymentError(f"{where}: [model] {exc}") from None
    if not model.get("source"):
        raise DeploymentError(f"{where}: [model] needs source = a saved model, checkpoint, zoo name "
                              f"or module:factory")
    for key in ("weights", "relu_config", "data_dir"):
        if model.get(key):
            model[key] = str(base / model[key]) if not Path(model[key]).is_absolute() else model[key]
    src = model["source"]
    if (base / src).exists():
        model["source"] = str(base / src)
    batching, pool, timeouts = raw.get("batching", {}), raw.get("pool", {}), raw.get("timeouts", {})
    limits = raw.get("limits", {})
    max_batch = _positive(batching.get("max_batch", 32), f"{where} [batching] max_batch", int)
    sizes = tuple(sorted({int(v) for v in batching.get("sizes", _default_sizes(max_batch))} | {max_batch}))
    if sizes[0] < 1 or sizes[-1] > max_batch:
        raise DeploymentError(f"{where}: [batching] sizes {list(sizes)} must lie in 1..max_batch {max_batch}")
    return Deployment(
        path=path, name=name, parties=parties, model=model, tls=enabled,
        ca=(base / tls["ca"]) if "ca" in tls else folder / "ca.pem",
        max_batch=max_batch, sizes=sizes,
        max_wait_ms=_positive(batching.get("max_wait_ms", 10), f"{where} [batching] max_wait_ms", float, zero=True),
        pool_depth=_positive(pool.get("depth", 2), f"{where} [pool] depth", int),
        pool_low_water=_positive(pool.get("low_water", 1), f"{where} [pool] low_water", int),
        connect_timeout=_positive(timeouts.get("connect", 30), f"{where} [timeouts] connect", float),
        message_timeout=_positive(timeouts.get("message", 60), f"{where} [timeouts] message", float),
        query_timeout=_positive(timeouts.get("query", 60), f"{where} [timeouts] query", float),
        idle_timeout=_positive(timeouts.get("idle", 600), f"{where} [timeouts] idle", float),
        frame_timeout=_positive(timeouts.get("frame", 30), f"{where} [timeouts] frame", float),
        max_in_flight=_positive(limits.get("in_flight", 64), f"{where} [limits] in_flight", int),
        max_links=_positive(limits.get("links", 16), f"{where} [limits] links", int),
        raw=raw)


def _default_sizes(max_batch: int) -> list[int]:
    return sorted({1, max(1, max_batch // 4), max_batch})


def _positive(value, where: str, kind, zero: bool = False):
    try:
        v = kind(value)
    except (TypeError, ValueError):
        raise DeploymentError(f"{where}: {value!r} is not a number") from None
    if v < 0 or (v == 0 and not zero) or (kind is int and v != value):
        raise DeploymentError(f"{where}: {value!r} must be a positive {kind.__name__}")
    return v


def write(path, raw: dict) -> Path:
    """Write a deployment (a dict in the file's layout) as TOML or JSON by suffix; checked first."""
    path = Path(path)
    from_dict(raw, path)
    if path.suffix == ".json":
        path.write_text(json.dumps(raw, indent=2) + "\n")
    else:
        path.write_text(_toml(raw))
    return path


def _toml(raw: dict) -> str:
    lines = [f"{k} = {json.dumps(v)}" for k, v in raw.items() if not isinstance(v, dict)]
    for section, body in raw.items():
        if not isinstance(body, dict):
            continue
        if section == "parties":
            for pname, spec in body.items():
                lines += ["", f"[parties.{pname}]"] + [f"{k} = {json.dumps(v)}" for k, v in spec.items()]
            continue
        lines += ["", f"[{section}]"] + [f"{k} = {json.dumps(v)}" for k, v in body.items()]
    return "\n".join(lines) + "\n"
