"""Linear layers with public weights: conv (any padding, transposed), linear; BatchNorm folded.

All are local on each server's share (0 rounds, 0 bits) with public weights; the output carries
f more fractional bits than the input (the next layer that needs f bits truncates). With private
weights (server 0 secret-shares them) conv and linear are Beaver products: 1 round, 64·(p−1) bits
per operand element.
"""

from __future__ import annotations

import operator

import torch
import torch.nn.functional as F
from torch import nn

from ringlet.compiler.ops.arith import Mul
from ringlet.compiler.ops.base import Op, Registry
from ringlet.compiler.ops.base import pair as _pair
from ringlet.compiler.ops.shape import emit_gather
from ringlet.protocols.arith import beaver, linear
from ringlet.ring import FixedPoint
from ringlet.sharing import ArithmeticShare


def _l1(weight: torch.Tensor) -> float:
    """The largest L1 norm of one output's weights (the worst-case gain of a linear layer)."""
    return float(weight.abs().reshape(weight.shape[0], -1).sum(1).max()) if weight.numel() else 0.0


def _add_bias(y: ArithmeticShare, b: ArithmeticShare | None, view) -> ArithmeticShare:
    """Each server adds its share of the bias (broadcast over the batch and space)."""
    if b is None:
        return y
    return ArithmeticShare(y.data + b.data.view(view), y.party, y.frac)


def _dry(node, x: ArithmeticShare, ctx) -> ArithmeticShare:
    """A plan recording's public-weight layer: no arithmetic, zeros of the output's shape (a local
    layer asks the dealer for nothing)."""
    return ArithmeticShare(torch.zeros((x.shape[0], *node.out_shape), dtype=torch.int64), x.party,
                           x.frac + ctx.f)


class _Weighted(Op):
    needs_f = True
    cost = "local: 0 rounds, 0 bits (private weights: 1 round, Beaver product)"

    def frac(self, node, ins, f):
        return ins[0] + f

    def encode(self, node, fixed: FixedPoint) -> dict:
        p, f = node.params, fixed.frac_bits
        return {"weight": fixed.encode(p["weight"], f"{node.label} weight"),
                "bias": None if p["bias"] is None else fixed.with_frac(2 * f).encode(p["bias"], f"{node.label} bias")}

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
        if ctx.dry and ctx.weights is None:
            return _dry(node, ins[0], ctx)
        if ctx.weights is not None:
            w, b = ctx.weights[node.name]
            y = beaver.conv2d(ctx.sess, ins[0], w, p["stride"], p["padding"], p["dilation"],
                              p["groups"], rescale=False)
            return _add_bias(y, b, (1, -1, 1, 1))
        return linear.conv2d_public(ins[0], enc["weight"], enc["bias"], p["stride"], p["padding"],
                                    p["dilation"], p["groups"], ctx.f, ctx.backend_for(node, ins[0]),
                                    ctx.fixed.ring_bits)

    def linear_layer(self, node, in_shape, batch, encoded):
        p = node.params
        return {"kind": "conv", "x_shape": (batch, *in_shape), "w": encoded["weight"],
                "stride": p["stride"], "padding": p["padding"], "dilation": p["dilation"],
                "groups": p["groups"]}


class Linear(_Weighted):
    kind = "linear"

    def plain(self, node, ins, ctx):
        p = ctx.params(node)
        return F.linear(ins[0], p["weight"], p["bias"])

    def secure(self, node, ins, ctx):
        enc = ctx.encoded[node.name]
        if ctx.dry and ctx.weights is None:
            return _dry(node, ins[0], ctx)
        if ctx.weights is not None:
            w, b = ctx.weights[node.name]
            y = beaver.matmul(ctx.sess, ins[0], ArithmeticShare(w.data.t().contiguous(), w.party, w.frac),
                              rescale=False)
            return _add_bias(y, b, (1, -1))
        return linear.linear_public(ins[0], enc["weight"], enc["bias"], ctx.f,
                                    ctx.backend_for(node, ins[0]), ctx.fixed.ring_bits)

    def linear_layer(self, node, in_shape, batch, encoded):
        return {"kind": "linear", "x_shape": (batch, *in_shape), "w": encoded["weight"]}


# -- lowerings ------------------------------------------------------------------------------------
_PAD_MODES = {"zeros": "constant", "reflect": "reflect", "replicate": "replicate",
              "circular": "circular"}


def _same_padding(kernel, dilation) -> tuple[int, int, int, int]:
    """torch's padding='same' as (left, right, top, bottom): any odd total goes right/bottom."""
    (kh, kw), (dh, dw) = kernel, dilation
    th, tw = dh * (kh - 1), dw * (kw - 1)
    return tw // 2, tw - tw // 2, th // 2, th - th // 2


def emit_conv(b, fx, x, weight, bias, stride, padding, dilation, groups, padding_mode="zeros",
              label=None) -> None:
    """A conv node; explicit padding first when it is asymmetric or not zeros (a local gather)."""
    kernel, dilation = tuple(weight.shape[2:]), _pair(dilation)
    if isinstance(padding, str):
        if padding == "valid":
            pads = (0, 0, 0, 0)
        elif padding == "same":
            pads = _same_padding(kernel, dilation)
        else:
            raise b.fail(fx, f"conv padding {padding!r}")
    else:
        ph, pw = _pair(padding)
        pads = (pw, pw, ph, ph)
    if padding_mode not in _PAD_MODES:
        raise b.fail(fx, f"conv padding mode {padding_mode!r}")
    symmetric = pads[0] == pads[1] and pads[2] == pads[3]
    if padding_mode != "zeros" or not symmetric:
        mode = _PAD_MODES[padding_mode]
        x = emit_gather(b, fx, x, lambda t: F.pad(t, pads, mode=mode), label=f"{label or fx.name}.pad",
                        name=f"{fx.name}_pad")
        pads = (0, 0, 0, 0)
    b.emit(fx, "conv", [x], label, weight=weight.detach().double(),
           bias=None if bias is None else bias.detach().double(), stride=_pair(stride),
           padding=(pads[2], pads[0]), dilation=dilation, groups=int(groups))


def lower_conv(b, fx, mod: nn.Conv2d) -> None:
    emit_conv(b, fx, fx.args[0], mod.weight, mod.bias, mod.stride, mod.padding, mod.dilation,
              mod.groups, mod.padding_mode, fx.target)


def lower_conv_function(b, fx) -> None:
    x = b.tensor_args(fx)[0]
    if b.is_tensor(fx.args[1] if len(fx.args) > 1 else fx.kwargs.get("weight")):
        raise b.fail(fx, "a convolution with secret weights computed in forward")
    weight = torch.as_tensor(b.arg(fx, 1, "weight"))
    emit_conv(b, fx, x, weight, b.arg(fx, 2, "bias"), b.arg(fx, 3, "stride", 1),
              b.arg(fx, 4, "padding", 0), b.arg(fx, 5, "dilation", 1), b.arg(fx, 6, "groups", 1))


def lower_conv_transpose(b, fx, mod: nn.ConvTranspose2d) -> None:
    """A transposed convolution = zero insertion and padding (a local gather), then a stride-1 conv
    with the flipped, transposed kernel (public weights: local, exact)."""
    if mod.padding_mode != "zeros":
        raise b.fail(fx, f"ConvTranspose2d padding mode {mod.padding_mode!r}")
    (sh, sw), (ph, pw), (dh, dw) = _pair(mod.stride), _pair(mod.padding), _pair(mod.dilation)
    (oh, ow), (kh, kw), g = _pair(mod.output_padding), tuple(mod.weight.shape[2:]), mod.groups
    eh, ew = dh * (kh - 1) - ph, dw * (kw - 1) - pw

    def upsample(t):
        n, c, h, w = t.shape
        z = t.new_zeros(n, c, (h - 1) * sh + 1, (w - 1) * sw + 1)
        z[:, :, ::sh, ::sw] = t
        return F.pad(z, (ew, ew + ow, eh, eh + oh))

    w = mod.weight.detach()
    cin, cout_g = w.shape[0], w.shape[1]
    w = w.view(g, cin // g, cout_g, kh, kw).transpose(1, 2).reshape(g * cout_g, cin // g, kh, kw)
    x = emit_gather(b, fx, fx.args[0], upsample, label=f"{fx.target}.upsample", name=f"{fx.name}_up")
    b.emit(fx, "conv", [x], fx.target, weight=w.flip(2, 3).double(),
           bias=None if mod.bias is None else mod.bias.detach().double(), stride=(1, 1),
           padding=(0, 0), dilation=(dh, dw), groups=g)


def lower_linear(b, fx, mod: nn.Linear) -> None:
    b.emit(fx, "linear", [fx.args[0]], fx.target, weight=mod.weight.detach().double(),
           bias=None if mod.bias is None else mod.bias.detach().double())


class SecretMatMul(Mul):
    """x @ y of two secret tensors (Q·Kᵀ, attention·V; batched over leading axes, as torch.matmul):
    a Beaver matrix triple from the dealer, seed-compressed (only c's correction travels).
    Cost per server, 2 servers: 1 round, 64·(|x| + |y|) bits (each operand's masked opening, tag
    ``mult``); offline 64 bits per output element to server 1. The product carries the sum of
    the operands' fractional bits; the next layer truncates it (no separate round: the
    truncation of ``needs_f`` layers)."""

    kind = "matmul"
    cost = "Beaver matrix triple: 1 round, 64·(|x| + |y|) bits (2 servers); offline 64 bits per output"

    def plain(self, node, ins, ctx):
        return torch.matmul(ins[0], ins[1])

    def secure(self, node, ins, ctx):
        return beaver.matmul(ctx.sess, ins[0], ins[1], rescale=False)

    def magnitude(self, node, ins):
        return node.params["inner"] * ins[0] * ins[1]


def lower_linear_function(b, fx) -> None:
    secret = b.tensor_args(fx)
    if fx.target is not F.linear and len(secret) == 2 and fx.args[0] is secret[0]:
        x, y = b.shape(fx.args[0]), b.shape(fx.args[1])
        if len(x) < 2 or len(y) < 2 or len(x) != len(y):
            raise b.fail(fx, f"a product of two secret tensors of shapes {x} and {y} per sample: "
                             f"give both the same number (≥ 2) of axes")
        b.emit(fx, "matmul", secret, inner=int(x[-1]))
        return
    x = secret[0]
    if fx.target is F.linear:
        if b.is_tensor(fx.args[1] if len(fx.args) > 1 else fx.kwargs.get("weight")):
            raise b.fail(fx, "a linear layer with secret weights computed in forward")
        weight, bias = b.arg(fx, 1, "weight"), b.arg(fx, 2, "bias")
    else:  # x @ W with a public W
        if fx.args[0] is not x or b.is_tensor(fx.args[1]):
            raise b.fail(fx, "a matrix product of two secret tensors, or public @ secret (only "
                             "secret @ public weights is supported)")
        w = torch.as_tensor(b.value(fx.args[1]))
        if w.ndim != 2:
            raise b.fail(fx, f"x @ W needs a 2-D public W, got shape {tuple(w.shape)}")
        weight, bias = w.t(), None
    weight = torch.as_tensor(weight)
    b.emit(fx, "linear", [x], weight=weight.detach().double(),
           bias=None if bias is None else torch.as_tensor(bias).detach().double())


def lower_batchnorm(b, fx, bn) -> None:
    """Fold into the conv/linear before it when that is its only user; else a public affine map."""
    if bn.running_mean is None or bn.running_var is None:
        raise b.fail(fx, f"{type(bn).__name__}(track_running_stats=False) normalises by each batch's "
                         f"statistics, which depend on the secret inputs; train with running "
                         f"statistics (the default)")
    _batchnorm(b, fx, fx.target, bn.running_mean, bn.running_var, bn.weight if bn.affine else None,
               bn.bias if bn.affine else None, bn.eps)


def lower_batchnorm_function(b, fx) -> None:
    """``F.batch_norm`` in eval mode (running statistics): as the module."""
    if b.arg(fx, 5, "training", False):
        raise b.fail(fx, "batch_norm with training=True normalises by each batch's statistics, "
                         "which depend on the secret inputs; call model.eval() (ringlet does) and "
                         "use running statistics")
    mean, var = b.arg(fx, 1, "running_mean"), b.arg(fx, 2, "running_var")
    if mean is None or var is None:
        raise b.fail(fx, "batch_norm without running statistics normalises by each batch's "
                         "statistics, which depend on the secret inputs")
    _batchnorm(b, fx, None, mean, var, b.arg(fx, 3, "weight"), b.arg(fx, 4, "bias"),
               float(b.arg(fx, 7, "eps", 1e-5)))


def _batchnorm(b, fx, label, mean, var, weight, bias, eps: float) -> None:
    x = b.tensor_args(fx)[0]
    var = torch.as_tensor(var).detach().double()
    ones = torch.ones(var.numel(), dtype=torch.float64)
    scale = (torch.as_tensor(weight).detach().double() if weight is not None else ones) / torch.sqrt(var + eps)
    shift = (torch.as_tensor(bias).detach().double() if bias is not None else 0) - \
        torch.as_tensor(mean).detach().double() * scale
    prev = b.by_name.get(b.src(x))
    foldable = prev is not None and prev.name == x.name and len(x.users) == 1 and (
        (prev.kind == "conv") or (prev.kind == "linear" and len(b.shape(x)) == 1))
    if foldable:
        view: tuple[int, ...] = (-1, 1, 1, 1) if prev.kind == "conv" else (-1, 1)
        prev.params["weight"] = prev.params["weight"] * scale.view(view)
        bias0 = prev.params["bias"] if prev.params["bias"] is not None else 0
        prev.params["bias"] = bias0 * scale + shift
        prev.params["folded"] = label or fx.name
        b.alias_to(fx, prev.name)
        return
    view = (-1,) + (1,) * (len(b.shape(x)) - 1)
    b.emit(fx, "affine", [x], label, scale=scale.view(view), shift=shift.view(view))


def _aten_batch_norm(node, args, kwargs):
    """aten.batch_norm(input, weight, bias, mean, var, training, momentum, eps, cudnn) as
    F.batch_norm(input, mean, var, weight, bias, training, momentum, eps)."""
    names = ("input", "weight", "bias", "running_mean", "running_var", "training", "momentum", "eps")
    a = dict(zip(names, args)) | {k: v for k, v in kwargs.items() if k in names}
    return (a["input"], a.get("running_mean"), a.get("running_var"), a.get("weight"), a.get("bias"),
            a.get("training", False), a.get("momentum", 0.1), a.get("eps", 1e-5)), {}


def register(reg: Registry) -> None:
    for op in (Conv(), Linear(), SecretMatMul()):
        reg.op(op)
    reg.module(nn.Conv2d, lower_conv)
    reg.module(nn.ConvTranspose2d, lower_conv_transpose)
    reg.module(nn.Linear, lower_linear)
    reg.module((nn.BatchNorm2d, nn.BatchNorm1d), lower_batchnorm)
    reg.function((F.conv2d,), lower_conv_function)
    reg.function((F.linear, torch.matmul, operator.matmul), lower_linear_function)
    reg.method(("matmul", "__matmul__"), lower_linear_function)
    reg.function((F.batch_norm,), lower_batchnorm_function)
    reg.aten_op("conv2d", F.conv2d)
    reg.aten_op("linear", F.linear)
    reg.aten_op(("matmul", "mm", "bmm"), torch.matmul)
    reg.aten_op("batch_norm", F.batch_norm, adapt=_aten_batch_norm)
