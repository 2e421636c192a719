"""Shapes: reshape, rearrangements (gather), concatenation, input and output. All local: 0 rounds, 0 bits.

``gather`` is every per-sample rearrangement with a static index map: permute/transpose, flip,
roll, slicing, chunk/split, padding (zeros, reflect, replicate, circular), nearest upsampling,
pixel shuffle, repeat. Its index map is found at compile time by applying the user's own operation
to a tensor of element numbers, then checked: every output must be one input element of the same
sample (or a zero), so an operation that mixes the samples of a batch or computes new values is a
CompileError. A residual add or a concatenation lifts the operand with fewer fractional bits to
the other's scale (an exact multiplication by a power of two).
"""

from __future__ import annotations

import math
import operator

import torch
import torch.nn.functional as F
from torch import nn

from ringlet.compiler.ops.base import Op, Registry, call, one_sample
from ringlet.compiler.ops.pool import lower_spatial_map
from ringlet.sharing import ArithmeticShare


def lift(shares: list[ArithmeticShare]) -> list[ArithmeticShare]:
    """Bring shares to the largest fractional bits among them (exact: × 2^d)."""
    top = max(v.frac for v in shares)
    return [v.mul_public(1 << (top - v.frac), frac=top - v.frac) if v.frac < top else v
            for v in shares]


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


class Reshape(Op):
    kind = "reshape"

    def plain(self, node, ins, ctx):
        return ins[0].reshape(ins[0].shape[0], *node.out_shape)

    def secure(self, node, ins, ctx):
        return ins[0].reshape(ins[0].shape[0], *node.out_shape)


def _gather(data: torch.Tensor, index: torch.Tensor, out_shape) -> torch.Tensor:
    flat = data.reshape(data.shape[0], -1)
    flat = torch.cat([flat, torch.zeros(flat.shape[0], 1, dtype=flat.dtype)], 1)  # index −1: zero
    return flat[:, index].reshape(data.shape[0], *out_shape)


class Gather(Op):
    """out[i] = x[index[i]] per sample (index −1: zero)."""

    kind = "gather"

    def plain(self, node, ins, ctx):
        return _gather(ins[0], node.params["index"], node.out_shape)

    def secure(self, node, ins, ctx):
        x = ins[0]
        return ArithmeticShare(_gather(x.data, node.params["index"], node.out_shape), x.party, x.frac)


class Cat(Op):
    """torch.cat of secret tensors and public per-sample constants (``consts``: position (a string) → tensor,
    e.g. a class token): each constant enters as a share held by server 0."""

    kind = "cat"

    def frac(self, node, ins, f):
        return max(ins)

    @staticmethod
    def _parts(node, ins, const):
        """The inputs with each constant, made by ``const``, at its position."""
        consts, it = node.params.get("consts") or {}, iter(ins)
        return [const(consts[str(i)]) if str(i) in consts else next(it)
                for i in range(len(ins) + len(consts))]

    def plain(self, node, ins, ctx):
        n, dtype = ins[0].shape[0], ins[0].dtype
        return torch.cat(self._parts(node, ins, lambda c: c.to(dtype).expand(n, *c.shape)), node.params["dim"])

    def secure(self, node, ins, ctx):
        ins = lift(ins)
        x = ins[0]

        def const(c):
            data = ctx.fixed.with_frac(x.frac).encode(c, f"{node.label} constant")
            data = data.expand(x.shape[0], *c.shape).contiguous()
            return ArithmeticShare(data if x.party == 0 else torch.zeros_like(data), x.party, x.frac)
        return ArithmeticShare.cat(self._parts(node, ins, const), node.params["dim"])

    def magnitude(self, node, ins):
        consts = node.params.get("consts") or {}
        return max([*ins, *(float(c.abs().max()) for c in consts.values())])


# -- lowerings ------------------------------------------------------------------------------------
def index_map(b, fx, fn, in_shape, batch_moved=None) -> tuple[torch.Tensor, tuple]:
    """The static index map of a rearrangement ``fn`` of one sample (−1 where it writes a zero),
    and the per-sample output shape; ``batch_moved``: an exception raised instead of the error
    when ``fn`` keeps the samples apart but moves the batch axis."""
    n = math.prod(in_shape)
    probe = torch.arange(1, 2 * n + 1, dtype=torch.float64).view(2, *in_shape)
    try:
        out = fn(probe)
    except Exception as exc:  # noqa: BLE001 - the user's operation on the probe
        raise b.fail(fx, f"not a static rearrangement ({type(exc).__name__}: {exc})") from exc
    if not isinstance(out, torch.Tensor) or out.ndim == 0 or out.shape[0] != 2:
        if batch_moved is not None and isinstance(out, torch.Tensor) and _keeps_samples(out, n):
            raise batch_moved
        raise b.fail(fx, "the operation mixes the samples of a batch (the batch axis must stay first)")
    if not torch.equal(out, torch.round(out)):
        raise b.fail(fx, "the operation computes new values (it is not a rearrangement; use "
                         "nearest interpolation, or a supported layer)")
    idx = out.reshape(2, -1).to(torch.int64) - 1
    first, second = idx[0], idx[1]
    local = bool(((first >= -1) & (first < n)).all()) and torch.equal(
        torch.where(first >= 0, first + n, torch.full_like(first, -1)), second)
    if not local:
        if batch_moved is not None and _keeps_samples(out, n):  # the batch axis moved behind another of 2
            raise batch_moved
        raise b.fail(fx, "the operation mixes the samples of a batch (the batch axis must stay first)")
    return first, tuple(out.shape[1:])


class _BatchMoved(Exception):
    pass


def _keeps_samples(out: torch.Tensor, n: int) -> bool:
    """Whether a probe's result (values 1…n of sample 0, n+1…2n of sample 1) has its samples on
    one axis of size 2, each sample's values apart: the batch axis moved, not mixed."""
    for axis in range(out.ndim):
        if out.shape[axis] == 2:
            a, c = out.select(axis, 0), out.select(axis, 1)
            if bool(((a >= 1) & (a <= n)).all()) and torch.equal(c, a + n):
                return True
    return False


def emit_gather(b, fx, x, fn, label=None, name=None) -> str | None:
    """Emit the rearrangement ``fn`` of ``x`` (an fx node or a graph node's name); returns the name
    of the node holding the result. With ``name`` it is a step inside ``fx``'s lowering; without,
    it is ``fx``'s own value (an identity rearrangement then just aliases ``x``), and one that
    moves the batch axis is deferred (None) until a later rearrangement brings it back first."""
    if not isinstance(x, str) and x.name in b.deferred:
        x, inner = b.deferred[x.name]
        fn = (lambda f, g: lambda t: f(g(t)))(fn, inner)
    src = x if isinstance(x, str) else b.src(x)
    in_shape = b.by_name[src].out_shape
    try:
        index, out_shape = index_map(b, fx, fn, in_shape, batch_moved=_BatchMoved if name is None else None)
    except _BatchMoved:
        b.deferred[fx.name] = (x, fn)
        return None
    if out_shape == tuple(in_shape) and torch.equal(index, torch.arange(index.numel())):
        if name is None:
            b.alias_to(fx, src)
        return src
    return b.emit(fx, "gather", [src], label, node_name=name, node_shape=out_shape, index=index).name


def lower_reshape(b, fx, mod=None) -> None:
    full = b.batch_shape(fx)
    if full[0] != 2:
        raise b.fail(fx, f"reshape to {full} mixes the batch axis (the first axis must stay the batch)")
    x = fx.args[0] if fx.args else fx.kwargs["input"]  # never the shape-giving argument of view_as
    b.emit(fx, "reshape", [x], fx.target if mod is not None else None)


def lower_rearrange(b, fx, mod=None) -> None:
    x = fx.args[0] if fx.args else fx.kwargs["input"]
    emit_gather(b, fx, x, call(b, fx), fx.target if mod is not None else None)


def lower_getitem(b, fx) -> None:
    src = fx.args[0]
    if b.is_tensor(fx.args[1]):
        raise b.fail(fx, "indexing with a secret index (a data-dependent lookup)")
    producer = src if src.target in _TUPLE_PRODUCERS else None
    key = b.value(fx.args[1])
    if producer is not None:  # an element of chunk / split / unbind: compose with the producer
        inner = call(b, producer)
        emit_gather(b, fx, b.tensor_args(producer)[0], lambda t: inner(t)[key])
        return
    emit_gather(b, fx, src, lambda t: t[key])


_TUPLE_PRODUCERS = (torch.chunk, torch.split, torch.unbind, "chunk", "split", "unbind")


def lower_tuple_producer(b, fx) -> None:
    """chunk / split / unbind: nothing yet; each getitem of the result is its own gather."""


def lower_pad(b, fx, mod=None) -> None:
    value = getattr(mod, "value", None) if mod is not None else b.arg(fx, 3, "value", None)
    if value not in (None, 0, 0.0):
        raise b.fail(fx, f"padding with the constant {value} (only zero padding is supported)")
    lower_rearrange(b, fx, mod)


def lower_interpolate(b, fx, mod=None) -> None:
    mode = getattr(mod, "mode", None) if mod is not None else b.arg(fx, 3, "mode", "nearest")
    if mode in ("bilinear", "linear", "bicubic", "trilinear", "area", "nearest-exact"):
        lower_spatial_map(b, fx, mod)
        return
    if mode != "nearest":
        raise b.fail(fx, f"interpolation mode {mode!r}")
    lower_rearrange(b, fx, mod)


def _dim(b, fx, default=0) -> int:
    return b.arg(fx, 1, "dim", fx.kwargs.get("axis", default))


def _of_producer(b, fx, tensors, combine) -> bool:
    """cat/stack of a chunk/split/unbind result: one rearrangement of the producer's input."""
    if not isinstance(tensors, torch.fx.Node) or tensors.target not in _TUPLE_PRODUCERS:
        return False
    inner = call(b, tensors)
    emit_gather(b, fx, b.tensor_args(tensors)[0], lambda t: combine(inner(t)))
    return True


def lower_cat(b, fx) -> None:
    tensors = fx.args[0] if fx.args else fx.kwargs["tensors"]
    dim = _dim(b, fx)
    if _of_producer(b, fx, tensors, lambda parts: torch.cat(parts, dim)):
        return
    rank = len(b.shape(fx))
    if dim == 0 or dim == -rank - 1:
        raise b.fail(fx, "concatenation along the batch axis")
    consts = {}
    for i, t in enumerate(tensors):
        if not b.is_tensor(t):
            consts[str(i)] = one_sample(b, fx, torch.as_tensor(b.value(t)), "a public tensor beside "
                                        "the secret ones").detach().to(torch.float64).clone()
    if len(consts) == len(tensors):
        raise b.fail(fx, "concatenation of public tensors only")
    b.emit(fx, "cat", [t for t in tensors if b.is_tensor(t)], dim=dim if dim > 0 else dim + rank + 1,
           consts=consts or None)


def lower_stack(b, fx) -> None:
    tensors, dim = fx.args[0] if fx.args else fx.kwargs["tensors"], _dim(b, fx)
    if _of_producer(b, fx, tensors, lambda parts: torch.stack(parts, dim)):
        return
    rank = len(b.shape(fx))
    dim = dim if dim >= 0 else dim + rank + 1
    if dim == 0:
        raise b.fail(fx, "stacking along the batch axis")
    parts = []
    for i, t in enumerate(tensors):
        shape = list(b.shape(t))
        shape.insert(dim - 1, 1)
        parts.append(b.emit(fx, "reshape", [t], label=f"{fx.name}_in{i}", node_name=f"{fx.name}_in{i}",
                            node_shape=tuple(shape)).name)
    b.emit(fx, "cat", parts, dim=dim)


def lower_alias(b, fx, mod=None) -> None:
    x = fx.args[0] if fx.args else fx.kwargs["input"]  # self, never the argument of type_as / to
    b.alias_to(fx, b.src(x))


_PADS = (nn.ZeroPad2d, nn.ReflectionPad2d, nn.ReplicationPad2d, nn.ConstantPad2d, nn.ZeroPad1d,
         nn.ReflectionPad1d, nn.ReplicationPad1d, nn.ConstantPad1d, nn.CircularPad2d)
_DROPOUT = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
            nn.FeatureAlphaDropout, nn.Identity)


def _aten_slice(node, args, kwargs):
    """aten.slice(input, dim, start, end, step) as input[..., start:end:step] on axis dim."""
    x, dim, start, end, step = (list(args) + [0, None, None, 1][len(args) - 1:])[:5]
    dim, start, end, step = (kwargs.get("dim", dim), kwargs.get("start", start), kwargs.get("end", end),
                             kwargs.get("step", step))
    ndim = node.args[0].meta["val"].ndim
    dim = dim + ndim if dim < 0 else dim
    return (x, (slice(None),) * dim + (slice(start, end, step),)), {}


def register(reg: Registry) -> None:
    for op in (Input(), Output(), Reshape(), Gather(), Cat()):
        reg.op(op)
    reg.function((torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze), lower_reshape)
    reg.method(("view", "reshape", "flatten", "squeeze", "unsqueeze", "unflatten", "view_as",
                "reshape_as"), lower_reshape)
    reg.module((nn.Flatten, nn.Unflatten), lower_reshape)
    reg.function((torch.permute, torch.transpose, torch.swapaxes, torch.flip, torch.roll,
                  torch.movedim, F.pixel_shuffle, F.pixel_unshuffle, torch.tile, torch.narrow,
                  torch.select, torch.index_select, torch.repeat_interleave), lower_rearrange)
    reg.method(("permute", "transpose", "swapaxes", "flip", "roll", "movedim", "repeat", "expand",
                "tile", "narrow", "select", "index_select", "repeat_interleave"), lower_rearrange)
    reg.module((nn.PixelShuffle, nn.PixelUnshuffle, nn.ChannelShuffle), lower_rearrange)
    reg.function((F.pad,), lower_pad)
    reg.module(_PADS, lower_pad)
    reg.function((F.interpolate, F.upsample, F.upsample_nearest), lower_interpolate)
    reg.module((nn.Upsample, nn.UpsamplingNearest2d, nn.UpsamplingBilinear2d), lower_interpolate)
    reg.function((operator.getitem,), lower_getitem)
    reg.function(_TUPLE_PRODUCERS[:3], lower_tuple_producer)
    reg.method(_TUPLE_PRODUCERS[3:], lower_tuple_producer)
    reg.function((torch.cat, torch.concat, torch.concatenate), lower_cat)
    reg.function((torch.stack,), lower_stack)
    reg.module(_DROPOUT, lower_alias)
    reg.function((F.dropout, F.dropout1d, F.dropout2d, F.alpha_dropout, F.feature_alpha_dropout),
                 lower_alias)
    reg.method(("contiguous", "clone", "detach", "float", "double", "to", "type_as",
                "requires_grad_", "cpu"), lower_alias)
    reg.function((torch.clone,), lower_alias)
    for name in ("view", "reshape", "permute", "expand", "repeat", "contiguous", "clone", "unflatten"):
        reg.aten_op(name, name, method=True)
    reg.aten_op(("alias", "lift_fresh_copy", "detach", "_to_copy"), "clone", method=True,
                adapt=lambda n, a, k: (a[:1], {}))
    reg.aten_op("flatten", torch.flatten)
    reg.aten_op("squeeze", torch.squeeze)
    reg.aten_op("unsqueeze", torch.unsqueeze)
    reg.aten_op("transpose", torch.transpose)
    reg.aten_op("flip", torch.flip)
    reg.aten_op("roll", torch.roll)
    reg.aten_op("select", torch.select)
    reg.aten_op("narrow", torch.narrow)
    reg.aten_op("index_select", torch.index_select)
    reg.aten_op("pixel_shuffle", F.pixel_shuffle)
    reg.aten_op("pixel_unshuffle", F.pixel_unshuffle)
    reg.aten_op(("pad", "constant_pad_nd"), F.pad)
    reg.aten_op("slice", operator.getitem, adapt=_aten_slice)
    reg.aten_op(("split", "split_with_sizes"), torch.split)
    reg.aten_op("chunk", torch.chunk)
    reg.aten_op("unbind", torch.unbind)
    reg.aten_op(("cat", "concat"), torch.cat)
    reg.aten_op("stack", torch.stack)
    reg.aten_op(("dropout", "feature_dropout", "alpha_dropout"), F.dropout,
                adapt=lambda n, a, k: ((a[0],), {"training": False}))
