"""Activations: ReLU (exact or on bits [k:m]), shared ReLU (gReLU) and polynomial (ESPN/PILLAR).

Costs per element (2 servers, exact bits, carry tree + fused select): ReLU 308 bits, 8 rounds
(4w − 7 − L + 65 bits, L + 2 rounds on w = k − m bits; see :mod:`ringlet.protocols.compare`);
gReLU one DReLU per group plus a 65-bit select per activation (:mod:`ringlet.protocols.shared_relu`);
polynomial: one round of ESPN, see :mod:`ringlet.protocols.poly`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ringlet.nn.ops.base import Op, Registry
from ringlet.protocols import poly, shared_relu
from ringlet.protocols.compare import relu


def plain_grelu(p: dict, x: torch.Tensor) -> torch.Tensor:
    """The plaintext gReLU of a compiled node (eval mode)."""
    n, c = x.shape[:2]
    idx = p["groups"].view(1, c, -1).expand(n, c, -1)
    z = torch.zeros(n, c, p["num_groups"], dtype=x.dtype).scatter_add_(
        2, idx, (x * p["weight"].to(x.dtype)).reshape(n, c, -1))
    keep = (z >= 0).to(x.dtype).gather(2, idx).view_as(x)
    if p["flips"] is not None:
        flips = p["flips"].to(x.dtype)
        keep = keep + flips * (1 - 2 * keep)
    return x * keep


def plain_poly(coeffs, x: torch.Tensor) -> torch.Tensor:
    out = torch.zeros_like(x)
    for c in reversed(coeffs):
        out = out * x + c
    return out


class Relu(Op):
    kind = "relu"
    bits = "relu"
    cost = "exact: 8 rounds, 308 bits; on w = k − m bits: L + 2 rounds, 4w − 7 − L + 65 bits (L = ⌈log2(w − 1)⌉)"

    def frac(self, node, ins, f):
        return f

    def plain(self, node, ins, ctx):
        return ins[0].clamp(min=0)

    def simulate(self, node, ins, ctx):
        return ctx.simulated_relu(node, ins[0])

    def secure(self, node, ins, ctx):
        x = ins[0]
        return relu(ctx.sess, x, ctx.spec(node.label), shift=x.frac - ctx.f, truncation=ctx.trunc)

    def drelus(self, node, bits):
        return 0 if bits is not None and bits[0] == bits[1] else self.elements(node)


class GroupRelu(Op):
    kind = "grelu"
    bits = "group"
    cost = "one DReLU per group (308 bits, 8 rounds exact) + a 65-bit select per activation"

    def frac(self, node, ins, f):
        return f

    def encode(self, node, fixed):
        p = node.params
        onehot = p["variant"] == "center"
        return {"onehot": p["weight"] if onehot else None,
                "weight": None if onehot else fixed.encode(p["weight"], f"{node.label} gReLU weights")}

    def plain(self, node, ins, ctx):
        return plain_grelu(node.params, ins[0].double()).to(ins[0].dtype)

    def secure(self, node, ins, ctx):
        p, enc = node.params, ctx.encoded[node.name]
        return shared_relu.grelu(ctx.sess, ins[0], p["groups"], enc["weight"], enc["onehot"],
                                 p["num_groups"], ctx.spec(node.label), ctx.f, p["flips"])

    def elements(self, node):
        return int(node.out_shape[0]) * int(node.params["num_groups"])

    def drelus(self, node, bits):
        return self.elements(node)


class Poly(Op):
    kind = "poly"
    cost = "ESPN degree d: 1 round + 1 (exact truncation), 64·(d − 1) + 64 bits"

    def frac(self, node, ins, f):
        return f

    def plain(self, node, ins, ctx):
        return plain_poly(node.params["coeffs"], ins[0].double()).to(ins[0].dtype)

    def secure(self, node, ins, ctx):
        p, o = node.params, ctx.options
        return poly.evaluate(ctx.sess, ins[0], p["coeffs"], ctx.f, o.poly_method, o.poly_frac,
                             truncation=ctx.trunc, out_truncation=o.poly_out_truncation,
                             r=p.get("range", 5.0))

    def magnitude(self, node, ins):
        return sum(abs(c) * ins[0] ** j for j, c in enumerate(node.params["coeffs"]))


# -- lowerings ------------------------------------------------------------------------------------
def lower_relu_module(b, fx, mod) -> None:
    b.emit(fx, "relu", [fx.args[0]], fx.target)


def lower_relu(b, fx) -> None:
    b.emit(fx, "relu", b.tensor_args(fx)[:1])


def lower_grelu(b, fx, mod) -> None:
    b.emit(fx, "grelu", [fx.args[0]], fx.target, groups=mod.groups.clone(),
           weight=mod.weight.detach().double().clone(), variant=mod.variant,
           num_groups=mod.num_groups,
           flips=mod.flips.clone() if mod.noise and mod.noise_at_inference else None)


def lower_poly(b, fx, mod) -> None:
    b.emit(fx, "poly", [fx.args[0]], fx.target, coeffs=[float(c) for c in mod.coeffs],
           range=float(mod.range))


def lower_softmax(b, fx, mod=None) -> None:
    """A softmax / log-softmax as the model's last operation: the client applies it to the logits."""
    users = list(fx.users)
    if len(users) != 1 or users[0].op != "output":
        raise b.fail(fx, "a softmax inside the model has no cheap secure form; ringlet runs it only "
                         "as the last layer (stripped and applied by the client to its logits)")
    log = isinstance(mod, nn.LogSoftmax) or fx.target in (F.log_softmax, torch.log_softmax, "log_softmax")
    name = "log_softmax" if log else "softmax"
    dim = mod.dim if mod is not None else b.arg(fx, 1, "dim", None)
    rank = len(b.shape(fx)) + 1
    if dim is None or dim % rank == 0:
        raise b.fail(fx, "a softmax over the batch axis (give dim=1)")
    b.postprocess = {"op": name, "dim": int(dim % rank)}
    b.alias_to(fx, b.src(b.tensor_args(fx)[0]))


def register(reg: Registry) -> None:
    from ringlet.grelu.layers import GroupReLU
    from ringlet.poly.layers import PolyAct
    for op in (Relu(), GroupRelu(), Poly()):
        reg.op(op)
    reg.module(nn.ReLU, lower_relu_module)
    reg.module(GroupReLU, lower_grelu)
    reg.module(PolyAct, lower_poly)
    reg.function((F.relu, torch.relu, torch.relu_), lower_relu)
    reg.method(("relu", "relu_"), lower_relu)
    reg.module((nn.Softmax, nn.LogSoftmax), lower_softmax)
    reg.function((F.softmax, F.log_softmax, torch.softmax, torch.log_softmax), lower_softmax)
    reg.method(("softmax", "log_softmax"), lower_softmax)
