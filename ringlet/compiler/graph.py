"""The compiled graph: a list of secure nodes in execution order, each of one registered kind.

A node's ``kind`` names its handlers in :mod:`ringlet.compiler.ops` (how it runs in plaintext, on shares,
in the search's simulator, and which fractional bits its output carries); ``params`` hold the public
constants of the node (weights, strides, coefficients). Shapes are per sample (no batch axis).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ringlet.compiler.ops import registry


@dataclass
class Node:
    """One secure operation: ``kind`` applied to the outputs of ``inputs``."""

    name: str
    kind: str
    inputs: list[str]
    label: str
    out_shape: tuple | None  # per sample (no batch axis); None where capture saw no tensor shape
    params: dict = field(default_factory=dict)




@dataclass
class LoweredGraph:
    nodes: list[Node]
    input_shape: tuple
    postprocess: dict | None = None  # applied by the client to the logits (a stripped softmax)
    preprocess: dict | None = None   # applied by the client to its input (its token ids' lookup)

    def _ops(self):
        return registry()

    @property
    def output_shape(self) -> tuple:
        shape = self.nodes[-1].out_shape
        if shape is None:
            raise ValueError(f"the graph's output node {self.nodes[-1].name!r} has no shape")
        return tuple(shape)

    @property
    def relus(self) -> list[Node]:
        """Activations whose sign decision the reduced-ring search and finetuning act on."""
        ops = self._ops()
        return [n for n in self.nodes if ops[n.kind].bits == "relu"]

    @property
    def relu_names(self) -> list[str]:
        return [n.label for n in self.relus]

    @property
    def activation_names(self) -> list[str]:
        """Everything a bit configuration may name: ReLU-like activations and shared ReLUs."""
        ops = self._ops()
        return [n.label for n in self.nodes if ops[n.kind].bits is not None]

    def relu_elements(self) -> dict[str, int]:
        """DReLU evaluations per input sample, by name: every output of a ReLU, one per group of a
        shared ReLU (channels × groups)."""
        ops = self._ops()
        return {n.label: ops[n.kind].elements(n) for n in self.nodes if ops[n.kind].bits is not None}

    def relus_per_image(self) -> int:
        """ReLU-shaped activations' decisions per sample (ReLU, LeakyReLU, clamp/ReLU6, gReLU)."""
        ops = self._ops()
        return sum(ops[n.kind].elements(n) for n in self.nodes
                   if ops[n.kind].bits is not None and ops[n.kind].relu_like)

    def comparisons_per_image(self, bits: dict | None = None) -> int:
        """Every sign decision (DReLU) per sample: ReLUs, clamps' bounds, max-pool tournaments,
        smooth functions' breakpoints, |x| (``bits``: a run's per-label bits; identity bits
        decide nothing)."""
        ops = self._ops()
        return sum(ops[n.kind].drelus(n, (bits or {}).get(n.label)) for n in self.nodes)

    @property
    def client_input_shape(self) -> tuple:
        """What the client gives per sample: token ids when the model looks them up, else the
        input the servers take."""
        return tuple(self.preprocess["ids_shape"]) if self.preprocess else tuple(self.input_shape)

    def prepare(self, x):
        """The client's input as the servers take it: its token ids' embeddings, if any."""
        return apply_preprocess(self.preprocess, x)

    def finish(self, logits):
        """The model's output from the graph's: the stripped softmax, if any, applied (the client)."""
        return apply_postprocess(self.postprocess, logits)

    def summary(self) -> list[dict]:
        return [{"name": n.name, "kind": n.kind, "label": n.label,
                 "shape": None if n.out_shape is None else list(n.out_shape)} for n in self.nodes]


def apply_postprocess(post: dict | None, logits):
    """A stripped final softmax / log-softmax, applied to the logits (by the client)."""
    if not post:
        return logits
    import torch
    fns = {"softmax": torch.softmax, "log_softmax": torch.log_softmax}
    if post.get("op") not in fns or type(post.get("dim")) is not int:
        raise ValueError(f"postprocess {post!r}: op must be one of {sorted(fns)} and dim an integer")
    return fns[post["op"]](logits, post["dim"])


def apply_preprocess(pre: dict | None, ids):
    """The client's lookup of its token ids (integers in [0, vocabulary)) in the public table."""
    if not pre:
        return ids
    import torch
    if pre.get("op") != "embedding":
        raise ValueError(f"preprocess {pre.get('op')!r}: only 'embedding' is known")
    ids = torch.as_tensor(ids)
    if ids.is_floating_point() and not bool((ids == ids.round()).all()):
        raise ValueError("token ids must be integers")
    ids = ids.long()
    vocab = pre["weight"].shape[0]
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= vocab):
        raise ValueError(f"token ids must lie in [0, {vocab}); got {int(ids.min())} … {int(ids.max())}")
    return torch.nn.functional.embedding(ids, pre["weight"].to(torch.float32))


__all__ = ["Node", "LoweredGraph", "apply_postprocess", "apply_preprocess"]
