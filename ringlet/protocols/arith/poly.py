"""Secure evaluation of a public polynomial p(x) = Σ_j c_j x^j (ESPN, HoneyBadger, Horner).

The one-round methods first drop the input to f_p fractional bits, so that the terms stay inside the
ring: every term is brought to the common scale D = d·f_p + q by its integer coefficient
round(c_j·2^(D − j·f_p)) (q = 10 bits for the coefficients' own precision), which needs
|x|^d·2^D < 2^62 (``input_bound``; larger inputs wrap and are counted by the benchmark). The sum is
then truncated from D to f bits. That last truncation is the catch: done locally (SecureML) it costs
nothing but fails with probability about |p(x)|·2^D / 2^64 per element (an error of ~2^(64−D)), so by
default it is the exact dealer-assisted truncation, one more round of 64·(p−1) bits.
``out_truncation="local"`` keeps the single round; it then lowers f_p to the fewest input bits that
keep the quantisation error within 1e-2 on [−r, r] (``local_frac``: 7 at degree 4, r = 5, so D = 38
and a failure probability of about |p(x)|·2^−26 per element, ~10⁻⁸ for typical activations, against
~10⁻⁴ at f_p = 10).

``espn`` (Diaa et al.; 2 servers): with x = x0 + x1, (x0 + x1)^j = Σ_a C(j,a)·x0^a·x1^(j−a) exactly
mod 2^64. Each server raises its own share to the powers 1…d−1 locally; the mixed products are
*private-input* multiplications: the dealer gives server 0 masks α_a, server 1 masks β_b and shares
of every α_a·β_b; each server sends its masked powers once. 1 round, 64·(d−1) bits per element.
``espn-beaver``: the same cross terms with one Beaver product per pair (the authors' code):
1 round, 128·d(d−1)/2 bits per element.
``honeybadger``: the dealer gives shares of r, r², …, r^d for a uniform r; open c = x − r once and
expand (c + r)^j locally. 1 round, 64·(p−1) bits per element, any p.
Polynomials of degree ≥ 2 run in the 64-bit ring only (a smaller ring is refused, never wrapped).
``horner``: (((c_d·x + c_{d−1})·x + …)·x + c_0) with Beaver products at f bits (the first product is by a public
coefficient, free): d − 1 rounds,
128·(p−1) bits per element per round (plus truncation rounds for p ≥ 3), any p.
p ≥ 3 with ``espn`` re-shares to servers 0 and 1 first (+1 round).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from ringlet.offline.core import Pim, Powers
from ringlet.offline.request import Request
from ringlet.protocols.arith import beaver
from ringlet.protocols.arith.truncation import truncate, truncate_local
from ringlet.protocols.convert import reshare_to_two
from ringlet.protocols.io import open_values
from ringlet.session import Session
from ringlet.sharing import ArithmeticShare

METHODS = ("espn", "espn-beaver", "honeybadger", "horner")
TWO = (0, 1)


COEFF_BITS = 10  # the paper quantises coefficients to 2^−10


def coeff_bits(coeffs) -> int:
    """The fractional bits q the coefficients are quantised to (the smallest q ≤ 30 that makes
    every c_j·2^q an integer; 10 for the paper's tables)."""
    for q in range(0, 31):
        if all(abs(c * 2 ** q - round(c * 2 ** q)) < 1e-9 for c in coeffs):
            return max(q, 1)
    raise ValueError("polynomial coefficients must be quantised to at most 30 fractional bits")


def input_bound(coeffs, frac: int, q: int | None = None) -> float:
    """|x| below which nothing wraps: every power x^j·2^(j·frac) and every term
    c_j·x^j·2^D (D = d·frac + q) stays below 2^62 in magnitude (one bit spare for the sum)."""
    q = coeff_bits(coeffs) if q is None else q
    d = len(coeffs) - 1
    total = d * frac + q
    bound = float("inf")
    for j in range(1, d + 1):
        bound = min(bound, 2.0 ** ((62 - j * frac) / j))
        if coeffs[j]:
            bound = min(bound, (2.0 ** (62 - total) / abs(coeffs[j])) ** (1.0 / j))
    return bound


def default_frac(degree: int, r: float = 5.0, q: int = COEFF_BITS) -> int:
    """The largest input precision f_p with |x|^d·2^(d·f_p + q) < 2^62 for |x| ≤ r (at most 16):
    10 bits at degree 4, r = 5, q = 10 (the authors use 8–12)."""
    return max(1, min(16, int((62 - q - degree * math.log2(r)) // degree)))


def local_frac(coeffs, r: float = 5.0, max_error: float = 1e-2, q: int | None = None) -> int:
    """The fewest input fractional bits f_p whose quantisation error (up to one unit of 2^−f_p in x,
    from the local truncation, times max |p'| on [−r, r]) stays within ``max_error``: the smallest
    scale D = d·f_p + q, hence the rarest failures of a local output truncation."""
    q = coeff_bits(coeffs) if q is None else q
    d = len(coeffs) - 1
    xs = torch.linspace(-r, r, 4001, dtype=torch.float64)
    slope = float(sum(j * c * xs ** (j - 1) for j, c in enumerate(coeffs) if j).abs().max())
    need = max(1, math.ceil(math.log2(max(slope, 1e-12) / max_error)))
    return min(need, default_frac(d, r, q))


def input_frac(coeffs, r: float = 5.0, out_truncation: str = "dealer", q: int | None = None) -> int:
    """The input precision f_p the one-round methods use by default: ``local_frac`` with a local
    output truncation, ``default_frac`` with the exact one."""
    q = coeff_bits(coeffs) if q is None else q
    if out_truncation == "local":
        return local_frac(coeffs, r, q=q)
    return default_frac(len(coeffs) - 1, r, q)


def local_failure_rate(coeffs, frac: int, values: torch.Tensor, q: int | None = None) -> float:
    """Expected number of failed local output truncations over ``values`` (inputs x as floats):
    Σ |p(x)|·2^D / 2^64 with D = d·frac + q."""
    q = coeff_bits(coeffs) if q is None else q
    scale = (len(coeffs) - 1) * frac + q
    px = sum(c * values.double() ** j for j, c in enumerate(coeffs))
    return float(px.abs().sum()) * 2.0 ** (scale - 64)


def cost(method: str, degree: int, parties: int = 2, out_truncation: str = "dealer") -> dict:
    """Rounds and bits sent per server per element (the maximum over servers), for an input at the
    session's f fractional bits (the one-round methods truncate it to f_p first: free for 2
    servers, one dealer round for more)."""
    p, d = parties, degree
    trunc = 64 * (p - 1)
    if method == "horner":
        if p == 2:
            return {"bits": 128 * (d - 1), "rounds": d - 1}
        return {"bits": 128 * (p - 1) * (d - 1) + trunc * d, "rounds": 2 * d - 1}
    if method == "espn":
        bits, rounds = 64 * (d - 1), 1
    elif method == "espn-beaver":
        bits, rounds = 128 * d * (d - 1) // 2, 1
    elif method == "honeybadger":
        bits, rounds = 64 * (p - 1), 1
    else:
        raise ValueError(f"unknown polynomial method {method!r}; use one of {METHODS}")
    if p > 2:
        bits, rounds = bits + trunc, rounds + 1          # the input truncation to f_p
        if method != "honeybadger":
            rounds += 1                                  # re-sharing to servers 0 and 1
    if out_truncation == "dealer" or (p > 2 and method == "honeybadger"):
        bits, rounds = bits + trunc, rounds + 1
    return {"bits": bits, "rounds": rounds}


def _combine(powers: list[Any], coeffs, frac: int, first: bool, q: int) -> torch.Tensor:
    """Σ_j round(c_j·2^(D − j·frac))·[x^j] at scale D = d·frac + q (powers[j] = share of x^j)."""
    d = len(coeffs) - 1
    total_bits = d * frac + q
    out = torch.zeros_like(powers[1])
    for j in range(1, d + 1):
        out = out + int(round(coeffs[j] * 2.0 ** (total_bits - j * frac))) * powers[j]
    if first:
        out = out + int(round(coeffs[0] * 2.0 ** total_bits))
    return out


def _espn_powers(sess: Session, x: torch.Tensor, d: int, beaver_cross: bool) -> list[Any]:
    """This server's shares of x^1 … x^d from private powers and their cross products."""
    own = [torch.ones_like(x)]
    for _ in range(d):
        own.append(own[-1] * x)
    first = sess.rank == 0
    pairs = [(a, j - a) for j in range(2, d + 1) for a in range(1, j)]
    cross: dict[tuple, torch.Tensor] = {}
    if beaver_cross:  # every pair in one batched Beaver product (one round)
        zero = torch.zeros_like(x)
        u = torch.stack([own[a] if first else zero for a, _ in pairs])
        v = torch.stack([own[b] if not first else zero for _, b in pairs])
        prod = beaver.mul(sess, sess.share(u, frac=0), sess.share(v, frac=0), rescale=False,
                          among=TWO, tag="poly").data
        cross = {pair: prod[i] for i, pair in enumerate(pairs)}
    else:
        m = sess.dealer.get(Request(Pim(x.numel(), d), TWO))
        mine = [own[i] - m.mask[i - 1] for i in range(1, d)]
        peer = 1 - sess.rank
        got = sess.comm.round("poly", {peer: [("poly", torch.stack(mine))]}, [peer], "espn")[peer][0]
        for a, b in pairs:  # server 0 holds u = x0^a, server 1 holds v = x1^b
            if first:
                cross[(a, b)] = own[a] * got[b - 1] + m.cross[(a, b)]          # u·(v − β) + [αβ]
            else:
                cross[(a, b)] = got[a - 1] * m.mask[b - 1] + m.cross[(a, b)]  # (u − α)·β + [αβ]
    powers: list[Any] = [None]  # powers[j] the share of x^j (j ≥ 1)
    for j in range(1, d + 1):
        acc = own[j].clone()  # the a = j (server 0) or a = 0 (server 1) private term
        for a in range(1, j):
            acc = acc + math.comb(j, a) * cross[(a, j - a)]
        powers.append(acc)
    return powers


def evaluate(sess: Session, x: ArithmeticShare, coeffs, out_frac: int, method: str = "espn",
             frac: int | None = None, truncation: str | None = None,
             out_truncation: str = "dealer", r: float = 5.0) -> ArithmeticShare:
    """Shares of p(x) with ``out_frac`` fractional bits.

    ``truncation``: method of the input's (small, safe) truncation to f_p bits; ``out_truncation``:
    of the final one from D to ``out_frac`` bits (see the module docstring). ``frac`` (f_p) defaults
    to ``input_frac`` for the fit range ``r``.
    """
    d = len(coeffs) - 1
    if method not in METHODS:
        raise ValueError(f"unknown polynomial method {method!r}; use one of {METHODS}")
    if sess.ring.bits != 64 and d > 1:
        raise ValueError(f"polynomial activations of degree {d} run in the 64-bit ring only (their "
                         f"one-round terms need 2^62 of headroom); this session's ring has "
                         f"{sess.ring.bits} bits: use --ring-bits 64")
    if method == "horner":
        return _horner(sess, x, coeffs, out_frac, truncation)
    q = coeff_bits(coeffs)
    frac = frac if frac is not None else input_frac(coeffs, r, out_truncation, q)
    scale = d * frac + q
    if scale > 62:
        raise ValueError(f"degree {d} at {frac} fractional bits needs {scale} bits; at most 62")
    (value,) = _values(sess, x, [coeffs], d, frac, q, truncation, method)
    total = ArithmeticShare(value.view(x.shape), x.party, scale)
    if scale > out_frac:
        if out_truncation == "local" and method != "honeybadger":  # the value lives on servers 0, 1
            return truncate_local(sess, total, scale - out_frac, two_holders=True)
        return truncate(sess, total, scale - out_frac,
                        "dealer" if sess.num_parties > 2 else out_truncation)
    return total.mul_public(1 << (out_frac - scale), frac=out_frac - scale)


def evaluate_many(sess: Session, x: ArithmeticShare, coeff_sets, frac: int,
                  truncation: str | None = None, method: str = "espn") -> list[ArithmeticShare]:
    """Shares of p_i(x) for every coefficient list in ``coeff_sets`` (one degree d, coefficients
    in multiples of 2^−q), each at scale D = d·frac + q with no output truncation: the powers
    x^1…x^d are computed once (one round for ESPN / HoneyBadger), each p_i is local on them."""
    d = max(len(c) for c in coeff_sets) - 1
    q = max(coeff_bits(c) for c in coeff_sets)
    if method not in METHODS or method == "horner":
        raise ValueError(f"evaluate_many: a one-round method (espn, espn-beaver, honeybadger), not {method!r}")
    if sess.ring.bits != 64:
        raise ValueError(f"polynomial activations of degree {d} run in the 64-bit ring only; this "
                         f"session's ring has {sess.ring.bits} bits: use --ring-bits 64")
    scale = d * frac + q
    if scale > 62:
        raise ValueError(f"degree {d} at {frac} fractional bits needs {scale} bits; at most 62")
    padded = [list(c) + [0.0] * (d + 1 - len(c)) for c in coeff_sets]
    values = _values(sess, x, padded, d, frac, q, truncation, method)
    return [ArithmeticShare(v.view(x.shape), x.party, scale) for v in values]


def _values(sess: Session, x: ArithmeticShare, coeff_sets, d: int, frac: int, q: int,
            truncation: str | None, method: str) -> list[torch.Tensor]:
    """This server's shares of every p(x) at scale d·frac + q, from one computation of the powers."""
    if x.frac > frac:
        x = truncate(sess, x, x.frac - frac, truncation)
    elif x.frac < frac:
        x = x.mul_public(1 << (frac - x.frac), frac=frac - x.frac)
    if method == "honeybadger":
        m = sess.dealer.get(Request(Powers(x.numel(), d, frac), tuple(sess.world.servers)))
        (c,) = open_values(sess, [("poly", x.data.reshape(-1) - m.r[0])], "add")
        powers: list[Any] = [None]
        for j in range(1, d + 1):  # (c + r)^j = Σ_a C(j,a) c^(j−a) r^a, with r^0 = 1 (party 0)
            acc = (c ** j) if sess.rank == 0 else torch.zeros_like(c)
            for a in range(1, j + 1):
                acc = acc + math.comb(j, a) * c ** (j - a) * m.r[a - 1]
            powers.append(acc)
        return [_combine(powers, c_, frac, sess.rank == 0, q) for c_ in coeff_sets]
    shared = reshare_to_two(sess, [(x.data.reshape(-1), 64)])
    if shared is None:  # servers 2..p-1 hold zero shares and join the final truncation
        return [torch.zeros(x.numel(), dtype=torch.int64) for _ in coeff_sets]
    powers = _espn_powers(sess, shared[0], d, method == "espn-beaver")
    return [_combine(powers, c_, frac, sess.rank == 0, q) for c_ in coeff_sets]


def _horner(sess: Session, x: ArithmeticShare, coeffs, out_frac: int, truncation) -> ArithmeticShare:
    f = sess.fixed.frac_bits
    if x.frac > f:
        x = truncate(sess, x, x.frac - f, truncation)
    enc = lambda c: int(round(c * 2.0 ** f))  # noqa: E731
    d = len(coeffs) - 1
    acc = x.mul_public(enc(coeffs[d]), frac=f)
    acc = truncate(sess, acc, f, truncation).add_public(torch.full(x.shape, enc(coeffs[d - 1]),
                                                                   dtype=torch.int64))
    for j in range(d - 2, -1, -1):
        acc = beaver.mul(sess, acc, x, tag="poly")
        acc = acc.add_public(torch.full(x.shape, enc(coeffs[j]), dtype=torch.int64))
    if out_frac != f:
        raise ValueError(f"horner evaluates at the session's {f} fractional bits")
    return acc


def fit_interval(fn, d: int, a: float, b: float, q: int, grid: int = 801) -> list[float]:
    """A near-minimax degree-d fit of ``fn`` (numpy → numpy) on [a, b] (Lawson's weights), its
    coefficients rounded to multiples of 2^−q from the highest degree down, refitting the rest."""
    x = np.linspace(a, b, grid)
    y = fn(x)
    design = np.stack([x ** j for j in range(d + 1)], axis=1)
    w = np.full(len(y), 1.0 / len(y))
    for _ in range(40):
        sw = np.sqrt(w)
        sol, *_ = np.linalg.lstsq(design * sw[:, None], y * sw, rcond=None)
        w = w * np.abs(design @ sol - y) + 1e-30
        w = w / w.sum()
    sw = np.sqrt(w)
    coeffs = np.zeros(d + 1)
    free, target = list(range(d + 1)), y.copy()
    while free:
        sol, *_ = np.linalg.lstsq(design[:, free] * sw[:, None], target * sw, rcond=None)
        j = free.pop()
        coeffs[j] = np.round(sol[-1] * 2 ** q) / 2 ** q
        target = target - coeffs[j] * design[:, j]
    return [float(c) for c in coeffs]
