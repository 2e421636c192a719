"""LayerNorm and RMSNorm (over the last axis): the normalisation on shares
(:mod:`ringlet.protocols.norm`), then the public affine map as an ``affine`` node."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ringlet.compiler.ops.base import Op, Registry
from ringlet.protocols import norm


class Norm(Op):
    """(x − μ)/√(var + ε) (``center``) or x/√(mean(x²) + ε) over the last axis; see
    :func:`ringlet.protocols.norm.layer_norm` for its error and range."""

    kind = "layernorm"
    needs_f = True
    approximates = True
    min_ring_bits = 64
    relu_like = False
    cost = ("2 servers: 14 rounds; 256 bits per element, and per row 36 DReLUs, 2·37 selects, "
            "ESPN degree 4 (the 1/√ of the variance by its power of 2 and a polynomial)")

    def frac(self, node, ins, f):
        return f

    def plain(self, node, ins, ctx):
        x, p = ins[0], node.params
        if p["center"]:
            return F.layer_norm(x, (x.shape[-1],), eps=p["eps"])
        return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + p["eps"])

    def secure(self, node, ins, ctx):
        p = node.params
        return norm.layer_norm(ctx.sess, ins[0], p["eps"], p["center"], ctx.exact_spec())

    def magnitude(self, node, ins):
        return math.sqrt(node.out_shape[-1])  # |x_j − μ| ≤ √(D·var)

    def drelus(self, node, bits):
        return (norm.HIGH - norm.LOW) * math.prod(node.out_shape[:-1])


def _emit(b, fx, x, shape, weight, bias, eps, center: bool, label=None) -> None:
    d = b.shape(fx)[-1]
    if tuple(int(s) for s in shape) != (d,):
        raise b.fail(fx, f"normalising over {tuple(shape)}: ringlet normalises over the last axis "
                         f"only ({d})")
    if eps is None:
        eps = float(torch.finfo(torch.float32).eps)
    if weight is None and bias is None:
        b.emit(fx, "layernorm", [x], label, eps=float(eps), center=center)
        return
    normed = b.emit(fx, "layernorm", [x], label, node_name=f"{fx.name}_norm", eps=float(eps), center=center)
    scale = None if weight is None else torch.as_tensor(weight).detach().double()
    shift = None if bias is None else torch.as_tensor(bias).detach().double()
    b.emit(fx, "affine", [normed.name], f"{label or fx.name}.affine", scale=scale, shift=shift)


def lower_norm_module(b, fx, mod) -> None:
    center = isinstance(mod, nn.LayerNorm)
    affine = mod.elementwise_affine
    _emit(b, fx, fx.args[0], mod.normalized_shape, mod.weight if affine else None,
          getattr(mod, "bias", None) if affine else None, mod.eps, center, fx.target)


def lower_layer_norm(b, fx) -> None:
    _emit(b, fx, b.tensor_args(fx)[0], b.arg(fx, 1, "normalized_shape"), b.arg(fx, 2, "weight"),
          b.arg(fx, 3, "bias"), b.arg(fx, 4, "eps", 1e-5), True)


def lower_rms_norm(b, fx) -> None:
    _emit(b, fx, b.tensor_args(fx)[0], b.arg(fx, 1, "normalized_shape"), b.arg(fx, 2, "weight"),
          None, b.arg(fx, 3, "eps", None), False)


def register(reg: Registry) -> None:
    reg.op(Norm())
    reg.module((nn.LayerNorm, nn.RMSNorm), lower_norm_module)
    reg.function((F.layer_norm,), lower_layer_norm)
    reg.function((F.rms_norm,), lower_rms_norm)
    reg.aten_op("layer_norm", F.layer_norm, adapt=lambda n, a, k: (tuple(a[:5]), {}))
    reg.aten_op("rms_norm", F.rms_norm)
