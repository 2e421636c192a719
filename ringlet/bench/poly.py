"""``ringlet bench poly``: one polynomial-activation layer — rounds, bits, error, wrapped, time."""

from __future__ import annotations

import functools
import time

from ringlet.poly.layers import fit_relu
from ringlet.prng import AesCtrStream
from ringlet.protocols.arith import poly
from ringlet.protocols.io import reveal, share_input
from ringlet.ring import FixedPoint
from ringlet.runtime.launch import run_local


def _program(sess, values, coeffs, method, frac, out_truncation):
    x = share_input(sess, values if sess.rank == 0 else None, 0, tuple(values.shape), encoded=True)
    sess.barrier("setup")
    before, t0 = sess.stats.copy(), time.perf_counter()
    y = poly.evaluate(sess, x, coeffs, sess.fixed.frac_bits, method, frac,
                      out_truncation=out_truncation)
    seconds = time.perf_counter() - t0
    used = sess.stats.minus(before)
    return {"seconds": seconds, "stats": used, "out": reveal(sess, y, to=0, decode=False)}


def run_poly_bench(n: int, degree: int, method: str, r: float = 5.0, parties: int = 2,
                   frac: int | None = None, out_truncation: str = "dealer",
                   transport: str = "local") -> dict:
    fit = fit_relu(degree, r)
    coeffs = fit["coeffs"]
    fixed = FixedPoint(16)
    raw = AesCtrStream(b"ringlet-poly-in!").int64(n)  # test data, not protective randomness
    values = fixed.encode((((raw >> 11) & ((1 << 53) - 1)).double() / 2.0 ** 53 * 2 - 1) * r)
    q = poly.coeff_bits(coeffs)
    frac_used = frac if frac is not None else poly.input_frac(coeffs, r, out_truncation, q)
    program = functools.partial(_program, values=values, coeffs=coeffs, method=method, frac=frac_used,
                                out_truncation=out_truncation)
    res = run_local(program, parties, transport=transport, pregenerate=True)
    stats = [q["stats"] for q in res.results]
    xs = fixed.decode(values)
    ref = sum(c * xs ** j for j, c in enumerate(coeffs))
    got = fixed.decode(res.results[0]["out"])
    bound = poly.input_bound(coeffs, frac_used, q) if method != "horner" else float("inf")
    inside = xs.abs() < bound
    err = (got - ref).abs()
    return {
        "n": n, "degree": degree, "method": method, "parties": parties, "range": r,
        "frac": frac_used if method != "horner" else 16, "out_truncation": out_truncation,
        "coefficients": coeffs, "fit_max_error_vs_relu": fit["max_error"],
        "rounds": max(s.total_rounds() for s in stats),
        "bits_sent_per_element": 8 * max(s.bytes_sent() for s in stats) / n,
        "expected_cost": poly.cost(method, degree, parties, out_truncation),
        "max_abs_error": float(err[inside].max()) if inside.any() else None,
        "failures": int((err[inside] > 1e-2).sum()),
        "wrapped": int((~inside).sum()), "input_bound": bound,
        "expected_failures": (poly.local_failure_rate(coeffs, frac_used, xs[inside], q)
                              if out_truncation == "local" and method != "horner" else 0.0),
        "seconds_online": max(q["seconds"] for q in res.results),
        "offline_bits_per_element": 8 * res.offline_bytes() / n,
    }
