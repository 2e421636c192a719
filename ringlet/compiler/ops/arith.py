"""Arithmetic: by public constants (an affine map), secret + secret, and secret × secret.

``affine`` (x·scale + shift, scale and shift public numbers or tensors that broadcast over a sample:
BatchNorm that cannot be folded, ``x - c``, ``x / c``, ``c * x + d``, a parameter or buffer used
in ``forward``): local, 0 rounds, 0 bits. An integer scale (−x, 2·x) keeps the fractional bits;
any other scale adds f of them (the next layer that needs f truncates). ``add``: local, operands
lifted to a common scale. ``mul`` (two secret tensors): a Beaver product, 1 round and 64·(p−1) bits
per element of each operand (128 bits per element with 2 servers).
"""

from __future__ import annotations

import operator

import torch

from ringlet.compiler.ops.base import Op, Registry, one_sample
from ringlet.compiler.ops.shape import lift
from ringlet.protocols.arith import beaver
from ringlet.sharing import ArithmeticShare


def _is_integer(t: torch.Tensor | None) -> bool:
    return t is not None and bool(torch.all(t == torch.round(t))) and float(t.abs().max()) < 2 ** 20


def _expand(x: ArithmeticShare, shape) -> ArithmeticShare:
    return x if tuple(x.shape) == tuple(shape) else ArithmeticShare(
        x.data.expand(shape).contiguous(), x.party, x.frac)


class Affine(Op):
    """x·scale + shift with public scale and shift (either may be None)."""

    kind = "affine"
    cost = "local: 0 rounds, 0 bits"

    def wants_f(self, node) -> bool:
        s = node.params["scale"]
        return s is not None and not _is_integer(s)

    def frac(self, node, ins, f):
        return ins[0] + (f if self.wants_f(node) else 0)

    def encode(self, node, fixed):
        s = node.params["scale"]
        if s is None:
            return {"scale": None}
        if _is_integer(s):
            return {"scale": s.to(torch.int64)}
        return {"scale": fixed.encode(s, f"{node.label} scale")}

    def plain(self, node, ins, ctx):
        p = ctx.params(node)
        y = ins[0] if p["scale"] is None else ins[0] * p["scale"]
        return y if p["shift"] is None else y + p["shift"]

    def secure(self, node, ins, ctx):
        x, scale = ins[0], ctx.encoded[node.name]["scale"]
        shape = (x.shape[0], *node.out_shape)
        y = x if scale is None else x.mul_public(scale, frac=ctx.f if self.wants_f(node) else 0)
        y = _expand(y, shape)
        shift = node.params["shift"]
        if shift is not None:
            y = y.add_public(ctx.fixed.with_frac(y.frac).encode(shift.expand(shape), f"{node.label} shift"))
        return y

    def magnitude(self, node, ins):
        p = node.params
        scale = 1.0 if p["scale"] is None else float(p["scale"].abs().max())
        return scale * ins[0] + (0.0 if p["shift"] is None else float(p["shift"].abs().max()))


class Add(Op):
    """Σ signs[i]·x_i of secret tensors (a residual add, x − y)."""

    kind = "add"

    def frac(self, node, ins, f):
        return max(ins)

    def plain(self, node, ins, ctx):
        out = None
        for s, v in zip(node.params.get("signs", (1,) * len(ins)), ins):
            term = v if s == 1 else -v
            out = term if out is None else out + term
        return out

    def secure(self, node, ins, ctx):
        shape = (ins[0].shape[0], *node.out_shape)
        out = None
        for s, v in zip(node.params.get("signs", (1,) * len(ins)), lift(ins)):
            term = _expand(v if s == 1 else -v, shape)
            out = term if out is None else out + term
        return out

    def magnitude(self, node, ins):
        return sum(ins)


class Mul(Op):
    """x · y of two secret tensors (elementwise, broadcast)."""

    kind = "mul"
    needs_f = True
    cost = "Beaver product: 1 round, 128 bits (64 per operand element, 2 servers)"

    def frac(self, node, ins, f):
        return ins[0] + ins[1]

    def plain(self, node, ins, ctx):
        return ins[0] * ins[1]

    def secure(self, node, ins, ctx):
        shape = (ins[0].shape[0], *node.out_shape)
        a, b = (_expand(v, shape) for v in ins)
        return beaver.mul(ctx.sess, a, b, rescale=False)

    def magnitude(self, node, ins):
        return ins[0] * ins[1]


# -- lowerings ------------------------------------------------------------------------------------
_ADD = {operator.add, operator.iadd, torch.add, "add", "add_", "__add__", "__radd__"}
_SUB = {operator.sub, operator.isub, torch.sub, torch.subtract, "sub", "sub_", "__sub__"}
_RSUB = {"__rsub__", torch.rsub}
_MUL = {operator.mul, operator.imul, torch.mul, torch.multiply, "mul", "mul_", "__mul__", "__rmul__"}
_DIV = {operator.truediv, operator.itruediv, torch.div, torch.divide, torch.true_divide, "div", "div_",
        "__truediv__", "true_divide"}
_NEG = {operator.neg, torch.neg, torch.negative, "neg", "neg_", "__neg__", "negative"}


def _const(b, fx, v) -> torch.Tensor:
    """A public operand as a float64 tensor that broadcasts over one sample (not over the batch)."""
    t = torch.as_tensor(b.value(v), dtype=torch.float64)
    full = b.batch_shape(fx)
    if t.ndim > len(full) or torch.broadcast_shapes(t.shape, full) != torch.Size(full):
        raise b.fail(fx, f"a constant of shape {tuple(t.shape)} does not broadcast over the "
                         f"samples of shape {full[1:]}")
    if t.ndim == len(full) and t.shape[0] != 1:  # e.g. zeros_like(x): one value per sample
        t = one_sample(b, fx, t, "a constant")[None]
    return t


def affine(b, fx, x, scale=None, shift=None, label=None):
    """Emit x·scale + shift, merged into the affine node before it when x is one of its own."""
    prev = b.by_name.get(b.src(x))
    if prev is not None and prev.kind == "affine" and prev.name == x.name and len(x.users) == 1:
        p = prev.params
        s0 = p["scale"] if p["scale"] is not None else torch.tensor(1.0, dtype=torch.float64)
        s1 = scale if scale is not None else torch.tensor(1.0, dtype=torch.float64)
        shift0 = p["shift"] if p["shift"] is not None else 0
        merged_shift = shift0 * s1 + (shift if shift is not None else 0)
        p["scale"] = None if scale is None and p["scale"] is None else s0 * s1
        p["shift"] = merged_shift if isinstance(merged_shift, torch.Tensor) else None
        prev.out_shape = b.shape(fx)
        b.alias_to(fx, prev.name)
        return prev
    return b.emit(fx, "affine", [x], label, scale=scale, shift=shift)


def _operands(fx) -> list:
    """The operands of a binary (or unary) arithmetic call, positional or by keyword."""
    args = list(fx.args)
    for key in ("input", "other"):
        if key in fx.kwargs:
            args.append(fx.kwargs[key])
    return args


def lower_arith(b, fx) -> None:
    t = fx.target
    args = _operands(fx)
    if len(args) < (1 if t in _NEG else 2):
        raise b.fail(fx, "arithmetic with a missing operand")
    alpha = fx.kwargs.get("alpha", 1)
    secret = [b.is_tensor(a) for a in args[:2]]
    if t in _NEG:
        affine(b, fx, args[0], scale=torch.tensor(-1.0, dtype=torch.float64))
    elif t in _ADD | _SUB | _RSUB:
        sign = (1 if t in _ADD else -1) * alpha  # result = a + sign·b
        if t in _RSUB:  # other − self
            args, secret = args[::-1], secret[::-1]
        if all(secret):
            if sign not in (1, -1):
                raise b.fail(fx, f"add/sub with alpha={alpha} between two secret tensors")
            b.emit(fx, "add", args[:2], signs=(1, sign))
        elif secret[0]:
            affine(b, fx, args[0], shift=sign * _const(b, fx, args[1]))
        else:  # number ± secret
            affine(b, fx, args[1], scale=torch.tensor(float(sign), dtype=torch.float64),
                   shift=_const(b, fx, args[0]))
    elif t in _MUL:
        if all(secret):
            b.emit(fx, "mul", args[:2])
        else:
            x, c = (args[0], args[1]) if secret[0] else (args[1], args[0])
            affine(b, fx, x, scale=_const(b, fx, c))
    elif t in _DIV:
        if not secret[0] or secret[1]:
            raise b.fail(fx, "division by a secret value has no cheap secure form; divide by a "
                             "public constant, or move the division to the client")
        if fx.kwargs.get("rounding_mode") is not None:
            raise b.fail(fx, "integer division (rounding_mode) of a secret value")
        c = _const(b, fx, args[1])
        if bool((c == 0).any()):
            raise b.fail(fx, "division by zero")
        affine(b, fx, args[0], scale=1.0 / c)
    else:  # pragma: no cover - registered targets only
        raise b.fail(fx, "arithmetic not supported")


def lower_pow(b, fx) -> None:
    """x ** n, torch.square(x) for n = 1…4: Beaver products (⌈log2 n⌉ rounds, 128 bits each)."""
    x = fx.args[0]
    n = 2 if fx.target in (torch.square, "square") else b.arg(fx, 1, "exponent")
    if not b.is_tensor(x) or isinstance(n, torch.Tensor) or n not in (1, 2, 3, 4) or isinstance(n, bool):
        raise b.fail(fx, f"a power {n!r} of a secret value: only the integer exponents 1…4 are "
                         f"supported (Beaver products); fit a polynomial for anything else")
    if n == 1:
        b.alias_to(fx, b.src(x))
        return
    last = fx.name if n == 2 else None
    sq = b.emit(fx, "mul", [x, x], label=f"{fx.name}.square" if last is None else None,
                node_name=last or f"{fx.name}_sq").name
    if n == 3:
        b.emit(fx, "mul", [sq, x])
    elif n == 4:
        b.emit(fx, "mul", [sq, sq])


def register(reg: Registry) -> None:
    for op in (Affine(), Add(), Mul()):
        reg.op(op)
    reg.function((operator.pow, torch.pow, torch.square), lower_pow)
    reg.method(("pow", "__pow__", "square"), lower_pow)
    targets = _ADD | _SUB | _RSUB | _MUL | _DIV | _NEG
    reg.function([t for t in targets if not isinstance(t, str)], lower_arith)
    reg.method([t for t in targets if isinstance(t, str)], lower_arith)
    for name, fn in (("add", torch.add), ("sub", torch.sub), ("mul", torch.mul), ("div", torch.div),
                     ("neg", torch.neg), ("rsub", torch.rsub)):
        reg.aten_op(name, fn)
    for name in ("add_", "sub_", "mul_", "div_", "neg_"):
        reg.aten_op(name, name, method=True)
    reg.aten_op("pow", torch.pow)
    reg.aten_op("square", torch.square)
