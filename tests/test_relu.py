"""Secure DReLU / ReLU / max: exactness, the reduced-ring mismatch set, exact bits and rounds."""

import numpy as np
import pytest
import torch
from conftest import run

from ringlet.protocols.base import allowed_mismatch
from ringlet.protocols.io import reveal, share_input
from ringlet.protocols.relu import ReluSpec, drelu, max_pool2d, maximum, relu, relu_cost

COUNTED = ("setup", "offline", "input", "output", "open")


def _program(values, spec, op):
    def prog(sess):
        x = share_input(sess, values if sess.rank == 0 else None, 0, tuple(values.shape), encoded=True)
        before = sess.stats.copy()
        if op == "relu":
            y = relu(sess, x, spec)
        else:
            y = sess.share(drelu(sess, x, spec, arithmetic=True).view(x.shape), frac=0)
        used = sess.stats.minus(before)
        return reveal(sess, y, decode=False), used.bytes_sent(exclude=COUNTED), used.total_rounds(exclude=COUNTED)
    return prog


def _edge_values(n=640, seed=0):
    rng = np.random.default_rng(seed)  # test data only
    v = torch.from_numpy(rng.integers(-(2 ** 40), 2 ** 40, n))
    edges = [0, 1, -1, 2, -2, 2 ** 16, -(2 ** 16), 2 ** 63 - 1, -(2 ** 63), 2 ** 62, -(2 ** 62),
             2 ** 19 - 1, 2 ** 19, -(2 ** 19), -(2 ** 19) - 1, 15, 16, 17, -15, -16, -17]
    v[:len(edges)] = torch.tensor(edges)
    # small values, where pruning and sign edges live
    v[len(edges):len(edges) + 200] = torch.from_numpy(rng.integers(-300, 300, 200))
    return v


def test_exact_relu_is_exact_on_adversarial_inputs(parties):
    v = _edge_values()
    (out, _, _), *_ = run(_program(v, ReluSpec(), "relu"), parties).results
    assert torch.equal(out, v.clamp(min=0))


def test_exact_drelu_baseline_is_exact(parties):
    v = _edge_values(seed=1)
    spec = ReluSpec(64, 0, "kogge-stone", "b2a-mult")
    (out, _, _), *_ = run(_program(v, spec, "drelu"), parties).results
    assert torch.equal(out, (v >= 0).to(torch.int64))


@pytest.mark.parametrize("k,m", [(20, 0), (12, 4), (8, 8), (9, 8), (10, 8), (40, 10), (64, 30), (3, 0)])
def test_reduced_ring_mismatches_only_where_theory_allows(parties, k, m):
    v = _edge_values(seed=k * 100 + m)
    (out, _, _), *_ = run(_program(v, ReluSpec(k, m), "relu"), parties).results
    mism = out != v.clamp(min=0)
    allowed = allowed_mismatch(v, k, m, parties)
    assert not (mism & ~allowed).any(), v[mism & ~allowed][:10]
    # wrong outputs are x instead of 0 or 0 instead of x, never anything else
    assert torch.all((out[mism] == 0) | (out[mism] == v[mism]))
    # inside the guaranteed range, values well away from the edges are exact
    if m == 0 and k < 64:
        safe = (v > -(2 ** (k - 1)) + 2 * parties) & (v < 2 ** (k - 1) - 2 * parties)
        assert not mism[safe].any()


COST_CASES = [
    (ReluSpec(64, 0, "carry-tree", "fused"), 308, 8, 243, 7),
    (ReluSpec(64, 0, "kogge-stone", "b2a-mult"), 1856, 9, 1728, 8),   # CrypTen 0.4.1, measured
    (ReluSpec(64, 0, "carry-tree", "b2a-mult"), 435, 9, 307, 8),
    (ReluSpec(64, 0, "kogge-stone", "fused"), 1729, 8, 1664, 7),
    (ReluSpec(20, 0), 133, 7, 68, 6),
    (ReluSpec(12, 4), 87, 5, 22, 4),
    (ReluSpec(10, 8), 66, 2, 1, 1),
    (ReluSpec(9, 8), 65, 1, 0, 0),
    (ReluSpec(8, 8), 0, 0, 0, 0),
    (ReluSpec(12, 4, "kogge-stone", "b2a-mult"), 304, 6, 176, 5),
]


@pytest.mark.parametrize("spec,relu_bits,relu_rounds,drelu_bits,drelu_rounds", COST_CASES,
                         ids=lambda c: f"{c.k}:{c.m}-{c.adder}-{c.select}" if isinstance(c, ReluSpec) else None)
def test_bits_and_rounds_exact_two_parties(spec, relu_bits, relu_rounds, drelu_bits, drelu_rounds):
    n = 64 * 4
    v = _edge_values(n, seed=5)
    cost = relu_cost(spec, 2)
    assert (cost["relu_bits"], cost["relu_rounds"]) == (relu_bits, relu_rounds)
    if spec.select == "fused":  # the fused select's DReLU is binary (no B2A)
        assert (cost["drelu_bits"], cost["drelu_rounds"]) == (drelu_bits, drelu_rounds)
    for op, bits, rounds in (("relu", relu_bits, relu_rounds),):
        res = run(_program(v, spec, op), 2).results
        assert max(8 * r[1] for r in res) == bits * n
        assert max(r[2] for r in res) == rounds


@pytest.mark.parametrize("spec", [ReluSpec(), ReluSpec(12, 4), ReluSpec(64, 0, "kogge-stone", "b2a-mult"),
                                  ReluSpec(9, 8)], ids=str)
def test_bits_and_rounds_exact_three_parties(spec):
    n = 64 * 4
    v = _edge_values(n, seed=6)
    res = run(_program(v, spec, "relu"), 3).results
    cost = relu_cost(spec, 3)
    assert max(8 * r[1] for r in res) == cost["relu_bits"] * n
    assert max(r[2] for r in res) == cost["relu_rounds"]
    # servers 0 and 1 pay the 2-party cost; server 2 only re-shares (w + 64 bits)
    two = relu_cost(spec, 2)
    assert 8 * res[0][1] == two["relu_bits"] * n and 8 * res[2][1] == (spec.width + 64) * n


def test_drelu_circuit_meets_the_issue_targets():
    for w in range(2, 65):
        bits, rounds = relu_cost(ReluSpec(w, 0), 2)["drelu_bits"], relu_cost(ReluSpec(w, 0), 2)["drelu_rounds"]
        assert bits <= 4 * w and rounds <= int(np.ceil(np.log2(w - 1))) + 1 if w > 2 else rounds <= 1
        relu_b = relu_cost(ReluSpec(w, 0), 2)
        assert relu_b["relu_bits"] <= bits + 65 and relu_b["relu_rounds"] <= rounds + 1


def _max_program(a, b, img):
    def prog(sess):
        own = lambda v: share_input(sess, v if sess.rank == 0 else None, 0, tuple(v.shape))  # noqa
        mx = maximum(sess, own(a), own(b))
        mp = max_pool2d(sess, own(img), 2)
        mp3 = max_pool2d(sess, own(img), 3, 2, 1)
        mp_r = max_pool2d(sess, own(img), 2, spec=ReluSpec(24, 0))
        return [reveal(sess, v) for v in (mx, mp, mp3, mp_r)]
    return prog


def test_max_and_max_pool(parties):
    g = torch.Generator().manual_seed(3)  # test data only
    a, b = torch.randn(50, generator=g) * 3, torch.randn(50, generator=g) * 3
    img = torch.randn(2, 3, 6, 6, generator=g)
    mx, mp, mp3, mp_r = run(_max_program(a, b, img), parties).results[0]
    F = torch.nn.functional
    assert torch.allclose(mx, torch.maximum(a, b).double(), atol=2e-5)
    assert torch.allclose(mp, F.max_pool2d(img, 2).double(), atol=2e-5)
    assert torch.allclose(mp3, F.max_pool2d(img, 3, 2, 1).double(), atol=2e-5)
    assert torch.allclose(mp_r, F.max_pool2d(img, 2).double(), atol=2e-5)  # |x| < 2^7: [24:0] exact


def _shift_program(values, spec, shift):
    def prog(sess):
        x = share_input(sess, values if sess.rank == 0 else None, 0, tuple(values.shape), encoded=True)
        x = sess.share(x.data, frac=16 + shift)
        before = sess.stats.copy()
        y = relu(sess, x, spec, shift=shift)
        used = sess.stats.minus(before)
        assert y.frac == 16
        return reveal(sess, y, decode=False), used.bytes_sent(exclude=COUNTED), used.total_rounds(exclude=COUNTED)
    return prog


@pytest.mark.parametrize("spec", [ReluSpec(), ReluSpec(20, 0), ReluSpec(12, 4)], ids=str)
def test_relu_with_fused_truncation(parties, spec):
    """A conv output with 16 extra fractional bits: truncation folded into the select for free."""
    rng = np.random.default_rng(7)  # test data only
    y = torch.from_numpy(rng.integers(-(2 ** 50), 2 ** 50, 640))
    y[:6] = torch.tensor([0, 1, -1, 2 ** 16, -(2 ** 16), 2 ** 61])
    res = run(_shift_program(y, spec, 16), parties).results
    out = res[0][0]
    x_true = y >> 16
    want = x_true.clamp(min=0)
    diff = out - want
    # the truncation is exact to one unit; wrong signs only where the [k:m] theory allows them
    ok = (diff.abs() <= 1) | allowed_mismatch(x_true, spec.k, spec.m, parties)
    assert ok.all(), (y[~ok][:5], out[~ok][:5], want[~ok][:5])
    if (spec.k, spec.m) == (64, 0):
        assert (diff.abs() <= 1).all()
    # the same cost as without the shift: the truncation adds no communication
    cost = relu_cost(spec, parties)
    assert max(8 * r[1] for r in res) == cost["relu_bits"] * 640
    assert max(r[2] for r in res) == cost["relu_rounds"]


def test_sign_families_are_one_registry_with_their_costs_and_dealer_requests():
    """Each registered family's cost formula and dealer requests are those of a real run."""
    from ringlet.protocols.catalog import SELECTS, sign_families
    from ringlet.ring import num_words
    fams = sign_families()
    assert fams.names() == ("carry-tree", "kogge-stone", "fss") and SELECTS == ("fused", "b2a-mult")
    with pytest.raises(ValueError, match="use one of"):
        ReluSpec(64, 0, "no-such-adder")
    n = 256
    for name in fams.names():
        for k in (2, 3, 9, 20, 64):
            v = _edge_values(n, seed=k)
            spec = ReluSpec(k, 0, name)

            def prog(sess, v=v, spec=spec):
                x = share_input(sess, v if sess.rank == 0 else None, 0, (n,), encoded=True)
                sess.offline.plan = []
                before = sess.stats.copy()
                drelu(sess, x, spec, arithmetic=False)
                used = sess.stats.minus(before)
                return (list(sess.offline.plan), 8 * used.bytes_sent(exclude=COUNTED),
                        used.total_rounds(exclude=COUNTED))
            plan, bits, rounds = run(prog, 2).results[0]
            assert plan == fams[name].requests(k, num_words(n))
            assert (bits, rounds) == (fams[name].circuit_cost(k)[0] * n, fams[name].circuit_cost(k)[1])
