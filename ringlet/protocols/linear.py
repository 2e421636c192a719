"""Linear layers with public weights: local on each share, no communication (0 rounds, 0 bits).

conv(Σ x_i, w) = Σ conv(x_i, w) mod 2^64, so each server applies the layer to its own share. The
only difficulty is speed: torch has no fast exact int64 convolution on CPU. Two exact backends:

``int64``   torch's own int64 convolution/matmul (wrap-around arithmetic; exact mod 2^64).
``limbs``   split the share into L signed limbs of b bits, x = Σ_j x_j·2^(b·j), run one float64
            convolution over all limbs (stacked on the batch axis) and recombine mod 2^64. Exact
            because every partial sum is an integer below 2^53: b is chosen from the weights so that
            2^(b−1) · max_o Σ|w_o| < 2^53 (Σ over one output's fan-in, after BatchNorm folding).

The product carries x.frac + w_frac fractional bits; the caller truncates.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ringlet.sharing import ArithmeticShare, ShareError, check_product_frac

BACKENDS = ("int64", "limbs")


def limb_bits(weight: torch.Tensor) -> int:
    """Widest limb b (≤ 32) for which float64 convolutions with ``weight`` stay exact."""
    w = weight.to(torch.float64).abs()
    l1 = float(w.reshape(w.shape[0], -1).sum(1).max()) if w.numel() else 0.0
    if l1 == 0:
        return 32
    b = int(math.floor(53 - math.log2(l1))) + 1  # 2^(b-1) * l1 < 2^53
    while b > 1 and 2.0 ** (b - 1) * l1 >= 2.0 ** 53:
        b -= 1
    if b < 8:
        raise ShareError(f"weights too large for exact float64 limbs (max L1 norm {l1:.3g})")
    return min(b, 32)


def split_limbs(x: torch.Tensor, b: int) -> list[torch.Tensor]:
    """Balanced signed limbs: x ≡ Σ_j x_j·2^(b·j) (mod 2^64), |x_j| ≤ 2^(b−1)."""
    limbs = []
    rest = x
    n = math.ceil(64 / b)
    half = 1 << (b - 1)
    mask = (1 << b) - 1
    for _ in range(n - 1):
        low = ((rest + half) & mask) - half
        limbs.append(low)
        rest = (rest - low) >> b
    limbs.append(rest)
    return limbs


def _recombine(parts: torch.Tensor, n_limbs: int, b: int) -> torch.Tensor:
    out = None
    for j, part in enumerate(parts.chunk(n_limbs)):
        term = part.to(torch.int64) << (b * j) if j else part.to(torch.int64)
        out = term if out is None else out + term
    return out


def exact_conv2d(x: torch.Tensor, w: torch.Tensor, stride=1, padding=0, dilation=1, groups=1,
                 backend: str = "int64", bits: int | None = None) -> torch.Tensor:
    """conv2d of int64 tensors, exact modulo 2^64."""
    if backend == "int64":
        return F.conv2d(x, w, None, stride, padding, dilation, groups)
    if backend == "limbs":
        b = bits or limb_bits(w)
        limbs = split_limbs(x, b)
        y = F.conv2d(torch.cat(limbs).to(torch.float64), w.to(torch.float64), None, stride,
                     padding, dilation, groups)
        return _recombine(y, len(limbs), b)
    raise ValueError(f"unknown backend {backend!r}; use one of {BACKENDS}")


def exact_linear(x: torch.Tensor, w: torch.Tensor, backend: str = "int64",
                 bits: int | None = None) -> torch.Tensor:
    """x @ w.T of int64 tensors, exact modulo 2^64."""
    if backend == "int64":
        return x @ w.t()
    if backend == "limbs":
        b = bits or limb_bits(w)
        limbs = split_limbs(x, b)
        y = torch.cat(limbs).to(torch.float64) @ w.to(torch.float64).t()
        return _recombine(y, len(limbs), b)
    raise ValueError(f"unknown backend {backend!r}; use one of {BACKENDS}")


def conv2d_public(x: ArithmeticShare, weight: torch.Tensor, bias: torch.Tensor | None = None,
                  stride=1, padding=0, dilation=1, groups: int = 1, w_frac: int = 16,
                  backend: str = "int64") -> ArithmeticShare:
    """[conv2d(x, W) + b] for public encoded weights (int64, ``w_frac`` fractional bits).

    ``bias`` must be encoded at ``x.frac + w_frac`` fractional bits; party 0 adds it.
    """
    if weight.dtype != torch.int64:
        raise ShareError(f"conv2d_public: weights must be encoded int64, got {weight.dtype}")
    check_product_frac("conv2d_public", x.frac, w_frac)
    if len(x.shape) != 4 or x.shape[1] != weight.shape[1] * groups:
        raise ShareError(f"conv2d_public: input {tuple(x.shape)} does not fit weights "
                         f"{tuple(weight.shape)} (groups={groups})")
    y = exact_conv2d(x.data, weight, stride, padding, dilation, groups, backend)
    if bias is not None and x.party == 0:
        y = y + bias.view(1, -1, 1, 1)
    return ArithmeticShare(y, x.party, x.frac + w_frac)


def linear_public(x: ArithmeticShare, weight: torch.Tensor, bias: torch.Tensor | None = None,
                  w_frac: int = 16, backend: str = "int64") -> ArithmeticShare:
    """[x @ Wᵀ + b] for public encoded weights (out×in), bias at ``x.frac + w_frac`` bits."""
    if weight.dtype != torch.int64:
        raise ShareError(f"linear_public: weights must be encoded int64, got {weight.dtype}")
    check_product_frac("linear_public", x.frac, w_frac)
    if x.shape[-1] != weight.shape[1]:
        raise ShareError(f"linear_public: input {tuple(x.shape)} does not fit weights "
                         f"{tuple(weight.shape)}")
    y = exact_linear(x.data, weight, backend)
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
    truncation (see :mod:`ringlet.protocols.truncation`)."""
    from ringlet.protocols.truncation import truncate
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
