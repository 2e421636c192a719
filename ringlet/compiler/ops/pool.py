"""Pooling and other public spatial maps: average, mean/sum, any linear spatial map, max.

``avgpool`` (k×k windows, zero padding counted) and ``mean`` are local sums followed by a
multiplication by 1/count (:func:`ringlet.protocols.linear.scale_public`: one truncation — 0 rounds
and 0 bits with 2 servers' local truncation, 1 round and 64 bits with the dealer's; a sum alone is
free). ``spatialmap`` is any other linear map of each channel's H×W plane with public coefficients
(average pooling with ceil_mode, count_include_pad=False or a divisor, adaptive average pooling of
any sizes, bilinear/bicubic interpolation): its matrix is read off torch's own operation at compile
time; local, 0 rounds, 0 bits, the output carries f more fractional bits. ``maxpool`` over windows
of up to K elements (any kernel, stride, padding, dilation, ceil_mode, adaptive): a tournament of
⌈log2 K⌉ rounds of secure max, K − 1 DReLUs per output (exact: 308 bits and 8 rounds each).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ringlet.compiler.ops.base import Op, Registry, call
from ringlet.compiler.ops.base import pair as _pair
from ringlet.protocols.arith import linear
from ringlet.protocols.relu import secure_tournament, tournament
from ringlet.sharing import ArithmeticShare


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


class Mean(Op):
    """Sum over ``dims`` divided by ``divisor`` (1: a plain sum)."""

    kind = "mean"
    cost = AvgPool.cost + "; a sum: 0 rounds, 0 bits"

    def wants_f(self, node) -> bool:
        return node.params["divisor"] != 1

    def _reshape(self, node, y):
        return y.reshape(y.shape[0], *node.out_shape)

    def plain(self, node, ins, ctx):
        p = node.params
        return self._reshape(node, ins[0].sum(p["dims"], keepdim=True) / p["divisor"])

    def secure(self, node, ins, ctx):
        p, x = node.params, ins[0]
        y = ArithmeticShare(x.data.sum(p["dims"], keepdim=True), x.party, x.frac)
        if p["divisor"] != 1:
            y = linear.scale_public(ctx.sess, y, 1.0 / p["divisor"])
        return self._reshape(node, y)

    def magnitude(self, node, ins):
        return ins[0] * (1 if node.params["divisor"] != 1 else node.params["count"])


class SpatialMap(Op):
    """y[n, c] = M · x[n, c] over the flattened H×W plane, M public (OH·OW × H·W)."""

    kind = "spatialmap"
    needs_f = True

    def frac(self, node, ins, f):
        return ins[0] + f

    def encode(self, node, fixed):
        return {"matrix": fixed.encode(node.params["matrix"], f"{node.label} coefficients")}

    def plain(self, node, ins, ctx):
        x = ins[0]
        y = x.reshape(x.shape[0], x.shape[1], -1) @ ctx.params(node)["matrix"].t()
        return y.reshape(x.shape[0], *node.out_shape)

    def secure(self, node, ins, ctx):
        x, m = ins[0], ctx.encoded[node.name]["matrix"]
        flat = x.data.reshape(-1, x.data.shape[2] * x.data.shape[3])
        y = linear.exact_linear(flat, m, ctx.backend_for(node, x), ring_bits=ctx.fixed.ring_bits)
        return ArithmeticShare(y.reshape(x.shape[0], *node.out_shape), x.party, x.frac + ctx.f)

    def linear_layer(self, node, in_shape, batch, encoded):
        return {"kind": "linear", "x_shape": (batch * in_shape[0], in_shape[1] * in_shape[2]),
                "w": encoded["matrix"]}

    def magnitude(self, node, ins):
        return float(node.params["matrix"].abs().sum(1).max()) * ins[0]


class MaxPool(Op):
    """Max over static windows: ``index`` (OH·OW × K) of flattened H×W positions (short windows
    repeat an element, which never changes a max)."""

    kind = "maxpool"
    bits = "relu"  # every comparison of the tournament on the same bits [k:m]
    relu_like = False
    needs_f = True
    cost = "window of K: ⌈log2 K⌉ × 8 rounds, (K − 1) × 308 bits per output"

    @staticmethod
    def _candidates(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[:2]
        return x.reshape(n, c, -1)[:, :, index]  # n, c, positions, K

    def plain(self, node, ins, ctx):
        x = ins[0]
        y = self._candidates(x, node.params["index"]).amax(-1)
        return y.reshape(x.shape[0], *node.out_shape)

    def secure(self, node, ins, ctx):
        x = ins[0]
        cands = self._candidates(x.data, node.params["index"]).permute(3, 0, 1, 2)
        best = secure_tournament(ctx.sess, cands, x.party, x.frac, ctx.spec(node.label))
        return ArithmeticShare(best.reshape(x.shape[0], *node.out_shape).contiguous(), x.party, x.frac)

    def simulate(self, node, ins, ctx):
        """The secure run's tournament, each comparison by the simulator's rule."""
        x = ins[0]
        cands = self._candidates(x, node.params["index"]).permute(3, 0, 1, 2)
        best = tournament(cands, lambda a, b: b + ctx.simulated_relu(node, a - b))
        return best.reshape(x.shape[0], *node.out_shape)

    def elements(self, node) -> int:
        return math.prod(node.out_shape) * (node.params["index"].shape[1] - 1)

    def drelus(self, node, bits):
        return 0 if bits is not None and bits[0] == bits[1] else self.elements(node)


# -- lowerings ------------------------------------------------------------------------------------
def _windows_1d(size, out, kernel, stride, pad, dilation, adaptive) -> list[list[int]]:
    wins = []
    for i in range(out):
        if adaptive:
            lo, hi = (i * size) // out, -((-(i + 1) * size) // out)
            wins.append(list(range(lo, hi)))
        else:
            start = i * stride - pad
            wins.append([p for p in range(start, start + dilation * (kernel - 1) + 1, dilation)
                         if 0 <= p < size])
    return wins


def max_windows(in_hw, out_hw, kernel=None, stride=None, padding=(0, 0), dilation=(1, 1),
                adaptive=False) -> torch.Tensor:
    """The (OH·OW × K) index of every max-pooling window over a flattened H×W plane."""
    (h, w), (oh, ow) = in_hw, out_hw
    rows = _windows_1d(h, oh, kernel and kernel[0], stride and stride[0], padding[0], dilation[0], adaptive)
    cols = _windows_1d(w, ow, kernel and kernel[1], stride and stride[1], padding[1], dilation[1], adaptive)
    wins = [[r * w + c for r in rr for c in cc] for rr in rows for cc in cols]
    k = max(len(v) for v in wins)
    return torch.tensor([v + [v[0]] * (k - len(v)) for v in wins], dtype=torch.int64)


def _check_against_torch(b, fx, fn, node) -> None:
    """The compiled node must give what torch gives, on a probe (catches any window mistake)."""
    shape = b.by_name[node.inputs[0]].out_shape
    gen = torch.Generator().manual_seed(0)  # not secret: a compile-time probe of public code
    probe = torch.randn(2, *shape, dtype=torch.float64, generator=gen)  # not secret: the same probe
    ops = {"maxpool": MaxPool(), "spatialmap": SpatialMap()}

    class _Ctx:
        params = staticmethod(lambda n: n.params)
    got = ops[node.kind].plain(node, [probe], _Ctx())
    want = fn(probe)
    if got.shape != want.shape or not torch.allclose(got, want, atol=1e-9):
        raise b.fail(fx, f"internal: the compiled {node.kind} differs from torch's on a probe")


def lower_maxpool(b, fx, mod=None) -> None:
    x = b.tensor_args(fx)[0]
    in_shape, out_shape = b.shape(x), b.shape(fx)
    if mod is not None:
        if getattr(mod, "return_indices", False):
            raise b.fail(fx, "max pooling with return_indices")
        adaptive = isinstance(mod, nn.AdaptiveMaxPool2d)
        k = None if adaptive else _pair(mod.kernel_size)
        s = None if adaptive else _pair(mod.stride or mod.kernel_size)
        p = (0, 0) if adaptive else _pair(mod.padding)
        d = (1, 1) if adaptive else _pair(mod.dilation)
    else:
        adaptive = fx.target is F.adaptive_max_pool2d
        if b.arg(fx, 6 if not adaptive else 2, "return_indices", False):
            raise b.fail(fx, "max pooling with return_indices")
        k = None if adaptive else _pair(b.arg(fx, 1, "kernel_size"))
        s = None if adaptive else _pair(b.arg(fx, 2, "stride", None) or k)
        p = (0, 0) if adaptive else _pair(b.arg(fx, 3, "padding", 0))
        d = (1, 1) if adaptive else _pair(b.arg(fx, 4, "dilation", 1))
    index = max_windows(in_shape[1:], out_shape[1:], k, s, p, d, adaptive)
    node = b.emit(fx, "maxpool", [x], fx.target if mod is not None else None, index=index)
    _check_against_torch(b, fx, call(b, fx), node)


def lower_spatial_map(b, fx, mod=None) -> None:
    """Any channel-wise linear map of H×W planes, its matrix read off torch's operation."""
    x = b.tensor_args(fx)[0]
    (c, h, w), out = b.shape(x), b.shape(fx)
    if len(out) != 3 or out[0] != c:
        raise b.fail(fx, f"a spatial map from {(c, h, w)} to {out}")
    fn = call(b, fx)
    basis = torch.eye(h * w, dtype=torch.float64).view(h * w, 1, h, w)  # one channel: maps are per channel
    with torch.no_grad():
        cols = fn(basis)[:, 0].reshape(h * w, -1)  # (H·W) × (OH·OW)
    node = b.emit(fx, "spatialmap", [x], fx.target if mod is not None else None,
                  matrix=cols.t().contiguous())
    _check_against_torch(b, fx, fn, node)


def lower_avgpool(b, fx, mod=None) -> None:
    if mod is not None:
        k, s, p = _pair(mod.kernel_size), _pair(mod.stride or mod.kernel_size), _pair(mod.padding)
        regular = not (mod.ceil_mode or mod.divisor_override or (not mod.count_include_pad and any(p)))
    else:
        k = _pair(b.arg(fx, 1, "kernel_size"))
        s, p = _pair(b.arg(fx, 2, "stride", None) or k), _pair(b.arg(fx, 3, "padding", 0))
        regular = not (b.arg(fx, 4, "ceil_mode", False) or b.arg(fx, 6, "divisor_override", None)
                       or (not b.arg(fx, 5, "count_include_pad", True) and any(p)))
    if not regular:
        lower_spatial_map(b, fx, mod)
        return
    b.emit(fx, "avgpool", b.tensor_args(fx)[:1], fx.target if mod is not None else None,
           kernel=k, stride=s, padding=p)


def lower_adaptive_avg(b, fx, mod=None) -> None:
    x = b.tensor_args(fx)[0]
    (_, h, w), (_, oh, ow) = b.shape(x), b.shape(fx)
    label = fx.target if mod is not None else None
    if (oh, ow) == (1, 1):
        b.emit(fx, "mean", [x], label, dims=(2, 3), divisor=h * w, count=h * w)
    elif h % oh == 0 and w % ow == 0:
        k = (h // oh, w // ow)
        b.emit(fx, "avgpool", [x], label, kernel=k, stride=k, padding=(0, 0))
    else:
        lower_spatial_map(b, fx, mod)


def lower_mean(b, fx) -> None:
    x = b.tensor_args(fx)[0]
    full = b.batch_shape(x)
    is_sum = fx.target in (torch.sum, "sum")
    dims = b.arg(fx, 1, "dim", None)
    if fx.kwargs.get("dtype") is not None:
        raise b.fail(fx, "a reduction with a dtype")
    if dims is None:
        raise b.fail(fx, "a reduction over every axis mixes the samples of a batch: give dim=")
    dims = tuple(d % len(full) for d in ((dims,) if isinstance(dims, int) else dims))
    if 0 in dims:
        raise b.fail(fx, "a reduction over the batch axis mixes the samples of a batch")
    count = math.prod(full[d] for d in dims)
    b.emit(fx, "mean", [x], dims=dims, divisor=1 if is_sum else count, count=count)


def lower_amax(b, fx) -> None:
    """amax/amin over every axis after the channels (a global max pool): one window per channel."""
    x = b.tensor_args(fx)[0]
    full = b.batch_shape(x)
    dims = b.arg(fx, 1, "dim", None)
    dims = tuple(sorted(d % len(full) for d in ((dims,) if isinstance(dims, int) else dims or ())))
    if len(full) < 3 or dims != tuple(range(2, len(full))):
        raise b.fail(fx, "amax/amin over the axes after the channels only (a global max pooling)")
    index = torch.arange(math.prod(full[2:]), dtype=torch.int64).view(1, -1)
    if fx.target in (torch.amin, "amin"):  # min = −max(−x)
        neg = torch.tensor(-1.0, dtype=torch.float64)
        x = b.emit(fx, "affine", [x], node_name=f"{fx.name}_neg", label=f"{fx.name}_neg",
                   node_shape=b.shape(x), scale=neg, shift=None).name
        top = b.emit(fx, "maxpool", [x], node_name=f"{fx.name}_max", label=f"{fx.name}_max", index=index)
        b.emit(fx, "affine", [top.name], scale=neg, shift=None)
        return
    b.emit(fx, "maxpool", [x], index=index)


def register(reg: Registry) -> None:
    for op in (AvgPool(), Mean(), SpatialMap(), MaxPool()):
        reg.op(op)
    reg.module(nn.AvgPool2d, lower_avgpool)
    reg.function((F.avg_pool2d,), lower_avgpool)
    reg.module(nn.AdaptiveAvgPool2d, lower_adaptive_avg)
    reg.function((F.adaptive_avg_pool2d,), lower_adaptive_avg)
    reg.module((nn.MaxPool2d, nn.AdaptiveMaxPool2d), lower_maxpool)
    reg.function((F.max_pool2d, F.adaptive_max_pool2d), lower_maxpool)
    reg.function((torch.mean, torch.sum), lower_mean)
    reg.function((torch.amax, torch.amin), lower_amax)
    reg.method(("amax", "amin"), lower_amax)
    reg.method(("mean", "sum"), lower_mean)
    reg.aten_op("avg_pool2d", F.avg_pool2d)
    reg.aten_op(("adaptive_avg_pool2d", "_adaptive_avg_pool2d"), F.adaptive_avg_pool2d)
    reg.aten_op("max_pool2d", F.max_pool2d)
    reg.aten_op("adaptive_max_pool2d", F.adaptive_max_pool2d)
    reg.aten_op("mean", torch.mean)
    reg.aten_op("sum", torch.sum)
    reg.aten_op("amax", torch.amax)
    reg.aten_op("amin", torch.amin)
