"""Softmax inside a model (attention) and scaled dot-product attention: the softmax on shares
(:mod:`ringlet.protocols.softmax`), the products of secret tensors as ``matmul`` nodes."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ringlet.compiler.ops.base import Op, Registry, one_sample
from ringlet.compiler.ops.shape import emit_gather
from ringlet.protocols import softmax as secure_softmax

#: an additive mask at or below this is a masked position (HF writes finfo.min, others −1e4, −inf)
MASKED = -1e4


class Softmax(Op):
    """softmax over the last axis, with an optional public mask (``keep``: True = attend); see
    :func:`ringlet.protocols.softmax.softmax` for its steps and error."""

    kind = "softmax"
    bits = "relu"  # the max's tournament and the clip on the same bits [k:m]
    relu_like = False
    needs_f = True
    approximates = True
    min_ring_bits = 64
    cost = ("2 servers, row of D: (⌈log2 D⌉ + 1) × 8 + 23 rounds (D = 65: 87); per element "
            "(D − 1)/D + 1 ReLUs and 960 bits, per row ⌈log2 D⌉ + 1 DReLUs (max, clip, exp by "
            "squaring, 1/Σ by its power of 2)")

    def frac(self, node, ins, f):
        return f

    @staticmethod
    def _keep(node, x):
        keep = node.params.get("keep")
        return None if keep is None else torch.broadcast_to(keep, x.shape)

    def plain(self, node, ins, ctx):
        keep = self._keep(node, ins[0])
        x = ins[0] if keep is None else ins[0].masked_fill(~keep, float("-inf"))
        return torch.softmax(x, -1)

    def secure(self, node, ins, ctx):
        x = ins[0]
        return secure_softmax.softmax(ctx.sess, x, ctx.spec(node.label), self._keep(node, x.data))

    def simulate(self, node, ins, ctx):
        """The protocol's own steps in floating point (:func:`~ringlet.protocols.softmax.softmax_float`),
        its comparisons by the simulator's rule for the node's bits: a reduced ring that breaks
        the max shows as the secure run's error."""
        return secure_softmax.softmax_float(ins[0], lambda v: ctx.simulated_relu(node, v), self._keep(node, ins[0]))

    def approximate(self, node, ins, ctx):
        return secure_softmax.softmax_float(ins[0], torch.relu, self._keep(node, ins[0]))

    def magnitude(self, node, ins):
        return 1.0

    def elements(self, node) -> int:
        rows, d = math.prod(node.out_shape[:-1]), node.out_shape[-1]
        return rows * (2 * d - 1)  # the tournament's D − 1 and the clip's D per row

    def drelus(self, node, bits):
        rows = math.prod(node.out_shape[:-1])
        recip = rows * secure_softmax.row_breaks(node.out_shape[-1])
        return recip + (0 if bits is not None and bits[0] == bits[1] else self.elements(node))


def _keep_from(b, fx, mask, shape, is_causal: bool):
    """A public bool mask (True = attend) from an attention mask (bool, or additive float: values
    at or below MASKED are masked, others must be 0) and/or causality; None for none."""
    keep = None
    if mask is not None:
        mask = torch.as_tensor(mask)
        if mask.dtype == torch.bool:
            keep = mask
        else:
            masked = mask <= MASKED
            if not bool(((mask == 0) | masked).all()):
                raise b.fail(fx, "an additive attention mask other than 0 / −inf (a bias on the "
                                 "scores) is not supported; give a bool mask")
            keep = ~masked
    if is_causal:
        q, k = shape[-2], shape[-1]
        causal = torch.ones(q, k, dtype=torch.bool).tril()
        keep = causal if keep is None else keep & causal
    if keep is not None:
        if keep.ndim == len(shape) + 1:  # a batch axis
            keep = one_sample(b, fx, keep, "an attention mask")
        if keep.ndim > len(shape):
            raise b.fail(fx, f"an attention mask of shape {tuple(keep.shape)} for scores of {shape}")
        keep = torch.broadcast_to(keep, shape).clone()
        if not bool(keep.any(-1).all()):
            raise b.fail(fx, "an attention mask with a fully masked row")
        if bool(keep.all()):
            return None  # nothing masked
    return keep


def _at(fx) -> str:
    """The path of the module whose forward made the call (its label's stem), else the node."""
    if fx.meta.get("ringlet_label"):  # torch.export's reading
        return fx.meta["ringlet_label"]
    stack = fx.meta.get("nn_module_stack") or {}  # torch.fx's
    paths = [v[0] if isinstance(v, tuple) else k for k, v in stack.items()]
    return paths[-1] if paths and paths[-1] else fx.name


def lower_softmax(b, fx, mod=None) -> None:
    """softmax over the last axis inside the model; the model's last softmax (over its logits)
    is stripped and applied by the client."""
    users = list(fx.users)
    log = isinstance(mod, nn.LogSoftmax) or fx.target in (F.log_softmax, torch.log_softmax, "log_softmax")
    dim = mod.dim if mod is not None else b.arg(fx, 1, "dim", None)
    rank = len(b.shape(fx)) + 1
    if dim is None:
        raise b.fail(fx, "a softmax without dim (torch's implicit choice): give dim=-1")
    if dim % rank == 0:
        raise b.fail(fx, "a softmax over the batch axis (give dim=-1)")
    if len(users) == 1 and users[0].op == "output":
        b.postprocess = {"op": "log_softmax" if log else "softmax", "dim": int(dim % rank)}
        b.alias_to(fx, b.src(b.tensor_args(fx)[0]))
        return
    if log:
        raise b.fail(fx, "a log-softmax inside the model has no secure form; ringlet runs it only "
                         "as the last layer (applied by the client to its logits)")
    if dim % rank != rank - 1:
        raise b.fail(fx, f"a softmax over axis {dim} inside the model: ringlet's runs over the "
                         f"last axis (move the axis last first)")
    b.emit(fx, "softmax", [b.tensor_args(fx)[0]], fx.target if mod is not None else f"{_at(fx)}.softmax",
           keep=None)


def lower_sdpa(b, fx) -> None:
    """F.scaled_dot_product_attention as softmax(q·kᵀ·scale, mask)·v: two products of secret
    tensors, a public scale, the softmax on shares (no dropout: inference)."""
    names = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")
    args = {n: (fx.args[i] if i < len(fx.args) else fx.kwargs.get(n)) for i, n in enumerate(names)}
    q, k, v = args["query"], args["key"], args["value"]
    if not all(b.is_tensor(t) for t in (q, k, v)):
        raise b.fail(fx, "attention with public queries, keys or values: give all three from the input")
    if args["attn_mask"] is not None and b.is_tensor(args["attn_mask"]):
        raise b.fail(fx, "an attention mask computed from the secret input")
    if b.value(args["dropout_p"]) not in (None, 0, 0.0):
        raise b.fail(fx, "attention dropout at inference (call model.eval())")
    if b.value(args["enable_gqa"]):
        raise b.fail(fx, "grouped-query attention (enable_gqa) is not supported yet")
    qs, ks = b.shape(q), b.shape(k)
    at = _at(fx)
    scale = b.value(args["scale"])
    scale = 1.0 / math.sqrt(qs[-1]) if scale is None else float(scale)
    kt = emit_gather(b, fx, k, lambda t: t.transpose(-2, -1), f"{at}.kT", f"{fx.name}_kT")
    scores_shape = (*qs[:-1], ks[-2])
    scores = b.emit(fx, "matmul", [q, kt], f"{at}.scores", node_name=f"{fx.name}_scores",
                    node_shape=scores_shape, inner=int(qs[-1]))
    scaled = b.emit(fx, "affine", [scores.name], f"{at}.scale", node_name=f"{fx.name}_scaled",
                    node_shape=scores_shape, scale=torch.tensor(scale, dtype=torch.float64), shift=None)
    keep = _keep_from(b, fx, b.value(args["attn_mask"]), scores_shape, bool(b.value(args["is_causal"])))
    probs = b.emit(fx, "softmax", [scaled.name], f"{at}.softmax", node_name=f"{fx.name}_softmax",
                   node_shape=scores_shape, keep=keep)
    b.emit(fx, "matmul", [probs.name, v], f"{at}.values", inner=int(ks[-2]))


def register(reg: Registry) -> None:
    reg.op(Softmax())
    reg.module((nn.Softmax, nn.LogSoftmax), lower_softmax)
    reg.function((F.softmax, F.log_softmax, torch.softmax, torch.log_softmax), lower_softmax)
    reg.method(("softmax", "log_softmax"), lower_softmax)
    reg.aten_op("softmax", torch.softmax)
    reg.aten_op("_softmax", torch.softmax, adapt=lambda n, a, k: (a[:2], {}))
    reg.aten_op("log_softmax", torch.log_softmax)
    reg.aten_op("_log_softmax", torch.log_softmax, adapt=lambda n, a, k: (a[:2], {}))
    reg.function((F.scaled_dot_product_attention,), lower_sdpa)
    reg.aten_op("scaled_dot_product_attention", F.scaled_dot_product_attention)
