"""Accurate smooth activations: K breakpoints, a low-degree polynomial on each interval between
them, and the function's asymptotes outside (``smooth="accurate"``, the default).

The pieces are fitted offline (``scripts/fit_smooth.py``, :func:`fit_pieces`) and shipped as data
(``smooth_pieces.json``); :func:`accurate_spec` loads them and measures their error here, on a
dense grid with the input truncated to the polynomials' input precision f_p (±1 unit) and beyond
the outer breakpoints up to ±10^4 — the figure a spec states is that measurement, never a
constant. Every polynomial is in x (not shifted), of one degree d with coefficients in multiples of
2^−q, so the servers compute the powers x^2…x^d once for all pieces (ESPN: one round) and each
piece is a local combination of them; each breakpoint is one DReLU (all K in one sign circuit)
and each non-zero piece one fused select (one round). Costs: :func:`ringlet.protocols.piecewise.smooth_cost`.
"""

from __future__ import annotations

import functools
import json
import math
from importlib import resources

import numpy as np
import torch

from ringlet.protocols.arith import poly
from ringlet.protocols.arith.poly import fit_interval

TARGET = 6e-4  # a piece's error budget in the fit (the rest: the asymptote gap and the select)
GAP = 3e-4     # the asymptotes' error budget: outer breakpoints where the gap is below it
GRID_STEP = 2.0 ** -10  # the error measurement's grid inside the breakpoints
OUT_FRAC = 16


def _t(f):
    return lambda x: f(torch.from_numpy(np.asarray(x, dtype=np.float64))).numpy()


def functions() -> dict[str, dict]:
    """name → {fn, lo, hi}: the function and its asymptotes (a constant, or ``"x"``)."""
    F = torch.nn.functional
    return {
        "sigmoid": {"fn": _t(torch.sigmoid), "lo": 0.0, "hi": 1.0},
        "tanh": {"fn": _t(torch.tanh), "lo": -1.0, "hi": 1.0},
        "silu": {"fn": _t(F.silu), "lo": 0.0, "hi": "x"},
        "gelu": {"fn": _t(F.gelu), "lo": 0.0, "hi": "x"},
        "gelu_tanh": {"fn": _t(lambda t: F.gelu(t, approximate="tanh")), "lo": 0.0, "hi": "x"},
        "softplus": {"fn": _t(F.softplus), "lo": 0.0, "hi": "x"},
        "elu": {"fn": _t(F.elu), "lo": -1.0, "hi": "x"},
        "mish": {"fn": _t(F.mish), "lo": 0.0, "hi": "x"},
    }


def _asymptote(value, x: np.ndarray) -> np.ndarray:
    return x if value == "x" else np.full_like(x, float(value))


def truncated_input_error(fn, coeffs, x: np.ndarray, f_p: int) -> float:
    """max |p(x̃) − f(x)| over the points ``x``, x̃ = x truncated to f_p bits (±1 unit: the
    one-round methods' input truncation)."""
    y = fn(x)
    unit = 2.0 ** -f_p
    worst = 0.0
    for k in (-1, 0, 1):
        xq = (np.floor(x / unit) + k) * unit
        worst = max(worst, float(np.abs(np.polyval(list(coeffs)[::-1], xq) - y).max()))
    return worst


def piece_error(fn, coeffs, a: float, b: float, f_p: int, points: int = 20001) -> float:
    """max |p(x̃) − f(x)| on [a, b] (:func:`truncated_input_error` on a dense grid)."""
    return truncated_input_error(fn, coeffs, np.linspace(a, b, points), f_p)


def asymptote_gaps(fn, lo, hi, left: float, right: float, far: float = 1e4) -> float:
    """sup |f − H| on [right, far] and |f − L| on [−far, left] (a dense grid near, sparse far)."""
    near_r = np.linspace(right, right + 100, 200001)
    far_r = np.geomspace(right + 100, far, 2001)
    near_l = np.linspace(left - 100, left, 200001)
    far_l = -np.geomspace(-left + 100, far, 2001)
    xr, xl = np.concatenate([near_r, far_r]), np.concatenate([near_l, far_l])
    return float(max(np.abs(fn(xr) - _asymptote(hi, xr)).max(), np.abs(fn(xl) - _asymptote(lo, xl)).max()))


def input_frac(d: int, r: float, q: int) -> int:
    """f_p: the one-round methods' input precision for degree d on |x| ≤ r (poly.default_frac)."""
    return poly.default_frac(d, r, q)


def fit_pieces(name: str, d: int, q: int, target: float = TARGET) -> dict | None:
    """Greedy breakpoints (each interval as long as its fit stays within ``target``, on a 1/64
    grid) between the outer ones, where the asymptotes are within :data:`GAP`; None when degree d
    cannot reach the target at that range (the input precision f_p is too coarse)."""
    spec = functions()[name]
    fn, lo, hi = spec["fn"], spec["lo"], spec["hi"]
    steps = np.arange(0.0, 40.0, 0.25)
    right = float(next(r for r in steps if asymptote_gaps(fn, lo, hi, -1e9, r) <= GAP))
    left = -float(next(r for r in steps if asymptote_gaps(fn, lo, hi, -r, 1e9) <= GAP))
    f_p = input_frac(d, max(right, -left), q)
    breaks, pieces, a = [left], [], left
    while a < right:
        if piece_error(fn, fit_interval(fn, d, a, right, q), a, right, f_p) <= target:
            b = right
        else:
            good, bad = a, right
            for _ in range(14):
                mid = (good + bad) / 2
                if piece_error(fn, fit_interval(fn, d, a, mid, q), a, mid, f_p) <= target:
                    good = mid
                else:
                    bad = mid
            b = math.floor(good * 64) / 64
            if b <= a:
                return None
        pieces.append(fit_interval(fn, d, a, b, q))
        breaks.append(b)
        a = b
    if len(pieces) >= 2:  # a short last piece: the one before may reach the right end itself,
        merged = fit_interval(fn, d, breaks[-3], right, q)
        if piece_error(fn, merged, breaks[-3], right, f_p) <= target:
            pieces[-2:], breaks[-2:] = [merged], [right]
        elif asymptote_gaps(fn, lo, hi, -1e9, breaks[-2]) <= GAP:  # or the asymptote start earlier
            pieces.pop()
            breaks.pop()
    return {"name": name, "degree": d, "frac": q, "breaks": breaks, "pieces": pieces}


def _shipped() -> dict:
    text = resources.files("ringlet.poly").joinpath("smooth_pieces.json").read_text()
    return json.loads(text)["functions"]


@functools.cache
def _measured(name: str) -> str:
    shipped = _shipped()
    if name not in shipped:
        raise ValueError(f"no accurate pieces for {name!r} (shipped: {', '.join(sorted(shipped))})")
    s = shipped[name]
    base = functions()[name]
    fn = base["fn"]
    breaks, pieces, d, q = s["breaks"], s["pieces"], s["degree"], s["frac"]
    r = max(abs(breaks[0]), abs(breaks[-1]))
    f_p = input_frac(d, r, q)
    inside = max(piece_error(fn, c, a, b, f_p) for c, a, b in zip(pieces, breaks, breaks[1:]))
    gap = asymptote_gaps(fn, base["lo"], base["hi"], breaks[0], breaks[-1])
    select = 2.0 ** (1 - OUT_FRAC)  # the selects' units
    return json.dumps({"name": name, "method": "accurate", "degree": d, "frac": q, "breaks": breaks,
                       "pieces": pieces, "lo": base["lo"], "hi": base["hi"], "input_frac": f_p,
                       "range": r, "inside_error": inside, "asymptote_gap": gap,
                       "max_error": max(inside + select, gap + select), "garbage_beyond": None})


def accurate_spec(name: str) -> dict:
    """The shipped pieces of ``name`` with their measured error (a fresh dict each call)."""
    return json.loads(_measured(name))
