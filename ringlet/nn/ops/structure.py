"""Structure and arithmetic by constants: residual add, scaling, reshape, concatenation, output.

All local (0 rounds, 0 bits). A residual add or a concatenation lifts the operand with fewer
fractional bits to the other's scale (an exact multiplication by a power of two).
"""

from __future__ import annotations

import operator

import torch
from torch import nn

from ringlet.nn.ops.base import Op, Registry
from ringlet.ring import FixedPoint
from ringlet.sharing import ArithmeticShare


def lift(shares: list[ArithmeticShare]) -> list[ArithmeticShare]:
    """Bring shares to the largest fractional bits among them (exact: × 2^d)."""
    top = max(v.frac for v in shares)
    return [v.mul_public(1 << (top - v.frac), frac=top - v.frac) if v.frac < top else v
            for v in shares]


class Add(Op):
    kind = "add"

    def frac(self, node, ins, f):
        return max(ins)

    def plain(self, node, ins, ctx):
        return ins[0] + ins[1]

    def secure(self, node, ins, ctx):
        a, b = lift(ins)
        return a + b

    def magnitude(self, node, ins):
        return ins[0] + ins[1]


class Scale(Op):
    """x·factor + offset with public numbers."""

    kind = "scale"
    needs_f = True

    def frac(self, node, ins, f):
        return ins[0] + (f if node.params["factor"] != 1.0 else 0)

    def plain(self, node, ins, ctx):
        p = node.params
        return ins[0] * p["factor"] + p["offset"]

    def secure(self, node, ins, ctx):
        p = node.params
        y = ins[0] if p["factor"] == 1.0 else ins[0].mul_public(
            int(ctx.fixed.encode(torch.tensor(p["factor"]))), frac=ctx.f)
        if p["offset"]:
            y = y.add_public(FixedPoint(y.frac).encode(torch.full(y.shape, p["offset"])))
        return y

    def magnitude(self, node, ins):
        return abs(node.params["factor"]) * ins[0] + abs(node.params["offset"])


class Reshape(Op):
    kind = "reshape"

    def plain(self, node, ins, ctx):
        return ins[0].reshape(ins[0].shape[0], *node.out_shape)

    def secure(self, node, ins, ctx):
        return ins[0].reshape(ins[0].shape[0], *node.out_shape)


class Cat(Op):
    kind = "cat"

    def frac(self, node, ins, f):
        return max(ins)

    def plain(self, node, ins, ctx):
        return torch.cat(ins, node.params["dim"])

    def secure(self, node, ins, ctx):
        return ArithmeticShare.cat(lift(ins), node.params["dim"])

    def magnitude(self, node, ins):
        return max(ins)


class Input(Op):
    """The client's input (the interpreter seeds its value; no handler runs)."""

    kind = "input"
    cost = "client → servers: 64 bits per element, sent to the last server only"


class Output(Op):
    kind = "output"

    def plain(self, node, ins, ctx):
        return ins[0]

    def secure(self, node, ins, ctx):
        return ins[0]


# -- lowerings ------------------------------------------------------------------------------------
_ADD = {operator.add, operator.iadd, torch.add}


def lower_arith(b, fx) -> None:
    t = fx.target
    is_add = t in _ADD or (isinstance(t, str) and t.startswith(("add", "__add")))
    a, c = fx.args[0], fx.args[1]
    tensors = [v for v in (a, c) if b.is_tensor(v)]
    consts = [v for v in (a, c) if isinstance(v, (int, float))]
    if len(tensors) == 2 and is_add and len(fx.kwargs) == 0:
        b.emit(fx, "add", tensors)
    elif len(tensors) == 1 and len(consts) == 1:
        b.emit(fx, "scale", tensors, factor=1.0 if is_add else float(consts[0]),
               offset=float(consts[0]) if is_add else 0.0)
    else:
        raise b.fail(fx, "only tensor + tensor, tensor + number and tensor × number are supported")


def lower_reshape(b, fx, mod=None) -> None:
    b.emit(fx, "reshape", b.tensor_args(fx)[:1], fx.target if mod is not None else None)


def lower_cat(b, fx) -> None:
    tensors, dim = fx.args[0], fx.kwargs.get("dim", fx.args[1] if len(fx.args) > 1 else 0)
    rank = len(b.shape(fx))
    if dim == 0 or dim == -rank - 1:
        raise b.fail(fx, "concatenation along the batch axis")
    b.emit(fx, "cat", list(tensors), dim=dim if dim > 0 else dim + rank + 1)


def lower_alias(b, fx, mod=None) -> None:
    b.alias_to(fx, b.src(b.tensor_args(fx)[0]))


def lower_shape_only(b, fx) -> None:
    b.mark_shape_only(fx)


def lower_getitem(b, fx) -> None:
    if not b.is_shape_only(fx.args[0]):
        raise b.fail(fx, "indexing a tensor is not supported")
    b.mark_shape_only(fx)


def register(reg: Registry) -> None:
    for op in (Input(), Add(), Scale(), Reshape(), Cat(), Output()):
        reg.op(op)
    reg.function(_ADD | {operator.mul, operator.imul, torch.mul}, lower_arith)
    reg.method(("add", "add_", "__add__", "mul", "mul_"), lower_arith)
    reg.function((torch.flatten, torch.reshape), lower_reshape)
    reg.method(("view", "reshape", "flatten"), lower_reshape)
    reg.module(nn.Flatten, lower_reshape)
    reg.function((torch.cat,), lower_cat)
    reg.module((nn.Dropout, nn.Identity), lower_alias)
    reg.function((nn.functional.dropout,), lower_alias)
    reg.method(("contiguous", "clone", "detach"), lower_alias)
    reg.method(("size", "dim"), lower_shape_only)
    reg.function((operator.getitem,), lower_getitem)
