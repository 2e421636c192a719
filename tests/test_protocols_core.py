"""Core protocols against plaintext torch, with bytes and rounds asserted exactly."""

import pytest
import torch
from conftest import run

from ringlet.protocols.arith import beaver, linear
from ringlet.protocols.arith.truncation import truncate
from ringlet.protocols.io import reveal, share_input

EXCL = ("setup", "offline")


def _gen(seed):
    g = torch.Generator().manual_seed(seed)  # test data only
    return g


def _data(shape, seed, scale=4.0):
    return (torch.rand(shape, generator=_gen(seed), dtype=torch.float64) - 0.5) * 2 * scale


def test_share_and_reveal_to_client_only(parties):
    x = _data((5, 3), 1)

    def server(sess):
        s = share_input(sess, None, sess.world.client, shape=(5, 3))
        assert reveal(sess, s, to=sess.world.client) is None
        return s.data

    def client(sess):
        assert share_input(sess, x, sess.rank, shape=(5, 3)) is None
        return reveal(sess, None, to=sess.rank)

    res = run(server, parties, client=client)
    assert torch.allclose(res.client_result, x, atol=2 ** -16)
    # each server's share alone looks nothing like x (uniform 64-bit values)
    for share in res.results:
        assert share.abs().min() > 2 ** 40
    client_stats = res.reports[res.world.client].online
    last = parties - 1
    assert client_stats.bytes_sent(tags=("input",)) == 15 * 8
    assert client_stats.sent[(last, "input")] == 15 * 8
    for s in res.servers:
        assert s.online.bytes_sent(tags=("output",)) == 15 * 8
        assert s.online.bytes_sent(exclude=("output",) + EXCL) == 0


def test_mul_bytes_rounds_and_value(parties):
    x, y = _data(64, 2), _data(64, 3)

    def prog(sess):
        a = share_input(sess, x if sess.rank == 0 else None, 0, (64,))
        b = share_input(sess, y if sess.rank == 1 else None, 1, (64,))
        before = sess.stats.copy()
        z = beaver.mul(sess, a, b)
        used = sess.stats.minus(before)
        return reveal(sess, z), used

    res = run(prog, parties)
    out, used = res.results[0]
    assert torch.allclose(out, x * y, atol=3 * 2 ** -16)
    p = parties
    assert used.bytes_sent(tags=("mult",)) == 2 * 8 * 64 * (p - 1)
    assert used.rounds["mult"] == 1
    if p == 2:
        assert used.bytes_sent(tags=("trunc",)) == 0 and used.total_rounds() == 1
    else:
        assert used.bytes_sent(tags=("trunc",)) == 8 * 64 * (p - 1) and used.total_rounds() == 2


def test_square_opens_one_value_and_hides_it(parties):
    """x² with a square triple (a, a²): half a product's bits, one round; what the servers receive
    is x − a, never x."""
    from conftest import record_received
    x = _data(64, 8)
    received: list = []

    def prog(sess):
        if sess.rank < 2:
            record_received(sess, received)
        a = share_input(sess, x if sess.rank == 0 else None, 0, (64,))
        before = sess.stats.copy()
        z = beaver.square(sess, a)
        used = sess.stats.minus(before)
        return reveal(sess, z), used

    res = run(prog, parties)
    out, used = res.results[0]
    assert torch.allclose(out, x * x, atol=3 * 2 ** -16)
    assert used.bytes_sent(tags=("mult",)) == 8 * 64 * (parties - 1) and used.rounds["mult"] == 1
    secret = torch.round(x * 2 ** 16).to(torch.int64)
    for flat in received:
        if flat.numel() >= 64:
            assert ((flat[:64] - secret).abs() < 2 ** 10).double().mean() < 0.05


def test_matmul_and_secret_conv(parties):
    x, w = _data((3, 4), 4), _data((4, 2), 5, 1.0)
    img, k = _data((2, 3, 6, 6), 6), _data((4, 3, 3, 3), 7, 0.5)

    def prog(sess):
        own = lambda v, o: share_input(sess, v if sess.rank == o else None, o, tuple(v.shape))  # noqa
        a, b = own(x, 0), own(w, 1)
        before = sess.stats.copy()
        m = beaver.matmul(sess, a, b)
        mm_bytes = sess.stats.minus(before).bytes_sent(tags=("mult",))
        c = beaver.conv2d(sess, own(img, 0), own(k, 1), stride=1, padding=1)
        return reveal(sess, m), reveal(sess, c), mm_bytes

    res = run(prog, parties)
    m, c, mm_bytes = res.results[0]
    assert torch.allclose(m, x @ w, atol=1e-3)
    assert torch.allclose(c, torch.nn.functional.conv2d(img, k, padding=1), atol=1e-3)
    assert mm_bytes == 8 * (12 + 8) * (parties - 1)


@pytest.mark.parametrize("backend", ["int64", "limbs"])
def test_public_linear_layers_are_local_and_exact(parties, backend):
    img = _data((2, 3, 8, 8), 8)
    wc, bc = _data((5, 3, 3, 3), 9, 0.5), _data(5, 10, 0.5)
    wl, bl = _data((4, 20), 11, 0.5), _data(4, 12, 0.5)

    def prog(sess):
        f = sess.fixed
        x = share_input(sess, img if sess.rank == 0 else None, 0, tuple(img.shape))
        before = sess.stats.copy()
        y = linear.conv2d_public(x, f.encode(wc), FixedPointBias(f, bc), stride=2, padding=1,
                                 backend=backend)
        local_bytes = sess.stats.minus(before).bytes_sent()
        y = truncate(sess, y, 16)
        z = linear.linear_public(y.flatten(1)[:, :20], f.encode(wl), FixedPointBias(f, bl),
                                 backend=backend)
        return reveal(sess, y), reveal(sess, truncate(sess, z, 16)), local_bytes

    res = run(prog, parties)
    y, z, local_bytes = res.results[0]
    want_y = torch.nn.functional.conv2d(img, wc, bc, stride=2, padding=1)
    assert torch.allclose(y, want_y, atol=1e-3)
    assert torch.allclose(z, want_y.flatten(1)[:, :20] @ wl.t() + bl, atol=1e-3)
    assert local_bytes == 0


def FixedPointBias(f, b):
    """A bias encoded at 2f fractional bits (input frac + weight frac)."""
    from ringlet.ring import FixedPoint
    return FixedPoint(2 * f.frac_bits).encode(b)


@pytest.mark.parametrize("method", ["local", "dealer"])
def test_truncation_error_is_one_ulp(method):
    vals = torch.cat([_data(2000, 13, 1000.0), torch.tensor([0.0, -1e-5, 1e-5, -2 ** 20, 2 ** 20])])
    parties = 2 if method == "local" else 3

    def prog(sess):
        f = sess.fixed
        x = share_input(sess, vals if sess.rank == 0 else None, 0, tuple(vals.shape))
        x2 = x.mul_public(1 << 16, frac=16)  # same value with 32 fractional bits
        before = sess.stats.copy()
        t = truncate(sess, x2, 16, method)
        used = sess.stats.minus(before)
        return reveal(sess, t, decode=False), f.encode(vals), used

    res = run(prog, parties)
    got, want, used = res.results[0]
    assert (got - want).abs().max() <= 1
    if method == "local":
        assert used.bytes_sent() == 0
    else:
        assert used.bytes_sent(tags=("trunc",)) == 8 * vals.numel() * (parties - 1)
        assert used.rounds["trunc"] == 1


def test_pooling(parties):
    img = _data((2, 3, 6, 6), 14)

    def prog(sess):
        x = share_input(sess, img if sess.rank == 0 else None, 0, tuple(img.shape))
        a = linear.avg_pool2d(sess, x, 2)
        b = linear.avg_pool2d(sess, x, 3)
        g = linear.global_avg_pool(sess, x)
        s = linear.sum_pool2d(x, 2, 1)
        return [reveal(sess, v) for v in (a, b, g, s)]

    a, b, g, s = run(prog, parties).results[0]
    F = torch.nn.functional
    assert torch.allclose(a, F.avg_pool2d(img, 2), atol=1e-4)
    assert torch.allclose(b, F.avg_pool2d(img, 3), atol=1e-4)
    assert torch.allclose(g, img.mean((2, 3), keepdim=True), atol=1e-4)
    assert torch.allclose(s, F.avg_pool2d(img, 2, 1) * 4, atol=1e-4)


def _mul_program(sess):
    x = share_input(sess, torch.linspace(-3, 3, 100) if sess.rank == 0 else None, 0, (100,))
    return reveal(sess, beaver.mul(sess, x, x))


def test_pregenerated_material_moves_dealer_traffic_offline():
    online = run(_mul_program, 2)
    pre = run(_mul_program, 2, pregenerate=True)
    want = torch.linspace(-3, 3, 100).double() ** 2
    assert torch.allclose(pre.results[0], want, atol=1e-3)
    assert torch.allclose(online.results[0], want, atol=1e-3)
    # the same 800 bytes of correction (one triple of 100 elements) either way
    assert online.offline_bytes() == pre.offline_bytes() == 800
    for rep in pre.servers:
        assert rep.online.bytes_received(tags=("offline",)) == 0
    assert pre.max_sent() == online.max_sent()


def _core_program(sess):
    """Every core protocol family once: input, product, matmul, conv, truncation, ReLU, output."""
    from ringlet.protocols.relu import relu
    x = share_input(sess, _data((2, 3, 6, 6), 7) if sess.rank == 0 else None, 0, (2, 3, 6, 6))
    w = share_input(sess, _data((4, 3, 3, 3), 8, 1.0) if sess.rank == 1 else None, 1, (4, 3, 3, 3))
    y = relu(sess, beaver.conv2d(sess, x, w, padding=1))
    z = beaver.mul(sess, y, y)
    v = share_input(sess, _data((144, 5), 9, 0.1) if sess.rank == 0 else None, 0, (144, 5))
    m = beaver.matmul(sess, z.reshape(2, -1), v)
    t = truncate(sess, m.mul_public(3, frac=0), 1)
    return reveal(sess, t), sess.stats.bytes_sent(exclude=EXCL), sess.stats.total_rounds(exclude=EXCL)


@pytest.mark.slow
@pytest.mark.parametrize("transport,n", [("gloo", 2), ("gloo", 3), ("tcp", 2), ("socket", 2), ("tls", 2), ("tls", 3)])
def test_process_transports_match_local(transport, n):
    local = run(_core_program, n, pregenerate=True)
    tcp = run(_core_program, n, transport=transport, pregenerate=True)
    assert torch.equal(local.results[0][0], tcp.results[0][0])
    assert [r[1:] for r in local.results] == [r[1:] for r in tcp.results]
    assert local.max_sent() == tcp.max_sent() and local.rounds() == tcp.rounds()
    for rank, rep in tcp.reports.items():  # payload bytes are exact on every transport
        assert rep.total.bytes_sent() == local.reports[rank].total.bytes_sent()
        assert (rep.tls_overhead_bytes > 0) == (transport == "tls")  # TLS records, counted apart
    # and the values are right: plaintext torch is the oracle
    x, w = _data((2, 3, 6, 6), 7), _data((4, 3, 3, 3), 8, 1.0)
    z = torch.relu(torch.nn.functional.conv2d(x, w, padding=1)) ** 2
    m = z.reshape(2, -1) @ _data((144, 5), 9, 0.1)
    assert torch.allclose(tcp.results[0][0], m * 3 / 2, rtol=1e-3, atol=1e-2)


def test_products_check_their_fractional_headroom():
    from ringlet.ring import FixedPointError
    from ringlet.sharing import ArithmeticShare

    def prog(sess):
        x = share_input(sess, torch.ones(4).double() if sess.rank == 0 else None, 0, (4,))
        with pytest.raises(FixedPointError, match=r"mul: 25 \+ 25 fractional bits leave 12 integer"):
            beaver.mul(sess, x, x)
        with pytest.raises(FixedPointError, match="conv2d_public: 25 \\+ 24"):
            linear.conv2d_public(x.reshape(1, 1, 2, 2), torch.ones(1, 1, 1, 1, dtype=torch.int64),
                                 w_frac=24)
        with pytest.raises(FixedPointError, match="63 fractional bits"):
            ArithmeticShare(x.data, x.party, 63)
        return True

    assert all(run(prog, 2, frac_bits=25).results)
