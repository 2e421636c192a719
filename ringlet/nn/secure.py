"""Run a compiled graph on shares (and, as the reference, in plaintext on the same folded graph).

Fixed-point scales: activations carry f fractional bits, weights f, so a conv/linear/affine output
carries 2f. The next ReLU drops the extra f bits inside its select (free, exact to one unit); a
residual add first lifts the lower-scale operand (exact); any other layer that needs f-bit input
truncates first (``truncation``: local for 2 servers by default, or dealer-assisted). The logits
leave at whatever scale the last layer gives (usually 2f) and the client decodes them with it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ringlet.nn.compiler import SecureGraph
from ringlet.protocols import beaver, linear, poly, shared_relu
from ringlet.protocols.compare import ReluSpec, max_pool2d, relu
from ringlet.protocols.io import share_input
from ringlet.protocols.truncation import truncate
from ringlet.ring import FixedPoint
from ringlet.session import Session
from ringlet.sharing import ArithmeticShare

_NEEDS_F = {"conv", "linear", "affine", "avgpool", "gavgpool", "maxpool", "scale"}
_LINEAR = ("conv", "linear", "affine")


@dataclass(frozen=True)
class SecureOptions:
    """Protocol choices for a whole model."""

    adder: str = "carry-tree"
    select: str = "fused"
    truncation: str | None = None  # standalone truncations; None: local (2 servers) / dealer
    backend: str = "int64"         # exact public-weight conv: int64 or limbs
    private_weights: bool = False  # weights secret-shared by server 0 (the model owner)
    poly_method: str = "espn"      # polynomial activations: espn, espn-beaver, horner, honeybadger
    poly_frac: int | None = None   # input bits of the one-round methods (None: the largest safe)
    poly_out_truncation: str = "dealer"  # the polynomial's final truncation: dealer (exact) / local


def frac_plan(graph: SecureGraph, f: int) -> dict[str, int]:
    """Fractional bits of every node's output (the same rules the secure run follows)."""
    out: dict[str, int] = {}
    for node in graph.nodes:
        ins = [out[i] for i in node.inputs]
        if node.kind == "input":
            out[node.name] = f
        elif node.kind in _LINEAR or (node.kind == "scale" and node.params["factor"] != 1.0):
            out[node.name] = 2 * f
        elif node.kind in _NEEDS_F or node.kind in ("relu", "grelu", "poly"):
            out[node.name] = f
        elif node.kind in ("add", "cat"):
            out[node.name] = max(ins)
        else:  # reshape, identity, output, scale by 1
            out[node.name] = ins[0]
    return out


def plain_activation(node, x: torch.Tensor) -> torch.Tensor:
    """The plaintext gReLU / polynomial of a compiled node (eval mode)."""
    p = node.params
    if node.kind == "poly":
        out = torch.zeros_like(x)
        for c in reversed(p["coeffs"]):
            out = out * x + c
        return out
    n, c = x.shape[:2]
    idx = p["groups"].view(1, c, -1).expand(n, c, -1)
    z = torch.zeros(n, c, p["num_groups"], dtype=x.dtype).scatter_add_(
        2, idx, (x * p["weight"].to(x.dtype)).reshape(n, c, -1))
    keep = (z >= 0).to(x.dtype).gather(2, idx).view_as(x)
    if p["flips"] is not None:
        flips = p["flips"].to(x.dtype)
        keep = keep + flips * (1 - 2 * keep)
    return x * keep


def _add_bias(y: ArithmeticShare, b: ArithmeticShare | None, view) -> ArithmeticShare:
    """Each server adds its share of the bias (broadcast over the batch and space)."""
    if b is None:
        return y
    return ArithmeticShare(y.data + b.data.view(view), y.party, y.frac)


class CompiledModel:
    """A secure graph bound to ReLU settings, protocol options and a fixed-point format."""

    def __init__(self, graph: SecureGraph, relu_bits: dict[str, tuple[int, int]] | None = None,
                 options: SecureOptions = SecureOptions(), fixed: FixedPoint = FixedPoint()):
        self.graph = graph
        self.options = options
        self.fixed = fixed
        names = graph.activation_names
        self.relu_bits = {n: (64, 0) for n in names}
        self.relu_bits.update(relu_bits or {})
        missing = set(names) - set(self.relu_bits)
        if missing:
            raise ValueError(f"no ReLU setting for {sorted(missing)[:3]}")
        self.fracs = frac_plan(graph, fixed.frac_bits)
        self.encoded = {n.name: self._encode(n) for n in graph.nodes if n.kind in _LINEAR + ("grelu",)}

    @property
    def output_frac(self) -> int:
        return self.fracs["output"]

    def spec(self, label: str) -> ReluSpec:
        k, m = self.relu_bits[label]
        return ReluSpec(k, m, self.options.adder, self.options.select)

    def _encode(self, node) -> dict:
        enc, f = self.fixed.encode, self.fixed.frac_bits
        wide = FixedPoint(2 * f)
        p = node.params
        if node.kind == "grelu":
            onehot = p["variant"] == "center"
            return {"onehot": p["weight"] if onehot else None,
                    "weight": None if onehot else enc(p["weight"], f"{node.label} gReLU weights")}
        if node.kind == "affine":
            return {"scale": enc(p["scale"], f"{node.label} scale"),
                    "shift": wide.encode(p["shift"], f"{node.label} shift")}
        return {"weight": enc(p["weight"], f"{node.label} weight"),
                "bias": None if p["bias"] is None else wide.encode(p["bias"], f"{node.label} bias")}

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
        return {n.name: (shared(self.encoded[n.name]["weight"], f), shared(self.encoded[n.name]["bias"], 2 * f))
                for n in self.graph.nodes if n.kind in ("conv", "linear")}

    def run(self, sess: Session, x: ArithmeticShare, weights: dict | None = None,
            log: list | None = None) -> ArithmeticShare:
        """Evaluate the graph on this server's share of the input; returns its share of the output."""
        f = self.fixed.frac_bits
        env: dict[str, ArithmeticShare] = {}
        batch = x.shape[0]
        for node in self.graph.nodes:
            before, t0 = (sess.stats.copy(), time.perf_counter()) if log is not None else (None, 0)
            ins = [env[i] for i in node.inputs]
            if node.kind in _NEEDS_F and ins[0].frac > f:
                ins[0] = truncate(sess, ins[0], ins[0].frac - f, self._trunc(sess))
            env[node.name] = out = x if node.kind == "input" else self._step(sess, node, ins, batch, weights)
            expected = self.fracs[node.name]
            if out.frac != expected:  # pragma: no cover - an internal consistency check
                raise RuntimeError(f"{node.name}: scale {out.frac} bits, plan says {expected}")
            if log is not None:
                used = sess.stats.minus(before)
                log.append({"name": node.name, "kind": node.kind, "label": node.label,
                            "bytes_sent": used.bytes_sent(exclude=("offline",)),
                            "rounds": used.total_rounds(exclude=("offline",)),
                            "drelus": self._decisions(node, out, batch),
                            "by_tag": {t: v["bytes_sent"] for t, v in used.by_tag().items()
                                       if t != "offline" and v["bytes_sent"]},
                            "seconds": time.perf_counter() - t0})
        return env["output"]

    def _decisions(self, node, out: ArithmeticShare, batch: int) -> int:
        """Sign decisions (DReLUs) a node evaluates: one per activation for a ReLU (none for an
        identity), one per group for a gReLU, kernel² − 1 per output for a max-pool."""
        if node.kind == "relu":
            spec = self.spec(node.label)
            return 0 if spec.k == spec.m else out.numel()
        if node.kind == "grelu":
            return batch * out.shape[1] * node.params["num_groups"]
        if node.kind == "maxpool":
            k = node.params["kernel"]
            area = k * k if isinstance(k, int) else k[0] * k[1]
            return out.numel() * (area - 1)
        return 0

    def _trunc(self, sess):
        return self.options.truncation or ("local" if sess.num_parties == 2 else "dealer")

    def _step(self, sess, node, ins, batch, weights) -> ArithmeticShare:
        p, kind, f = node.params, node.kind, self.fixed.frac_bits
        if kind == "conv":
            enc = self.encoded[node.name]
            if weights is not None:
                w, b = weights[node.name]
                y = beaver.conv2d(sess, ins[0], w, p["stride"], p["padding"], p["dilation"],
                                  p["groups"], rescale=False)
                return _add_bias(y, b, (1, -1, 1, 1))
            return linear.conv2d_public(ins[0], enc["weight"], enc["bias"], p["stride"], p["padding"],
                                        p["dilation"], p["groups"], f, self.options.backend)
        if kind == "linear":
            enc = self.encoded[node.name]
            if weights is not None:
                w, b = weights[node.name]
                y = beaver.matmul(sess, ins[0], ArithmeticShare(w.data.t().contiguous(), w.party, w.frac),
                                  rescale=False)
                return _add_bias(y, b, (1, -1))
            return linear.linear_public(ins[0], enc["weight"], enc["bias"], f, self.options.backend)
        if kind == "affine":
            enc = self.encoded[node.name]
            view = (1, -1) + (1,) * (len(ins[0].shape) - 2)
            y = ins[0].mul_public(enc["scale"].view(view), frac=f)
            return y.add_public(enc["shift"].view(view).expand(y.shape).contiguous())
        if kind == "relu":
            return relu(sess, ins[0], self.spec(node.label), shift=ins[0].frac - f,
                        truncation=self._trunc(sess))
        if kind == "add":
            top = max(v.frac for v in ins)
            a, b = (v.mul_public(1 << (top - v.frac), frac=top - v.frac) if v.frac < top else v
                    for v in ins)
            return a + b
        if kind == "cat":
            top = max(v.frac for v in ins)
            parts = [v.mul_public(1 << (top - v.frac), frac=top - v.frac) for v in ins]
            return ArithmeticShare.cat(parts, p["dim"])
        if kind == "scale":
            y = ins[0] if p["factor"] == 1.0 else ins[0].mul_public(
                int(self.fixed.encode(torch.tensor(p["factor"]))), frac=f)
            if p["offset"]:
                y = y.add_public(FixedPoint(y.frac).encode(torch.full(y.shape, p["offset"])))
            return y
        if kind == "avgpool":
            return linear.avg_pool2d(sess, ins[0], p["kernel"], p["stride"], p["padding"])
        if kind == "gavgpool":
            y = linear.global_avg_pool(sess, ins[0])
            return y if p.get("keepdim", True) and len(node.out_shape) == 3 else y.reshape(batch, -1)
        if kind == "maxpool":
            return max_pool2d(sess, ins[0], p["kernel"], p["stride"], p["padding"],
                              ReluSpec(64, 0, self.options.adder, self.options.select))
        if kind == "reshape":
            return ins[0].reshape(batch, *node.out_shape)
        if kind in ("identity", "output"):
            return ins[0]
        if kind == "grelu":
            enc = self.encoded[node.name]
            return shared_relu.grelu(sess, ins[0], p["groups"], enc["weight"], enc["onehot"],
                                     p["num_groups"], self.spec(node.label), f, p["flips"])
        if kind == "poly":
            return poly.evaluate(sess, ins[0], p["coeffs"], f, self.options.poly_method,
                                 self.options.poly_frac, truncation=self._trunc(sess),
                                 out_truncation=self.options.poly_out_truncation,
                                 r=p.get("range", 5.0))
        raise RuntimeError(f"no secure implementation for node kind {kind!r}")  # pragma: no cover

    # -- plaintext reference ------------------------------------------------------------------
    def run_plain(self, x: torch.Tensor) -> torch.Tensor:
        """The same folded graph in float64 with exact ReLUs (checks the compilation itself)."""
        env: dict[str, torch.Tensor] = {}
        batch = x.shape[0]
        for node in self.graph.nodes:
            ins = [env[i] for i in node.inputs]
            p, kind = node.params, node.kind
            if kind == "input":
                y = x.double()
            elif kind == "conv":
                y = F.conv2d(ins[0], p["weight"], p["bias"], p["stride"], p["padding"], p["dilation"],
                             p["groups"])
            elif kind == "linear":
                y = F.linear(ins[0], p["weight"], p["bias"])
            elif kind == "affine":
                view = (1, -1) + (1,) * (ins[0].ndim - 2)
                y = ins[0] * p["scale"].view(view) + p["shift"].view(view)
            elif kind == "relu":
                y = ins[0].clamp(min=0)
            elif kind == "add":
                y = ins[0] + ins[1]
            elif kind == "cat":
                y = torch.cat(ins, p["dim"])
            elif kind == "scale":
                y = ins[0] * p["factor"] + p["offset"]
            elif kind == "avgpool":
                y = F.avg_pool2d(ins[0], p["kernel"], p["stride"], p["padding"])
            elif kind == "gavgpool":
                y = ins[0].mean((2, 3), keepdim=True)
                y = y if p.get("keepdim", True) and len(node.out_shape) == 3 else y.reshape(batch, -1)
            elif kind == "maxpool":
                y = F.max_pool2d(ins[0], p["kernel"], p["stride"], p["padding"])
            elif kind == "reshape":
                y = ins[0].reshape(batch, *node.out_shape)
            elif kind in ("identity", "output"):
                y = ins[0]
            else:
                y = plain_activation(node, ins[0])
            env[node.name] = y
        return env["output"]
