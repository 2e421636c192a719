"""Quantised polynomial fits of activation functions, and the smooth-function table.

``fit_function`` fits any function on [−r, r] by least squares (or, with ``minimax``, by Lawson's
iteratively reweighted least squares, which tends to the minimax fit) and quantises the coefficients
to 2^−q: they are rounded one at a time, highest degree first, and the remaining ones refitted to
absorb each rounding (:func:`ringlet.poly.layers.fit_relu` is this with ReLU and plain least squares).

``SMOOTH`` holds the defaults of the smooth activations evaluated by
:func:`ringlet.protocols.piecewise.smooth`: the fit range r, the degree, the coefficient bits q and
the asymptotes L (below −r) and H (from r up), each a constant or ``"x"``. ``smooth_spec`` fits the
polynomial and measures the worst error of the secure evaluation over all reals:

- inside [−r, r], on a grid of step 2^−14: |p(x̃) − f(x)| where x̃ is x truncated to the f_p input
  bits of the one-round polynomial methods (``poly.input_frac``: one unit either side, which covers
  the local and the dealer truncation), plus the grid's step times max |f'| and two output units;
- outside (method ``piecewise``): sup |f(x) − H(x)| for x ≥ r and |f(x) − L(x)| for x < −r, plus
  two output units (the select's truncation of x).

Method ``poly`` reports the inside error only: beyond ±r the polynomial diverges from f, and beyond
``garbage_beyond`` (``poly.input_bound``) its ring value wraps — the result is garbage there.
The fixed-point budget of the one-round methods (|x|^d·2^(d·f_p + q) < 2^62) is what limits the
accuracy at degree ≥ 5: it leaves only 6–9 input bits, so tanh, GELU and above all SiLU stay above
1e−2 (a higher degree buys fit accuracy but loses more input bits):

===========  =====  ======  ===  ====  ================  ==========================
function     r      degree  q    f_p   max error (all)   asymptotes L / H
===========  =====  ======  ===  ====  ================  ==========================
sigmoid      4.5    5       15   7     0.0110            0 / 1
tanh         2.25   5       11   9     0.0220            −1 / 1
silu         4.5    4       13   10    0.0524            0 / x
gelu         2.5    4       12   11    0.0219            0 / x
hardswish    3      2       20   16    1.5e−4            0 / x (p = x(x+3)/6)
hardsigmoid  3      1       16   —     5.8e−5            0 / 1 (p = x/6 + 1/2, local)
===========  =====  ======  ===  ====  ================  ==========================
"""

from __future__ import annotations

import numpy as np
import torch

from ringlet.poly.pieces import accurate_spec, truncated_input_error
from ringlet.protocols.arith import poly
from ringlet.protocols.piecewise import SMOOTH_METHODS

GRID = 4001
STEP = 2.0 ** -14  # the grid of the error measurement
OUT_FRAC = 16      # the output precision the error bound assumes (the session default)


def _design(x: np.ndarray, degree: int) -> np.ndarray:
    return np.stack([x ** j for j in range(degree + 1)], axis=1)


def _weights(a: np.ndarray, y: np.ndarray, iterations: int = 60) -> np.ndarray:
    """Square roots of Lawson's weights: each iteration multiplies a point's weight by its error,
    which drives the weighted least-squares fit towards the minimax one."""
    w = np.full(len(y), 1.0 / len(y))
    for _ in range(iterations):
        sw = np.sqrt(w)
        sol, *_ = np.linalg.lstsq(a * sw[:, None], y * sw, rcond=None)
        w = w * np.abs(a @ sol - y)
        w = w / w.sum()
    return np.sqrt(w)


def fit_function(fn, degree: int, r: float, frac: int = 10, minimax: bool = False,
                 grid: int = GRID) -> dict:
    """Fit ``fn`` (numpy array → array) on [−r, r] by a degree-``degree`` polynomial whose
    coefficients (lowest first) are multiples of 2^−frac."""
    if not 1 <= degree <= 12:
        raise ValueError(f"polynomial degree must be 1..12, got {degree}")
    if r <= 0:
        raise ValueError(f"range must be positive, got {r}")
    x = np.linspace(-r, r, grid)
    y = np.asarray(fn(x), dtype=np.float64)
    a = _design(x, degree)
    sw = _weights(a, y) if minimax else None
    coeffs = np.zeros(degree + 1)
    free = list(range(degree + 1))
    target = y.copy()
    while free:
        if sw is None:  # plain least squares (fit_relu's, bit for bit)
            sol, *_ = np.linalg.lstsq(a[:, free], target, rcond=None)
        else:
            sol, *_ = np.linalg.lstsq(a[:, free] * sw[:, None], target * sw, rcond=None)
        j = free[-1]  # round the highest remaining degree, refit the others
        coeffs[j] = np.round(sol[-1] * 2 ** frac) / 2 ** frac
        target = target - coeffs[j] * a[:, j]
        free.pop()
    err = a @ coeffs - y
    exact, *_ = np.linalg.lstsq(a, y, rcond=None)
    return {"degree": degree, "range": r, "frac": frac, "coeffs": coeffs.tolist(),
            "max_error": float(np.abs(err).max()), "rms_error": float(np.sqrt((err ** 2).mean())),
            "unquantised_max_error": float(np.abs(a @ exact - y).max())}


def quantise(coeffs, frac: int) -> list[float]:
    """Exact coefficients (e.g. Hardswish's) rounded to multiples of 2^−frac."""
    return [round(c * 2 ** frac) / 2 ** frac for c in coeffs]


def _torch_fn(f):
    return lambda x: f(torch.from_numpy(np.asarray(x, dtype=np.float64))).numpy()


_F = torch.nn.functional

# name: the function, its asymptotes, and the defaults (degree, range r, coefficient bits q);
# "exact" gives the polynomial itself where the function is one on [−r, r]
SMOOTH = {
    "sigmoid": {"fn": _torch_fn(torch.sigmoid), "lo": 0.0, "hi": 1.0,
                "degree": 5, "range": 4.5, "frac": 15},
    "tanh": {"fn": _torch_fn(torch.tanh), "lo": -1.0, "hi": 1.0,
             "degree": 5, "range": 2.25, "frac": 11},
    "silu": {"fn": _torch_fn(_F.silu), "lo": 0.0, "hi": "x",
             "degree": 4, "range": 4.5, "frac": 13},
    "gelu": {"fn": _torch_fn(_F.gelu), "lo": 0.0, "hi": "x",
             "degree": 4, "range": 2.5, "frac": 12},
    "hardswish": {"fn": _torch_fn(_F.hardswish), "lo": 0.0, "hi": "x",
                  "degree": 2, "range": 3.0, "frac": 20, "exact": [0.0, 0.5, 1.0 / 6.0]},
    "hardsigmoid": {"fn": _torch_fn(_F.hardsigmoid), "lo": 0.0, "hi": 1.0,
                    "degree": 1, "range": 3.0, "frac": 16, "exact": [0.5, 1.0 / 6.0]},
}
METHODS = SMOOTH_METHODS


def asymptote(value, x: np.ndarray) -> np.ndarray:
    """An asymptote's values: a constant, or x itself (``"x"``)."""
    return x if value == "x" else np.full_like(x, float(value))


def asymptote_gap(fn, lo, hi, r: float, width: float = 200.0) -> float:
    """sup |f − H| on [r, r + width] and |f − L| on [−r − width, −r) (the tails decay beyond)."""
    x = np.linspace(r, r + width, 200001)
    gap_hi = np.abs(fn(x) - asymptote(hi, x)).max()
    gap_lo = np.abs(fn(-x) - asymptote(lo, -x)).max()
    return float(max(gap_hi, gap_lo))


def fixed_point_error(fn, coeffs, r: float, input_frac: int, out_frac: int = OUT_FRAC) -> float:
    """Worst |p(x̃) − f(x)| on [−r, r] with x̃ = x truncated to ``input_frac`` bits, ±1 unit."""
    x = np.arange(-r, r + STEP / 2, STEP)
    worst = truncated_input_error(fn, coeffs, x, input_frac)
    slope = float(np.abs(np.diff(fn(x))).max() / STEP)
    return worst + slope * STEP + 2.0 ** (1 - out_frac)


def smooth_spec(name: str, method: str = "piecewise", degree: int | None = None,
                r: float | None = None, frac: int | None = None) -> dict:
    """The spec :func:`~ringlet.protocols.piecewise.smooth` evaluates, with its measured error.

    Keys: name, method, range, degree, frac (q), coeffs, lo, hi, input_frac (f_p), max_error,
    inside_error, asymptote_gap (0 for ``poly``) and garbage_beyond (``poly``: |x| beyond which the
    polynomial wraps; ``piecewise``: None, every real is covered). ``accurate``: the shipped
    breakpoints and pieces (:func:`ringlet.poly.pieces.accurate_spec`: keys breaks and pieces
    instead of coeffs); Hardswish and Hardsigmoid, exact polynomials, keep their piecewise spec.
    """
    if method == "accurate" and name not in ("hardswish", "hardsigmoid"):
        return accurate_spec(name)
    if method == "accurate":
        method = "piecewise"
    if name not in SMOOTH:
        raise ValueError(f"unknown smooth function {name!r}; use one of {sorted(SMOOTH)}")
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; use one of {METHODS}")
    base = SMOOTH[name]
    degree = base["degree"] if degree is None else degree
    r = base["range"] if r is None else float(r)
    q = base["frac"] if frac is None else frac
    fn = base["fn"]
    if "exact" in base and degree == base["degree"]:
        coeffs = quantise(base["exact"], q)
    else:
        coeffs = fit_function(fn, degree, r, q, minimax=True)["coeffs"]
    f_p = OUT_FRAC if degree == 1 else poly.input_frac(coeffs, r)  # degree 1 is local, exact input
    inside = fixed_point_error(fn, coeffs, r, f_p)
    gap = asymptote_gap(fn, base["lo"], base["hi"], r) if method == "piecewise" else 0.0
    outside = gap + 2.0 ** (1 - OUT_FRAC) if method == "piecewise" else 0.0  # + the select's units
    bound = None if method == "piecewise" else poly.input_bound(coeffs, f_p, q)
    return {"name": name, "method": method, "range": r, "degree": degree, "frac": q,
            "coeffs": coeffs, "lo": base["lo"], "hi": base["hi"], "input_frac": f_p,
            "max_error": max(inside, outside), "inside_error": inside, "asymptote_gap": gap,
            "garbage_beyond": bound}
