"""Token embeddings: the client looks its own token ids up in the public table and shares the
vectors; the ids never leave the client. The lookup becomes the graph's ``input`` node and the
table the graph's ``preprocess`` (applied by the client before sharing)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ringlet.compiler.ops.base import Registry

_ELSEWHERE = ("a lookup by a secret index has no cheap secure form; ringlet's client looks up the "
              "model's token ids itself (an embedding applied directly to the integer input), "
              "not an embedding of a computed index")


def _lookup(b, fx, ids, weight, padding_idx, max_norm) -> None:
    if not (isinstance(ids, torch.fx.Node) and ids.op == "placeholder"):
        raise b.fail(fx, _ELSEWHERE)
    if max_norm is not None:
        raise b.fail(fx, "an embedding with max_norm (it rewrites the table in place)")
    if b.preprocess is not None:
        raise b.fail(fx, "a second lookup of the token ids: ringlet's client looks them up once "
                         "(sum the tables into one, or look the second one up in the first)")
    table = torch.as_tensor(weight).detach().to(torch.float64).clone()
    b.preprocess = {"op": "embedding", "weight": table, "ids_shape": list(b.shape(ids))}
    b.emit(fx, "input", [], "input")


def lower_embedding_module(b, fx, mod) -> None:
    _lookup(b, fx, fx.args[0], mod.weight, mod.padding_idx, mod.max_norm)


def lower_embedding(b, fx) -> None:
    _lookup(b, fx, fx.args[0] if fx.args else fx.kwargs["input"], b.arg(fx, 1, "weight"),
            b.arg(fx, 2, "padding_idx"), b.arg(fx, 3, "max_norm"))


def register(reg: Registry) -> None:
    reg.module(nn.Embedding, lower_embedding_module)
    reg.function((F.embedding,), lower_embedding)
    reg.aten_op("embedding", F.embedding, adapt=lambda n, a, k: ((a[1], a[0], *a[2:3]), {}))
