"""The kinds of material every protocol family may ask for (see :mod:`ringlet.offline`).

Each kind is a :class:`~ringlet.offline.request.Params` (its request) and a
:class:`~ringlet.offline.request.Material` (what a holder gets), both frozen dataclasses below.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from ringlet import ring
from ringlet.offline.kind import Kind, last_kind
from ringlet.offline.request import Material, OfflineError, Params, Request
from ringlet.prng import AesCtrStream

_OPS = ("mul", "matmul", "conv2d", "square")
Tensor = torch.Tensor


# -- requests -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Beaver(Params):
    """A Beaver triple for ``op`` ∈ {mul, matmul, conv2d, square} of operands shaped ``x_shape``,
    ``y_shape``; ``extra`` the convolution's stride, padding, dilation (2 each) and groups. A
    square's triple has b = a (c = a²): one opening instead of two."""

    KIND = "beaver"
    op: str
    x_shape: tuple[int, ...]
    y_shape: tuple[int, ...]
    extra: tuple[int, ...] = ()

    def encode(self) -> tuple[int, ...]:
        return (_OPS.index(self.op), len(self.x_shape), *self.x_shape, len(self.y_shape),
                *self.y_shape, *self.extra)

    @classmethod
    def decode(cls, values: Sequence[int]) -> Beaver:
        v = [int(x) for x in values]
        try:
            nx = v[1]
            ny = v[2 + nx]
            if not 0 <= v[0] < len(_OPS) or nx < 0 or ny < 0 or 3 + nx + ny > len(v):
                raise IndexError
            return cls(_OPS[v[0]], tuple(v[2:2 + nx]), tuple(v[3 + nx:3 + nx + ny]), tuple(v[3 + nx + ny:]))
        except IndexError:
            raise OfflineError(f"beaver request: {v} is not (op, nx, x_shape, ny, y_shape, extra)") from None


@dataclass(frozen=True)
class _Planes(Params):
    """Material on ``planes`` bit planes of ``words`` 64-bit words."""

    planes: int
    words: int


@dataclass(frozen=True)
class And(_Planes):
    """AND triples."""

    KIND = "and"


@dataclass(frozen=True)
class And2(_Planes):
    """Two AND triples sharing operand a."""

    KIND = "and2"


@dataclass(frozen=True)
class Pand(_Planes):
    """A two-party AND of private inputs."""

    KIND = "pand"


@dataclass(frozen=True)
class B2A(Params):
    """``n`` random bits, XOR- and arithmetic-shared."""

    KIND = "b2a"
    n: int


@dataclass(frozen=True)
class Inject(Params):
    """``n`` random bits r with s and r·s, for a select."""

    KIND = "inject"
    n: int


@dataclass(frozen=True)
class Trunc(Params):
    """A truncation by ``f`` bits of a tensor shaped ``shape``."""

    KIND = "trunc"
    f: int
    shape: tuple[int, ...]


@dataclass(frozen=True)
class InjTrunc(Params):
    """A select of ``n`` values that also truncates by ``shift`` bits."""

    KIND = "injtrunc"
    n: int
    shift: int


@dataclass(frozen=True)
class Pim(Params):
    """ESPN's private-input products of degree ``degree`` on ``n`` elements."""

    KIND = "pim"
    n: int
    degree: int


@dataclass(frozen=True)
class Powers(Params):
    """Powers r … r^degree of a uniform r, ``n`` elements (``frac`` the fixed point's)."""

    KIND = "powers"
    n: int
    degree: int
    frac: int


# -- materials ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Triple(Material):
    a: Tensor
    b: Tensor
    c: Tensor


@dataclass(frozen=True)
class AndTriple(Triple):
    """An AND triple on bit planes: c = a ∧ b."""


@dataclass(frozen=True)
class AndPair(Material):
    a: Tensor
    b1: Tensor
    b2: Tensor
    c1: Tensor
    c2: Tensor


@dataclass(frozen=True)
class PandShare(Material):
    """Holder 0 has u, holder 1 has v; both z with z0 ⊕ z1 = u ∧ v."""

    z: Tensor
    u: Tensor | None = None
    v: Tensor | None = None


@dataclass(frozen=True)
class RandomBits(Material):
    r_bits: Tensor
    r: Tensor


@dataclass(frozen=True)
class SelectMask(Material):
    r_bits: Tensor
    r: Tensor
    s: Tensor
    rs: Tensor


@dataclass(frozen=True)
class TruncMask(Material):
    r: Tensor
    msb: Tensor
    low: Tensor


@dataclass(frozen=True)
class SelectTruncMask(Material):
    r_bits: Tensor
    r: Tensor
    rb: Tensor
    msb: Tensor
    low: Tensor
    rb_low: Tensor
    rb_msb: Tensor


@dataclass(frozen=True)
class CrossProducts(Material):
    """``mask[a − 1]`` is this holder's α_a (or β_a); ``cross[(a, b)]`` its share of α_a·β_b."""

    mask: Tensor
    cross: dict[tuple[int, int], Tensor] = field(default_factory=dict)

    @classmethod
    def of(cls, parts: dict[str, Tensor]) -> CrossProducts:
        cross = {}
        for key, value in parts.items():
            if key.startswith("ab"):
                a, b = key[2:].split("_")
                cross[(int(a), int(b))] = value
        return cls(parts["mask"], cross)


@dataclass(frozen=True)
class RingPowers(Material):
    """``r[a − 1]`` is this holder's share of r^a."""

    r: tuple[Tensor, ...]

    @classmethod
    def of(cls, parts: dict[str, Tensor]) -> RingPowers:
        return cls(tuple(parts[f"r{a}"] for a in range(1, len(parts) + 1)))


# -- how each kind is drawn ------------------------------------------------------------------------
# draw(stream, req, index, corrected) -> dict of this holder's seeded tensors
# correct(parts, req, ring) -> dict of the last holder's corrected tensors (dealer only); every
# arithmetic value is only meaningful modulo 2^ℓ, and only ``trunc``/``injtrunc`` read the ring's
# sign bit and low bits


def beaver_op(op: str, extra: tuple):
    """The bilinear map of a Beaver triple on int64 ring tensors."""
    if op in ("mul", "square"):
        return lambda a, b: a * b
    if op == "matmul":
        return torch.matmul
    stride, padding, dilation, groups = extra[0:2], extra[2:4], extra[4:6], extra[6]
    return lambda a, b: torch.nn.functional.conv2d(a, b, None, stride, padding, dilation, groups)


def _out_shape(op, xs, ys, extra):
    f = beaver_op(op, extra)
    return tuple(f(torch.zeros(xs, dtype=torch.int64), torch.zeros(ys, dtype=torch.int64)).shape)


def _draw_beaver(s: AesCtrStream, req: Request[Beaver], index: int, corrected: bool) -> dict:
    p = req.params
    a = s.int64(p.x_shape)
    out = {"a": a, "b": a if p.op == "square" else s.int64(p.y_shape)}
    if not corrected:
        out["c"] = s.int64(_out_shape(p.op, p.x_shape, p.y_shape, p.extra))
    return out


def _correct_beaver(parts: list[dict], req: Request[Beaver], rng) -> dict:
    a = sum(p["a"] for p in parts)
    b = sum(p["b"] for p in parts)
    c = beaver_op(req.params.op, req.params.extra)(a, b)
    for p in parts[:-1]:
        c = c - p["c"]
    return {"c": c}


def _draw_and(s, req, index, corrected):
    w, nw = req.params.planes, req.params.words
    out = {"a": s.words((w, nw)), "b": s.words((w, nw))}
    if not corrected:
        out["c"] = s.words((w, nw))
    return out


def _xor_all(parts, key):
    acc = parts[0][key]
    for p in parts[1:]:
        acc = acc ^ p[key]
    return acc


def _correct_and(parts, req, rng):
    c = _xor_all(parts, "a") & _xor_all(parts, "b")
    for p in parts[:-1]:
        c = c ^ p["c"]
    return {"c": c}


def _draw_and2(s, req, index, corrected):
    w, nw = req.params.planes, req.params.words
    out = {"a": s.words((w, nw)), "b1": s.words((w, nw)), "b2": s.words((w, nw))}
    if not corrected:
        out["c1"], out["c2"] = s.words((w, nw)), s.words((w, nw))
    return out


def _correct_and2(parts, req, rng):
    a = _xor_all(parts, "a")
    c1, c2 = a & _xor_all(parts, "b1"), a & _xor_all(parts, "b2")
    for p in parts[:-1]:
        c1, c2 = c1 ^ p["c1"], c2 ^ p["c2"]
    return {"c1": c1, "c2": c2}


def _draw_pand(s, req, index, corrected):
    w, nw = req.params.planes, req.params.words
    if index == 0:
        return {"u": s.words((w, nw)), "z": s.words((w, nw))}
    return {"v": s.words((w, nw))} if corrected else {"v": s.words((w, nw)), "z": s.words((w, nw))}


def _correct_pand(parts, req, rng):
    return {"z": (parts[0]["u"] & parts[1]["v"]) ^ parts[0]["z"]}


def _bit_values(parts, n):
    return ring.unpack_plane(_xor_all(parts, "r_bits")[0], n)


def _draw_b2a(s, req, index, corrected):
    n = req.params.n
    out = {"r_bits": s.words((1, ring.num_words(n)))}
    if not corrected:
        out["r"] = s.int64(n)
    return out


def _correct_b2a(parts, req, rng):
    r = _bit_values(parts, req.params.n)
    for p in parts[:-1]:
        r = r - p["r"]
    return {"r": r}


def _draw_inject(s, req, index, corrected):
    out = _draw_b2a(s, req, index, corrected)
    out["s"] = s.int64(req.params.n)
    if not corrected:
        out["rs"] = s.int64(req.params.n)
    return out


def _correct_inject(parts, req, rng):
    r = _bit_values(parts, req.params.n)
    rs = r * sum(p["s"] for p in parts)
    r_last = r
    for p in parts[:-1]:
        r_last, rs = r_last - p["r"], rs - p["rs"]
    return {"r": r_last, "rs": rs}


def _draw_trunc(s, req, index, corrected):
    shape = req.params.shape
    out = {"r": s.int64(shape)}
    if not corrected:
        out["msb"], out["low"] = s.int64(shape), s.int64(shape)
    return out


def _correct_trunc(parts, req, rng):
    f = req.params.f
    r = sum(p["r"] for p in parts)
    msb = rng.msb(r)
    low = rng.low(r) >> f
    for p in parts[:-1]:
        msb, low = msb - p["msb"], low - p["low"]
    return {"msb": msb, "low": low}


def _draw_injtrunc(s, req, index, corrected):
    n = req.params.n
    out = {"r_bits": s.words((1, ring.num_words(n))), "r": s.int64(n)}
    if not corrected:
        for key in ("rb", "msb", "low", "rb_low", "rb_msb"):
            out[key] = s.int64(n)
    return out


def _correct_injtrunc(parts, req, rng):
    n, d = req.params.n, req.params.shift
    rb = _bit_values(parts, n)
    low = parts[0]["r"] + parts[1]["r"]  # r, then (in place: fresh memory is dear) its low bits
    for p in parts[2:]:
        low += p["r"]
    msb = torch.bitwise_right_shift(low, rng.bits - 1)
    msb &= 1
    low &= ring.mask_bits(rng.bits - 1)
    low >>= d
    out = {"rb_low": rb * low, "rb_msb": rb * msb, "rb": rb, "msb": msb, "low": low}
    for p in parts[:-1]:
        for k, v in out.items():
            v -= p[k]
    return out


def _pim_pairs(d: int):
    return [(a, j - a) for j in range(2, d + 1) for a in range(1, j)]


def _draw_pim(s, req, index, corrected):
    n, d = req.params.n, req.params.degree
    out = {"mask": s.int64((d - 1, n))}
    if not corrected:
        for a, b in _pim_pairs(d):
            out[f"ab{a}_{b}"] = s.int64(n)
    return out


def _correct_pim(parts, req, rng):
    d = req.params.degree
    alpha, beta = parts[0]["mask"], parts[1]["mask"]
    return {f"ab{a}_{b}": alpha[a - 1] * beta[b - 1] - parts[0][f"ab{a}_{b}"] for a, b in _pim_pairs(d)}


def _draw_powers(s, req, index, corrected):
    n, d = req.params.n, req.params.degree
    out = {"r1": s.int64(n)}
    if not corrected:
        for a in range(2, d + 1):
            out[f"r{a}"] = s.int64(n)
    return out


def _correct_powers(parts, req, rng):
    d = req.params.degree
    r = sum(p["r1"] for p in parts)
    out, power = {}, r
    for a in range(2, d + 1):
        power = power * r
        out[f"r{a}"] = power - sum(p[f"r{a}"] for p in parts[:-1])
    return out



def core_kinds() -> dict[str, Kind]:
    """The core kinds by name, in the order that fixes their wire ids."""
    return {
        "beaver": last_kind(Beaver, Triple, _draw_beaver, _correct_beaver, ("c",)),
        "and": last_kind(And, AndTriple, _draw_and, _correct_and, ("c",), raw=True),
        "and2": last_kind(And2, AndPair, _draw_and2, _correct_and2, ("c1", "c2"), raw=True),
        "pand": last_kind(Pand, PandShare, _draw_pand, _correct_pand, ("z",), raw=True),
        "b2a": last_kind(B2A, RandomBits, _draw_b2a, _correct_b2a, ("r",)),
        "inject": last_kind(Inject, SelectMask, _draw_inject, _correct_inject, ("r", "rs")),
        "trunc": last_kind(Trunc, TruncMask, _draw_trunc, _correct_trunc, ("low", "msb")),
        "injtrunc": last_kind(InjTrunc, SelectTruncMask, _draw_injtrunc, _correct_injtrunc,
                              ("low", "msb", "rb", "rb_low", "rb_msb")),
        "pim": last_kind(Pim, CrossProducts, _draw_pim, _correct_pim,
                         lambda req: tuple(f"ab{a}_{b}" for a, b in _pim_pairs(req.params.degree))),
        "powers": last_kind(Powers, RingPowers, _draw_powers, _correct_powers,
                            lambda req: tuple(f"r{a}" for a in range(2, req.params.degree + 1))),
    }


def beaver_request(op: str, x_shape, y_shape, extra=(), holders=(0, 1)) -> Request[Beaver]:
    return Request(Beaver(op, tuple(x_shape), tuple(y_shape), tuple(extra)), tuple(holders))
