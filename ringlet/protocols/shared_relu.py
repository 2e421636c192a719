"""Shared ReLU (gReLU): one DReLU per group of activations, then one select per activation.

Steps, for N×C×H×W activations in G groups per channel:
  1. the group's decision value z_g = v_gᵀ x_g, local: a gather for one-hot weights (the patch
     centre), else public fixed-point weights and a scatter-add (z carries f more fractional bits);
  2. one DReLU per group — exact or on bits [k:m] (:mod:`ringlet.protocols.relu`);
  3. the decision bit of each group expanded to its positions (local on XOR shares), XORed with the
     layer's public inference-noise flips if any (local: free, unlike a multiplication);
  4. one fused select per activation, with the truncation of a conv output folded in.
Cost per server per element, 2 servers: the DReLU's bits × N·C·G plus 65 bits × N·C·H·W; rounds as
one ReLU (the select's 64-bit opening travels with the first circuit round). p ≥ 3 as for ReLU.
"""

from __future__ import annotations

import torch

from ringlet import ring
from ringlet.protocols.base import input_bits
from ringlet.protocols.catalog import sign_families
from ringlet.protocols.convert import drelu_two, local_bits, reshare_to_two, select_finish, select_prepare
from ringlet.protocols.relu import ReluSpec
from ringlet.session import Session
from ringlet.sharing import ArithmeticShare


def group_values(x: ArithmeticShare, groups: torch.Tensor, weight: torch.Tensor,
                 num_groups: int, w_frac: int) -> ArithmeticShare:
    """Shares of z = v_gᵀ x_g (N×C×G) for public encoded weights (``w_frac`` fractional bits)."""
    n, c = x.shape[0], x.shape[1]
    idx = groups.view(1, c, -1).expand(n, c, -1)
    flat = (x.data * weight).reshape(n, c, -1)
    z = torch.zeros(n, c, num_groups, dtype=torch.int64).scatter_add_(2, idx, flat)
    return ArithmeticShare(z, x.party, x.frac + w_frac)


def representatives(x: ArithmeticShare, onehot: torch.Tensor, groups: torch.Tensor,
                    num_groups: int) -> ArithmeticShare:
    """Shares of the representative activation of every group (N×C×G), for one-hot weights."""
    n, c = x.shape[0], x.shape[1]
    pos = torch.zeros(c, num_groups, dtype=torch.int64)
    ch, flat = (onehot.view(c, -1) > 0).nonzero(as_tuple=True)
    pos[ch, groups.view(c, -1)[ch, flat]] = flat
    z = x.data.reshape(n, c, -1).gather(2, pos.view(1, c, -1).expand(n, c, -1))
    return ArithmeticShare(z, x.party, x.frac)


def grelu(sess: Session, x: ArithmeticShare, groups: torch.Tensor, weight_enc: torch.Tensor | None,
          onehot: torch.Tensor | None, num_groups: int, spec: ReluSpec, out_frac: int,
          flips: torch.Tensor | None = None) -> ArithmeticShare:
    """gReLU on this server's share of x; the output carries ``out_frac`` fractional bits."""
    sess.require_server("grelu")
    n, c = x.shape[0], x.shape[1]
    shift = x.frac - out_frac
    if onehot is not None:
        z = representatives(x, onehot, groups, num_groups)
    elif weight_enc is not None:
        z = group_values(x, groups, weight_enc, num_groups, sess.fixed.frac_bits)
    else:
        raise ValueError("grelu needs the groups' weights or their one-hot representatives")
    z_shift = z.frac - out_frac
    k, m = input_bits(spec, z_shift, sess.ring.bits) if spec.width else (0, 0)
    pieces = [(local_bits(z.data, k, m), k - m)] if spec.width else []
    shared = reshare_to_two(sess, pieces + [(x.data.reshape(-1), sess.ring.bits)])
    if shared is None:
        return ArithmeticShare(torch.zeros_like(x.data), x.party, out_frac)
    x2 = shared[-1].view(x.shape)
    mat, item = select_prepare(sess, x2, shift)
    if spec.width:
        bit, extra = drelu_two(sess, shared[0], k - m, sign_families()[spec.sign],
                               piggyback=[item] if k - m >= 2 else None)
        decisions = ring.unpack_plane(bit[0], z.numel()).view(n, c, num_groups)
    else:  # identity: every decision is 1
        extra = []
        decisions = torch.full((n, c, num_groups), int(sess.rank == 0), dtype=torch.int64)
    per_pos = decisions.gather(2, groups.view(1, c, -1).expand(n, c, -1))
    if flips is not None and sess.rank == 0:
        per_pos = per_pos ^ flips.view(1, c, -1).to(torch.int64)
    plane = ring.pack_plane(per_pos).view(1, -1)
    return ArithmeticShare(select_finish(sess, plane, x2, mat, item, extra, shift), x.party, out_frac)
