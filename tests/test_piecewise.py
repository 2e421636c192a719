"""Piecewise activations: select-with-value, LeakyReLU/|x|, clamp, smooth functions vs plaintext torch;
exact bits and rounds per element against the cost formulas."""

import numpy as np
import pytest
import torch
from conftest import run

from ringlet import ring
from ringlet.poly.fit import SMOOTH, fit_function, smooth_spec
from ringlet.poly.layers import fit_relu
from ringlet.protocols import piecewise as pw
from ringlet.protocols.convert import select_finish, select_prepare
from ringlet.protocols.io import reveal, share_input
from ringlet.protocols.relu import ReluSpec, relu_cost
from ringlet.runtime.launch import PartyError

F = torch.nn.functional
COUNTED = ("setup", "offline", "input", "output", "open")
F16 = 16
ULP = 2.0 ** -F16
TORCH = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "silu": F.silu, "gelu": F.gelu,
         "hardswish": F.hardswish, "hardsigmoid": F.hardsigmoid}


def _program(values, ops, x_frac=F16):
    """Share ``values`` (ring units at ``x_frac`` bits) once, run every op on them; per op the
    output ring tensor, bits sent and rounds (the maximum over servers is taken by the caller)."""
    def prog(sess):
        x = share_input(sess, values if sess.rank == 0 else None, 0, tuple(values.shape), encoded=True)
        x = sess.share(x.data, frac=x_frac)
        out = []
        for op in ops:
            before = sess.stats.copy()
            y = op(sess, x)
            used = sess.stats.minus(before)
            out.append((reveal(sess, y, decode=False), y.frac, 8 * used.bytes_sent(exclude=COUNTED),
                        used.total_rounds(exclude=COUNTED)))
        return out
    return prog


def _results(values, ops, parties, x_frac=F16):
    """[(ring output, frac, max bits per element, max rounds)] per op."""
    res = run(_program(values, ops, x_frac), parties).results
    n = values.numel()
    return [(res[0][i][0], res[0][i][1], max(r[i][2] for r in res) / n, max(r[i][3] for r in res))
            for i in range(len(ops))]


def _edges(extra=(), n=256, seed=0, scale=4.0):
    """Ring units at 16 bits: 0, ±1 ulp, ±1000, the given reals ± 1 ulp, then random values."""
    rng = np.random.default_rng(seed)  # test data only
    pts = [0.0, ULP, -ULP, 1000.0, -1000.0, 1e-3, -1e-3]
    for v in extra:
        pts += [v, v + ULP, v - ULP, -v, -v + ULP, -v - ULP]
    fixed = torch.tensor([round(p * 2 ** F16) for p in pts], dtype=torch.int64)
    rand = torch.from_numpy(np.round(rng.uniform(-scale, scale, n - len(pts)) * 2 ** F16).astype(np.int64))
    return torch.cat([fixed, rand])


def _shifted(v16, seed=1):
    """The same values at 32 bits with random low bits (a conv output before its truncation)."""
    rng = np.random.default_rng(seed)  # test data only
    return v16 * 2 ** F16 + torch.from_numpy(rng.integers(0, 2 ** F16, v16.numel()))


def _real(v, frac):
    return v.double() / 2 ** frac


# -- 1. the select that also returns its value ------------------------------------------------

@pytest.mark.parametrize("shift", [0, 16])
def test_select_returns_the_value_for_free(shift):
    rng = np.random.default_rng(2)  # test data only
    edge = [0, 1, -1, 2, -2, 2 ** 16, -(2 ** 16), 2 ** 16 - 1, -(2 ** 16) + 1, 2 ** 61, -(2 ** 61),
            2 ** 62 - 1, -(2 ** 62) + 1]
    y = torch.cat([torch.tensor(edge), torch.from_numpy(rng.integers(-(2 ** 50), 2 ** 50, 192 - len(edge)))])
    b = torch.from_numpy(rng.integers(0, 2, y.numel()))

    def prog(sess):
        mine = y if sess.rank == 0 else torch.zeros_like(y)
        bits = b if sess.rank == 0 else torch.zeros_like(b)
        plane = ring.pack_plane(bits).view(1, -1)
        before = sess.stats.copy()
        mat, item = select_prepare(sess, mine, shift)
        bt, t = select_finish(sess, plane, mine, mat, item, [], shift, with_value=True)
        used = sess.stats.minus(before)
        mat, item = select_prepare(sess, mine, shift)
        alone = select_finish(sess, plane, mine, mat, item, [], shift)
        return bt, t, alone, 8 * used.bytes_sent(exclude=COUNTED), used.total_rounds(exclude=COUNTED)

    res = run(prog, 2).results
    bt, t, alone = (res[0][i] + res[1][i] for i in range(3))
    floor = y >> shift
    assert ((t - floor) >= 0).all() and ((t - floor) <= (1 if shift else 0)).all()
    assert torch.equal(bt, b * t)            # the same T, to the unit
    assert ((b * floor - alone).abs() <= (1 if shift else 0)).all() and (alone[b == 0] == 0).all()
    assert all(r[3] == 65 * y.numel() and r[4] == 1 for r in res)  # unchanged: 1 + 64 bits, 1 round


# -- 2. LeakyReLU and |x| ------------------------------------------------------------------------

B2A = ReluSpec(select="b2a-mult")


@pytest.mark.parametrize("shift", [0, 16])
def test_leaky_relu_and_abs_match_torch_with_exact_costs(parties, shift):
    cases = [(0, ReluSpec()), (-1, ReluSpec()), (2, ReluSpec()), (0.01, ReluSpec()),
             (-0.2, ReluSpec()), (-1, B2A)]
    v = _edges()
    x = _shifted(v) if shift else v
    xr = _real(x, F16 + shift)
    ops = [lambda s, x, a=a, spec=spec: pw.leaky_relu(s, x, a, spec, shift=shift) for a, spec in cases]
    for (a, spec), (out, frac, bits, rounds) in zip(cases, _results(x, ops, parties, F16 + shift)):
        assert frac == F16
        got = _real(out, F16)
        if float(a) == int(a):
            # exact in ring units without a shift; with one, T is off by one unit at most (× |a|)
            want = torch.where(x >= 0, x >> shift, int(a) * (x >> shift))
            tol = 0 if shift == 0 else max(1, abs(int(a)))
            assert ((out - want).abs() <= tol).all(), a
            ref = xr.abs() if a == -1 else F.leaky_relu(xr, float(a))
            assert ((got - ref).abs() <= (tol + 1) * ULP).all()
        else:
            q = round(a * 2 ** F16) / 2 ** F16  # the slope quantised to f bits
            ref = F.leaky_relu(xr, a)
            assert ((got - ref).abs() <= xr.abs() * abs(a - q) + 2 * ULP).all(), a
        cost = pw.leaky_relu_cost(spec, a, parties, shift)
        assert (bits, rounds) == (cost["bits"], cost["rounds"]), (a, spec)
    relu = relu_cost(ReluSpec(), parties)
    assert pw.leaky_relu_cost(ReluSpec(), -1, parties)["bits"] == relu["relu_bits"]
    assert pw.leaky_relu_cost(ReluSpec(), 0.01, 2)["bits"] == relu_cost(ReluSpec(), 2)["relu_bits"] + 65


# -- 3. clamp, ReLU6, Hardtanh ------------------------------------------------------------------

CLAMPS = [(0.0, 6.0), (-1.0, 1.0), (-2.5, None), (None, 0.75)]


@pytest.mark.parametrize("shift", [0, 16])
def test_clamp_relu6_hardtanh_match_torch_with_exact_costs(parties, shift):
    v = _edges(extra=(6.0, 1.0, 2.5, 0.75), scale=8.0, seed=3)
    x = _shifted(v) if shift else v
    xr = _real(x, F16 + shift)
    ops = [lambda s, x, lo=lo, hi=hi: pw.clamp(s, x, lo, hi, shift=shift) for lo, hi in CLAMPS]
    for (lo, hi), (out, frac, bits, rounds) in zip(CLAMPS, _results(x, ops, parties, F16 + shift)):
        assert frac == F16
        want = torch.clamp(x >> shift, None if lo is None else round(lo * 2 ** F16),
                           None if hi is None else round(hi * 2 ** F16))
        assert ((out - want).abs() <= (1 if shift else 0)).all(), (lo, hi)
        ref = (F.relu6(xr) if (lo, hi) == (0.0, 6.0) else F.hardtanh(xr) if (lo, hi) == (-1.0, 1.0)
               else torch.clamp(xr, lo, hi))
        assert ((_real(out, F16) - ref).abs() <= 2 * ULP).all()
        cost = pw.clamp_cost(ReluSpec(), 2 if lo is not None and hi is not None else 1, parties, shift)
        assert (bits, rounds) == (cost["bits"], cost["rounds"])
    assert pw.clamp_cost(ReluSpec(), 2, parties)["bits"] == 2 * relu_cost(ReluSpec(), parties)["relu_bits"]
    with pytest.raises(PartyError, match="at least one of lo, hi"):
        run(_program(v[:4], [lambda s, x: pw.clamp(s, x)]), 2)


def test_reduced_ring_spec_is_accepted_by_leaky_and_clamp(parties):
    spec = ReluSpec(20, 0)  # exact while |x| < 2^19 ring units, i.e. |x| < 8 at 16 bits
    v = _edges(extra=(1.0,), scale=3.0, seed=4)
    v = v[v.abs() < 4 * 2 ** F16]
    v = v[: 64 * (v.numel() // 64)]
    ops = [lambda s, x: pw.leaky_relu(s, x, -1, spec), lambda s, x: pw.leaky_relu(s, x, 0.1, spec),
           lambda s, x: pw.clamp(s, x, -1.0, 1.0, spec), lambda s, x: pw.clamp(s, x, 0.0, None, spec),
           lambda s, x: pw.leaky_relu(s, x, 2, ReluSpec(20, 0, select="b2a-mult")),
           lambda s, x: pw.clamp(s, x, None, 0.5, ReluSpec(20, 0, select="b2a-mult"))]
    res = _results(v, ops, parties)
    assert torch.equal(res[0][0], v.abs())
    q = round(0.1 * 2 ** F16)
    assert ((res[1][0] - torch.where(v >= 0, v, (q * v) >> F16)).abs() <= 1).all()
    assert torch.equal(res[2][0], v.clamp(-(2 ** F16), 2 ** F16))
    assert torch.equal(res[3][0], v.clamp(min=0))
    assert torch.equal(res[4][0], torch.where(v >= 0, v, 2 * v))
    assert torch.equal(res[5][0], v.clamp(max=2 ** (F16 - 1)))
    costs = [pw.leaky_relu_cost(spec, -1, parties), pw.leaky_relu_cost(spec, 0.1, parties),
             pw.clamp_cost(spec, 2, parties), pw.clamp_cost(spec, 1, parties),
             pw.leaky_relu_cost(ReluSpec(20, 0, select="b2a-mult"), 2, parties),
             pw.clamp_cost(ReluSpec(20, 0, select="b2a-mult"), 1, parties)]
    assert [(r[2], r[3]) for r in res] == [(c["bits"], c["rounds"]) for c in costs]
    assert costs[0]["bits"] < pw.leaky_relu_cost(ReluSpec(), -1, parties)["bits"]


# -- 4. smooth functions ------------------------------------------------------------------------

def test_fit_function_generalises_fit_relu_and_the_table_meets_its_errors():
    relu = fit_relu(4, 5.0, 10)
    again = fit_function(lambda x: np.maximum(x, 0), 4, 5.0, 10)
    assert relu["coeffs"] == again["coeffs"] and relu["max_error"] == again["max_error"]
    documented = {"sigmoid": 0.012, "tanh": 0.023, "silu": 0.055, "gelu": 0.023,
                  "hardswish": 2e-4, "hardsigmoid": 1e-4}
    for name in SMOOTH:
        s = smooth_spec(name)
        assert s["max_error"] <= documented[name], (name, s["max_error"])
        assert s["max_error"] >= max(s["inside_error"], s["asymptote_gap"])
        assert s["garbage_beyond"] is None
        p = smooth_spec(name, "poly")
        assert p["asymptote_gap"] == 0 and p["garbage_beyond"] > p["range"]
    assert smooth_spec("hardswish")["coeffs"] == pytest.approx([0, 0.5, 1 / 6], abs=1e-6)


def _smooth_values(r, seed):
    v = _edges(extra=(r, 1.0, 2 * r), scale=2 * r, seed=seed)
    return v[: 64 * (v.numel() // 64)]


@pytest.mark.parametrize("shift", [0, 16])
def test_smooth_piecewise_matches_torch_on_all_reals_with_exact_costs(parties, shift):
    names = list(SMOOTH)
    specs = {n: smooth_spec(n) for n in names}
    v = torch.cat([_smooth_values(specs[n]["range"], i) for i, n in enumerate(names)])
    x = _shifted(v) if shift else v
    xr = _real(x, F16 + shift)
    ops = [lambda s, x, n=n: pw.smooth(s, x, specs[n], shift=shift) for n in names]
    for name, (out, frac, bits, rounds) in zip(names, _results(x, ops, parties, F16 + shift)):
        assert frac == F16
        err = (_real(out, F16) - TORCH[name](xr)).abs()
        # ±1000 included: p wraps there, but a select by a 0 bit is exactly 0
        assert err.max() <= specs[name]["max_error"], (name, err.max(), xr[err.argmax()])
        cost = pw.smooth_cost(specs[name], parties=parties, shift=shift)
        assert (bits, rounds) == (cost["bits"], cost["rounds"]), name


@pytest.mark.parametrize("poly_method", ["honeybadger", "espn-beaver"])
def test_smooth_with_other_polynomial_methods(parties, poly_method):
    spec = smooth_spec("tanh")
    v = _smooth_values(spec["range"], 9)
    (out, _, bits, rounds), = _results(v, [lambda s, x: pw.smooth(s, x, spec, poly_method=poly_method)],
                                       parties)
    assert (_real(out, F16) - torch.tanh(_real(v, F16))).abs().max() <= spec["max_error"]
    cost = pw.smooth_cost(spec, parties=parties, poly_method=poly_method)
    assert (bits, rounds) == (cost["bits"], cost["rounds"])


def test_smooth_poly_method_is_right_inside_and_garbage_far_outside(parties):
    names = ["sigmoid", "gelu", "hardsigmoid"]
    specs = {n: smooth_spec(n, "poly") for n in names}
    v = torch.tensor([round(t * 2 ** F16) for t in np.linspace(-1, 1, 62)] + [1000 * 2 ** F16, -(1000 * 2 ** F16)])
    ops = [lambda s, x, n=n: pw.smooth(s, x, specs[n], method="poly") for n in names]
    for name, (out, _, bits, rounds) in zip(names, _results(v, ops, parties)):
        spec = specs[name]
        xr = _real(v, F16)
        err = (_real(out, F16) - TORCH[name](xr)).abs()
        inside = xr.abs() <= spec["range"]
        assert err[inside].max() <= spec["max_error"]
        if spec["degree"] > 1:  # far beyond garbage_beyond the polynomial wraps
            assert err[~inside].min() > 1
        cost = pw.smooth_cost(spec, "poly", parties)
        assert (bits, rounds) == (cost["bits"], cost["rounds"]), name


ACCURATE = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "silu": F.silu, "gelu": F.gelu,
            "gelu_tanh": lambda t: F.gelu(t, approximate="tanh"), "softplus": F.softplus,
            "elu": F.elu, "mish": F.mish}


def test_accurate_specs_are_within_1e3_measured_here():
    """The shipped pieces, measured by this ringlet on a dense grid with the input truncated to
    f_p bits and out to ±10^4: every function within 1e-3; the breakpoints rise, one polynomial
    per interval, one degree."""
    from ringlet.poly.pieces import accurate_spec
    for name in ACCURATE:
        s = accurate_spec(name)
        assert s["max_error"] < 1e-3 and s["method"] == "accurate", (name, s["max_error"])
        assert s["breaks"] == sorted(s["breaks"]) and len(s["pieces"]) == len(s["breaks"]) - 1
        assert {len(c) for c in s["pieces"]} == {s["degree"] + 1}


@pytest.mark.parametrize("shift", [0, 16])
def test_accurate_smooth_matches_torch_on_all_reals_with_exact_costs(parties, shift):
    """Private runs of every accurate activation: dense values over the breakpoints and beyond,
    ±10^4 included, within 1e-3 of torch; bits and rounds equal smooth_cost's."""
    from ringlet.poly.pieces import accurate_spec
    names = list(ACCURATE)
    specs = {n: accurate_spec(n) for n in names}
    grid = []
    for n in names:
        r = specs[n]["range"] + 1
        dense = torch.linspace(-r, r, 1024)
        grid.append(torch.cat([dense, torch.tensor([-1e4, 1e4, -r * 3, r * 3] * 16)]))
    v = torch.round(torch.cat(grid) * 2 ** F16).to(torch.int64)
    x = _shifted(v) if shift else v
    xr = _real(x, F16 + shift)
    ops = [lambda s, x, n=n: pw.smooth(s, x, specs[n], "accurate", shift=shift) for n in names]
    for name, (out, frac, bits, rounds) in zip(names, _results(x, ops, parties, F16 + shift)):
        assert frac == F16
        err = (_real(out, F16) - ACCURATE[name](xr)).abs()
        assert err.max() < 1e-3 and err.max() <= specs[name]["max_error"], (name, err.max(), xr[err.argmax()])
        cost = pw.smooth_cost(specs[name], "accurate", parties=parties, shift=shift)
        assert (bits, rounds) == (cost["bits"], cost["rounds"]), name
        if parties == 2 and shift == 0:  # what the accuracy costs against the two-breakpoint fit
            assert rounds == pw.smooth_cost(smooth_spec("tanh"), parties=2)["rounds"]  # one budget
