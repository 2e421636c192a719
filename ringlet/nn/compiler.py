"""Compile a torch.nn.Module into a secure graph with torch.fx (no ONNX).

The model is traced symbolically and its shapes propagated for one input; every node becomes one of
a few secure kinds. BatchNorm right after a conv/linear (its only user) is folded into it; any other
BatchNorm is a public per-channel affine map. Anything unsupported raises :class:`CompileError`
naming the node, its op and the source line — before any party starts.

Kinds: input, conv, linear, affine, relu, add, scale, avgpool, gavgpool, maxpool, reshape, cat,
identity, output, grelu (shared ReLU, :mod:`ringlet.grelu`) and poly (polynomial activation,
:mod:`ringlet.poly`).
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
import torch
import torch.fx
import torch.nn.functional as F
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp


class CompileError(ValueError):
    """The model cannot be compiled; the message names the node and its source line."""


@dataclass
class Node:
    """One secure operation: ``kind`` applied to the outputs of ``inputs``."""

    name: str
    kind: str
    inputs: list[str]
    label: str
    out_shape: tuple  # per sample (no batch axis)
    params: dict = field(default_factory=dict)


@dataclass
class SecureGraph:
    nodes: list[Node]
    input_shape: tuple

    @property
    def relus(self) -> list[Node]:
        return [n for n in self.nodes if n.kind == "relu"]

    @property
    def relu_names(self) -> list[str]:
        return [n.label for n in self.relus]

    @property
    def activation_names(self) -> list[str]:
        """ReLUs and shared ReLUs: everything a bit configuration may name."""
        return [n.label for n in self.nodes if n.kind in ("relu", "grelu")]

    def relu_elements(self) -> dict[str, int]:
        """DReLU evaluations per input sample, by name: every output of a ReLU, one per group of a
        shared ReLU (channels × groups)."""
        out = {}
        for n in self.nodes:
            if n.kind == "relu":
                size = 1
                for d in n.out_shape:
                    size *= d
                out[n.label] = size
            elif n.kind == "grelu":
                out[n.label] = int(n.out_shape[0]) * int(n.params["num_groups"])
        return out

    def summary(self) -> list[dict]:
        return [{"name": n.name, "kind": n.kind, "label": n.label, "shape": list(n.out_shape)}
                for n in self.nodes]


def _leaf_types() -> tuple:
    """Activation layers compiled as a whole (not traced into)."""
    from ringlet.grelu.layers import GroupReLU
    from ringlet.poly.layers import PolyAct
    return (GroupReLU, PolyAct)


class _Tracer(torch.fx.Tracer):
    def __init__(self):
        super().__init__()
        self.record_stack_traces = True
        self.leaves = _leaf_types()

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, self.leaves) or super().is_leaf_module(m, qualname)


def _where(node: torch.fx.Node) -> str:
    """The user's source line of a traced node (the last frame outside torch itself)."""
    trace = [ln.strip() for ln in (node.stack_trace or "").strip().splitlines()]
    frames = [(i, ln) for i, ln in enumerate(trace) if ln.startswith("File")]
    user = [(i, ln) for i, ln in frames if "/torch/" not in ln and "\\torch\\" not in ln]
    if not user:
        return "(no source line recorded)"
    i, line = user[-1]
    code = trace[i + 1] if i + 1 < len(trace) and not trace[i + 1].startswith("File") else ""
    return f"{line}: {code}" if code else line


def _fail(node: torch.fx.Node, why: str) -> CompileError:
    return CompileError(f"cannot compile node '{node.name}' (op {node.op}, target "
                        f"{getattr(node.target, '__name__', node.target)!s}): {why}; at {_where(node)}")


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _shape(node: torch.fx.Node) -> tuple | None:
    meta = node.meta.get("tensor_meta")
    return tuple(meta.shape[1:]) if meta is not None and hasattr(meta, "shape") else None


_RELU_FUNCS = {F.relu, torch.relu, torch.relu_}
_ADD_FUNCS = {operator.add, operator.iadd, torch.add}
_MUL_FUNCS = {operator.mul, operator.imul, torch.mul}
_RESHAPE_FUNCS = {torch.flatten, torch.reshape}
_SHAPE_ONLY_METHODS = {"size", "dim"}
_RESHAPE_METHODS = {"view", "reshape", "flatten"}


class _Builder:
    def __init__(self, gm: torch.fx.GraphModule):
        self.gm = gm
        self.modules = dict(gm.named_modules())
        self.nodes: list[Node] = []
        self.by_name: dict[str, Node] = {}
        self.alias: dict[str, str] = {}  # fx node → the secure node holding its value
        self.shape_only: set[str] = set()

    def src(self, arg) -> str:
        return self.alias.get(arg.name, arg.name)

    def emit(self, fx: torch.fx.Node, kind: str, inputs, label=None, **params) -> Node:
        node = Node(fx.name, kind, [self.src(a) for a in inputs], label or fx.name, _shape(fx), params)
        self.nodes.append(node)
        self.by_name[node.name] = node
        return node

    def tensor_args(self, fx: torch.fx.Node) -> list[torch.fx.Node]:
        return [a for a in fx.args if isinstance(a, torch.fx.Node) and a.name not in self.shape_only]

    # -- modules --------------------------------------------------------------------------------
    def module(self, fx: torch.fx.Node) -> None:
        mod = self.modules[fx.target]
        x = fx.args[0]
        from ringlet.grelu.layers import GroupReLU
        from ringlet.poly.layers import PolyAct
        if isinstance(mod, GroupReLU):
            self.emit(fx, "grelu", [x], fx.target, groups=mod.groups.clone(),
                      weight=mod.weight.detach().double().clone(), variant=mod.variant,
                      num_groups=mod.num_groups,
                      flips=mod.flips.clone() if mod.noise and mod.noise_at_inference else None)
        elif isinstance(mod, PolyAct):
            self.emit(fx, "poly", [x], fx.target, coeffs=[float(c) for c in mod.coeffs],
                      range=float(mod.range))
        elif isinstance(mod, nn.Conv2d):
            if mod.padding_mode != "zeros" or isinstance(mod.padding, str):
                raise _fail(fx, f"conv padding mode {mod.padding_mode!r}/{mod.padding!r} unsupported")
            self.emit(fx, "conv", [x], fx.target, weight=mod.weight.detach().double(),
                      bias=None if mod.bias is None else mod.bias.detach().double(),
                      stride=_pair(mod.stride), padding=_pair(mod.padding),
                      dilation=_pair(mod.dilation), groups=mod.groups)
        elif isinstance(mod, nn.Linear):
            self.emit(fx, "linear", [x], fx.target, weight=mod.weight.detach().double(),
                      bias=None if mod.bias is None else mod.bias.detach().double())
        elif isinstance(mod, (nn.BatchNorm2d, nn.BatchNorm1d)):
            self.batchnorm(fx, mod)
        elif isinstance(mod, nn.ReLU):
            self.emit(fx, "relu", [x], fx.target)
        elif isinstance(mod, nn.AvgPool2d):
            if mod.ceil_mode or mod.divisor_override or (not mod.count_include_pad and mod.padding):
                raise _fail(fx, "AvgPool2d with ceil_mode, divisor_override or count_include_pad=False")
            self.emit(fx, "avgpool", [x], fx.target, kernel=_pair(mod.kernel_size),
                      stride=_pair(mod.stride or mod.kernel_size), padding=_pair(mod.padding))
        elif isinstance(mod, nn.AdaptiveAvgPool2d):
            self.adaptive(fx, x, mod.output_size, fx.target)
        elif isinstance(mod, nn.MaxPool2d):
            if mod.ceil_mode or _pair(mod.dilation) != (1, 1) or mod.return_indices:
                raise _fail(fx, "MaxPool2d with ceil_mode, dilation or return_indices")
            self.emit(fx, "maxpool", [x], fx.target, kernel=_pair(mod.kernel_size),
                      stride=_pair(mod.stride or mod.kernel_size), padding=_pair(mod.padding))
        elif isinstance(mod, nn.Flatten):
            self.emit(fx, "reshape", [x], fx.target)
        elif isinstance(mod, (nn.Dropout, nn.Identity)):
            self.alias[fx.name] = self.src(x)
        else:
            raise _fail(fx, f"module type {type(mod).__name__} is not supported")

    def batchnorm(self, fx: torch.fx.Node, bn) -> None:
        x = fx.args[0]
        scale = (bn.weight.detach().double() if bn.affine else torch.ones(bn.num_features, dtype=torch.float64)) \
            / torch.sqrt(bn.running_var.double() + bn.eps)
        shift = (bn.bias.detach().double() if bn.affine else 0) - bn.running_mean.double() * scale
        prev = self.by_name.get(self.src(x))
        if prev is not None and prev.kind in ("conv", "linear") and len(x.users) == 1:
            view = (-1, 1, 1, 1) if prev.kind == "conv" else (-1, 1)
            prev.params["weight"] = prev.params["weight"] * scale.view(view)
            bias = prev.params["bias"] if prev.params["bias"] is not None else 0
            prev.params["bias"] = bias * scale + shift
            prev.params["folded"] = fx.target
            self.alias[fx.name] = prev.name
            return
        self.emit(fx, "affine", [x], fx.target, scale=scale, shift=shift)

    def adaptive(self, fx, x, output_size, label) -> None:
        out = _pair(output_size) if output_size is not None else None
        in_shape = _shape(x)
        if out == (1, 1):
            self.emit(fx, "gavgpool", [x], label)
            return
        h, w = in_shape[1], in_shape[2]
        if h % out[0] or w % out[1]:
            raise _fail(fx, f"adaptive average pool {in_shape[1:]} → {out} is not a plain pooling")
        k = (h // out[0], w // out[1])
        self.emit(fx, "avgpool", [x], label, kernel=k, stride=k, padding=(0, 0))

    # -- functions and methods ----------------------------------------------------------------
    def function(self, fx: torch.fx.Node) -> None:
        t = fx.target
        args = self.tensor_args(fx)
        if t in _RELU_FUNCS:
            self.emit(fx, "relu", args[:1])
        elif t in _ADD_FUNCS or t in _MUL_FUNCS:
            self.arith(fx, t in _ADD_FUNCS)
        elif t in _RESHAPE_FUNCS:
            self.emit(fx, "reshape", args[:1])
        elif t is torch.cat:
            tensors, dim = fx.args[0], fx.kwargs.get("dim", fx.args[1] if len(fx.args) > 1 else 0)
            if dim == 0 or dim == -len(_shape(fx)) - 1:
                raise _fail(fx, "concatenation along the batch axis")
            self.emit(fx, "cat", list(tensors), dim=dim if dim > 0 else dim + len(_shape(fx)) + 1)
        elif t in (F.avg_pool2d, F.max_pool2d):
            k = _pair(fx.args[1] if len(fx.args) > 1 else fx.kwargs["kernel_size"])
            s = fx.args[2] if len(fx.args) > 2 else fx.kwargs.get("stride") or k
            self.emit(fx, "avgpool" if t is F.avg_pool2d else "maxpool", args[:1], kernel=k,
                      stride=_pair(s),
                      padding=_pair(fx.kwargs.get("padding", fx.args[3] if len(fx.args) > 3 else 0)))
        elif t is F.adaptive_avg_pool2d:
            self.adaptive(fx, args[0], fx.args[1] if len(fx.args) > 1 else fx.kwargs["output_size"], fx.name)
        elif t is F.dropout:
            self.alias[fx.name] = self.src(args[0])
        elif t is operator.getitem and fx.args[0].name in self.shape_only:
            self.shape_only.add(fx.name)
        else:
            raise _fail(fx, "function not supported")

    def arith(self, fx: torch.fx.Node, is_add: bool) -> None:
        a, b = fx.args[0], fx.args[1]
        tensors = [v for v in (a, b) if isinstance(v, torch.fx.Node)]
        consts = [v for v in (a, b) if isinstance(v, (int, float))]
        if len(tensors) == 2 and is_add and len(fx.kwargs) == 0:
            self.emit(fx, "add", tensors)
        elif len(tensors) == 1 and len(consts) == 1:
            self.emit(fx, "scale", tensors, factor=1.0 if is_add else float(consts[0]),
                      offset=float(consts[0]) if is_add else 0.0)
        else:
            raise _fail(fx, "only tensor + tensor, tensor + number and tensor × number are supported")

    def method(self, fx: torch.fx.Node) -> None:
        name = fx.target
        args = self.tensor_args(fx)
        if name in _SHAPE_ONLY_METHODS:
            self.shape_only.add(fx.name)
        elif name in _RESHAPE_METHODS:
            self.emit(fx, "reshape", args[:1])
        elif name in ("relu", "relu_"):
            self.emit(fx, "relu", args[:1])
        elif name in ("add", "add_", "__add__", "mul", "mul_"):
            self.arith(fx, name.startswith(("add", "__add")))
        elif name in ("contiguous", "clone", "detach"):
            self.alias[fx.name] = self.src(args[0])
        elif name == "mean" and tuple(fx.args[1:2]) in (((2, 3),), ([2, 3],), ((-2, -1),)):
            self.emit(fx, "gavgpool", args[:1], keepdim=bool(fx.kwargs.get("keepdim", False)))
        else:
            raise _fail(fx, f"tensor method .{name}() not supported")


def compile_model(model: nn.Module, input_shape) -> SecureGraph:
    """Trace ``model`` (in eval mode) for inputs of ``input_shape`` (C×H×W) into a secure graph."""
    shape = tuple(int(s) for s in input_shape)
    was_training = model.training
    model.eval()
    try:
        try:
            graph = _Tracer().trace(model)
        except Exception as exc:  # noqa: BLE001 - fx raises many kinds
            raise CompileError(f"torch.fx cannot trace {type(model).__name__}: {exc}") from exc
        gm = torch.fx.GraphModule(model, graph)
        with torch.no_grad():
            ShapeProp(gm).propagate(torch.zeros(1, *shape))
        b = _Builder(gm)
        inputs = [n for n in gm.graph.nodes if n.op == "placeholder"]
        if len(inputs) != 1:
            raise CompileError(f"the model must take exactly one tensor input, found {len(inputs)}")
        for fx in gm.graph.nodes:
            if fx.op == "placeholder":
                b.emit(fx, "input", [], "input")
            elif fx.op == "call_module":
                b.module(fx)
            elif fx.op == "call_function":
                b.function(fx)
            elif fx.op == "call_method":
                b.method(fx)
            elif fx.op == "output":
                out = fx.args[0]
                if not isinstance(out, torch.fx.Node):
                    raise _fail(fx, "the model must return a single tensor")
                b.nodes.append(Node("output", "output", [b.src(out)], "output", _shape(out)))
            elif fx.op == "get_attr":
                raise _fail(fx, "parameters used outside modules are not supported")
    finally:
        model.train(was_training)
    return SecureGraph(b.nodes, shape)
