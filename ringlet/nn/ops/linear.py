"""Linear layers with public weights: conv, linear, per-channel affine (BatchNorm that stays apart).

All are local on each server's share (0 rounds, 0 bits) with public weights; the output carries
f more fractional bits than the input (the next layer that needs f bits truncates). With private
weights (server 0 secret-shares them) conv and linear are Beaver products: 1 round, 64·(p−1) bits
per operand element.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ringlet.nn.ops.base import Op, Registry
from ringlet.protocols import beaver, linear
from ringlet.ring import FixedPoint
from ringlet.sharing import ArithmeticShare


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _l1(weight: torch.Tensor) -> float:
    """The largest L1 norm of one output's weights (the worst-case gain of a linear layer)."""
    return float(weight.abs().reshape(weight.shape[0], -1).sum(1).max()) if weight.numel() else 0.0


def _add_bias(y: ArithmeticShare, b: ArithmeticShare | None, view) -> ArithmeticShare:
    """Each server adds its share of the bias (broadcast over the batch and space)."""
    if b is None:
        return y
    return ArithmeticShare(y.data + b.data.view(view), y.party, y.frac)


class _Weighted(Op):
    needs_f = True
    cost = "local: 0 rounds, 0 bits (private weights: 1 round, Beaver product)"

    def frac(self, node, ins, f):
        return ins[0] + f

    def encode(self, node, fixed: FixedPoint) -> dict:
        p, f = node.params, fixed.frac_bits
        return {"weight": fixed.encode(p["weight"], f"{node.label} weight"),
                "bias": None if p["bias"] is None else FixedPoint(2 * f).encode(p["bias"], f"{node.label} bias")}

    def magnitude(self, node, ins):
        bias = node.params["bias"]
        return _l1(node.params["weight"]) * ins[0] + (float(bias.abs().max()) if bias is not None else 0.0)


class Conv(_Weighted):
    kind = "conv"

    def plain(self, node, ins, ctx):
        p = ctx.params(node)
        return F.conv2d(ins[0], p["weight"], p["bias"], p["stride"], p["padding"], p["dilation"],
                        p["groups"])

    def secure(self, node, ins, ctx):
        p, enc = node.params, ctx.encoded[node.name]
        if ctx.weights is not None:
            w, b = ctx.weights[node.name]
            y = beaver.conv2d(ctx.sess, ins[0], w, p["stride"], p["padding"], p["dilation"],
                              p["groups"], rescale=False)
            return _add_bias(y, b, (1, -1, 1, 1))
        return linear.conv2d_public(ins[0], enc["weight"], enc["bias"], p["stride"], p["padding"],
                                    p["dilation"], p["groups"], ctx.f, ctx.options.backend)


class Linear(_Weighted):
    kind = "linear"

    def plain(self, node, ins, ctx):
        p = ctx.params(node)
        return F.linear(ins[0], p["weight"], p["bias"])

    def secure(self, node, ins, ctx):
        enc = ctx.encoded[node.name]
        if ctx.weights is not None:
            w, b = ctx.weights[node.name]
            y = beaver.matmul(ctx.sess, ins[0], ArithmeticShare(w.data.t().contiguous(), w.party, w.frac),
                              rescale=False)
            return _add_bias(y, b, (1, -1))
        return linear.linear_public(ins[0], enc["weight"], enc["bias"], ctx.f, ctx.options.backend)


class Affine(Op):
    """x·scale + shift per channel (a BatchNorm that cannot be folded into a conv before it)."""

    kind = "affine"
    needs_f = True

    def frac(self, node, ins, f):
        return ins[0] + f

    def encode(self, node, fixed):
        p = node.params
        return {"scale": fixed.encode(p["scale"], f"{node.label} scale"),
                "shift": FixedPoint(2 * fixed.frac_bits).encode(p["shift"], f"{node.label} shift")}

    @staticmethod
    def _view(ndim: int) -> tuple:
        return (1, -1) + (1,) * (ndim - 2)

    def plain(self, node, ins, ctx):
        p, view = ctx.params(node), self._view(ins[0].ndim)
        return ins[0] * p["scale"].view(view) + p["shift"].view(view)

    def secure(self, node, ins, ctx):
        enc, view = ctx.encoded[node.name], self._view(len(ins[0].shape))
        y = ins[0].mul_public(enc["scale"].view(view), frac=ctx.f)
        return y.add_public(enc["shift"].view(view).expand(y.shape).contiguous())

    def magnitude(self, node, ins):
        p = node.params
        return float(p["scale"].abs().max()) * ins[0] + float(p["shift"].abs().max())


# -- lowerings ------------------------------------------------------------------------------------
def lower_conv(b, fx, mod: nn.Conv2d) -> None:
    if mod.padding_mode != "zeros" or isinstance(mod.padding, str):
        raise b.fail(fx, f"conv padding mode {mod.padding_mode!r}/{mod.padding!r} unsupported")
    b.emit(fx, "conv", [fx.args[0]], fx.target, weight=mod.weight.detach().double(),
           bias=None if mod.bias is None else mod.bias.detach().double(),
           stride=_pair(mod.stride), padding=_pair(mod.padding), dilation=_pair(mod.dilation),
           groups=mod.groups)


def lower_linear(b, fx, mod: nn.Linear) -> None:
    b.emit(fx, "linear", [fx.args[0]], fx.target, weight=mod.weight.detach().double(),
           bias=None if mod.bias is None else mod.bias.detach().double())


def lower_batchnorm(b, fx, bn) -> None:
    """Fold into the conv/linear before it when that is its only user; else a public affine map."""
    x = fx.args[0]
    ones = torch.ones(bn.num_features, dtype=torch.float64)
    scale = (bn.weight.detach().double() if bn.affine else ones) / torch.sqrt(bn.running_var.double() + bn.eps)
    shift = (bn.bias.detach().double() if bn.affine else 0) - bn.running_mean.double() * scale
    prev = b.by_name.get(b.src(x))
    if prev is not None and prev.kind in ("conv", "linear") and len(x.users) == 1:
        view = (-1, 1, 1, 1) if prev.kind == "conv" else (-1, 1)
        prev.params["weight"] = prev.params["weight"] * scale.view(view)
        bias = prev.params["bias"] if prev.params["bias"] is not None else 0
        prev.params["bias"] = bias * scale + shift
        prev.params["folded"] = fx.target
        b.alias_to(fx, prev.name)
        return
    b.emit(fx, "affine", [x], fx.target, scale=scale, shift=shift)


def register(reg: Registry) -> None:
    for op in (Conv(), Linear(), Affine()):
        reg.op(op)
    reg.module(nn.Conv2d, lower_conv)
    reg.module(nn.Linear, lower_linear)
    reg.module((nn.BatchNorm2d, nn.BatchNorm1d), lower_batchnorm)
