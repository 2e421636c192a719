"""Activations made of sign decisions, fused selects and polynomials: LeakyReLU, |x|, clamp, and
smooth functions (sigmoid, tanh, SiLU, GELU, Hardswish, Hardsigmoid) as a polynomial in the middle
and their asymptotes outside.

Every function takes x with ``x.frac`` fractional bits and drops ``shift`` of them (a product's
extra scale, as :func:`ringlet.protocols.relu.relu` does), so the output has x.frac − shift bits.
The sign decisions are DReLUs on bits [k:m] (a :class:`ReluSpec`, the same rules and mismatch set
as ReLU) and the bit × value products are fused selects (:mod:`ringlet.protocols.convert`): 1 + 64
bits per product, one round, the value's 64-bit opening sent with the sign circuit's first round
and the truncation by 2^shift folded in (exact to one unit, never failing: there is no local
truncation of a product anywhere here). A select also returns the value itself for free
(``with_value``). A select by a 0 bit is exactly 0 whatever the value, even garbage.

Costs per server per element, 2 servers; C, R = the ReLU's bits and rounds
(:func:`~ringlet.protocols.relu.relu_cost`), c, ρ = its sign circuit's (the DReLU):

=========================================  ===================================  ==============
function                                    bits                                 rounds
=========================================  ===================================  ==============
leaky_relu, integer slope (|x| = slope −1)  C                                    R
leaky_relu, other slopes                    C + 65                               R
clamp with one bound / both                 C / 2C                               R
smooth, method "poly"                       P + 64                               P_r + 1
smooth, method "piecewise"                  P + 2c + 65·t                        P_r + ρ + 1
smooth, method "accurate" (K breakpoints)   P + K·c + 65·t                       P_r + ρ + 1
=========================================  ===================================  ==============

P, P_r: the polynomial without its output truncation (ESPN: 64(d − 1) bits, 1 round; degree 1 is
local: 0, 0; + 64 the exact output truncation for "poly"), t: the number of selects (1 + one per
non-zero asymptote; "accurate": one per interval between breakpoints, the powers of x shared by
all of them, so P is paid once). Exact 64-bit carry tree: ReLU 308 / 8, leaky 308 or 373 / 8, clamp 616 / 8,
sigmoid 872 / 9, tanh 937 / 9, SiLU, GELU 808 / 9, Hardswish 680 / 9, Hardsigmoid 616 / 8;
accurate (error < 1e-3): sigmoid 1976 / 9, SiLU 3208 / 9, GELU 1668 / 9, ELU 1733 / 9.
p ≥ 3: as for ReLU, servers 2…p−1 first re-share to servers 0 and 1 (+1 round; they send w + 64
bits per element for leaky and each clamp bound; 2w + 64 per needed value for smooth), and the
polynomial pays its own p-server cost (input truncation by the dealer, ESPN's re-sharing):
:func:`smooth_cost` derives it (p = 3, sigmoid: 1000 bits, 12 rounds). With the b2a-mult select
(leaky integer slopes, clamp) or an identity spec (w = 0), a shift is a separate truncation, whose
cost is added.
"""

from __future__ import annotations

import math

import torch

from ringlet import ring
from ringlet.protocols.arith import poly
from ringlet.protocols.arith.truncation import default_method, truncate
from ringlet.protocols.base import input_bits
from ringlet.protocols.catalog import sign_families
from ringlet.protocols.convert import (
    drelu_two,
    local_bits,
    reshare_to_two,
    select_finish,
    select_finish_many,
    select_prepare,
)
from ringlet.protocols.relu import ReluSpec, relu, relu_cost
from ringlet.session import Session
from ringlet.sharing import ArithmeticShare, check_product_frac

SMOOTH_METHODS = ("accurate", "piecewise", "poly")
#: accurate: K breakpoints and pieces, error ≤ 1e-3 on every real; piecewise: two breakpoints and
#: one polynomial (cheaper, error up to 0.05); poly: one polynomial (its range only)
DEFAULT_SMOOTH = "accurate"
ONE_ROUND = ("espn", "espn-beaver", "honeybadger")


def _is_integer(slope: float) -> bool:
    return float(slope) == int(slope)


def _zeros(x: ArithmeticShare, frac: int) -> ArithmeticShare:
    return ArithmeticShare(torch.zeros_like(x.data), x.party, frac)


def _plane(bits: torch.Tensor) -> torch.Tensor:
    """0/1 XOR shares (int64 vector) → a 1×nw plane."""
    return ring.pack_plane(bits).view(1, -1)


def _public(sess: Session, value: int, n: int) -> torch.Tensor:
    """A 2-server sharing of a public ring constant: server 0 holds it, server 1 zero."""
    return torch.full((n,), value if sess.rank == 0 else 0, dtype=torch.int64)


def leaky_relu(sess: Session, x: ArithmeticShare, slope: float, spec: ReluSpec = ReluSpec(),
               shift: int = 0, truncation: str | None = None) -> ArithmeticShare:
    """LeakyReLU(x) = a·x + (1 − a)·x·DReLU(x) with slope a, at x.frac − shift bits.

    Integer a (0: ReLU, −1: |x|, 2, …): ONE fused select gives [T] and [d·T] (T = ⌊x/2^shift⌋,
    d = DReLU(x[k:m])) from the same opening; out = a·T + (1 − a)·d·T — ReLU's cost exactly, and
    exact to one unit. Other a: A = round(a·2^f) (f = the session's fractional bits) and one batched
    select on [x·2^f, A·x] with shift + f gives T_x = ⌊x/2^shift⌋, T_y = ⌊A·x/2^(shift+f)⌋ and d·T_x,
    d·T_y; out = T_y + d·T_x − d·T_y: +65 bits per element over ReLU, the same rounds; the
    products need x.frac + f (+ log2|a|) fractional bits to leave 14 integer bits
    (``check_product_frac``). The fused select is required for non-integer slopes; with b2a-mult an
    integer slope is a·T + (1 − a)·ReLU(T) with T truncated first (``truncation``).
    """
    sess.require_server("leaky_relu")
    out_frac = x.frac - shift
    integer = _is_integer(slope)
    if spec.width == 0:  # DReLU ≡ 1: the identity
        return truncate(sess, x, shift, truncation)
    if spec.select != "fused":
        if not integer:
            raise ValueError("leaky_relu with a non-integer slope needs the fused select")
        t = truncate(sess, x, shift, truncation)
        return t.mul_public(int(slope)) + relu(sess, t, spec).mul_public(1 - int(slope))
    f = sess.fixed.frac_bits
    if not integer:  # x·2^f and A·x must leave 14 integer bits (A carries log2|a| more)
        slope_bits = max(0, math.ceil(math.log2(abs(slope))))
        check_product_frac("leaky_relu (x by the slope)", x.frac, f + slope_bits)
    k, m = input_bits(spec, shift, sess.ring.bits)
    w = k - m
    shared = reshare_to_two(sess, [(local_bits(x.data, k, m), w), (x.data.reshape(-1), sess.ring.bits)])
    if shared is None:
        return _zeros(x, out_frac)
    t2, x2 = shared
    n = x2.numel()
    if integer:
        values, s = x2, shift
    else:
        values, s = torch.cat([x2 * (1 << f), int(round(slope * 2 ** f)) * x2]), shift + f
    mat, item = select_prepare(sess, values, s)
    bit, extra = drelu_two(sess, t2, w, sign_families()[spec.sign],
                           piggyback=[item] if w >= 2 else None)
    if not integer:
        bits = ring.unpack_plane(bit[0], n)
        bit = _plane(torch.cat([bits, bits]))
    dt, t = select_finish(sess, bit, values, mat, item, extra, s, with_value=True)
    if integer:
        out = int(slope) * t + (1 - int(slope)) * dt
    else:
        out = t[n:] + dt[:n] - dt[n:]
    return ArithmeticShare(out.view(x.shape), x.party, out_frac)


def clamp(sess: Session, x: ArithmeticShare, lo: float | None = None, hi: float | None = None,
          spec: ReluSpec = ReluSpec(), shift: int = 0,
          truncation: str | None = None) -> ArithmeticShare:
    """clamp(x, lo, hi) at x.frac − shift bits (ReLU6 = clamp(x, 0, 6), Hardtanh, torch.clamp).

    Both bounds: lo + ReLU(x − lo) − ReLU(x − hi), the two ReLUs in ONE :func:`ringlet.protocols.relu.relu` call
    on the concatenation (2× ReLU bits, ReLU's rounds); only lo: lo + ReLU(x − lo); only hi:
    hi − ReLU(hi − x); lo > hi is refused (torch would return hi everywhere). The bounds are
    encoded at the output scale (and shifted up for the input), so the subtraction commutes with
    the truncation; public constants are added by server 0. Exact without a shift; with one, each
    ReLU's truncation is off by at most one unit, and so is the result.
    """
    sess.require_server("clamp")
    if lo is None and hi is None:
        raise ValueError("clamp needs at least one of lo, hi")
    if lo is not None and hi is not None and lo > hi:
        raise ValueError(f"clamp: lo = {lo} > hi = {hi}")
    out_frac = x.frac - shift
    enc = {b: int(round(b * 2 ** out_frac)) for b in (lo, hi) if b is not None}
    flat = x.reshape(-1)

    def minus(bound, sign=1):  # sign·(x − bound), in ring units at the input scale
        z = flat if sign > 0 else -flat
        return z.add_public(torch.full((flat.numel(),), -sign * (enc[bound] << shift),
                                       dtype=torch.int64))

    n = flat.numel()
    if lo is not None and hi is not None:
        both = relu(sess, ArithmeticShare.cat([minus(lo), minus(hi)]), spec, shift,
                            truncation)
        out = (both[:n] - both[n:]).add_public(torch.full((n,), enc[lo], dtype=torch.int64))
    elif lo is not None:
        out = relu(sess, minus(lo), spec, shift, truncation).add_public(
            torch.full((n,), enc[lo], dtype=torch.int64))
    elif hi is not None:
        out = -relu(sess, minus(hi, -1), spec, shift, truncation)
        out = out.add_public(torch.full((n,), enc[hi], dtype=torch.int64))
    return out.reshape(x.shape)


def spec_pieces(spec: dict) -> tuple[list[float], list[list[float]]]:
    """(breakpoints b_1 < … < b_K, the polynomial of each [b_i, b_{i+1})) of a smooth spec: an
    accurate spec's own, or [−r, r] and its one polynomial."""
    if "breaks" in spec:
        return [float(b) for b in spec["breaks"]], [list(c) for c in spec["pieces"]]
    r = float(spec["range"])
    return [-r, r], [list(spec["coeffs"])]


def _poly_value(sess: Session, x: ArithmeticShare, coeffs, r: float, method: str,
                truncation: str | None, out_frac: int) -> ArithmeticShare:
    """[p(x)] at its natural scale, without an output truncation (the select will truncate):
    D = d·f_p + q for the one-round methods, f for Horner; degree 1 is local (x.frac + q)."""
    d = len(coeffs) - 1
    q = poly.coeff_bits(coeffs)
    if d == 1:
        check_product_frac("linear polynomial", x.frac, q)
        lin = x.mul_public(int(round(coeffs[1] * 2 ** q)), frac=q)
        return lin.add_public(torch.full(x.shape, int(round(coeffs[0] * 2 ** (x.frac + q))),
                                         dtype=torch.int64))
    if method == "horner":
        return poly.evaluate(sess, x, coeffs, sess.fixed.frac_bits, method, truncation=truncation)
    f_p = poly.input_frac(coeffs, r, "dealer", q)
    scale = max(d * f_p + q, out_frac)
    return poly.evaluate(sess, x, coeffs, scale, method, frac=f_p, truncation=truncation, r=r)


def _poly_values(sess: Session, x: ArithmeticShare, spec: dict, pieces, r: float, method: str,
                 truncation: str | None, out_frac: int) -> list[ArithmeticShare]:
    """[p_i(x)] of every piece at its natural scale: one polynomial as :func:`_poly_value`; several
    share the powers of x (:func:`poly.evaluate_many`, f_p = the spec's input precision)."""
    if len(pieces) == 1 or method == "horner" or len(pieces[0]) == 2:
        return [_poly_value(sess, x, c, r, method, truncation, out_frac) for c in pieces]
    return poly.evaluate_many(sess, x, pieces, int(spec["input_frac"]), truncation, method)


def smooth(sess: Session, x: ArithmeticShare, spec: dict, method: str = "piecewise",
           shift: int = 0, poly_method: str = "espn", truncation: str | None = None,
           relu_spec: ReluSpec = ReluSpec()) -> ArithmeticShare:
    """A smooth activation from :func:`ringlet.poly.fit.smooth_spec` (or
    :func:`ringlet.poly.pieces.accurate_spec`) at x.frac − shift bits.

    ``method="poly"``: p(x) by :func:`poly.evaluate` (``poly_method``), fitted on [−r, r]; outside
    that range the result diverges from f, and beyond ``spec["garbage_beyond"]`` it wraps (garbage).

    ``method="piecewise"`` / ``"accurate"``: with breakpoints b_1 < … < b_K (−r, r for piecewise)
    and a polynomial p_i on each [b_i, b_{i+1}), out = 1{x ≥ b_K}·H(x) + Σ_i 1{b_i ≤ x < b_{i+1}}·p_i(x)
    + 1{x < b_1}·L(x), within ``spec["max_error"]`` of f on every real (measured).
      1. [p_i(x)] at their natural scale D (no output truncation: the selects truncate for free),
         the powers of x computed once for all pieces;
      2. p ≥ 3: servers 2…p−1 re-share the [k:m] bits of every x − b_i (and x, and the p_i when
         not already on two servers) to servers 0 and 1 (1 round);
      3. d_i = DReLU(x − b_i) for every breakpoint in ONE sign circuit on K·n values, every
         select's 64-bit opening sent with its first round;
      4. local on XOR shares (the d_i fall with i): 1{b_i ≤ x < b_{i+1}} = d_i ⊕ d_{i+1},
         1{x ≥ b_K} = d_K, 1{x < b_1} = ¬d_1;
      5. ONE select round for all terms: each interval's bit times its p_i (shift D − out), d_K·H
         and ¬d_1·L (x with shift ``shift``, or a constant); zero asymptotes need no select. A p_i
         may be garbage (wrapped) outside its interval, but it is selected by a 0 bit there, and a
         select by 0 is exactly 0.
    Bits and rounds: :func:`smooth_cost`. The input of the p_i is truncated to f_p bits with
    ``truncation`` (local by default for 2 servers: it fails with probability |x|/2^63, which only
    matters inside the breakpoints; pass "dealer" for +1 round).
    """
    sess.require_server("smooth")
    if method not in SMOOTH_METHODS:
        raise ValueError(f"unknown smooth method {method!r}; use one of {SMOOTH_METHODS}")
    breaks, pieces = spec_pieces(spec)
    r = max(abs(breaks[0]), abs(breaks[-1]))
    out_frac = x.frac - shift
    if method == "poly":
        coeffs = pieces[0]
        if len(pieces) != 1:
            raise ValueError("method 'poly' evaluates one polynomial: this spec has several pieces")
        if len(coeffs) == 2:
            lin = _poly_value(sess, x, coeffs, r, poly_method, truncation, out_frac)
            return truncate(sess, lin, lin.frac - out_frac, "dealer")
        return poly.evaluate(sess, x, coeffs, out_frac, poly_method, truncation=truncation, r=r)
    if relu_spec.select != "fused" or relu_spec.width == 0:
        raise ValueError("smooth needs a fused select and at least one kept bit")
    linear = all(len(c) == 2 for c in pieces)
    if not linear:
        values = _poly_values(sess, x, spec, pieces, r, poly_method, truncation, out_frac)
    need_x = spec["lo"] == "x" or spec["hi"] == "x" or linear
    reshare_p = not linear and not (sess.num_parties > 2 and poly_method.startswith("espn"))
    n = x.numel()
    flat = x.data.reshape(-1)
    encoded = [int(round(b * 2 ** x.frac)) if sess.rank == 0 else 0 for b in breaks]  # public: server 0
    k, m = input_bits(relu_spec, shift, sess.ring.bits)
    w = k - m
    items = [(local_bits(torch.cat([flat - e for e in encoded]), k, m), w)]
    items += [(flat, sess.ring.bits)] if need_x else []
    items += [(v.data.reshape(-1), sess.ring.bits) for v in values] if reshare_p else []
    shared = reshare_to_two(sess, items)
    if shared is None:
        return _zeros(x, out_frac)
    if linear:
        values = [_poly_value(sess, ArithmeticShare(shared[1], x.party, x.frac), c, r, poly_method,
                              truncation, out_frac) for c in pieces]
    got = shared[len(shared) - len(values):] if reshare_p else [v.data.reshape(-1) for v in values]
    terms: list[tuple[int | str, torch.Tensor, int]] = []  # (which bit, value, shift); zero asymptotes: none
    for i, (v, p2) in enumerate(zip(values, got)):
        if v.frac < out_frac:
            p2, p_frac = p2 * (1 << (out_frac - v.frac)), out_frac
        else:
            p_frac = v.frac
        terms.append((i, p2, p_frac - out_frac))
    for name, value in (("hi", spec["hi"]), ("lo", spec["lo"])):
        if value == "x":
            terms.append((name, shared[1], shift))  # need_x: the reshared input
        elif float(value) != 0.0:
            terms.append((name, _public(sess, int(round(float(value) * 2 ** out_frac)), n), 0))
    out = decide_and_select(sess, shared[0], w, relu_spec.sign, terms, n, len(breaks))
    return ArithmeticShare(out.view(x.shape), x.party, out_frac)


def decide_and_select(sess: Session, t2: torch.Tensor, w: int, adder: str, terms: list,
                       n: int, breaks: int = 2, decided: dict | None = None) -> torch.Tensor:
    """Steps 3–5 of :func:`smooth` on servers 0 and 1: the decisions in one sign circuit (``t2``:
    the w-bit pieces of x − b_1, …, x − b_K), then Σ bit·value over ``terms`` in one select
    round; terms with the same shift share one dealer request. ``decided``: an empty dict
    receives the interval bits; a filled one (from an earlier call on the same values) is used
    instead of a new circuit, the select opening its values in its own round."""
    groups: dict[int, list[int]] = {}
    for i, (_, _, s) in enumerate(terms):
        groups.setdefault(s, []).append(i)
    prepared = []
    for s, idx in groups.items():
        values = torch.cat([terms[i][1] for i in idx])
        mat, item = select_prepare(sess, values, s)
        prepared.append((idx, values, mat, item, s))
    if decided:
        bits, extra = decided, []
    else:
        bit, extra = drelu_two(sess, t2, w, sign_families()[adder],
                               piggyback=[p[3] for p in prepared] if w >= 2 else None)
        every = ring.unpack_plane(bit[0], breaks * n)
        d = [every[i * n:(i + 1) * n] for i in range(breaks)]
        bits = {i: d[i] ^ d[i + 1] for i in range(breaks - 1)}
        bits.update({"hi": d[-1], "lo": d[0] ^ int(sess.rank == 0)})  # lo: ¬d_1
        if decided is not None:
            decided.update(bits)
    selected = select_finish_many(
        sess, [(_plane(torch.cat([bits[terms[i][0]] for i in idx])), values, mat, item, s)
               for idx, values, mat, item, s in prepared], extra)
    out = torch.zeros(n, dtype=torch.int64)
    for (idx, *_), res in zip(prepared, selected):
        for j in range(len(idx)):
            out = out + res[j * n:(j + 1) * n]
    return out


# -- costs ---------------------------------------------------------------------------------------

def _effective(spec: ReluSpec, shift: int, ring_bits: int = 64) -> ReluSpec:
    """The spec whose [k:m] the sign circuit really reads for an input with ``shift`` extra bits."""
    if spec.width == 0:
        return spec
    return ReluSpec(*input_bits(spec, shift, ring_bits), spec.adder, spec.select, spec.protocol)


def _trunc_cost(parties: int, truncation: str | None, ring_bits: int = 64) -> tuple[int, int]:
    """(bits, rounds) of one separate truncation: local is free, dealer ℓ(p − 1) bits, 1 round."""
    method = truncation or default_method(parties, ring_bits)
    return (0, 0) if method == "local" else (ring_bits * (parties - 1), 1)


def leaky_relu_cost(spec: ReluSpec, slope: float, parties: int = 2, shift: int = 0,
                    truncation: str | None = None, ring_bits: int = 64) -> dict:
    """Bits sent per server per element (the maximum over servers) and rounds of leaky_relu."""
    ell = ring_bits
    eff = _effective(spec, shift, ell)
    rc = relu_cost(eff, parties, ell)
    bits, rounds = rc["relu_bits"], rc["relu_rounds"]
    if eff.width == 0 or eff.select != "fused":
        tb, tr = _trunc_cost(parties, truncation, ell) if shift else (0, 0)
        return {"bits": bits + tb, "rounds": rounds + tr}
    if not _is_integer(slope):  # the select of the second value: 1 + ℓ bits on servers 0 and 1
        two = relu_cost(eff, 2, ell)["relu_bits"] + ell + 1
        bits = two if parties == 2 else max(two, eff.width + ell)
    return {"bits": bits, "rounds": rounds}


def clamp_cost(spec: ReluSpec, bounds: int = 2, parties: int = 2, shift: int = 0,
               truncation: str | None = None, ring_bits: int = 64) -> dict:
    """Bits and rounds of clamp with one or two bounds: ``bounds`` ReLUs batched in one call."""
    eff = _effective(spec, shift, ring_bits)
    rc = relu_cost(eff, parties, ring_bits)
    bits, rounds = bounds * rc["relu_bits"], rc["relu_rounds"]
    if shift and (eff.width == 0 or eff.select != "fused"):
        tb, tr = _trunc_cost(parties, truncation, ring_bits)
        bits, rounds = bits + bounds * tb, rounds + tr
    return {"bits": bits, "rounds": rounds}


def _poly_part(coeffs, r: float, method: str, parties: int, x_frac: int, frac_bits: int,
               truncation: str | None) -> tuple[int, int, int]:
    """(bits of servers 0/1, bits of servers 2…, rounds) of [p(x)] without an output truncation."""
    p, d = parties, len(coeffs) - 1
    if d == 1:
        return 0, 0, 0
    if method == "horner":
        c = poly.cost("horner", d, p)
        tb, tr = _trunc_cost(p, truncation) if x_frac > frac_bits else (0, 0)
        return c["bits"] + tb, c["bits"] + tb, c["rounds"] + tr
    return _poly_part_frac(d, poly.input_frac(coeffs, r, "dealer"), method, p, x_frac, truncation)


def smooth_cost(spec: dict, method: str = "piecewise", parties: int = 2, poly_method: str = "espn",
                relu_spec: ReluSpec = ReluSpec(), shift: int = 0, truncation: str | None = None,
                frac_bits: int = ring.DEFAULT_FRAC_BITS, ring_bits: int = 64) -> dict:
    """Bits sent per server per element (the maximum over servers) and rounds of :func:`smooth`,
    for x at frac_bits + shift fractional bits (the polynomial part is costed in the 64-bit ring,
    the only one it runs in). K breakpoints cost K DReLUs in one sign circuit and each interval a
    select; the powers of x are shared by the pieces."""
    breaks, pieces = spec_pieces(spec)
    r, p, ell = max(abs(breaks[0]), abs(breaks[-1])), parties, ring_bits
    coeffs = max(pieces, key=len)
    x_frac = frac_bits + shift
    if len(pieces) > 1 and len(coeffs) > 2 and poly_method != "horner":
        s0, s2, rounds = _poly_part_frac(len(coeffs) - 1, int(spec["input_frac"]), poly_method, p, x_frac,
                                         truncation)
    else:
        s0, s2, rounds = _poly_part(coeffs, r, poly_method, p, x_frac, frac_bits, truncation)
        if poly_method == "horner":
            s0, s2 = s0 * len(pieces), s2 * len(pieces)
    if method == "poly":
        if poly_method != "horner":  # the exact output truncation
            s0, s2, rounds = s0 + 64 * (p - 1), s2 + 64 * (p - 1), rounds + 1
        return {"bits": s0 if p == 2 else max(s0, s2), "rounds": rounds}
    eff = _effective(relu_spec, shift, ell)
    circuit = relu_cost(eff, 2, ell)
    terms = len(pieces) + sum(1 for a in (spec["lo"], spec["hi"]) if a == "x" or float(a) != 0.0)
    s0 += len(breaks) * circuit["drelu_bits"] + (ell + 1) * terms
    rounds += circuit["drelu_rounds"] + 1
    if p == 2:
        return {"bits": s0, "rounds": rounds}
    linear = all(len(c) == 2 for c in pieces)
    need_x = spec["lo"] == "x" or spec["hi"] == "x" or linear
    reshare_p = not linear and not poly_method.startswith("espn")
    s2 += len(breaks) * eff.width + ell * (int(need_x) + len(pieces) * int(reshare_p))
    return {"bits": max(s0, s2), "rounds": rounds + 1}


def _poly_part_frac(d: int, f_p: int, method: str, parties: int, x_frac: int,
                    truncation: str | None) -> tuple[int, int, int]:
    """:func:`_poly_part` for the shared powers of several pieces at input precision f_p."""
    p = parties
    tb, tr = _trunc_cost(p, truncation) if x_frac > f_p else (0, 0)
    if method == "honeybadger":
        return 64 * (p - 1) + tb, 64 * (p - 1) + tb, 1 + tr
    core = 64 * (d - 1) if method == "espn" else 128 * d * (d - 1) // 2
    if p == 2:
        return core + tb, 0, 1 + tr
    return core + tb, 64 + tb, 2 + tr
