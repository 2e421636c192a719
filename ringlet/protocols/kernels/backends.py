"""Exact int64 convolutions and matrix products modulo 2^ℓ, on torch's fast float64 paths.

A share is an int64 tensor whose low ℓ bits matter (ℓ = ring bits, 32..64); a public-weight layer
is applied to it locally and only has to be right modulo 2^ℓ. Backends (:data:`BACKENDS`):

``int64``         torch's own int64 conv2d / matmul (wrap-around arithmetic: exact mod 2^64).
``limbs``         split into signed limbs, one float64 conv2d over all limbs (NCHW) and recombine.
``limbs-cl``      the same float64 conv2d in channels_last memory format.
``limbs-unfold``  im2col (``F.unfold``) and one float64 matrix product: batched over the stacked
                  batch (W @ cols) for output planes of ≥ 64 positions, else one 2-D product of all
                  positions; a 1×1 conv needs no im2col. Groups = 1 (grouped: as ``limbs``).

For :func:`exact_linear` every ``limbs*`` backend is the same single float64 matmul. All limbs of a
share are stacked on the batch axis and go through ONE float64 call. Every backend gives the same
result modulo 2^ℓ, bit for bit; which is fastest depends on the machine and the layer's shape
(:mod:`ringlet.protocols.tuning.linear` measures it).

Limbs. Let r be the centered residue of x modulo 2^ℓ, r ∈ [−2^(ℓ−1), 2^(ℓ−1)) (the low ℓ bits,
sign-extended), and n = ⌈ℓ/b⌉. For j < n−1 the balanced limb is
x_j = ((r_j + 2^(b−1)) mod 2^b) − 2^(b−1) ∈ [−2^(b−1), 2^(b−1)) and r_{j+1} = (r_j − x_j)/2^b
= ⌊(r_j + 2^(b−1))/2^b⌋, with r_0 = r; the top limb is x_{n−1} = r_{n−1}. So r = Σ_j x_j·2^(b·j).
Bound of the top limb: if |r_j| ≤ 2^e with e ≥ b then |r_{j+1}| ≤ ⌊2^(e−b) + 1/2⌋ = 2^(e−b); from
|r_0| ≤ 2^(ℓ−1) this gives |r_j| ≤ 2^(ℓ−1−b·j) (each step has e = ℓ−1−b·j ≥ b because b·(n−1) ≤
ℓ−1), hence |x_{n−1}| ≤ 2^(ℓ−1−b·(n−1)) ≤ 2^(b−1) since ℓ ≤ b·n. The bound is attained (ℓ = 64,
b = 32, r = 2^63 − 2^31: x_0 = −2^31, x_1 = 2^31). (At ℓ = 64 the first difference r − x_0 may be
2^63, which wraps to −2^63 in int64: the next rest is then −2^(63−b), within the same bound and
≡ the true one modulo 2^(64−b), so Σ_j x_j·2^(b·j) ≡ r (mod 2^64) still holds.)

Exactness. Every limb has |x_j| ≤ 2^(b−1); every product w·x_j and every partial sum of one
output's fan-in, in any order or blocking the float64 kernel uses, is an integer of magnitude at
most 2^(b−1)·L1, where L1 = max over outputs of Σ|w| (the integer, ring-unit weights). float64
holds every integer up to 2^53 exactly and rounds to nearest, so each operation is exact when

    2^(b−1) · L1 < 2^53,  i.e.  L1 < 2^(54−b)

(e.g. with 32-bit limbs, 2 limbs at ℓ = 64 or 1 limb at ℓ = 32, every partial sum stays below
2^53 when L1 < 2^22; 3 limbs at ℓ = 64 use 22-bit limbs and need L1 < 2^32). The limb count is the
fewest the weights allow: b_max = the widest b with L1 < 2^(54−b), n = ⌈ℓ/b_max⌉, and then
b = ⌈ℓ/n⌉ ≤ b_max (same count, more margin). A b_max below 8 (L1 ≥ 2^46) is refused (ShareError).
Results are recombined as Σ_j y_j·2^(b·j) in wrapping int64: exact modulo 2^64, hence 2^ℓ.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ringlet.ring import Ring
from ringlet.sharing import ShareError

BACKENDS = ("int64", "limbs", "limbs-cl", "limbs-unfold")
MIN_LIMB_BITS = 8
BMM_MIN_POSITIONS = 64  # limbs-unfold: a batched product from this many output positions on


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"unknown linear backend {backend!r}; use one of {', '.join(BACKENDS)}")
    return backend


# -- weights: the L1 norm and float64 forms (small next to the activations: computed per call) -----
def weight_l1(w: torch.Tensor) -> float:
    """max over outputs of Σ|w| (float64; exact while it matters, below 2^53)."""
    a = w.detach().to(torch.float64).abs()
    return float(a.reshape(a.shape[0], -1).sum(1).max()) if a.numel() else 0.0


def _float_weight(w: torch.Tensor, form: str) -> torch.Tensor:
    """w in float64, NCHW (``nchw``) or channels_last (``cl``)."""
    w64 = w.detach().to(torch.float64)
    return w64.contiguous(memory_format=torch.channels_last) if form == "cl" else w64


def limb_plan(w: torch.Tensor, ring_bits: int = 64, bits: int | None = None) -> tuple[int, int]:
    """(number of limbs n, limb width b) for exact float64 products with the int64 weights ``w``."""
    if not 1 <= ring_bits <= 64:
        raise ValueError(f"ring_bits must be in 1..64, got {ring_bits}")
    l1 = weight_l1(w)
    if bits is not None:
        if not 1 <= bits <= ring_bits or 2.0 ** (bits - 1) * l1 >= 2.0 ** 53:
            raise ShareError(f"{bits}-bit limbs are not exact for weights of L1 norm {l1:.6g} "
                             f"(need 2^(b-1)·L1 < 2^53)")
        return math.ceil(ring_bits / bits), bits
    if l1 == 0:
        return 1, ring_bits
    # the widest b with 2^(b-1)·L1 < 2^53 (exact comparisons: scaling by a power of two)
    b_max = next((b for b in range(64, 0, -1) if 2.0 ** (b - 1) * l1 < 2.0 ** 53), 0)
    if b_max >= ring_bits:
        return 1, ring_bits
    if b_max < MIN_LIMB_BITS:
        raise ShareError(f"weights too large for exact float64 limbs: max L1 norm {l1:.6g} "
                         f"(ring units) ≥ 2^{54 - MIN_LIMB_BITS}; use backend int64")
    n = math.ceil(ring_bits / b_max)
    return n, math.ceil(ring_bits / n)


def split_limbs(x: torch.Tensor, b: int, ring_bits: int = 64) -> list[torch.Tensor]:
    """Balanced signed limbs of the centered residue: x ≡ Σ_j x_j·2^(b·j) (mod 2^ℓ), |x_j| ≤ 2^(b−1)."""
    rest = Ring(ring_bits).reduce(x)
    n = math.ceil(ring_bits / b)
    if n == 1:
        return [rest]
    half, mask = 1 << (b - 1), (1 << b) - 1
    limbs = []
    for _ in range(n - 1):
        low = ((rest + half) & mask) - half
        limbs.append(low)
        rest = (rest - low) >> b
    limbs.append(rest)
    return limbs


def _stacked(x: torch.Tensor, n: int, b: int, ring_bits: int, channels_last: bool = False):
    """The n limbs as one float64 tensor, stacked on the batch axis: (n·N, ...)."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    out = torch.empty((n * x.shape[0], *x.shape[1:]), dtype=torch.float64, memory_format=fmt)
    size = x.shape[0]
    for j, limb in enumerate(split_limbs(x, b, ring_bits)):
        out[j * size:(j + 1) * size] = limb
    return out


def _recombine(parts: list[torch.Tensor], b: int) -> torch.Tensor:
    """Σ_j parts[j]·2^(b·j) in wrapping int64 (parts: float64 integers, any layout)."""
    out: torch.Tensor | None = None
    for j in reversed(range(len(parts))):
        term = parts[j].to(torch.int64, memory_format=torch.contiguous_format)
        out = term if out is None else (out << b).add_(term)
    if out is None:
        raise ValueError("_recombine: no parts")
    return out


def exact_conv2d(x: torch.Tensor, w: torch.Tensor, stride=1, padding=0, dilation=1, groups=1,
                 backend: str = "int64", bits: int | None = None,
                 ring_bits: int = 64) -> torch.Tensor:
    """conv2d of int64 tensors, exact modulo 2^ring_bits (int64 result; callers may reduce)."""
    check_backend(backend)
    if backend == "int64":
        return F.conv2d(x, w, None, stride, padding, dilation, groups)
    n, b = limb_plan(w, ring_bits, bits)
    batch = x.shape[0]
    if backend == "limbs-unfold" and groups == 1:
        return _conv_unfold(x, w, stride, padding, dilation, n, b, ring_bits)
    cl = backend == "limbs-cl"
    y = F.conv2d(_stacked(x, n, b, ring_bits, cl), _float_weight(w, "cl" if cl else "nchw"), None,
                 stride, padding, dilation, groups)
    return _recombine([y[j * batch:(j + 1) * batch] for j in range(n)], b)


def _conv_unfold(x, w, stride, padding, dilation, n, b, ring_bits) -> torch.Tensor:
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = w.shape[2:], _pair(stride), _pair(padding), _pair(dilation)
    batch, _, h, wd = x.shape
    oh = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    ow = (wd + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    xs = _stacked(x, n, b, ring_bits)
    if (kh, kw) == (1, 1) and (ph, pw) == (0, 0):  # a 1×1 conv: no im2col, a strided view
        cols = xs[:, :, ::sh, ::sw].permute(0, 2, 3, 1).reshape(-1, xs.shape[1])
    else:
        cols = F.unfold(xs, (kh, kw), (dh, dw), (ph, pw), (sh, sw))  # n·N, C·kh·kw, L
        if oh * ow >= BMM_MIN_POSITIONS:  # batched w @ cols: the output comes out NCHW
            y = torch.matmul(_float_weight(w, "nchw").reshape(w.shape[0], -1), cols)
            y = y.view(n, batch, w.shape[0], oh, ow)
            return _recombine([y[j] for j in range(n)], b)
        cols = cols.transpose(1, 2).reshape(-1, cols.shape[1])
    y = cols @ _float_weight(w, "nchw").reshape(w.shape[0], -1).t()  # NHWC rows
    y = y.view(n, batch, oh, ow, w.shape[0])
    return _recombine([y[j].permute(0, 3, 1, 2) for j in range(n)], b)


def exact_linear(x: torch.Tensor, w: torch.Tensor, backend: str = "int64",
                 bits: int | None = None, ring_bits: int = 64) -> torch.Tensor:
    """x @ w.T of int64 tensors, exact modulo 2^ring_bits (every limbs* backend: one matmul)."""
    check_backend(backend)
    if backend == "int64":
        return x @ w.t()
    n, b = limb_plan(w, ring_bits, bits)
    if x.dim() < 2:
        return exact_linear(x.reshape(1, -1), w, backend, bits, ring_bits).view(w.shape[0])
    batch = x.shape[0]
    y = _stacked(x, n, b, ring_bits) @ _float_weight(w, "nchw").t()
    return _recombine([y[j * batch:(j + 1) * batch] for j in range(n)], b)


__all__ = ["BACKENDS", "check_backend", "exact_conv2d", "exact_linear", "limb_plan",
           "split_limbs", "weight_l1"]
