"""Pooling: average (a local sum and one public scaling) and max (a tournament of secure maxima).

Average pooling over k×k windows and the global mean are local sums followed by a multiplication
by 1/k² (:func:`ringlet.protocols.linear.scale_public`: one truncation; 0 rounds and 0 bits with
2 servers' local truncation, 1 round and 64 bits with the dealer's). Max pooling over a window of
K elements runs ⌈log2 K⌉ rounds of max, K − 1 DReLUs per output (each a ReLU: 308 bits, 8 rounds).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from ringlet.nn.ops.base import Op, Registry
from ringlet.protocols import linear
from ringlet.protocols.compare import ReluSpec, max_pool2d


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


class AvgPool(Op):
    kind = "avgpool"
    needs_f = True
    cost = "local sum + 1 truncation: 0 rounds, 0 bits (2 servers, local) / 1 round, 64 bits (dealer)"

    def plain(self, node, ins, ctx):
        p = node.params
        return F.avg_pool2d(ins[0], p["kernel"], p["stride"], p["padding"])

    def secure(self, node, ins, ctx):
        p = node.params
        return linear.avg_pool2d(ctx.sess, ins[0], p["kernel"], p["stride"], p["padding"])


class GlobalAvgPool(Op):
    kind = "gavgpool"
    needs_f = True
    cost = AvgPool.cost

    @staticmethod
    def _shape(node, y):
        keep = node.params.get("keepdim", True) and len(node.out_shape) == 3
        return y if keep else y.reshape(y.shape[0], -1)

    def plain(self, node, ins, ctx):
        return self._shape(node, ins[0].mean((2, 3), keepdim=True))

    def secure(self, node, ins, ctx):
        return self._shape(node, linear.global_avg_pool(ctx.sess, ins[0]))


class MaxPool(Op):
    kind = "maxpool"
    needs_f = True
    cost = "window of K: ⌈log2 K⌉ × 8 rounds, (K − 1) × 308 bits per output"

    def plain(self, node, ins, ctx):
        p = node.params
        return F.max_pool2d(ins[0], p["kernel"], p["stride"], p["padding"])

    def secure(self, node, ins, ctx):
        p, o = node.params, ctx.options
        return max_pool2d(ctx.sess, ins[0], p["kernel"], p["stride"], p["padding"],
                          ReluSpec(64, 0, o.adder, o.select))

    def drelus(self, node, bits):
        kh, kw = _pair(node.params["kernel"])
        size = 1
        for d in node.out_shape:
            size *= d
        return size * (kh * kw - 1)


# -- lowerings ------------------------------------------------------------------------------------
def lower_avgpool_module(b, fx, mod: nn.AvgPool2d) -> None:
    if mod.ceil_mode or mod.divisor_override or (not mod.count_include_pad and mod.padding):
        raise b.fail(fx, "AvgPool2d with ceil_mode, divisor_override or count_include_pad=False")
    b.emit(fx, "avgpool", [fx.args[0]], fx.target, kernel=_pair(mod.kernel_size),
           stride=_pair(mod.stride or mod.kernel_size), padding=_pair(mod.padding))


def lower_maxpool_module(b, fx, mod: nn.MaxPool2d) -> None:
    if mod.ceil_mode or _pair(mod.dilation) != (1, 1) or mod.return_indices:
        raise b.fail(fx, "MaxPool2d with ceil_mode, dilation or return_indices")
    b.emit(fx, "maxpool", [fx.args[0]], fx.target, kernel=_pair(mod.kernel_size),
           stride=_pair(mod.stride or mod.kernel_size), padding=_pair(mod.padding))


def _adaptive(b, fx, x, output_size, label) -> None:
    out = _pair(output_size) if output_size is not None else None
    in_shape = b.shape(x)
    if out == (1, 1):
        b.emit(fx, "gavgpool", [x], label)
        return
    h, w = in_shape[1], in_shape[2]
    if h % out[0] or w % out[1]:
        raise b.fail(fx, f"adaptive average pool {in_shape[1:]} → {out} is not a plain pooling")
    k = (h // out[0], w // out[1])
    b.emit(fx, "avgpool", [x], label, kernel=k, stride=k, padding=(0, 0))


def lower_adaptive_module(b, fx, mod) -> None:
    _adaptive(b, fx, fx.args[0], mod.output_size, fx.target)


def lower_adaptive_function(b, fx) -> None:
    size = fx.args[1] if len(fx.args) > 1 else fx.kwargs["output_size"]
    _adaptive(b, fx, b.tensor_args(fx)[0], size, fx.name)


def lower_pool_function(b, fx) -> None:
    k = _pair(fx.args[1] if len(fx.args) > 1 else fx.kwargs["kernel_size"])
    s = fx.args[2] if len(fx.args) > 2 else fx.kwargs.get("stride") or k
    pad = fx.kwargs.get("padding", fx.args[3] if len(fx.args) > 3 else 0)
    b.emit(fx, "avgpool" if fx.target is F.avg_pool2d else "maxpool", b.tensor_args(fx)[:1],
           kernel=k, stride=_pair(s), padding=_pair(pad))


def lower_mean_method(b, fx) -> None:
    if tuple(fx.args[1:2]) in (((2, 3),), ([2, 3],), ((-2, -1),)):
        b.emit(fx, "gavgpool", b.tensor_args(fx)[:1], keepdim=bool(fx.kwargs.get("keepdim", False)))
        return
    raise b.fail(fx, "tensor method .mean() is supported over the spatial axes (2, 3) only")


def register(reg: Registry) -> None:
    for op in (AvgPool(), GlobalAvgPool(), MaxPool()):
        reg.op(op)
    reg.module(nn.AvgPool2d, lower_avgpool_module)
    reg.module(nn.MaxPool2d, lower_maxpool_module)
    reg.module(nn.AdaptiveAvgPool2d, lower_adaptive_module)
    reg.function((F.avg_pool2d, F.max_pool2d), lower_pool_function)
    reg.function((F.adaptive_avg_pool2d,), lower_adaptive_function)
    reg.method(("mean",), lower_mean_method)
