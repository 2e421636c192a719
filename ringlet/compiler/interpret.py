"""One graph interpreter, several ways to run a graph (in the manner of ``torch.fx.Interpreter``).

:class:`Interpreter` walks the nodes in order and dispatches each to its kind's handler for the
interpreter's ``mode`` (``plain``, ``simulate``, ``secure``; fractional bits and magnitude bounds walk the graph the
same way); the handlers
live with the kind in :mod:`ringlet.compiler.ops`. A new operator adds handlers there, never a branch
here. Values no later node reads are dropped as the walk goes.
"""

from __future__ import annotations

import torch

from ringlet.compiler.graph import LoweredGraph, Node
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


class ApproxInterpreter(PlainInterpreter):
    """The folded graph as the secure run computes it, in floating point: every approximated
    activation (SiLU, GELU, sigmoid, ...) by its approximation, sign decisions exact. Only the
    nodes named in ``only`` are approximated when it is given."""

    mode = "approximate"

    def __init__(self, graph: LoweredGraph, dtype=torch.float64, only: set[str] | None = None):
        super().__init__(graph, dtype)
        self.only = only

    def run_node(self, node, ins):
        op = self.ops[node.kind]
        if self.only is not None and node.name not in self.only:
            return op.plain(node, ins, self)
        return op.approximate(node, ins, self)


def approximated_nodes(graph: LoweredGraph) -> list[Node]:
    """The nodes whose secure run approximates their function, in graph order."""
    ops = registry()
    return [n for n in graph.nodes if ops[n.kind].approximates]


def first_flip(graph: LoweredGraph, x: torch.Tensor) -> tuple[int, Node | None]:
    """(how many inputs of ``x`` change top-1 class when the approximations replace the exact
    functions, the first approximated node — in graph order — from which they do), found by
    bisection over the prefix of approximated nodes (log2(nodes) + 2 plaintext runs)."""
    nodes = approximated_nodes(graph)
    if not nodes:
        return 0, None
    with torch.no_grad():
        exact = PlainInterpreter(graph).run(x.double()).reshape(x.shape[0], -1).argmax(1)

        def flips(k: int) -> int:
            out = ApproxInterpreter(graph, only={n.name for n in nodes[:k]}).run(x.double())
            return int((out.reshape(x.shape[0], -1).argmax(1) != exact).sum())
        total = flips(len(nodes))
        if total == 0:
            return 0, None
        lo, hi = 0, len(nodes)  # flips(lo) == 0 < flips(hi)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if flips(mid):
                hi = mid
            else:
                lo = mid
    return total, nodes[hi - 1]


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
