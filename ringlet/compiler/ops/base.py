"""The handler set of one node kind, and the registry that holds every kind once.

An :class:`Op` says how its kind runs in every mode a graph is interpreted in
(:mod:`ringlet.compiler.interpret`): ``plain`` (float64 reference), ``simulate`` (the search's float32
simulator; plain unless the kind takes ReLU bits), ``secure`` (on one server's shares), ``frac``
(the fractional bits of its output) and ``magnitude`` (a bound on |output| from bounds on the
inputs, for the worst-case range check). ``encode`` prepares its public constants once per compiled
model. Lowerings (from torch.fx nodes to graph nodes) are registered beside the kind they emit.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field


def pair(v) -> tuple[int, int]:
    """An int or a pair of ints (a kernel, stride, padding) as a pair."""
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


class Op:
    """Handlers of one node kind (stateless; one instance per registry)."""

    kind: str = ""
    #: secure inputs above f fractional bits are truncated to f before the handler runs
    needs_f: bool = False
    #: "relu": takes ReLU bits [k:m] and is searched/finetuned; "group": takes bits, not searched
    bits: str | None = None
    #: counted in ``relus_per_image`` (ReLU, LeakyReLU, clamp/ReLU6, gReLU); every sign decision
    #: of every kind is counted in ``comparisons_per_image`` (:meth:`drelus`)
    relu_like: bool = True
    #: finetuning trains through it as a straight-through approximate ReLU (ReLU, LeakyReLU); the
    #: other comparisons stay exact while the weights adapt
    finetunes: bool = False
    #: rounds and bits per element (2 servers, ℓ = 64), as printed in the operator table
    cost: str = "local: 0 rounds, 0 bits"

    def wants_f(self, node) -> bool:
        """Whether this node's inputs are truncated to f fractional bits first."""
        return self.needs_f

    def frac(self, node, ins: list[int], f: int) -> int:
        return ins[0]

    def plain(self, node, ins, ctx):
        raise NotImplementedError(f"{self.kind}: no plaintext handler")

    def simulate(self, node, ins, ctx):
        return self.plain(node, ins, ctx)

    #: the secure run computes an approximation of the plain function (its error is stated)
    approximates: bool = False

    def approximate(self, node, ins, ctx):
        """What the secure run computes, in floating point, with exact sign decisions: the
        plain function unless the kind approximates it."""
        return self.plain(node, ins, ctx)

    def secure(self, node, ins, ctx):
        raise NotImplementedError(f"{self.kind}: no secure handler")

    def encode(self, node, fixed) -> dict | None:
        return None

    def magnitude(self, node, ins: list[float]) -> float:
        return ins[0]

    def elements(self, node) -> int:
        """Sign decisions per sample when the node takes bits (the config's ReLU count)."""
        return math.prod(node.out_shape)

    def drelus(self, node, bits: tuple[int, int] | None) -> int:
        """Sign decisions (DReLUs) per sample the secure run evaluates."""
        return 0

    #: the smallest ring Z_2^ℓ its protocol runs in (LayerNorm and softmax need 2^62 of headroom
    #: for their interval factors and products: 64); the eco ring never goes below it
    min_ring_bits: int = 0

    def linear_layer(self, node, in_shape: tuple, batch: int, encoded) -> dict | None:
        """A public-weight linear layer's arguments of
        :func:`ringlet.protocols.tuning.linear.choose_backend` (kind, x_shape, w, ...) for an input
        of ``batch`` samples of ``in_shape``; None for a node that runs no such layer."""
        return None


@dataclass(frozen=True)
class AtenRule:
    """How an ATen operator (of a ``torch.export`` graph) is read: as the call of ``target`` (a
    torch function, or a tensor method's name when ``method``), its arguments rearranged by
    ``adapt(node, args, kwargs) -> (args, kwargs)``; its lowering is then that target's."""

    target: object
    method: bool = False
    adapt: Callable | None = None


@dataclass
class Registry:
    """Every node kind once, and the lowerings of torch modules, functions and tensor methods
    (and the ATen operators that read as one of those)."""

    ops: dict[str, Op] = field(default_factory=dict)
    modules: dict[type, Callable] = field(default_factory=dict)
    functions: dict[object, Callable] = field(default_factory=dict)
    methods: dict[str, Callable] = field(default_factory=dict)
    refusals: dict[object, str] = field(default_factory=dict)  # known unsupported → way out
    aten: dict[str, AtenRule] = field(default_factory=dict)  # ATen operator name → its reading

    def __getitem__(self, kind: str) -> Op:
        try:
            return self.ops[kind]
        except KeyError:
            raise KeyError(f"no node kind {kind!r} is registered") from None

    def op(self, op: Op) -> None:
        if op.kind in self.ops:
            raise ValueError(f"node kind {op.kind!r} registered twice")
        self.ops[op.kind] = op

    def module(self, types, lower: Callable) -> None:
        for t in (types if isinstance(types, tuple) else (types,)):
            self.modules[t] = lower

    def function(self, targets, lower: Callable) -> None:
        for t in targets:
            self.functions[t] = lower

    def method(self, names, lower: Callable) -> None:
        for name in names:
            self.methods[name] = lower

    def aten_op(self, names, target, method: bool = False, adapt: Callable | None = None) -> None:
        """ATen operators ``names`` (e.g. ``"conv2d"``; an in-place ``"relu_"`` separately) read
        as a call of ``target``, which must have a lowering here."""
        for name in (names if isinstance(names, tuple) else (names,)):
            if name in self.aten:
                raise ValueError(f"ATen operator {name!r} registered twice")
            self.aten[name] = AtenRule(target, method, adapt)

    def refuse(self, targets, why: str) -> None:
        for t in targets:
            self.refusals[t] = why

    def lowering_for_module(self, mod) -> Callable | None:
        for t in type(mod).__mro__:
            if t in self.modules:
                return self.modules[t]
        return None


def one_sample(b, fx, t, what: str):
    """A public tensor whose first axis is a batch axis (of 1, or of the example's size) as one
    sample's value: a public constant is the same for every sample, so its samples must agree."""
    if t.shape[0] not in (1, b.batch_shape(fx)[0]) or not bool((t == t[:1]).all()):
        raise b.fail(fx, f"{what} of shape {tuple(t.shape)} differs between samples of the batch: "
                         f"a public constant is the same for every sample")
    return t[0]


def call(b, fx):
    """The node's own operation with every public argument resolved, as a function of its tensor."""
    args = [b.value(a) if i else None for i, a in enumerate(fx.args)]
    kwargs = {k: b.value(v) for k, v in fx.kwargs.items()}
    if fx.op == "call_method":
        return lambda t: getattr(t, fx.target)(*args[1:], **kwargs)
    if fx.op == "call_module":
        mod = b.modules[fx.target]
        return lambda t: mod(t)
    return lambda t: fx.target(t, *args[1:], **kwargs)
