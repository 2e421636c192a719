"""Compile a torch.nn.Module into a secure graph with torch.fx (no ONNX).

Steps: trace the model symbolically; check that every node is something ringlet can run (before
any shape is propagated, so an unsupported layer is named with a way out rather than failing deep
inside torch); run it once on an example batch of two to learn every shape and every public value;
lower each node by the lowering registered for its module type, function or tensor method
(:mod:`ringlet.compiler.ops`). Values that do not depend on the input (parameters and buffers used in
``forward``, arithmetic on them) are folded into public constants; ``x.shape`` / ``x.size()`` and
arithmetic on them are public shape values. A softmax or log-softmax at the very end is stripped and
applied by the client to its logits. Every error is a :class:`CompileError` naming the node, its op
and the user's source line.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import TypeGuard

import torch
import torch.fx
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp

from ringlet.compiler.export import ExportError, capture, where
from ringlet.compiler.graph import LoweredGraph, Node
from ringlet.compiler.ops import registry
from ringlet.grelu.layers import GroupReLU
from ringlet.poly.layers import PolyAct


class CompileError(ValueError):
    """The model cannot be compiled; the message names the node and its source line."""


def _leaf_types() -> tuple:
    """Activation layers compiled as a whole (not traced into)."""
    return (GroupReLU, PolyAct)


class _Tracer(torch.fx.Tracer):
    def __init__(self, leaves: tuple = ()):
        super().__init__()
        self.record_stack_traces = True
        self.leaves = _leaf_types() + tuple(leaves)

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, self.leaves) or super().is_leaf_module(m, qualname)


def trace(model: nn.Module, leaves: tuple = ()) -> torch.fx.GraphModule:
    """The model's torch.fx graph module (the same tracer the compiler and finetuning use)."""
    try:
        graph = _Tracer(leaves).trace(model)
    except torch.fx.proxy.TraceError as exc:
        text = str(exc)
        if "iterated" in text:
            hint = ("unpacking a tensor's pieces (a, b = x.chunk(2, 1)) cannot be traced: index "
                    "them instead (parts = x.chunk(2, 1); parts[0], parts[1])")
        else:
            hint = ("data-dependent control flow (if/while on tensor values) has no secure "
                    "equivalent: compute both branches and select with torch.where on a "
                    "comparison, or move the decision to the client")
        raise CompileError(f"torch.fx cannot trace {type(model).__name__}: {text.split('. ')[0]}; "
                           f"{hint}") from exc
    except Exception as exc:  # noqa: BLE001 - fx raises many kinds
        raise CompileError(f"torch.fx cannot trace {type(model).__name__}: {exc}") from exc
    return torch.fx.GraphModule(model, graph)


def _fail(fx: torch.fx.Node, why: str) -> CompileError:
    return CompileError(f"cannot compile node '{fx.name}' (op {fx.op}, target "
                        f"{getattr(fx.target, '__name__', fx.target)!s}): {why}; at {where(fx)}")


def _method_name(fx: torch.fx.Node) -> str:
    """The name of the method a ``call_method`` node calls (torch.fx keeps it as the target)."""
    assert isinstance(fx.target, str), f"{fx.name}: a method call's target is its name"
    return fx.target


def _shape(node: torch.fx.Node) -> tuple | None:
    meta = node.meta.get("tensor_meta")
    return tuple(meta.shape[1:]) if meta is not None and hasattr(meta, "shape") else None


# targets that turn a tensor into public shape information, and what may combine shape values
_SHAPE_METHODS = {"size", "dim", "numel"}
# results that take only the dtype, device or shape of a secret argument: public when ``self`` is
_LIKE_METHODS = {"type_as", "to", "view_as", "reshape_as", "expand_as", "new_zeros", "new_ones",
                 "new_full", "new_empty"}
_LIKE_FUNCS = {torch.zeros_like, torch.ones_like, torch.full_like, torch.empty_like}
# in-place functions (methods ending in a single "_" are in place too)
_INPLACE_FUNCS = {operator.iadd, operator.isub, operator.imul, operator.itruediv, torch.relu_}
# public tensors that shape values only size (never enter as values): public when built from them
_SIZED_METHODS = {"expand", "repeat", "view", "reshape", "broadcast_to"}
_SIZED_FUNCS = {torch.ones, torch.zeros, torch.full, torch.empty, torch.broadcast_to}
_SHAPE_FUNCS = {operator.getitem, operator.add, operator.sub, operator.mul, operator.floordiv,
                operator.pow, operator.mod, operator.truediv, operator.neg, len, int}


def _classify(gm: torch.fx.GraphModule) -> tuple[set, set]:
    """(data, shape): fx nodes holding the client's secret tensor values, and public shape values
    derived from them. Everything else is a public constant."""
    data, shape = set(), set()
    for n in gm.graph.nodes:
        if n.op == "placeholder":
            data.add(n.name)
            continue
        if n.op in ("get_attr", "output"):
            continue
        inputs = [a.name for a in n.all_input_nodes]
        if not any(a in data or a in shape for a in inputs):
            continue  # a constant
        if n.op == "call_function" and n.target in _LIKE_FUNCS:
            continue  # zeros_like(x) and the like: public, whatever x holds
        if n.op == "call_method" and n.target in _LIKE_METHODS and not (
                isinstance(n.args[0], torch.fx.Node) and n.args[0].name in data):
            continue  # public.type_as(x), public.view_as(x): still public
        takes_shape = (n.op == "call_method" and n.target in _SHAPE_METHODS) or (
            n.op == "call_function" and n.target is getattr and n.args[1] in ("shape", "ndim"))
        only_shapes = all(a not in data for a in inputs)
        if takes_shape or (only_shapes and n.op == "call_function" and n.target in _SHAPE_FUNCS):
            shape.add(n.name)
        elif only_shapes and ((n.op == "call_method" and n.target in _SIZED_METHODS)
                              or (n.op == "call_function" and n.target in _SIZED_FUNCS)):
            continue  # a public tensor only sized by shape values (cls.expand(x.shape[0], -1, -1));
            # its consumer checks that every sample gets the same values
        else:
            data.add(n.name)
    return data, shape


def _check_supported(gm: torch.fx.GraphModule, data: set) -> None:
    """Refuse what ringlet cannot run, before any shape propagation, with a way out."""
    reg = registry()
    modules = dict(gm.named_modules())
    inputs = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(inputs) != 1:
        raise CompileError(
            f"the model takes {len(inputs)} inputs ({', '.join(n.name for n in inputs)}); ringlet runs "
            f"models of exactly one tensor input: wrap it so that forward takes one tensor (e.g. "
            f"concatenate the inputs and split them with slicing inside forward)")
    for n in gm.graph.nodes:
        if n.name not in data or n.op == "placeholder":
            continue
        if n.op == "call_module":
            mod = modules[n.target]
            why = reg.refusals.get(type(mod))
            if why:
                raise _fail(n, f"{type(mod).__name__} is not supported: {why}")
            if reg.lowering_for_module(mod) is None:
                raise _fail(n, f"module type {type(mod).__name__} is not supported (supported: "
                               f"see the operator table in the README)")
        elif n.op == "call_function":
            why = reg.refusals.get(n.target)
            if why:
                raise _fail(n, f"not supported: {why}")
            if n.target not in reg.functions:
                raise _fail(n, "function not supported")
        elif n.op == "call_method":
            why = reg.refusals.get(n.target)
            if why:
                raise _fail(n, f"tensor method .{n.target}() is not supported: {why}")
            if n.target not in reg.methods:
                raise _fail(n, f"tensor method .{n.target}() not supported")


class _Propagate(ShapeProp):
    """ShapeProp that also keeps every public value (constants and shape values)."""

    def __init__(self, gm, public: set):
        super().__init__(gm)
        self.public = public

    def run_node(self, n):
        try:
            result = super().run_node(n)
        except Exception as exc:  # noqa: BLE001 - the user's code raised on the example input
            if isinstance(exc, CompileError):
                raise
            cause = exc.__cause__ or exc  # ShapeProp wraps the model's own error
            first = (str(cause).strip().splitlines() or [""])[0]
            raise _fail(n, f"running the model on the example input failed ({type(cause).__name__}: "
                           f"{first}); is the example input of the shape the model takes?") from None
        if n.name in self.public:
            n.meta["value"] = result.detach() if isinstance(result, torch.Tensor) else result
        return result


class Builder:
    """The state of one compilation, as the lowerings see it."""

    def __init__(self, gm: torch.fx.GraphModule, data: set, options: dict):
        self.gm = gm
        self.data = data
        self.options = options
        self.modules = dict(gm.named_modules())
        self.nodes: list[Node] = []
        self.by_name: dict[str, Node] = {}
        self.postprocess: dict | None = None
        self.preprocess: dict | None = None  # the client's embedding lookup of its token ids
        self.ids: str | None = None  # the placeholder of integer token ids
        self._alias: dict[str, str] = {}  # fx node → the secure node holding its value
        self._labels: dict[str, int] = {}
        #: rearrangements that move the batch axis (qkv.permute(2, 0, 3, 1, 4)): fx node → (the
        #: fx node they rearrange, the rearrangement), resolved by a later one that restores it
        self.deferred: dict[str, tuple[torch.fx.Node, Callable]] = {}

    # -- what lowerings call --------------------------------------------------------------------
    fail = staticmethod(_fail)

    def src(self, arg) -> str:
        if arg.name == self.ids:
            raise _fail(arg, "the token ids (the integer input) are only looked up in an embedding, "
                             "by the client; nothing else may read them")
        if arg.name in self.deferred:
            raise _fail(arg, "the operation mixes the samples of a batch (the batch axis must stay "
                             "first, or be brought back first by the next indexing or unbind)")
        return self._alias.get(arg.name, arg.name)

    def shape(self, fx: torch.fx.Node) -> tuple | None:
        return _shape(fx)

    def batch_shape(self, fx: torch.fx.Node) -> tuple:
        """The full shape with the example's batch axis (2)."""
        return tuple(fx.meta["tensor_meta"].shape)

    def emit(self, fx: torch.fx.Node, kind: str, inputs, label=None, node_name=None,
             node_shape=None, **params) -> Node:
        """A secure node for ``fx`` (a module's call sites get labels path, path#1, path#2, …)."""
        label = label or fx.meta.get("ringlet_label") or fx.name
        seen = self._labels.get(label, 0)
        self._labels[label] = seen + 1
        if seen:
            label = f"{label}#{seen}"
        srcs = [a if isinstance(a, str) else self.src(a) for a in inputs]
        node = Node(node_name or fx.name, kind, srcs, label, node_shape or _shape(fx), params)
        self.nodes.append(node)
        self.by_name[node.name] = node
        return node

    def alias_to(self, fx: torch.fx.Node, name: str) -> None:
        self._alias[fx.name] = name

    def is_tensor(self, arg: object) -> TypeGuard[torch.fx.Node]:
        """A value that depends on the client's input (a secret tensor)."""
        return isinstance(arg, torch.fx.Node) and arg.name in self.data

    def tensor_args(self, fx: torch.fx.Node) -> list[torch.fx.Node]:
        return [a for a in fx.args if self.is_tensor(a)]

    def value(self, arg):
        """The public value of an argument: a literal, a constant or a shape value (recursively)."""
        if isinstance(arg, torch.fx.Node):
            if arg.name in self.data:
                raise _fail(arg, "a secret value is used where a public one is needed")
            return arg.meta["value"]
        if isinstance(arg, (list, tuple)):
            return type(arg)(self.value(a) for a in arg)
        return arg

    def arg(self, fx: torch.fx.Node, index: int, name: str, default=None):
        """Positional-or-keyword argument ``name`` of a call, resolved to its public value."""
        if len(fx.args) > index:
            return self.value(fx.args[index])
        return self.value(fx.kwargs.get(name, default))

    # -- the walk ---------------------------------------------------------------------------------
    def lower(self, fx: torch.fx.Node) -> None:
        reg = registry()
        if fx.op == "placeholder":
            if fx.meta["tensor_meta"].dtype.is_floating_point:
                self.emit(fx, "input", [], "input")
            else:  # token ids: the "input" node is the client's lookup of them (ops/embed.py)
                self.ids = fx.name
        elif fx.op == "output":
            out = fx.args[0]
            if not self.is_tensor(out):
                raise _fail(fx, "the model must return a single tensor computed from its input")
            self.nodes.append(Node("output", "output", [self.src(out)], "output", _shape(out)))
        elif fx.name not in self.data:
            return  # a public constant or shape value: kept in fx.meta["value"]
        else:
            mod = self.modules[fx.target] if fx.op == "call_module" else None
            lower: Callable | None
            if fx.op == "call_module":
                lower = reg.lowering_for_module(mod)
            elif fx.op == "call_function":
                lower = reg.functions[fx.target]
            else:
                lower = reg.methods[_method_name(fx)]
            if lower is None:  # _check_supported refused every module without a lowering
                raise _fail(fx, f"no lowering is registered for {type(mod).__name__}")
            try:
                lower(self, fx, mod) if mod is not None else lower(self, fx)
            except CompileError:
                raise
            except Exception as exc:  # noqa: BLE001 - a lowering meeting arguments it cannot take
                raise _fail(fx, f"{type(exc).__name__}: {exc}") from exc
            if _in_place(fx, mod):
                self._follow_mutation(fx)

    def _follow_mutation(self, fx: torch.fx.Node) -> None:
        """After ``x.relu_()`` (or ``nn.ReLU(inplace=True)``, ``x += y``) every later reader of x,
        or of anything holding the same value, reads the result."""
        first = fx.args[0] if fx.args else None
        if not self.is_tensor(first):
            return
        old, new = self.src(first), self.src(fx)
        if old == new:
            return
        names = {first.name, old} | {k for k, v in self._alias.items() if v == old}
        for name in names:
            self._alias[name] = new


def _in_place(fx: torch.fx.Node, mod) -> bool:
    if fx.meta.get("ringlet_inplace"):
        return True
    if mod is not None:
        return bool(getattr(mod, "inplace", False))
    if fx.op == "call_method":
        name = _method_name(fx)
        return name.endswith("_") and not name.endswith("__")
    return fx.target in _INPLACE_FUNCS or bool(fx.kwargs.get("inplace", False))


def _prune(nodes: list[Node]) -> list[Node]:
    """Drop nodes whose values nothing reads (a stripped softmax's leftovers, unused branches)."""
    used = {"output"}
    keep = []
    for node in reversed(nodes):
        if node.name in used or node.kind == "input":
            keep.append(node)
            used.update(node.inputs)
    return keep[::-1]


def example_batch(example) -> torch.Tensor:
    """A batch of two for propagation (two samples tell a batch-mixing reshape from a local one)."""
    if isinstance(example, torch.Tensor):
        integer = not example.is_floating_point() and not example.is_complex() and example.dtype != torch.bool
        x = example.detach().long() if integer else example.detach().float()  # token ids stay ids
        if x.ndim == 0:
            raise CompileError("the example input must have a batch axis (N×…), got a scalar")
        return x[:2] if x.shape[0] >= 2 else torch.cat([x[:1], x[:1]])
    shape = tuple(int(s) for s in example)
    return torch.zeros(2, *shape)


def _runs_on(model: nn.Module, x: torch.Tensor) -> None:
    """Run ``model`` on the example as plain torch: an input it does not take is refused with
    the model's own error and the user's line that raised it, before any tracing."""
    import traceback
    try:
        with torch.no_grad():
            model(x)
    except Exception as exc:  # noqa: BLE001 - the user's code raised on the example input
        frames = [f for f in traceback.extract_tb(exc.__traceback__)
                  if "/torch/" not in f.filename and "/ringlet/compiler/" not in f.filename]
        at = f"; at {frames[-1].filename}:{frames[-1].lineno}: {frames[-1].line}" if frames else ""
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        hint = ("; a model that looks up token ids takes them as an integer tensor: give the "
                "example input as integer token ids") if "'indices'" in first and x.is_floating_point() else ""
        raise CompileError(f"the model does not run on an input of shape {tuple(x.shape[1:])} per "
                           f"sample ({type(exc).__name__}: {first}){at}{hint}") from None


FRONTENDS = ("auto", "fx", "export")


def _front_door(model: nn.Module, x: torch.Tensor, frontend: str) -> tuple[torch.fx.GraphModule, set]:
    """The model's graph module and its secret nodes: torch.fx first (``auto``; its labels are
    those of existing configurations), ``torch.export`` when fx cannot trace or refuses a node
    (an assert, an ``if`` on a shape, a fused layer), or the one named."""
    if frontend not in FRONTENDS:
        raise CompileError(f"frontend {frontend!r}: choose one of {', '.join(FRONTENDS)}")
    fx_error: CompileError | None = None
    if frontend in ("auto", "fx"):
        try:
            gm = trace(model)
            data, _ = _classify(gm)
            _check_supported(gm, data)
        except CompileError as exc:
            if frontend == "fx":
                raise
            fx_error = exc
        else:
            _runs_on(model, x)
            return gm, data
    try:
        _runs_on(model, x)
    except CompileError:
        if fx_error is not None:  # fx's refusal (e.g. two inputs) names the way out
            raise fx_error from None
        raise
    try:
        gm = capture(model, x)
    except ExportError as exc:
        if fx_error is not None:
            raise CompileError(f"{exc} (torch.fx: {fx_error})") from exc
        raise CompileError(str(exc)) from exc
    data, _ = _classify(gm)
    _check_supported(gm, data)
    return gm, data


def compile_model(model: nn.Module, example, frontend: str = "auto", **options) -> LoweredGraph:
    """Capture ``model`` (in eval mode) into a secure graph.

    ``example`` is an input batch (N×…) or the per-sample input shape (C×H×W). ``frontend``:
    ``auto`` (torch.fx, else torch.export), ``fx`` or ``export``. ``options`` reach the lowerings
    (``smooth``: how sigmoid, GELU and the like are computed).
    """
    x = example_batch(example)
    modes = {m: m.training for m in model.modules()}  # each submodule's own mode, restored below
    model.eval()
    try:
        gm, data = _front_door(model, x, frontend)
        public = {n.name for n in gm.graph.nodes if n.name not in data}
        with torch.no_grad():
            _Propagate(gm, public).propagate(x)
        b = Builder(gm, data, options)
        for fx in gm.graph.nodes:
            b.lower(fx)
    finally:
        for m, training in modes.items():
            m.training = training
    if b.preprocess is None and not x.is_floating_point():
        raise CompileError("the model takes integer inputs (token ids) but does not look them up "
                           "in an embedding first; ringlet's client does that lookup, the servers "
                           "take the vectors")
    input_shape = tuple(x.shape[1:])
    if b.preprocess is not None:  # the servers take the embedded vectors
        input_shape = next(tuple(n.out_shape or ()) for n in b.nodes if n.kind == "input")
    return LoweredGraph(_prune(b.nodes), input_shape, b.postprocess, b.preprocess)


__all__ = ["CompileError", "Node", "LoweredGraph", "compile_model", "trace"]
