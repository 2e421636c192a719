"""The ``torch.export`` front door: a model as PyTorch 2's exporter sees it, read into the same
graph module the compiler lowers.

``torch.export`` (non-strict) runs ``forward`` once on the example input, specialised to its
shape: ``torch._assert``, ``if x.ndim == 4`` and other decisions on shapes resolve at capture
time, fused modules (timm's BatchNormAct2d) decompose into ATen operators, and arguments of
``forward`` with defaults keep them. Each ATen operator is then read as the torch call whose
lowering the registry holds (:class:`~ringlet.compiler.ops.base.AtenRule`, registered beside
the lowerings), so the rest of the compiler is shared with the torch.fx front door. A node's
label is its module's path (``layer1.0.conv1``; a repeated call gets ``#1``, ``#2``), as with
torch.fx, and the name of the function for calls in the model's own ``forward``.
"""

from __future__ import annotations

import torch
import torch.fx
from torch import nn

from ringlet.compiler.ops import registry


class ExportError(ValueError):
    """``torch.export`` cannot capture the model, or the capture holds an operator ringlet lacks."""


def where(node: torch.fx.Node) -> str:
    """The user's source line of a captured node (the last frame outside torch itself)."""
    lines = [ln.strip() for ln in str(node.meta.get("stack_trace") or "").strip().splitlines()]
    frames = [(i, ln) for i, ln in enumerate(lines) if ln.startswith("File")]
    user = [(i, ln) for i, ln in frames if "/torch/" not in ln]
    if not user:
        return "(no source line recorded)"
    i, line = user[-1]
    code = lines[i + 1] if i + 1 < len(lines) and not lines[i + 1].startswith("File") else ""
    return f"{line}: {code}" if code else line


def _label(node: torch.fx.Node) -> str | None:
    stack = node.meta.get("nn_module_stack") or {}
    paths = [path for path, _ in stack.values() if path]
    return paths[-1] if paths else None


def capture(model: nn.Module, x: torch.Tensor) -> torch.fx.GraphModule:
    """``model`` (in eval mode) exported on the example batch ``x``, its ATen operators read as
    the torch calls the registry lowers; an :class:`ExportError` names what cannot be read."""
    try:
        program = torch.export.export(model, (x,), strict=False)
    except Exception as exc:  # noqa: BLE001 - the exporter raises many kinds
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ExportError(f"torch.export cannot capture {type(model).__name__}: {type(exc).__name__}: "
                          f"{first}") from exc
    gm = program.module()
    rules = registry().aten
    secret: set[str] = set()  # what depends on the input; the rest is public and folded as is
    for node in gm.graph.nodes:
        if node.op == "placeholder" or any(a.name in secret for a in node.all_input_nodes):
            secret.add(node.name)
    for node in list(gm.graph.nodes):
        if node.op == "call_module":  # the exporter's guard on the input's shape: specialised away
            if node.users:
                raise ExportError(f"torch.export left a call of submodule {node.target!r} in the graph")
            gm.graph.erase_node(node)
            continue
        if node.op == "output":  # the exporter returns a flat tuple of outputs
            out = node.args[0]
            if isinstance(out, (tuple, list)) and len(out) == 1:
                node.args = (out[0],)
            continue
        if node.op != "call_function" or not isinstance(node.target, torch._ops.OpOverload) or (
                node.name not in secret):
            continue
        op = node.target
        name = op.overloadpacket.__name__ if op.namespace == "aten" else None
        rule = rules.get(name) if name is not None else None
        if rule is None:
            raise ExportError(
                f"cannot compile node '{node.name}' ({op}): this operator has no secure lowering; "
                f"at {where(node)}; replace it with a supported layer (see the operator table in "
                f"the README) or compute it on the client")
        args, kwargs = tuple(node.args), dict(node.kwargs)
        if rule.adapt is not None:
            args, kwargs = rule.adapt(node, args, kwargs)
        node.op = "call_method" if rule.method else "call_function"
        node.target = rule.target
        node.args, node.kwargs = args, kwargs
        node.meta["ringlet_inplace"] = bool(name and name.endswith("_")) and not rule.method
        label = _label(node)
        if label is not None:
            node.meta["ringlet_label"] = label
    gm.graph.lint()
    gm.recompile()
    return gm
