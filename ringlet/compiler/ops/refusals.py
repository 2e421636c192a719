"""What ringlet knowingly does not run yet, each with a way out the error message suggests."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ringlet.compiler.ops.base import Registry

_NORM = ("normalising by a secret standard deviation over other axes than the last is not "
         "supported (LayerNorm and RMSNorm over the last axis are); use BatchNorm (folded into the "
         "convolutions at no cost) or LayerNorm over the last axis")
_EMBED = ("a lookup by a secret index has no cheap secure form; look the embedding up on the client "
          "(it holds the ids) and make the vectors the model's input")
_ATTENTION = ("torch.nn's fused attention modules are not lowered yet; write the attention with "
              "F.scaled_dot_product_attention or q @ k.transpose(-2, -1) and softmax")
_RECURRENT = "recurrent layers are not supported yet (they loop over secret time steps)"
_NONLINEAR = ("no cheap secure form; compute it on the client after the private part, or replace it "
              "by a polynomial (ringlet.poly)")
_ORDER = "the result depends on the order of secret values; the client can compute it on the logits"


def register(reg: Registry) -> None:
    reg.refuse((nn.GroupNorm, nn.InstanceNorm1d, nn.InstanceNorm2d, nn.LocalResponseNorm,
                F.group_norm, F.instance_norm, F.normalize, torch.std, torch.var, "norm", "std",
                "var"), _NORM)
    reg.refuse((nn.EmbeddingBag,), _EMBED)
    reg.refuse((nn.MultiheadAttention, nn.Transformer, nn.TransformerEncoderLayer,
                nn.TransformerDecoderLayer), _ATTENTION)
    reg.refuse((nn.RNN, nn.LSTM, nn.GRU, nn.RNNCell, nn.LSTMCell, nn.GRUCell), _RECURRENT)
    reg.refuse((torch.exp, torch.log, torch.sqrt, torch.rsqrt, torch.reciprocal, "exp", "log", "sqrt",
                "rsqrt", "reciprocal"), _NONLINEAR)
    reg.refuse((torch.argmax, torch.argmin, torch.topk, torch.sort, "argmax", "argmin", "topk", "sort"),
               _ORDER)
