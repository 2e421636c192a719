"""The kinds of material every protocol family may ask for (see :mod:`ringlet.offline`)."""

from __future__ import annotations

import torch

from ringlet import ring
from ringlet.offline.kind import Kind, last_kind
from ringlet.offline.request import Request
from ringlet.prng import AesCtrStream

# -- how each kind is drawn ------------------------------------------------------------------------
# draw(stream, req, index, corrected) -> dict of this holder's seeded tensors
# correct(parts, req, ring) -> dict of the last holder's corrected tensors (dealer only); every
# arithmetic value is only meaningful modulo 2^ℓ, and only ``trunc``/``injtrunc`` read the ring's
# sign bit and low bits

_OPS = ("mul", "matmul", "conv2d")


def _beaver_shapes(req: Request):
    op = _OPS[req.params[0]]
    nx = req.params[1]
    xs = tuple(req.params[2:2 + nx])
    ny = req.params[2 + nx]
    ys = tuple(req.params[3 + nx:3 + nx + ny])
    extra = req.params[3 + nx + ny:]
    return op, xs, ys, extra


def beaver_op(op: str, extra: tuple):
    """The bilinear map of a Beaver triple on int64 ring tensors."""
    if op == "mul":
        return lambda a, b: a * b
    if op == "matmul":
        return torch.matmul
    stride, padding, dilation, groups = extra[0:2], extra[2:4], extra[4:6], extra[6]
    return lambda a, b: torch.nn.functional.conv2d(a, b, None, stride, padding, dilation, groups)


def _out_shape(op, xs, ys, extra):
    f = beaver_op(op, extra)
    return tuple(f(torch.zeros(xs, dtype=torch.int64), torch.zeros(ys, dtype=torch.int64)).shape)


def _draw_beaver(s: AesCtrStream, req: Request, index: int, corrected: bool) -> dict:
    op, xs, ys, extra = _beaver_shapes(req)
    out = {"a": s.int64(xs), "b": s.int64(ys)}
    if not corrected:
        out["c"] = s.int64(_out_shape(op, xs, ys, extra))
    return out


def _correct_beaver(parts: list[dict], req: Request, rng) -> dict:
    op, _, _, extra = _beaver_shapes(req)
    a = sum(p["a"] for p in parts)
    b = sum(p["b"] for p in parts)
    c = beaver_op(op, extra)(a, b)
    for p in parts[:-1]:
        c = c - p["c"]
    return {"c": c}


def _draw_and(s, req, index, corrected):
    w, nw = req.params
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
    w, nw = req.params
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
    w, nw = req.params
    if index == 0:
        return {"u": s.words((w, nw)), "z": s.words((w, nw))}
    return {"v": s.words((w, nw))} if corrected else {"v": s.words((w, nw)), "z": s.words((w, nw))}


def _correct_pand(parts, req, rng):
    return {"z": (parts[0]["u"] & parts[1]["v"]) ^ parts[0]["z"]}


def _bit_values(parts, n):
    return ring.unpack_plane(_xor_all(parts, "r_bits")[0], n)


def _draw_b2a(s, req, index, corrected):
    n = req.params[0]
    out = {"r_bits": s.words((1, ring.num_words(n)))}
    if not corrected:
        out["r"] = s.int64(n)
    return out


def _correct_b2a(parts, req, rng):
    r = _bit_values(parts, req.params[0])
    for p in parts[:-1]:
        r = r - p["r"]
    return {"r": r}


def _draw_inject(s, req, index, corrected):
    out = _draw_b2a(s, req, index, corrected)
    out["s"] = s.int64(req.params[0])
    if not corrected:
        out["rs"] = s.int64(req.params[0])
    return out


def _correct_inject(parts, req, rng):
    r = _bit_values(parts, req.params[0])
    rs = r * sum(p["s"] for p in parts)
    r_last = r
    for p in parts[:-1]:
        r_last, rs = r_last - p["r"], rs - p["rs"]
    return {"r": r_last, "rs": rs}


def _draw_trunc(s, req, index, corrected):
    shape = tuple(req.params[1:])
    out = {"r": s.int64(shape)}
    if not corrected:
        out["msb"], out["low"] = s.int64(shape), s.int64(shape)
    return out


def _correct_trunc(parts, req, rng):
    f = req.params[0]
    r = sum(p["r"] for p in parts)
    msb = rng.msb(r)
    low = rng.low(r) >> f
    for p in parts[:-1]:
        msb, low = msb - p["msb"], low - p["low"]
    return {"msb": msb, "low": low}


def _draw_injtrunc(s, req, index, corrected):
    n = req.params[0]
    out = {"r_bits": s.words((1, ring.num_words(n))), "r": s.int64(n)}
    if not corrected:
        for key in ("rb", "msb", "low", "rb_low", "rb_msb"):
            out[key] = s.int64(n)
    return out


def _correct_injtrunc(parts, req, rng):
    n, d = req.params
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
    n, d = req.params
    out = {"mask": s.int64((d - 1, n))}
    if not corrected:
        for a, b in _pim_pairs(d):
            out[f"ab{a}_{b}"] = s.int64(n)
    return out


def _correct_pim(parts, req, rng):
    n, d = req.params
    alpha, beta = parts[0]["mask"], parts[1]["mask"]
    return {f"ab{a}_{b}": alpha[a - 1] * beta[b - 1] - parts[0][f"ab{a}_{b}"] for a, b in _pim_pairs(d)}


def _draw_powers(s, req, index, corrected):
    n, d, _frac = req.params
    out = {"r1": s.int64(n)}
    if not corrected:
        for a in range(2, d + 1):
            out[f"r{a}"] = s.int64(n)
    return out


def _correct_powers(parts, req, rng):
    n, d, _frac = req.params
    r = sum(p["r1"] for p in parts)
    out, power = {}, r
    for a in range(2, d + 1):
        power = power * r
        out[f"r{a}"] = power - sum(p[f"r{a}"] for p in parts[:-1])
    return out



def core_kinds() -> dict[str, Kind]:
    """The core kinds by name, in the order that fixes their wire ids."""
    return {
        "beaver": last_kind(_draw_beaver, _correct_beaver, ("c",)),
        "and": last_kind(_draw_and, _correct_and, ("c",), raw=True),
        "and2": last_kind(_draw_and2, _correct_and2, ("c1", "c2"), raw=True),
        "pand": last_kind(_draw_pand, _correct_pand, ("z",), raw=True),
        "b2a": last_kind(_draw_b2a, _correct_b2a, ("r",)),
        "inject": last_kind(_draw_inject, _correct_inject, ("r", "rs")),
        "trunc": last_kind(_draw_trunc, _correct_trunc, ("low", "msb")),
        "injtrunc": last_kind(_draw_injtrunc, _correct_injtrunc, ("low", "msb", "rb", "rb_low", "rb_msb")),
        "pim": last_kind(_draw_pim, _correct_pim,
                         lambda req: tuple(f"ab{a}_{b}" for a, b in _pim_pairs(req.params[1]))),
        "powers": last_kind(_draw_powers, _correct_powers,
                            lambda req: tuple(f"r{a}" for a in range(2, req.params[1] + 1))),
    }


def beaver_request(op: str, x_shape, y_shape, extra=(), holders=(0, 1)) -> Request:
    return Request("beaver", (_OPS.index(op), len(x_shape), *x_shape, len(y_shape), *y_shape,
                              *extra), tuple(holders))
