"""FSS gates (one DCF key per element): exactness, [k:m] semantics, fused truncation, exact costs."""

import numpy as np
import pytest
import torch
from conftest import run

from ringlet import ring
from ringlet.protocols.base import allowed_mismatch
from ringlet.protocols.fss import gates as fss
from ringlet.protocols.io import reveal, share_input
from ringlet.protocols.relu import ReluSpec, drelu, max_pool2d, relu, relu_cost
from ringlet.search.simulator import decide
from ringlet.sharing import ArithmeticShare

COUNTED = ("setup", "offline", "input", "output")


def _edges(n=700, seed=0, top=63):
    rng = np.random.default_rng(seed)  # test data only
    v = torch.from_numpy(rng.integers(-(2 ** 40), 2 ** 40, n))
    big = 2 ** top
    edges = [0, 1, -1, 2, -2, 2 ** 16, -(2 ** 16), big - 1, -big, big // 2, -(big // 2),
             2 ** 19 - 1, 2 ** 19, -(2 ** 19), -(2 ** 19) - 1, 15, 16, 17, -15, -16, -17,
             2 ** 11 - 1, 2 ** 11, -(2 ** 11), -(2 ** 11) - 1, 2 ** 20 + 1, -(2 ** 20) - 1]
    v[:len(edges)] = torch.tensor(edges)
    v[len(edges):len(edges) + 200] = torch.from_numpy(rng.integers(-300, 300, 200))
    return v


def _relu_prog(values, spec, shift=0, frac=16):
    def prog(sess):
        x = share_input(sess, values if sess.rank == 0 else None, 0, tuple(values.shape), encoded=True)
        x = ArithmeticShare(x.data, x.party, frac + shift)
        before = sess.stats.copy()
        y = relu(sess, x, spec, shift=shift)
        used = sess.stats.minus(before)
        return (reveal(sess, y, decode=False), 8 * used.bytes_sent(exclude=COUNTED),
                used.total_rounds(exclude=COUNTED), used.bytes_received(tags=("offline",)))
    return prog


@pytest.mark.parametrize("ring_bits", [64, 41])
def test_exact_fss_relu_is_exact_in_one_round_of_l_bits(ring_bits):
    v = _edges(top=ring_bits - 1)
    v = ring.Ring(ring_bits).reduce(v)
    res = run(_relu_prog(v, ReluSpec(64, 0, protocol="fss")), 2, ring_bits=ring_bits)
    out, bits, rounds, _ = res.results[0]
    assert torch.equal(out, v.clamp(min=0))
    assert (bits, rounds) == (8 * ring.Ring(ring_bits).wire_bytes(v.numel()), 1)
    cost = relu_cost(ReluSpec(64, 0, protocol="fss"), 2, ring_bits)
    assert (cost["relu_bits"], cost["relu_rounds"]) == (ring_bits, 1)


@pytest.mark.parametrize("k,m,shift", [(64, 0, 16), (12, 4, 16), (20, 0, 8), (30, 10, 16),
                                       (9, 8, 16), (8, 8, 16)])
def test_relu_fused_with_truncation_is_one_round_and_one_ulp(k, m, shift):
    v = _edges(seed=k + m, top=61)
    v[-1], v[-2] = 2 ** 62 - 1, -(2 ** 62)  # the edges of |x| < 2^(ℓ−2), the compiler's headroom
    spec = ReluSpec(k, m, protocol="fss")
    out, bits, rounds, _ = run(_relu_prog(v, spec, shift), 2).results[0]
    t = v >> shift
    if spec.width == 0:  # the identity: a plain truncation (local, 0 rounds; it may fail with
        small = v.abs() < 2 ** 50  # probability |x|/2^63, so only small values are checked)
        assert ((out - t >= 0) & (out - t <= 1))[small].all() and (bits, rounds) == (0, 0)
        return
    kk, mm = (64, 0) if (k, m) == (64, 0) else (min(64, k + shift), m + shift)
    allowed = allowed_mismatch(v, kk, mm, 2) if (kk, mm) != (64, 0) else torch.zeros_like(v, dtype=torch.bool)
    kept = (out - t >= 0) & (out - t <= 1)          # d = 1: ⌊x/2^s⌋ or one more
    dropped = out == 0                              # d = 0
    assert (kept | dropped).all(), v[~(kept | dropped)][:5]
    assert (kept | allowed)[v >= 0].all() and (dropped | allowed)[v < 0].all()
    assert (bits, rounds) == (64 * v.numel(), 1)


@pytest.mark.parametrize("k,m", [(20, 0), (12, 4), (9, 8), (40, 10), (64, 30), (3, 0)])
def test_reduced_fss_mismatches_only_where_theory_allows(k, m):
    v = _edges(seed=k * 100 + m)
    out, _, _, _ = run(_relu_prog(v, ReluSpec(k, m, protocol="fss")), 2).results[0]
    exact = v.clamp(min=0)
    mism = out != exact
    unexplained = mism & ~allowed_mismatch(v, k, m, 2)
    assert int(unexplained.sum()) == 0, v[unexplained][:10]
    assert torch.equal(out[mism], torch.where(exact[mism] == 0, v[mism], torch.zeros_like(v[mism])))


def test_simulator_decisions_equal_fss_decisions_on_the_same_masks():
    """The simulator's rule on the shares (x̂, −r), with the dealer's own r, is what the keys decide."""
    v = _edges(seed=5)
    v = v[v != 0]  # a zero output says nothing about the decision
    for k, m in ((12, 4), (20, 0), (9, 8), (33, 17), (64, 0)):
        def prog(sess, k=k, m=m):
            seen, get = [], sess.offline.get
            sess.offline.get = lambda req: seen.append(get(req)) or seen[-1]
            x = share_input(sess, v if sess.rank == 0 else None, 0, tuple(v.shape), encoded=True)
            y = relu(sess, x, ReluSpec(k, m, protocol="fss"))
            return reveal(sess, y, decode=False), seen[-1].r
        (out, r0), (_, r1) = run(prog, 2).results
        r = r0 + r1
        decided = (out != 0).to(torch.int64)
        assert torch.equal(decide([v + r, -r], k, m), decided)
        assert torch.equal(_fss_rule(v + r, r, k, m), decided)


def _fss_rule(xhat, r, k, m):
    """The gate's decision from x̂ and r, as fss.relu computes it (c, msb q, the DCF's lt)."""
    w = k - m
    a = ring.extract_bits(xhat, k, m)
    b = ring.extract_bits(-r, k, m)
    q = (-b) & ring.mask_bits(w)
    lt = ((a & ring.mask_bits(w - 1)) < (q & ring.mask_bits(w - 1))).to(torch.int64)
    return 1 - (ring.msb(a, w) ^ ring.msb(q, w) ^ lt)


def test_fss_sign_gives_drelu_grelu_and_maxpool_their_decisions():
    v = _edges(n=512, seed=9)
    vals = torch.from_numpy(np.random.default_rng(3).integers(-2 ** 30, 2 ** 30, (2, 3, 6, 6)))

    def prog(sess):
        x = share_input(sess, v if sess.rank == 0 else None, 0, tuple(v.shape), encoded=True)
        d = sess.share(drelu(sess, x, ReluSpec(64, 0, protocol="fss"), arithmetic=True).view(x.shape), frac=0)
        p = share_input(sess, vals if sess.rank == 0 else None, 0, tuple(vals.shape), encoded=True)
        before = sess.stats.copy()
        pooled = max_pool2d(sess, p, 2, spec=ReluSpec(64, 0, protocol="fss"))
        used = sess.stats.minus(before)
        return (reveal(sess, d, decode=False), reveal(sess, pooled, decode=False),
                used.total_rounds(exclude=COUNTED), 8 * used.bytes_sent(exclude=COUNTED))
    d, pooled, rounds, bits = run(prog, 2).results[0]
    assert torch.equal(d, (v >= 0).to(torch.int64))
    assert torch.equal(pooled, torch.nn.functional.max_pool2d(vals.double(), 2).to(torch.int64))
    assert rounds == 2  # ⌈log2 4⌉ tournament levels, one round each
    assert bits == 64 * (108 + 54)  # 2×54 maxima, then 54, at ℓ bits each


def test_fss_refuses_three_servers_by_name():
    v = torch.arange(8)

    def prog(sess):
        x = share_input(sess, v if sess.rank == 0 else None, 0, (8,), encoded=True)
        relu(sess, x, ReluSpec(64, 0, protocol="fss"))
    with pytest.raises(Exception, match="two-server"):
        run(prog, 3)
    with pytest.raises(ValueError, match="two-server"):
        relu_cost(ReluSpec(64, 0, protocol="fss"), 3)


@pytest.mark.parametrize("k,m,shift,ring_bits", [(64, 0, 16, 64), (12, 4, 16, 64), (64, 0, 0, 64),
                                                 (12, 4, 12, 40), (9, 8, 16, 64)])
def test_key_bytes_are_exact_and_within_the_targets(k, m, shift, ring_bits):
    from ringlet.protocols.fss.keys import key_bytes, relu_additive, relu_payloads
    n = 200
    v = torch.arange(n) - 100
    res = run(_relu_prog(v, ReluSpec(k, m, protocol="fss"), shift), 2, ring_bits=ring_bits)
    kk, mm = (ring_bits, 0) if (k, m) == (64, 0) else (min(ring_bits, k + shift), m + shift)
    additive = len(relu_additive(shift)) * ring.Ring(ring_bits).wire_bytes(n)
    want = key_bytes(n, kk - mm, relu_payloads(shift), ring_bits, additive)
    got = [res.results[r][3] for r in (0, 1)]  # what each server received from the dealer
    assert got == [want[0], want[1]]
    per_element = fss.relu_cost(kk, mm, ring_bits, shift)["key_bytes"]
    assert abs(per_element[1] * n - want[1]) < 2
    if (k, m) == (64, 0) and shift:
        assert per_element[1] <= 3600
    if (k, m) == (12, 4) and shift:
        assert per_element[1] <= 400


def test_bench_relu_reports_fss_figures(capsys):
    import json

    from ringlet.cli.main import main
    assert main(["bench", "relu", "--n", "4096", "--protocol", "fss", "--bits", "12:4", "--shift", "16",
                 "--gmw", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["protocol"] == "fss" and (out["bits_sent_per_element"], out["rounds"]) == (64.0, 1)
    assert out["unexplained_mismatches"] == 0 and out["gmw_exact"]["rounds"] == 8
    keys = out["fss"]["key_bytes_per_element"]
    assert out["offline_bytes_per_element_per_server"] == keys  # measured = the formula
    assert out["offline_bits_per_element"] == 8 * sum(keys)
    assert out["fss"]["aes_blocks_per_element"] == {"eval": 7 * 3 + 2, "keygen": 2 * (7 * 6 + 2)}
