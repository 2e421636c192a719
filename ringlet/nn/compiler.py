"""Compile a torch.nn.Module into a secure graph with torch.fx (no ONNX).

The model is traced symbolically and its shapes propagated for one input; every fx node is lowered
by the lowering registered for its module type, function or tensor method
(:mod:`ringlet.nn.ops`). BatchNorm right after a conv/linear (its only user) is folded into it; any
other BatchNorm is a public per-channel affine map. Anything unsupported raises
:class:`CompileError` naming the node, its op and the source line — before any party starts.
"""

from __future__ import annotations

import torch
import torch.fx
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp

from ringlet.nn.graph import Node, SecureGraph
from ringlet.nn.ops import registry


class CompileError(ValueError):
    """The model cannot be compiled; the message names the node and its source line."""


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


def _shape(node: torch.fx.Node) -> tuple | None:
    meta = node.meta.get("tensor_meta")
    return tuple(meta.shape[1:]) if meta is not None and hasattr(meta, "shape") else None


class Builder:
    """The state of one compilation, as the lowerings see it."""

    def __init__(self, gm: torch.fx.GraphModule):
        self.gm = gm
        self.modules = dict(gm.named_modules())
        self.nodes: list[Node] = []
        self.by_name: dict[str, Node] = {}
        self._alias: dict[str, str] = {}  # fx node → the secure node holding its value
        self._shape_only: set[str] = set()

    # -- what lowerings call --------------------------------------------------------------------
    def fail(self, fx: torch.fx.Node, why: str) -> CompileError:
        return CompileError(f"cannot compile node '{fx.name}' (op {fx.op}, target "
                            f"{getattr(fx.target, '__name__', fx.target)!s}): {why}; at {_where(fx)}")

    def src(self, arg) -> str:
        return self._alias.get(arg.name, arg.name)

    def shape(self, fx: torch.fx.Node) -> tuple | None:
        return _shape(fx)

    def emit(self, fx: torch.fx.Node, kind: str, inputs, label=None, **params) -> Node:
        node = Node(fx.name, kind, [self.src(a) for a in inputs], label or fx.name, _shape(fx), params)
        self.nodes.append(node)
        self.by_name[node.name] = node
        return node

    def alias_to(self, fx: torch.fx.Node, name: str) -> None:
        self._alias[fx.name] = name

    def mark_shape_only(self, fx: torch.fx.Node) -> None:
        self._shape_only.add(fx.name)

    def is_shape_only(self, arg) -> bool:
        return isinstance(arg, torch.fx.Node) and arg.name in self._shape_only

    def is_tensor(self, arg) -> bool:
        return isinstance(arg, torch.fx.Node) and arg.name not in self._shape_only

    def tensor_args(self, fx: torch.fx.Node) -> list[torch.fx.Node]:
        return [a for a in fx.args if self.is_tensor(a)]

    # -- the walk ---------------------------------------------------------------------------------
    def lower(self, fx: torch.fx.Node) -> None:
        reg = registry()
        if fx.op == "placeholder":
            self.emit(fx, "input", [], "input")
        elif fx.op == "call_module":
            mod = self.modules[fx.target]
            lower = reg.lowering_for_module(mod)
            if lower is None:
                raise self.fail(fx, f"module type {type(mod).__name__} is not supported")
            lower(self, fx, mod)
        elif fx.op == "call_function":
            lower = reg.functions.get(fx.target)
            if lower is None:
                raise self.fail(fx, "function not supported")
            lower(self, fx)
        elif fx.op == "call_method":
            lower = reg.methods.get(fx.target)
            if lower is None:
                raise self.fail(fx, f"tensor method .{fx.target}() not supported")
            lower(self, fx)
        elif fx.op == "output":
            out = fx.args[0]
            if not isinstance(out, torch.fx.Node):
                raise self.fail(fx, "the model must return a single tensor")
            self.nodes.append(Node("output", "output", [self.src(out)], "output", _shape(out)))
        elif fx.op == "get_attr":
            raise self.fail(fx, "parameters used outside modules are not supported")


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
        inputs = [n for n in gm.graph.nodes if n.op == "placeholder"]
        if len(inputs) != 1:
            raise CompileError(f"the model must take exactly one tensor input, found {len(inputs)}")
        b = Builder(gm)
        for fx in gm.graph.nodes:
            b.lower(fx)
    finally:
        model.train(was_training)
    return SecureGraph(b.nodes, shape)


__all__ = ["CompileError", "Node", "SecureGraph", "compile_model"]
