"""Activations: ReLU and LeakyReLU (exact or on bits [k:m]), |x|, clamp (ReLU6, Hardtanh), smooth
functions (sigmoid, tanh, SiLU, GELU, Hardswish, Hardsigmoid), shared ReLU (gReLU) and polynomial
(ESPN/PILLAR).

Costs per element (2 servers, exact bits, carry tree + fused select): ReLU 308 bits, 8 rounds
(4w − 7 − L + 65 bits, L + 2 rounds on w = k − m bits; see :mod:`ringlet.protocols.relu`);
gReLU one DReLU per group plus a 65-bit select per activation (:mod:`ringlet.protocols.shared_relu`);
polynomial: one round of ESPN, see :mod:`ringlet.protocols.arith.poly`.
"""

from __future__ import annotations

import math
import operator

import torch
import torch.nn.functional as F
from torch import nn

from ringlet.compiler.ops.base import Op, Registry
from ringlet.grelu.layers import GroupReLU
from ringlet.poly.fit import smooth_spec
from ringlet.poly.layers import PolyAct
from ringlet.protocols import piecewise, shared_relu
from ringlet.protocols.arith import poly
from ringlet.protocols.relu import maximum, relu
from ringlet.sharing import ArithmeticShare


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


class Activation(Op):
    """An activation: its output carries f fractional bits (any extra scale of its input is
    truncated inside its select); one sign decision per element, none when its bits keep none."""

    def frac(self, node, ins, f):
        return f

    def drelus(self, node, bits):
        return 0 if bits is not None and bits[0] == bits[1] else self.elements(node)


class Relu(Activation):
    kind = "relu"
    bits = "relu"
    finetunes = True
    cost = "exact: 8 rounds, 308 bits; on w = k − m bits: L + 2 rounds, 4w − 7 − L + 65 bits (L = ⌈log2(w − 1)⌉)"

    def plain(self, node, ins, ctx):
        return ins[0].clamp(min=0)

    def simulate(self, node, ins, ctx):
        return ctx.simulated_relu(node, ins[0])

    def secure(self, node, ins, ctx):
        x = ins[0]
        return relu(ctx.sess, x, ctx.spec(node.label), shift=x.frac - ctx.f, truncation=ctx.trunc)


class Leaky(Activation):
    """LeakyReLU(x) = a·x + (1 − a)·x·DReLU(x), its decision on bits [k:m] like a ReLU's."""

    kind = "leaky"
    bits: str | None = "relu"  # Abs, below, takes no bits
    finetunes = True
    cost = "as ReLU for an integer slope (308 bits, 8 rounds exact); + 65 bits for any other slope"

    def plain(self, node, ins, ctx):
        return F.leaky_relu(ins[0], node.params["slope"])

    def simulate(self, node, ins, ctx):
        a = node.params["slope"]
        return a * ins[0] + (1 - a) * ctx.simulated_relu(node, ins[0])

    def secure(self, node, ins, ctx):
        x = ins[0]
        return piecewise.leaky_relu(ctx.sess, x, node.params["slope"], ctx.spec(node.label),
                                    shift=x.frac - ctx.f, truncation=ctx.trunc)

    def magnitude(self, node, ins):
        return max(1.0, abs(node.params["slope"])) * ins[0]


class Abs(Leaky):
    """|x| = −x + 2·x·DReLU(x): one select, exactly a ReLU's cost (not a searched activation)."""

    kind = "abs"
    bits = None
    cost = "as ReLU: 308 bits, 8 rounds"

    def plain(self, node, ins, ctx):
        return ins[0].abs()

    simulate = plain

    def secure(self, node, ins, ctx):
        x = ins[0]
        return piecewise.leaky_relu(ctx.sess, x, -1.0, ctx.exact_spec(),
                                    shift=x.frac - ctx.f, truncation=ctx.trunc)

    def magnitude(self, node, ins):
        return ins[0]


class Clamp(Activation):
    """clamp(x, lo, hi) = lo + ReLU(x − lo) − ReLU(x − hi) (ReLU6, Hardtanh, clamp, clip)."""

    kind = "clamp"
    bits = "relu"  # both bounds' decisions on the same bits [k:m] (HummingBird's rule on x − bound)
    cost = "one bound: as ReLU (308 bits, 8 rounds); both: 616 bits, 8 rounds (two ReLUs in one call)"

    def plain(self, node, ins, ctx):
        return ins[0].clamp(node.params["lo"], node.params["hi"])

    def simulate(self, node, ins, ctx):
        x, lo, hi = ins[0], node.params["lo"], node.params["hi"]
        if lo is not None and hi is not None:
            return lo + ctx.simulated_relu(node, x - lo) - ctx.simulated_relu(node, x - hi)
        if lo is not None:
            return lo + ctx.simulated_relu(node, x - lo)
        return hi - ctx.simulated_relu(node, hi - x)

    def secure(self, node, ins, ctx):
        x, p = ins[0], node.params
        return piecewise.clamp(ctx.sess, x, p["lo"], p["hi"], ctx.spec(node.label),
                               shift=x.frac - ctx.f, truncation=ctx.trunc)

    def magnitude(self, node, ins):
        bounds = [abs(v) for v in (node.params["lo"], node.params["hi"]) if v is not None]
        return max(bounds) if len(bounds) == 2 else max([ins[0]] + bounds)

    def drelus(self, node, bits):
        p = node.params
        return self.elements(node) * sum(v is not None for v in (p["lo"], p["hi"]))


class Maximum(Activation):
    """max(x, y) = y + ReLU(x − y) of two secret tensors (min(x, y) = x + y − max(x, y))."""

    kind = "maximum"
    bits = "relu"  # the decision of x − y on bits [k:m]
    relu_like = False
    needs_f = True
    cost = "as ReLU: 308 bits, 8 rounds"

    def simulate(self, node, ins, ctx):
        a, c = ins
        top = c + ctx.simulated_relu(node, a - c)
        return a + c - top if node.params["min"] else top

    def plain(self, node, ins, ctx):
        return (torch.minimum if node.params["min"] else torch.maximum)(ins[0], ins[1])

    def secure(self, node, ins, ctx):
        shape = (ins[0].shape[0], *node.out_shape)
        a, c = (ArithmeticShare(v.data.expand(shape).contiguous(), v.party, v.frac) for v in ins)
        top = maximum(ctx.sess, a, c, ctx.spec(node.label))
        return a + c - top if node.params["min"] else top

    def magnitude(self, node, ins):
        return max(ins)


def _poly_bound(coeffs, bound: float) -> float:
    """Σ|c_j|·bound^j: a bound on |p(x)| for |x| ≤ bound (inf where it exceeds a float)."""
    try:
        return float(sum(abs(c) * float(bound) ** j for j, c in enumerate(coeffs)))
    except OverflowError:
        return math.inf


_SMOOTH_FN = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "silu": F.silu, "gelu": F.gelu,
              "hardswish": F.hardswish, "hardsigmoid": F.hardsigmoid, "softplus": F.softplus,
              "elu": F.elu, "mish": F.mish}


class Smooth(Activation):
    """A smooth activation (sigmoid, tanh, SiLU, GELU, Softplus, ELU, Mish, Hardswish,
    Hardsigmoid): ``accurate`` (default) = its asymptotes outside the outer breakpoints and a
    polynomial on each interval between them (error ≤ 1e-3 on every real; one DReLU per
    breakpoint, all in one sign circuit, and one select round), ``piecewise`` = the same with two
    breakpoints (cheaper, error up to 0.05), or ``poly`` = the polynomial alone (garbage beyond
    its range). :mod:`ringlet.protocols.piecewise`; the error each spec states is measured."""

    kind = "smooth"
    bits: str | None = "relu"  # every breakpoint's decision on the same bits [k:m]
    relu_like = False
    cost = ("accurate (exact 64-bit DReLUs): 1 + 8 rounds, K DReLUs + a select per piece (SiLU: 10 "
            "breakpoints, 3208 bits); piecewise: 1 + 8 rounds, 616–937 bits (sigmoid 872, tanh 937, SiLU/GELU "
            "808, Hardswish 680, Hardsigmoid 616); poly: 1–2 rounds, 64·d bits")

    def plain(self, node, ins, ctx):
        if node.params["name"] == "gelu":
            return F.gelu(ins[0], approximate=node.params.get("approximate", "none"))
        if node.params["name"] in ("softplus", "elu"):
            return _SMOOTH_FN[node.params["name"]](ins[0], *node.params.get("args", ()))
        return _SMOOTH_FN[node.params["name"]](ins[0])

    approximates = True

    def approximate(self, node, ins, ctx):
        """The approximation the servers compute (in floating point), decisions exact."""
        x, spec, method = ins[0], node.params["spec"], node.params["method"]
        breaks, pieces = piecewise.spec_pieces(spec)
        if method == "poly":
            return plain_poly(pieces[0], x)
        hi = x if spec["hi"] == "x" else torch.full_like(x, float(spec["hi"]))
        out = x if spec["lo"] == "x" else torch.full_like(x, float(spec["lo"]))
        for b, c in zip(breaks, pieces):
            out = torch.where(x >= b, plain_poly(c, x), out)
        return torch.where(x >= breaks[-1], hi, out)

    def simulate(self, node, ins, ctx):
        """As the servers compute it, each breakpoint's decision by the simulator's rule: an
        interval's bit is d_i ⊕ d_{i+1}, the right asymptote's d_K, the left's ¬d_1."""
        x, spec = ins[0], node.params["spec"]
        breaks, pieces = piecewise.spec_pieces(spec)
        d = [ctx.simulated_keep(node, x - b) for b in breaks]
        hi = x if spec["hi"] == "x" else torch.full_like(x, float(spec["hi"]))
        lo = x if spec["lo"] == "x" else torch.full_like(x, float(spec["lo"]))
        out = d[-1] * hi + (1 - d[0]) * lo
        for i, c in enumerate(pieces):
            out = out + (d[i] - d[i + 1]).abs() * plain_poly(c, x)
        return out

    def secure(self, node, ins, ctx):
        x, o, p = ins[0], ctx.options, node.params
        return piecewise.smooth(ctx.sess, x, p["spec"], p["method"], shift=x.frac - ctx.f,
                                poly_method=o.poly_method, truncation=ctx.trunc,
                                relu_spec=ctx.spec(node.label))

    def elements(self, node) -> int:
        """Sign decisions per sample: one per breakpoint per element."""
        return len(piecewise.spec_pieces(node.params["spec"])[0]) * math.prod(node.out_shape)

    def magnitude(self, node, ins):
        spec = node.params["spec"]
        if node.params["method"] == "poly":  # the polynomial alone: it grows beyond its range
            return _poly_bound(spec["coeffs"], ins[0])
        if spec["hi"] == "x" or spec["lo"] == "x":
            return ins[0] + 1.0 + spec["max_error"]
        return max(abs(float(spec["hi"])), abs(float(spec["lo"]))) + spec["max_error"]

    def drelus(self, node, bits):
        return self.elements(node)


class SmoothPoly(Smooth):
    """A smooth activation by its polynomial alone (``smooth="poly"``): no sign decision."""

    kind = "smoothpoly"
    bits = None
    cost = "poly: 1–2 rounds, 64·d bits"

    def simulate(self, node, ins, ctx):
        return self.approximate(node, ins, ctx)

    def secure(self, node, ins, ctx):
        x, o, p = ins[0], ctx.options, node.params
        return piecewise.smooth(ctx.sess, x, p["spec"], "poly", shift=x.frac - ctx.f,
                                poly_method=o.poly_method, truncation=ctx.trunc,
                                relu_spec=ctx.exact_spec())

    def drelus(self, node, bits):
        return 0


class GroupRelu(Activation):
    kind = "grelu"
    bits = "group"
    cost = "one DReLU per group (308 bits, 8 rounds exact) + a 65-bit select per activation"

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


class Poly(Activation):
    kind = "poly"
    cost = "ESPN degree d: 1 round + 1 (exact truncation), 64·(d − 1) + 64 bits"

    def drelus(self, node, bits):
        return 0

    def plain(self, node, ins, ctx):
        return plain_poly(node.params["coeffs"], ins[0].double()).to(ins[0].dtype)

    def secure(self, node, ins, ctx):
        p, o = node.params, ctx.options
        return poly.evaluate(ctx.sess, ins[0], p["coeffs"], ctx.f, o.poly_method, o.poly_frac,
                             truncation=ctx.trunc, out_truncation=o.poly_out_truncation,
                             r=p.get("range", 5.0))

    def magnitude(self, node, ins):
        return _poly_bound(node.params["coeffs"], ins[0])


# -- lowerings ------------------------------------------------------------------------------------
def lower_relu_module(b, fx, mod) -> None:
    b.emit(fx, "relu", [fx.args[0]], fx.target)


def lower_relu(b, fx) -> None:
    b.emit(fx, "relu", b.tensor_args(fx)[:1])


def _slope(b, fx, mod, default: float) -> float:
    return float(mod.negative_slope if mod is not None else b.arg(fx, 1, "negative_slope", default))


def lower_leaky(b, fx, mod=None) -> None:
    b.emit(fx, "leaky", b.tensor_args(fx)[:1], fx.target if mod is not None else None,
           slope=_slope(b, fx, mod, 0.01))


def lower_abs(b, fx) -> None:
    b.emit(fx, "abs", b.tensor_args(fx)[:1])


def _bound(b, fx, v, what):
    if b.is_tensor(v) or isinstance(v, torch.fx.Node) and isinstance(b.value(v), torch.Tensor):
        raise b.fail(fx, f"clamp with a tensor {what} (only number bounds are supported)")
    return None if v is None else float(b.value(v))


def lower_clamp(b, fx, mod=None) -> None:
    label = fx.target if mod is not None else None
    x = b.tensor_args(fx)[0]
    if mod is not None:
        lo, hi = (0.0, 6.0) if isinstance(mod, nn.ReLU6) else (float(mod.min_val), float(mod.max_val))
    elif fx.target in (F.relu6,):
        lo, hi = 0.0, 6.0
    elif fx.target in (F.hardtanh,):
        lo, hi = float(b.arg(fx, 1, "min_val", -1.0)), float(b.arg(fx, 2, "max_val", 1.0))
    elif fx.target in (torch.clamp_min, "clamp_min", "clamp_min_"):
        lo, hi = _bound(b, fx, fx.args[1] if len(fx.args) > 1 else fx.kwargs.get("min"), "min"), None
    elif fx.target in (torch.clamp_max, "clamp_max", "clamp_max_"):
        lo, hi = None, _bound(b, fx, fx.args[1] if len(fx.args) > 1 else fx.kwargs.get("max"), "max")
    else:
        lo = _bound(b, fx, fx.args[1] if len(fx.args) > 1 else fx.kwargs.get("min"), "min")
        hi = _bound(b, fx, fx.args[2] if len(fx.args) > 2 else fx.kwargs.get("max"), "max")
    if lo is None and hi is None:
        raise b.fail(fx, "clamp without bounds")
    if lo is not None and hi is not None and lo > hi:
        raise b.fail(fx, f"clamp with min {lo} > max {hi}")
    if lo == 0.0 and hi is None:
        b.emit(fx, "relu", [x], label)  # clamp(min=0) is a ReLU (and takes ReLU bits)
        return
    b.emit(fx, "clamp", [x], label, lo=lo, hi=hi)


_SMOOTH_MODULES = {nn.Sigmoid: "sigmoid", nn.Tanh: "tanh", nn.SiLU: "silu", nn.GELU: "gelu",
                   nn.Hardswish: "hardswish", nn.Hardsigmoid: "hardsigmoid", nn.Softplus: "softplus",
                   nn.ELU: "elu", nn.Mish: "mish"}
_SMOOTH_TARGETS = {torch.sigmoid: "sigmoid", F.sigmoid: "sigmoid", "sigmoid": "sigmoid",
                   "sigmoid_": "sigmoid", torch.tanh: "tanh", F.tanh: "tanh", "tanh": "tanh",
                   "tanh_": "tanh", F.silu: "silu", F.gelu: "gelu", F.hardswish: "hardswish",
                   F.hardsigmoid: "hardsigmoid", F.softplus: "softplus", F.elu: "elu", F.mish: "mish"}
# the parameters the fitted pieces are for: (argument, position after the input, its value)
_SMOOTH_FIXED = {"softplus": (("beta", 1, 1.0), ("threshold", 2, 20.0)), "elu": (("alpha", 1, 1.0),)}


def lower_smooth(b, fx, mod=None) -> None:
    name = _SMOOTH_MODULES[type(mod)] if mod is not None else _SMOOTH_TARGETS[fx.target]
    method = b.options.get("smooth", piecewise.DEFAULT_SMOOTH)
    for arg, pos, value in _SMOOTH_FIXED.get(name, ()):
        given = getattr(mod, arg) if mod is not None else b.arg(fx, pos, arg, value)
        if float(given) != value:
            raise b.fail(fx, f"{name} with {arg}={given} is not supported: the fitted pieces are for "
                             f"{arg}={value:g} (the default)")
    if method != "accurate" and name in ("softplus", "elu", "mish"):
        raise b.fail(fx, f"{name} has only the accurate approximation (smooth='accurate', the default)")
    extra: dict = {}
    spec_name = name
    if name == "gelu":
        extra["approximate"] = mod.approximate if mod is not None else b.arg(fx, 1, "approximate", "none")
        if extra["approximate"] == "tanh" and method == "accurate":
            spec_name = "gelu_tanh"  # the piecewise fit's error (0.05) covers the two forms' 5e-4
    spec = smooth_spec(spec_name, method)
    b.emit(fx, "smoothpoly" if method == "poly" else "smooth", b.tensor_args(fx)[:1],
           fx.target if mod is not None else None, name=name, method=method, spec=spec, **extra)


def lower_maximum(b, fx) -> None:
    a, c = fx.args[0], fx.args[1] if len(fx.args) > 1 else fx.kwargs["other"]
    if not (b.is_tensor(a) and b.is_tensor(c)):
        raise b.fail(fx, "maximum/minimum with a public tensor (use clamp with a number bound)")
    b.emit(fx, "maximum", [a, c], min=fx.target in (torch.minimum, torch.fmin, "minimum", "fmin"))


def lower_grelu(b, fx, mod) -> None:
    b.emit(fx, "grelu", [fx.args[0]], fx.target, groups=mod.groups.clone(),
           weight=mod.weight.detach().double().clone(), variant=mod.variant,
           num_groups=mod.num_groups,
           flips=mod.flips.clone() if mod.noise and mod.noise_at_inference else None)


def lower_poly(b, fx, mod) -> None:
    b.emit(fx, "poly", [fx.args[0]], fx.target, coeffs=[float(c) for c in mod.coeffs],
           range=float(mod.range))


def register(reg: Registry) -> None:
    for op in (Relu(), Leaky(), Abs(), Clamp(), Maximum(), Smooth(), SmoothPoly(), GroupRelu(), Poly()):
        reg.op(op)
    reg.function((torch.maximum, torch.minimum, torch.fmax, torch.fmin), lower_maximum)
    reg.method(("maximum", "minimum", "fmax", "fmin"), lower_maximum)
    reg.module(nn.LeakyReLU, lower_leaky)
    reg.function((F.leaky_relu,), lower_leaky)
    reg.function((torch.abs, operator.abs), lower_abs)
    reg.method(("abs", "abs_"), lower_abs)
    reg.module((nn.ReLU6, nn.Hardtanh), lower_clamp)
    reg.function((F.relu6, F.hardtanh, torch.clamp, torch.clip, torch.clamp_min, torch.clamp_max),
                 lower_clamp)
    reg.method(("clamp", "clip", "clamp_", "clip_", "clamp_min", "clamp_max", "clamp_min_",
                "clamp_max_"), lower_clamp)
    for t in _SMOOTH_MODULES:
        reg.module(t, lower_smooth)
    reg.function([t for t in _SMOOTH_TARGETS if not isinstance(t, str)], lower_smooth)
    reg.method([t for t in _SMOOTH_TARGETS if isinstance(t, str)], lower_smooth)
    reg.module(nn.ReLU, lower_relu_module)
    reg.module(GroupReLU, lower_grelu)
    reg.module(PolyAct, lower_poly)
    reg.function((F.relu, torch.relu, torch.relu_), lower_relu)
    reg.method(("relu", "relu_"), lower_relu)
    reg.aten_op("relu", torch.relu)
    for name in ("relu_", "clamp_", "clamp_min_", "clamp_max_", "sigmoid_", "tanh_", "abs_"):
        reg.aten_op(name, name, method=True)
    reg.aten_op(("hardtanh", "hardtanh_"), F.hardtanh)
    reg.aten_op(("clamp", "clip"), torch.clamp)
    reg.aten_op("clamp_min", torch.clamp_min)
    reg.aten_op("clamp_max", torch.clamp_max)
    reg.aten_op(("leaky_relu", "leaky_relu_"), F.leaky_relu)
    reg.aten_op(("maximum", "fmax"), torch.maximum)
    reg.aten_op(("minimum", "fmin"), torch.minimum)
    reg.aten_op("abs", torch.abs)
    reg.aten_op("sigmoid", torch.sigmoid)
    reg.aten_op("tanh", torch.tanh)
    reg.aten_op(("silu", "silu_"), F.silu)
    reg.aten_op("softplus", F.softplus)
    reg.aten_op(("elu", "elu_"), F.elu)
    reg.aten_op("mish", F.mish)
    reg.aten_op("gelu", F.gelu)
    reg.aten_op(("hardswish", "hardswish_"), F.hardswish)
    reg.aten_op(("hardsigmoid", "hardsigmoid_"), F.hardsigmoid)
