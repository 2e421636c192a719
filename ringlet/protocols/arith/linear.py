"""Linear layers with public weights: local on each share, no communication (0 rounds, 0 bits).

conv(Σ x_i, w) = Σ conv(x_i, w) mod 2^ℓ, so each server applies the layer to its own share. The
only difficulty is speed: torch has no fast exact int64 convolution on CPU. The exact backends
(``int64``, and the float64 limb backends ``limbs``, ``limbs-cl``, ``limbs-unfold``) are in
:mod:`ringlet.protocols.kernels.backends`; all give the same result modulo 2^ℓ, bit for bit, and
:mod:`ringlet.protocols.tuning.linear` picks the fastest per layer shape by measurement.

The product carries x.frac + w_frac fractional bits; the caller truncates.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ringlet.protocols.arith.truncation import truncate
from ringlet.protocols.kernels.backends import (
    BACKENDS,
    exact_conv2d,
    exact_linear,
    limb_plan,
    split_limbs,
)
from ringlet.sharing import ArithmeticShare, ShareError, check_product_frac

__all__ = ["BACKENDS", "avg_pool2d", "conv2d_public", "exact_conv2d", "exact_linear",
           "global_avg_pool", "limb_plan", "linear_public", "scale_public", "split_limbs",
           "sum_pool2d"]


def conv2d_public(x: ArithmeticShare, weight: torch.Tensor, bias: torch.Tensor | None = None,
                  stride=1, padding=0, dilation=1, groups: int = 1, w_frac: int = 16,
                  backend: str = "int64", ring_bits: int = 64) -> ArithmeticShare:
    """[conv2d(x, W) + b] for public encoded weights (int64, ``w_frac`` fractional bits), exact
    modulo 2^ring_bits with any backend of :data:`BACKENDS`.

    ``bias`` must be encoded at ``x.frac + w_frac`` fractional bits; party 0 adds it.
    """
    if weight.dtype != torch.int64:
        raise ShareError(f"conv2d_public: weights must be encoded int64, got {weight.dtype}")
    check_product_frac("conv2d_public", x.frac, w_frac)
    if len(x.shape) != 4 or x.shape[1] != weight.shape[1] * groups:
        raise ShareError(f"conv2d_public: input {tuple(x.shape)} does not fit weights "
                         f"{tuple(weight.shape)} (groups={groups})")
    y = exact_conv2d(x.data, weight, stride, padding, dilation, groups, backend, ring_bits=ring_bits)
    if bias is not None and x.party == 0:
        y = y + bias.view(1, -1, 1, 1)
    return ArithmeticShare(y, x.party, x.frac + w_frac)


def linear_public(x: ArithmeticShare, weight: torch.Tensor, bias: torch.Tensor | None = None,
                  w_frac: int = 16, backend: str = "int64", ring_bits: int = 64) -> ArithmeticShare:
    """[x @ Wᵀ + b] for public encoded weights (out×in), bias at ``x.frac + w_frac`` bits."""
    if weight.dtype != torch.int64:
        raise ShareError(f"linear_public: weights must be encoded int64, got {weight.dtype}")
    check_product_frac("linear_public", x.frac, w_frac)
    if x.shape[-1] != weight.shape[1]:
        raise ShareError(f"linear_public: input {tuple(x.shape)} does not fit weights "
                         f"{tuple(weight.shape)}")
    y = exact_linear(x.data, weight, backend, ring_bits=ring_bits)
    if bias is not None and x.party == 0:
        y = y + bias
    return ArithmeticShare(y, x.party, x.frac + w_frac)


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def sum_pool2d(x: ArithmeticShare, kernel, stride=None, padding=0) -> ArithmeticShare:
    """Sum over k×k windows (local, exact): a depthwise convolution with a kernel of ones."""
    if len(x.shape) != 4:
        raise ShareError(f"sum_pool2d: expected N×C×H×W, got {tuple(x.shape)}")
    kh, kw = _pair(kernel)
    stride = _pair(stride if stride is not None else kernel)
    c = x.shape[1]
    ones = torch.ones(c, 1, kh, kw, dtype=torch.int64)
    return ArithmeticShare(F.conv2d(x.data, ones, None, stride, _pair(padding), 1, c), x.party, x.frac)


def scale_public(sess, x: ArithmeticShare, factor: float) -> ArithmeticShare:
    """Multiply by a public real in (0, 1]: an exact shift when ``factor`` is 2^−k, otherwise a
    multiplication by the ``f``-bit integer round(factor·2^(k+f−1)) ∈ [2^(f−1), 2^f] followed by one
    truncation of k+f−1 bits (relative precision 2^−f, product below |x|·2^f). Cost: one
    truncation (see :mod:`ringlet.protocols.arith.truncation`)."""
    if not 0 < factor <= 1:
        raise ValueError(f"scale_public: factor must be in (0, 1], got {factor}")
    if factor == 1:
        return x
    k = -math.floor(math.log2(factor))  # factor * 2^k in [1, 2)
    if factor * (1 << k) == 1:
        return truncate(sess, ArithmeticShare(x.data, x.party, x.frac + k), k)
    f = sess.fixed.frac_bits
    bits = k + f - 1
    return truncate(sess, x.mul_public(int(round(factor * (1 << bits))), frac=bits), bits)


def avg_pool2d(sess, x: ArithmeticShare, kernel, stride=None, padding=0) -> ArithmeticShare:
    """Average over k×k windows (zero padding counted, as torch's default count_include_pad)."""
    kh, kw = _pair(kernel)
    return scale_public(sess, sum_pool2d(x, kernel, stride, padding), 1.0 / (kh * kw))


def global_avg_pool(sess, x: ArithmeticShare) -> ArithmeticShare:
    """Mean over the spatial axes of N×C×H×W, keeping N×C×1×1."""
    h, w = x.shape[2], x.shape[3]
    summed = ArithmeticShare(x.data.sum((2, 3), keepdim=True), x.party, x.frac)
    return scale_public(sess, summed, 1.0 / (h * w))
