"""One graph interpreter, several ways to run a graph (in the manner of ``torch.fx.Interpreter``).

:class:`Interpreter` walks the nodes in order and dispatches each to its kind's handler for the
interpreter's ``mode`` (``plain``, ``simulate``, ``secure``; fractional bits and magnitude bounds walk the graph the
same way); the handlers
live with the kind in :mod:`ringlet.compiler.ops`. A new operator adds handlers there, never a branch
here. Values no later node reads are dropped as the walk goes.
"""

from __future__ import annotations

import torch

from ringlet.compiler.graph import LoweredGraph
from ringlet.compiler.ops import registry


class Interpreter:
    """Run a graph node by node; subclasses set ``mode`` and the context handlers read."""

    mode = "plain"

    def __init__(self, graph: LoweredGraph):
        self.graph = graph
        self.ops = registry()
        self.last_use = {}
        for i, node in enumerate(graph.nodes):
            for name in node.inputs:
                self.last_use[name] = i

    def run(self, x, start: int = 0, env: dict | None = None, stop: int | None = None,
            keep: bool = False):
        """The output for input ``x`` (or, from node ``start``, for the live values ``env``).

        With ``stop`` the walk ends before that node and returns the live values; with ``keep``
        it returns every node's value.
        """
        env = {} if env is None else dict(env)
        nodes = self.graph.nodes
        for i in range(start, len(nodes) if stop is None else stop):
            node = nodes[i]
            if node.kind == "input":
                env[node.name] = self.start(x)
                continue
            env[node.name] = self.run_node(node, [env[n] for n in node.inputs])
            if not keep:
                for n in node.inputs:
                    if self.last_use.get(n) == i:
                        env.pop(n, None)
        return env if stop is not None or keep else env[nodes[-1].name]

    def start(self, x):
        return x

    def run_node(self, node, ins):
        return getattr(self.ops[node.kind], self.mode)(node, ins, self)

    def params(self, node) -> dict:
        return node.params


class PlainInterpreter(Interpreter):
    """The folded graph in plain PyTorch with exact activations (float64 by default)."""

    def __init__(self, graph: LoweredGraph, dtype=torch.float64):
        super().__init__(graph)
        self.dtype = dtype
        self._params: dict[str, dict] = {}

    def start(self, x):
        return x.to(self.dtype)

    def params(self, node) -> dict:
        p = self._params.get(node.name)
        if p is None:
            p = {k: (v.to(self.dtype) if isinstance(v, torch.Tensor) and v.is_floating_point() else v)
                 for k, v in node.params.items()}
            self._params[node.name] = p
        return p


class FracPlan(Interpreter):
    """The fractional bits of every node's output, by the rules the secure run follows."""

    def __init__(self, graph: LoweredGraph, f: int):
        super().__init__(graph)
        self.f = f

    def plan(self) -> dict[str, int]:
        return self.run(self.f, keep=True)

    def run_node(self, node, ins):
        op = self.ops[node.kind]
        if op.wants_f(node):
            ins = [min(v, self.f) for v in ins]
        return op.frac(node, ins, self.f)


class Magnitudes(Interpreter):
    """Worst-case bounds on |value| at every node for inputs with |x| ≤ ``bound``."""

    def bounds(self, bound: float) -> dict[str, float]:
        return self.run(float(bound), keep=True)

    def run_node(self, node, ins):
        return self.ops[node.kind].magnitude(node, ins)


__all__ = ["Interpreter", "PlainInterpreter", "FracPlan", "Magnitudes"]
