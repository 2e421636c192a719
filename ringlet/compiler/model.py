"""Run a compiled graph on shares (and, as the reference, in plaintext on the same folded graph).

Fixed-point scales: activations carry f fractional bits, weights f, so a conv/linear/affine output
carries 2f. The next ReLU drops the extra f bits inside its select (free, exact to one unit); a
residual add first lifts the lower-scale operand (exact); any other layer that needs f-bit input
truncates first (``truncation``: local for 2 servers by default, or dealer-assisted). The logits
leave at whatever scale the last layer gives (usually 2f) and the client decodes them with it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import threading
import time

import torch

from ringlet.comm.mirror import MirrorComm, NotSymmetric
from ringlet.compiler.graph import LoweredGraph
from ringlet.compiler.interpret import FracPlan, Interpreter, PlainInterpreter
from ringlet.compiler.ops import registry
from ringlet.compiler.options import SecureOptions
from ringlet.compiler.ranges import InputRange
from ringlet.compiler.storage import fingerprint
from ringlet.protocols.arith.truncation import default_method, truncate
from ringlet.protocols.base import input_bits
from ringlet.protocols.catalog import relu_protocols, sign_families
from ringlet.protocols.io import share_input
from ringlet.protocols.relu import ReluSpec
from ringlet.protocols.tuning import linear as linear_tuning
from ringlet.protocols.tuning.relu import choose
from ringlet.ring import FixedPoint
from ringlet.session import Session
from ringlet.sharing import ArithmeticShare


class CompiledModel:
    """A secure graph bound to ReLU settings, protocol options and a fixed-point format."""

    def __init__(self, graph: LoweredGraph, relu_bits: dict[str, tuple[int, int]] | None = None,
                 options: SecureOptions = SecureOptions(), fixed: FixedPoint = FixedPoint(),
                 input_range: InputRange | None = None,
                 relu_protocols: dict[str, str | None] | None = None):
        self.graph = graph
        self.options = options
        self.fixed = fixed
        # without a range analysis (a bare graph), only the encoding's own bound is enforced
        self.input_range = input_range or InputRange(fixed.max_abs / 2, "encoding")
        names = graph.activation_names
        self.relu_bits = {n: (64, 0) for n in names}
        self.relu_bits.update(relu_bits or {})
        missing = set(names) - set(self.relu_bits)
        if missing:
            raise ValueError(f"no ReLU setting for {sorted(missing)[:3]}")
        if options.truncation == "local" and fixed.ring_bits < 64:
            raise ValueError(f"local truncation fails with probability |x|/2^{fixed.ring_bits - 1} per "
                             f"element in a {fixed.ring_bits}-bit ring: use the dealer's (the default)")
        for label, (k, m) in self.relu_bits.items():
            if k > fixed.ring_bits and (k, m) != (64, 0):
                raise ValueError(f"activation {label!r}: bits [{k}:{m}] need k <= {fixed.ring_bits}, "
                                 f"the ring's width (--ring-bits)")
        # per activation: gmw, fss or auto; --relu-protocol overrides the config's choices
        chosen = {n: (relu_protocols or {}).get(n) for n in names}
        self.relu_protocols = {n: options.relu_protocol or chosen[n] or "gmw" for n in names}
        self._resolved_protocols: dict[tuple, dict[str, str]] = {}
        self.fracs = FracPlan(graph, fixed.frac_bits).plan()
        ops = registry()
        self.encoded = {n.name: ops[n.kind].encode(n, fixed) for n in graph.nodes}
        self._linear_backends: dict[int, dict[str, str]] = {}
        self._backend_lock = threading.Lock()  # server threads of one process share the model

    def __getstate__(self) -> dict:  # a tcp party job pickles the model: not its lock
        state = dict(self.__dict__)
        state.pop("_backend_lock", None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._backend_lock = threading.Lock()

    def fingerprint(self) -> dict:
        """Digests of everything the parties must agree on (the exact backend may differ)."""

        def digest(obj) -> str:
            return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()
        fp = fingerprint(self.graph)
        options = {k: v for k, v in dataclasses.asdict(self.options).items() if k != "backend"}
        return {"graph": fp["graph"], "weights": fp["weights"],
                "activations": digest(sorted((k, list(v)) for k, v in self.relu_bits.items())),
                "relu_protocols": digest(sorted(self.relu_protocols.items())),
                "options": digest(options), "fixed_point": self.fixed.describe(),
                "input_range": digest(self.input_range.to_dict())}

    @property
    def output_frac(self) -> int:
        return self.fracs["output"]

    def spec(self, label: str, protocol: str = "gmw") -> ReluSpec:
        k, m = self.relu_bits[label]
        return ReluSpec(k, m, self.options.adder, self.options.select, protocol)

    def key_bytes(self, batch: int, protocols: dict[str, str]) -> int:
        """Bytes of keyed dealer material (what each protocol and sign family declares as its
        ``key_bytes``; fss's DCF keys) that server 1 receives for one batch."""
        total = 0.0
        ell, f = self.fixed.ring_bits, self.fixed.frac_bits
        for node in self.graph.nodes:
            if node.label not in protocols:
                continue
            spec = self.spec(node.label, protocols[node.label])
            shift = max(0, self.fracs[node.inputs[0]] - f)
            k, m = input_bits(spec, shift, ell)
            n = batch * int(torch.tensor(node.out_shape).prod())
            if node.kind == "relu":
                total += n * relu_protocols()[spec.protocol].key_bytes(k, m, ell, shift)[1]
            else:  # the sign per decision (a group of a shared ReLU, or each element)
                decisions = batch * self.graph.relu_elements()[node.label]
                total += decisions * sign_families()[spec.sign].key_bytes(k - m, ell)[1]
        return int(total)

    def check_key_memory(self, batch: int, protocols: dict[str, str], servers_here: int,
                         available: int | None = None) -> None:
        """Refuse a batch whose pre-generated fss keys would not fit this machine's memory (with
        ``servers_here`` servers on it), naming a batch that fits."""
        need = self.key_bytes(batch, protocols)
        if not need:
            return
        available = available if available is not None else _available_memory()
        budget = available // 2  # the dealer's buffers and everything else share the rest
        if need * servers_here <= budget:
            return
        per_image = need / batch
        fits = max(1, int(budget // (servers_here * per_image)))
        raise KeyMemoryError(fits,
            f"batch {batch}: the fss keys of one batch take {need / 1e9:.1f} GB per server "
            f"({per_image / 1e6:.0f} MB per image; {servers_here} servers on this machine, "
            f"{available / 1e9:.1f} GB available): use --batch {fits} or fewer fss layers")

    def protocols_for(self, batch: int, parties: int) -> dict[str, str]:
        """{activation: gmw or fss} for a run of ``parties`` servers on batches of ``batch``:
        ``auto`` decided by :mod:`ringlet.protocols.tuning.relu` (measured once per machine, and
        printed); a two-server protocol with more servers is an error naming the layer."""
        key = (batch, parties)
        with self._backend_lock:
            if key in self._resolved_protocols:
                return self._resolved_protocols[key]
            out = dict(self.relu_protocols)
            auto = [n for n, p in out.items() if p == "auto"]
            if auto:
                out.update(choose(self, auto, batch, parties))
            for label, name in out.items():
                if relu_protocols()[name].two_servers_only and parties != 2:
                    raise ValueError(f"activation {label!r}: {name} is a two-server protocol; this "
                                     f"run has {parties} servers (use --relu-protocol gmw)")
            self._resolved_protocols[key] = out
            return out

    # -- secure run -------------------------------------------------------------------------------
    def share_weights(self, sess: Session) -> dict:
        """Secret-share every conv/linear weight and bias from server 0 (the model owner).

        The other servers draw their shares from seeds they share with server 0: no communication.
        """
        def shared(t, frac):
            if t is None:
                return None
            s = share_input(sess, t if sess.rank == 0 else None, 0, tuple(t.shape), encoded=True)
            return ArithmeticShare(s.data, s.party, frac)

        f = self.fixed.frac_bits
        out = {}
        for n in self.graph.nodes:
            if n.kind in ("conv", "linear"):
                enc = self.encoded[n.name]
                if enc is None:  # conv and linear always encode their weight and bias
                    raise RuntimeError(f"{n.name}: a {n.kind} node without encoded weights")
                out[n.name] = (shared(enc["weight"], f), shared(enc["bias"], 2 * f))
        return out

    def linear_backends(self, batch: int) -> dict[str, str]:
        """{node name: exact backend} of every public-weight conv/linear/spatialmap node for a
        batch of ``batch`` samples; ``auto`` is measured (once per layer shape and machine, cached
        on disk, see :mod:`ringlet.protocols.tuning.linear`) and kept here per batch size."""
        with self._backend_lock:  # server threads of one process share the model: time once
            if batch not in self._linear_backends:
                self._linear_backends[batch] = resolve_backends(self, batch)
            return self._linear_backends[batch]

    def check_backend_drift(self, batch: int, log: list[dict]) -> list[str]:
        """After a batch: the ``auto``-chosen layers that took more than DRIFT × their recorded
        time (a run's per-layer log) are forgotten, here and in the cache, and measured again
        before the next batch. Returns their names."""
        if self.options.backend != "auto" or batch not in self._linear_backends:
            return []
        chosen, layers = self._linear_backends[batch], linear_layers(self, batch)
        drifted = [row["name"] for row in log if row["name"] in chosen and row["name"] in layers
                   and linear_tuning.check_drift(**layers[row["name"]], backend=chosen[row["name"]],
                                                 observed_ms=row["seconds"] * 1e3,
                                                 ring_bits=self.fixed.ring_bits)]
        if drifted:
            with self._backend_lock:
                self._linear_backends.pop(batch, None)
        return drifted

    def run(self, sess: Session, x: ArithmeticShare, weights: dict | None = None,
            log: list | None = None) -> ArithmeticShare:
        """Evaluate the graph on this server's share of the input; returns its share of the output."""
        return SecureInterpreter(self, sess, weights, log).run(x)

    def record_plan(self, sess: Session, batch_shape: tuple, weights: dict | None = None) -> list:
        """The dealer requests of one batch of ``batch_shape``, in order.

        With 2 servers and public weights nothing is computed that the plan does not need: zero
        material, the server's own messages mirrored back (:mod:`ringlet.comm.mirror`) and
        public-weight layers skipped, so recording costs neither the dealer nor the peer nor
        the convolutions. Otherwise (or if a round is not symmetric) the plan is recorded on a real
        run of a zero input owned by server 0.
        """
        self.linear_backends(batch_shape[0])  # any timing of backends happens here, not online
        off = sess.offline
        if off is None:
            raise RuntimeError(f"record_plan runs on servers only (they have a dealer link), not on "
                               f"the {sess.role} (rank {sess.rank})")
        off.go_online()
        if sess.num_parties == 2 and weights is None:
            off.plan, off.recording, real = [], True, sess.comm
            sess.comm = MirrorComm(real.rank, real.world_size)
            try:
                zero = sess.share(torch.zeros(batch_shape, dtype=torch.int64))
                SecureInterpreter(self, sess, None, dry=True).run(zero)
                return list(off.plan)
            except NotSymmetric:
                pass
            finally:
                off.recording, sess.comm = False, real
        off.plan = []
        share = share_input(sess, torch.zeros(batch_shape) if sess.rank == 0 else None, 0, batch_shape)
        assert share is not None, "share_input gives every server its share"
        self.run(sess, share, weights)
        return list(off.plan)

    def run_plain(self, x: torch.Tensor) -> torch.Tensor:
        """The same folded graph in float64 with exact ReLUs (checks the compilation itself)."""
        return PlainInterpreter(self.graph).run(x)


class KeyMemoryError(MemoryError):
    """The pre-generated keys of a batch would not fit; ``fits`` is a batch that would."""

    def __init__(self, fits: int, message: str):
        super().__init__(message)
        self.fits = fits


def _available_memory() -> int:
    """Bytes of memory available now (MemAvailable), or a large number where unknown."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 1 << 50


class SecureInterpreter(Interpreter):
    """One server's run of a compiled model on its shares (and, with ``log``, per-node counts)."""

    mode = "secure"

    def __init__(self, model: CompiledModel, sess: Session, weights: dict | None = None,
                 log: list | None = None, dry: bool = False):
        super().__init__(model.graph)
        self.model = model
        self.sess = sess
        self.dry = dry  # a plan recording: public-weight layers skip their arithmetic
        self.weights = weights
        self.log = log
        self.options = model.options
        self.fixed = model.fixed
        self.f = model.fixed.frac_bits
        self.encoded = model.encoded
        self.protocols: dict[str, str] = {}
        self.trunc = model.options.truncation or default_method(sess.num_parties, sess.ring.bits)

    def run(self, x, *args, **kwargs):
        self.protocols = self.model.protocols_for(x.shape[0], self.sess.num_parties)
        return super().run(x, *args, **kwargs)

    def spec(self, label: str) -> ReluSpec:
        """The ReLU spec of an activation: its bits and its protocol in this run."""
        return self.model.spec(label, self.protocols.get(label, "gmw"))

    def exact_spec(self) -> ReluSpec:
        """The spec of the exact sign decisions of layers without searched bits (|x|, clamp,
        max-pool, smooth functions): the protocol the run asks for everywhere where it can run
        with this many servers, else the default one (gmw)."""
        o, reg = self.options, relu_protocols()
        name = o.relu_protocol if o.relu_protocol is not None and o.relu_protocol in reg else reg.names()[0]
        if reg[name].two_servers_only and self.sess.num_parties != 2:
            name = reg.names()[0]
        return ReluSpec(64, 0, o.adder, o.select, name)

    def backend_for(self, node, x: ArithmeticShare) -> str:
        """The exact linear backend of ``node`` for the batch of its input share ``x``."""
        return self.model.linear_backends(x.shape[0])[node.name]

    def run_node(self, node, ins):
        op = self.ops[node.kind]
        sess = self.sess
        before, t0 = (sess.stats.copy(), time.perf_counter()) if self.log is not None else (None, 0)
        if op.wants_f(node):
            ins = [truncate(sess, v, v.frac - self.f, self.trunc) if v.frac > self.f else v for v in ins]
        out = op.secure(node, ins, self)
        expected = self.model.fracs[node.name]
        if out.frac != expected:  # pragma: no cover - an internal consistency check
            raise RuntimeError(f"{node.name}: scale {out.frac} bits, plan says {expected}")
        if self.log is not None:
            used = sess.stats.minus(before)
            bits = self.model.relu_bits.get(node.label) if op.bits else None
            self.log.append({"name": node.name, "kind": node.kind, "label": node.label,
                             "bytes_sent": used.bytes_sent(exclude=("offline",)),
                             "rounds": used.total_rounds(exclude=("offline",)),
                             "drelus": op.drelus(node, bits) * out.shape[0],
                             "by_tag": {t: v["bytes_sent"] for t, v in used.by_tag().items()
                                        if t != "offline" and v["bytes_sent"]},
                             "seconds": time.perf_counter() - t0})
        return out


def linear_layers(model, batch: int) -> dict[str, dict]:
    """{node name: the arguments of :func:`ringlet.protocols.tuning.linear.choose_backend`} of
    every node that runs a public-weight linear layer (conv, linear, spatialmap) for ``batch``
    samples (none for secret weights: Beaver products)."""
    ops = registry()
    shapes = {n.name: tuple(n.out_shape or ()) for n in model.graph.nodes}
    out = {}
    for node in model.graph.nodes:
        if not node.inputs or (model.options.private_weights and node.kind in ("conv", "linear")):
            continue
        layer = ops[node.kind].linear_layer(node, shapes[node.inputs[0]], batch, model.encoded[node.name])
        if layer is not None:
            out[node.name] = layer
    return out


def resolve_backends(model, batch: int, cache=True) -> dict[str, str]:
    """The exact backend of every public-weight linear layer (:func:`linear_layers`) for ``batch``
    samples: the forced ``model.options.backend``, or with ``auto`` the measured fastest
    (:func:`ringlet.protocols.tuning.linear.choose_backend`, cached on disk)."""
    forced = model.options.backend
    store = linear_tuning.BackendCache() if cache is True else cache
    return {name: forced if forced != "auto" else linear_tuning.choose_backend(
                **layer, ring_bits=model.fixed.ring_bits, cache=store)
            for name, layer in linear_layers(model, batch).items()}
