"""Every protocol in the ring Z_2^ℓ for ℓ ∈ {32, 40, 64} (and an odd 37): against plaintext, with its
bits and rounds asserted exactly from the cost formulas written in ℓ."""

import numpy as np
import pytest
import torch
from conftest import run

from ringlet.protocols.arith import beaver
from ringlet.protocols.arith.truncation import default_method, truncate
from ringlet.protocols.base import allowed_mismatch
from ringlet.protocols.io import open_values, reveal, share_input
from ringlet.protocols.piecewise import clamp, clamp_cost, leaky_relu, leaky_relu_cost
from ringlet.protocols.relu import ReluSpec, drelu, max_pool2d, relu, relu_cost
from ringlet.ring import FixedPoint, FixedPointError, Ring
from ringlet.runtime.launch import PartyError

COUNTED = ("setup", "offline", "input", "output", "open")
WIDTHS = [32, 40, 64]


def _values(ell, n=512, seed=0):
    rng = np.random.default_rng(seed)  # test data only
    top = 2 ** (ell - 1)
    v = torch.from_numpy(rng.integers(-top, top, n, dtype=np.int64))
    edges = [0, 1, -1, 2, -2, top - 1, -top, top // 2, -top // 2, 2 ** 16, -(2 ** 16)]
    v[:len(edges)] = torch.tensor(edges)
    v[len(edges):len(edges) + 200] = torch.from_numpy(rng.integers(-300, 300, 200))
    return v


def _own(sess, v, encoded=True):
    return share_input(sess, v if sess.rank == 0 else None, 0, tuple(v.shape), encoded=encoded)


def _measured(fn):
    """Run ``fn(sess)`` between two snapshots: (result, online bits sent, rounds)."""
    def wrap(sess):
        before = sess.stats.copy()
        out = fn(sess)
        used = sess.stats.minus(before)
        return out, 8 * used.bytes_sent(exclude=COUNTED), used.total_rounds(exclude=COUNTED)
    return wrap


@pytest.mark.parametrize("ell", [32, 37, 40, 64])
def test_wire_format_is_exactly_ell_bits(ell):
    r = Ring(ell)
    x = torch.randint(-2 ** 63, 2 ** 63 - 1, (1000,), dtype=torch.int64)
    wired = r.wire(x)
    assert wired.numel() * wired.element_size() == (1000 * ell + 7) // 8
    assert torch.equal(r.unwire(wired, (10, 100)), r.reduce(x).view(10, 100))
    with pytest.raises(ValueError, match="bytes"):
        r.unwire(wired[:-1], (1000,))


@pytest.mark.parametrize("ell", WIDTHS)
def test_sharing_opening_and_reveal_cost_ell_bits(ell, parties):
    n = 256
    v = _values(ell, n)

    def prog(sess):
        x = _own(sess, v)
        before = sess.stats.copy()
        (opened,) = open_values(sess, [("open", x.data)])
        used = sess.stats.minus(before)
        return opened, 8 * used.bytes_sent(tags=("open",)), reveal(sess, x, decode=False)
    res = run(prog, parties, ring_bits=ell).results
    for opened, bits, revealed in res:
        assert torch.equal(opened, v) and torch.equal(revealed, v)
        assert bits == (parties - 1) * ell * n


@pytest.mark.parametrize("ell", WIDTHS)
def test_client_input_and_output_travel_at_ell_bits(ell):
    fx = FixedPoint(12, ell)
    x = torch.linspace(-3, 3, 96).view(8, 12)

    def server(sess):
        s = share_input(sess, None, sess.world.client, (8, 12))
        reveal(sess, s, to=sess.world.client)

    def client(sess):
        share_input(sess, x, sess.rank)
        return reveal(sess, None, to=sess.rank, shape=(8, 12), decode=False)
    res = run(server, 2, client=client, frac_bits=12, ring_bits=ell)
    out = res.reports[res.world.client].result
    assert torch.equal(out, fx.encode(x))
    stats = res.reports[res.world.client].total
    assert 8 * stats.bytes_sent(tags=("input",)) == ell * 96
    assert 8 * stats.bytes_received(tags=("output",)) == 2 * ell * 96


@pytest.mark.parametrize("ell", WIDTHS)
def test_beaver_product_and_truncations(ell, parties):
    fx = FixedPoint(10, ell)
    a = torch.linspace(-20, 20, 256)
    b = torch.linspace(3, -3, 256)

    def prog(sess):
        x, y = _own(sess, a, False), _own(sess, b, False)
        prod, bits, rounds = _measured(lambda s: beaver.mul(s, x, y, rescale=False))(sess)
        dealer, tbits, trounds = _measured(lambda s: truncate(s, prod, 10, "dealer"))(sess)
        out = [reveal(sess, prod, decode=False).double() / 2 ** 20, reveal(sess, dealer)]
        if sess.num_parties == 2 and ell == 64:  # below 64 bits local truncation fails too often
            out.append(reveal(sess, truncate(sess, prod, 10, "local")))
        return out, (bits, rounds), (tbits, trounds)
    res = run(prog, parties, frac_bits=10, ring_bits=ell).results
    want = fx.decode(fx.encode(a)) * fx.decode(fx.encode(b))
    (prod, dealer, *local), (bits, rounds), (tbits, trounds) = res[0]
    assert torch.equal(prod, want.double())
    for got in [dealer, *local]:
        assert (got - want).abs().max() <= 2 * 2.0 ** -10
    assert max(r[1][0] for r in res) == (parties - 1) * ell * 2 * 256 and rounds == 1
    assert max(r[2][0] for r in res) == (parties - 1) * ell * 256 and trounds == 1
    assert default_method(2, ell) == ("local" if ell == 64 else "dealer")


SPECS = [ReluSpec(), ReluSpec(20, 0), ReluSpec(14, 4), ReluSpec(64, 0, "kogge-stone", "b2a-mult"),
         ReluSpec(12, 4, "carry-tree", "b2a-mult"), ReluSpec(9, 8), ReluSpec(8, 8)]


@pytest.mark.parametrize("ell", WIDTHS)
@pytest.mark.parametrize("spec", SPECS, ids=str)
def test_relu_in_every_ring(ell, spec, parties):
    n = 256
    v = _values(ell, n, seed=ell + spec.k)
    res = run(_measured(lambda s: reveal(s, relu(s, _own(s, v), spec), decode=False)), parties,
              ring_bits=ell).results
    out = res[0][0]
    k = ell if (spec.k, spec.m) == (64, 0) else spec.k
    mism = out != v.clamp(min=0)
    assert not (mism & ~allowed_mismatch(v, k, spec.m, parties)).any()
    if k == ell and spec.m == 0:
        assert not mism.any()
    cost = relu_cost(spec, parties, ell)
    assert max(r[1] for r in res) == cost["relu_bits"] * n
    assert max(r[2] for r in res) == cost["relu_rounds"]


@pytest.mark.parametrize("ell", WIDTHS)
def test_exact_drelu_and_costs_written_in_ell(ell):
    v = _values(ell, 256, seed=3)
    spec = ReluSpec(64, 0, "kogge-stone", "b2a-mult")
    res = run(_measured(lambda s: drelu(s, _own(s, v), spec, arithmetic=True)), 2, ring_bits=ell).results
    bit = Ring(ell).reduce(res[0][0] + res[1][0])
    assert torch.equal(bit, (v >= 0).to(torch.int64))
    cost = relu_cost(spec, 2, ell)
    assert max(r[1] for r in res) == cost["drelu_bits"] * 256 and res[0][2] == cost["drelu_rounds"]
    # the formulas in ℓ: the fused ReLU's select costs ℓ + 1 bits beside the circuit
    fused = relu_cost(ReluSpec(), 2, ell)
    assert fused["relu_bits"] - fused["drelu_bits"] == ell + 1
    if ell == 64:
        assert (fused["relu_bits"], cost["relu_bits"]) == (308, 1856)


@pytest.mark.parametrize("ell", WIDTHS)
def test_relu_with_fused_truncation_in_every_ring(ell, parties):
    rng = np.random.default_rng(ell)  # test data only
    y = torch.from_numpy(rng.integers(-(2 ** (ell - 3)), 2 ** (ell - 3), 256, dtype=np.int64))
    y[:4] = torch.tensor([0, 1, -1, 2 ** (ell - 3) - 1])

    def prog(sess):
        x = sess.share(_own(sess, y).data, frac=16 + 8)
        out = relu(sess, x, ReluSpec(), shift=8)
        return reveal(sess, out, decode=False)
    res = run(_measured(prog), parties, ring_bits=ell).results
    diff = res[0][0] - (y >> 8).clamp(min=0)
    assert diff.abs().max() <= 1
    cost = relu_cost(ReluSpec(), parties, ell)
    assert max(r[1] for r in res) == cost["relu_bits"] * 256


@pytest.mark.parametrize("ell", WIDTHS)
def test_leaky_clamp_and_max_pool_in_every_ring(ell, parties):
    fx = FixedPoint(12, ell)
    x = torch.linspace(-6, 6, 128)
    img = torch.linspace(-4, 4, 2 * 3 * 6 * 6).view(2, 3, 6, 6)[..., torch.randperm(6)]

    def prog(sess):
        lk, lbits, lrounds = _measured(lambda s: leaky_relu(s, _own(s, x, False), 0.1))(sess)
        cl, cbits, crounds = _measured(lambda s: clamp(s, _own(s, x, False), -1.0, 2.0))(sess)
        mp = max_pool2d(sess, _own(sess, img, False), 3, 2, 1)
        return [reveal(sess, v) for v in (lk, cl, mp)], (lbits, lrounds), (cbits, crounds)
    res = run(prog, parties, frac_bits=12, ring_bits=ell).results
    (lk, cl, mp), (lbits, lrounds), (cbits, crounds) = res[0]
    xd = fx.decode(fx.encode(x))
    assert (lk - torch.nn.functional.leaky_relu(xd, 0.1)).abs().max() < 2e-3
    assert (cl - xd.clamp(-1, 2)).abs().max() < 2e-3
    want = torch.nn.functional.max_pool2d(fx.decode(fx.encode(img)), 3, 2, 1)
    assert (mp - want).abs().max() < 2e-3
    lc = leaky_relu_cost(ReluSpec(), 0.1, parties, ring_bits=ell)
    cc = clamp_cost(ReluSpec(), 2, parties, ring_bits=ell)
    assert max(r[1][0] for r in res) == lc["bits"] * 128 and lrounds == lc["rounds"]
    assert max(r[2][0] for r in res) == cc["bits"] * 128 and crounds == cc["rounds"]


@pytest.mark.parametrize("ell", [32, 40])
def test_dealer_material_scales_with_ell(ell):
    v = _values(ell, 512, seed=9)
    prog = lambda s: relu(s, _own(s, v), ReluSpec())  # noqa: E731
    small = run(prog, 2, ring_bits=ell, pregenerate=True)
    full = run(prog, 2, ring_bits=64, pregenerate=True)
    # an exact ReLU's arithmetic material (the inject select's r and r·s corrections) is ℓ bits,
    # its AND triples' corrections are bit planes of ℓ − 1 levels of the carry tree
    assert 0 < small.offline_bytes() < full.offline_bytes()


def test_ring_limits_are_clear_errors():
    with pytest.raises(ValueError, match="ring bits"):
        FixedPoint(16, 31)
    with pytest.raises(ValueError, match="frac_bits"):
        FixedPoint(40, 40)
    with pytest.raises(FixedPointError, match="32-bit ring"):
        FixedPoint(16, 32).encode(torch.tensor([40000.0]))
    with pytest.raises(PartyError, match="k <= 32"):
        run(lambda s: relu(s, _own(s, torch.zeros(4, dtype=torch.int64)), ReluSpec(40, 8)), 2,
            ring_bits=32)


def test_a_dealer_in_another_ring_is_named(monkeypatch):
    from ringlet.offline.dealer import Dealer

    v = _values(40, 512, seed=2)
    orig = Dealer.__init__

    def wide(self, *a, **k):  # a dealer started without --ring-bits
        k["ring"] = Ring(64)
        orig(self, *a, **k)
    monkeypatch.setattr(Dealer, "__init__", wide)
    with pytest.raises(PartyError, match="does the dealer run with --ring-bits 40"):
        run(lambda s: relu(s, _own(s, v), ReluSpec()), 2, ring_bits=40)
