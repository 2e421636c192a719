import pytest
import torch
from conftest import run

from ringlet import ring
from ringlet.offline.core import And2, Inject, Pand, Trunc, beaver_request
from ringlet.offline.dealer import Dealer
from ringlet.offline.request import Request
from ringlet.prng import AesCtrStream
from ringlet.sharing import ArithmeticShare, BinaryShare, ShareError


def test_arithmetic_share_local_ops_and_errors():
    a = ArithmeticShare(torch.tensor([1, 2, 3]), 0)
    b = ArithmeticShare(torch.tensor([10, 20, 30]), 0)
    assert torch.equal((a + b).data, torch.tensor([11, 22, 33]))
    assert torch.equal((a - b).data, torch.tensor([-9, -18, -27]))
    assert torch.equal(a.add_public(torch.tensor([5, 5, 5])).data, torch.tensor([6, 7, 8]))
    other = ArithmeticShare(torch.tensor([1, 2, 3]), 1)
    assert torch.equal(other.add_public(torch.tensor([5, 5, 5])).data, torch.tensor([1, 2, 3]))
    with pytest.raises(ShareError, match="shape mismatch"):
        a + ArithmeticShare(torch.tensor([1, 2]), 0)
    with pytest.raises(ShareError, match="parties 0 and 1"):
        a + other
    with pytest.raises(ShareError, match="fractional bits differ"):
        a + ArithmeticShare(torch.tensor([1, 2, 3]), 0, frac=32)
    with pytest.raises(ShareError, match="int64"):
        ArithmeticShare(torch.tensor([1.0]), 0)
    with pytest.raises(ShareError, match="BinaryShare"):
        a + BinaryShare.from_private(torch.tensor([1, 2, 3]), 2, 0)


def test_binary_share_xor_invert():
    x = torch.tensor([0b101, 0b011, 0b110])
    s0 = BinaryShare.from_private(x, 3, 0)
    s1 = BinaryShare(torch.zeros_like(s0.planes), 3, 1)
    assert torch.equal(ring.unpack_bits((s0.invert() ^ s0).planes, 3), torch.tensor([7, 7, 7]))
    assert torch.equal(s1.invert().planes, s1.planes)
    with pytest.raises(ShareError, match="cannot hold"):
        BinaryShare(torch.zeros(1, 2, dtype=torch.int64), 3, 0)


def test_dealer_material_is_correlated_and_seed_compressed():
    seeds = {0: bytes([1] * 16), 1: bytes([2] * 16), 2: bytes([3] * 16)}
    from ringlet.protocols.catalog import material_kinds as kinds
    dealer = Dealer(None, {k: AesCtrStream(v) for k, v in seeds.items()}, kinds())
    streams = {k: AesCtrStream(v) for k, v in seeds.items()}
    for req in [beaver_request("mul", (5,), (5,), holders=(0, 1, 2)),
                Request(And2(3, 2), (0, 1, 2)), Request(Pand(2, 4), (0, 1)),
                Request(Inject(70), (0, 1)), Request(Trunc(16, (6,)), (0, 1, 2))]:
        [(last, corr)] = dealer.produce(req)  # seed compression: only the last holder hears
        assert last == req.holders[-1]
        parts = []
        for i, h in enumerate(req.holders):
            m = kinds()[req.kind].draw(streams[h], req, i, i == len(req.holders) - 1)
            if i == len(req.holders) - 1:
                m.update(corr)
            parts.append(m)
        if req.kind == "beaver":
            a = sum(p["a"] for p in parts)
            b = sum(p["b"] for p in parts)
            assert torch.equal(sum(p["c"] for p in parts), a * b)
        elif req.kind == "and2":
            x = lambda k, parts=parts: parts[0][k] ^ parts[1][k] ^ parts[2][k]  # noqa: E731
            assert torch.equal(x("c1"), x("a") & x("b1")) and torch.equal(x("c2"), x("a") & x("b2"))
        elif req.kind == "pand":
            assert torch.equal(parts[0]["z"] ^ parts[1]["z"], parts[0]["u"] & parts[1]["v"])
        elif req.kind == "inject":
            r = ring.unpack_plane((parts[0]["r_bits"] ^ parts[1]["r_bits"])[0], 70)
            assert torch.equal(parts[0]["r"] + parts[1]["r"], r)
            assert torch.equal(parts[0]["rs"] + parts[1]["rs"], r * (parts[0]["s"] + parts[1]["s"]))
        else:
            r = sum(p["r"] for p in parts)
            assert torch.equal(sum(p["msb"] for p in parts), (r >> 63) & 1)
            assert torch.equal(sum(p["low"] for p in parts), (r & ring.mask_bits(63)) >> 16)


def _two_muls(sess):
    from ringlet.protocols.arith import beaver
    from ringlet.protocols.io import share_input
    x = share_input(sess, torch.ones(4) if sess.rank == 0 else None, 0, (4,))
    beaver.mul(sess, x, x)
    if sess.offline._queue is not None:  # online run after pre-generation: ask for a different shape
        y = share_input(sess, torch.ones(5) if sess.rank == 0 else None, 0, (5,))
        beaver.mul(sess, y, y)


def test_plan_mismatch_is_a_clear_error():
    from ringlet.runtime.launch import PartyError
    with pytest.raises(PartyError, match="pre-generated material exhausted"):
        run(_two_muls, 2, pregenerate=True)


def test_every_request_kind_round_trips_through_its_wire_integers():
    """Each kind's typed parameters encode to the integers of the wire and decode back, the
    table refuses ids and parameter lists that do not fit, and the material is typed."""
    from ringlet.offline.core import B2A, Beaver, InjTrunc, Pim, Powers, Triple
    from ringlet.offline.request import OfflineError
    from ringlet.protocols.catalog import material_kinds
    from ringlet.protocols.fss.keys import FssRelu, FssSign
    kinds = material_kinds()
    reqs = [Request(Beaver("conv2d", (1, 3, 8, 8), (4, 3, 3, 3), (1, 1, 1, 1, 1, 1, 1)), (0, 1)),
            Request(Beaver("mul", (5,), (5,)), (0, 1, 2)), Request(And2(3, 2), (0, 1)),
            Request(Pand(2, 4), (0, 1)), Request(B2A(9), (0, 1)), Request(Inject(70), (0, 1)),
            Request(Trunc(16, (2, 3)), (0, 1, 2)), Request(InjTrunc(7, 12), (0, 1)),
            Request(Pim(5, 3), (0, 1)), Request(Powers(5, 4, 16), (0, 1)),
            Request(FssSign(64, 7), (0, 1)), Request(FssRelu(8, 20, 4, 12), (0, 1))]
    assert {r.kind for r in reqs} | {"and"} == set(kinds.names())  # every kind is exercised
    values = [v for r in reqs for v in kinds.encode(r)]
    pos, back = 0, []
    while pos < len(values):
        req, pos = kinds.decode(values, pos)
        back.append(req)
    assert back == reqs
    # the wire integers are those of the untyped format: (16, 2, 3) for a truncation by 16 of 2×3
    assert kinds.encode(Request(Trunc(16, (2, 3)), (0, 1))) == [kinds.names().index("trunc"), 3, 16, 2, 3,
                                                                 2, 0, 1]
    with pytest.raises(OfflineError, match="material kind id 99"):
        kinds.decode([99, 0, 0], 0)
    with pytest.raises(OfflineError, match="too few parameters"):
        FssRelu.decode([8, 20])
    with pytest.raises(OfflineError, match="left over"):
        B2A.decode([9, 1])
    with pytest.raises(OfflineError, match="beaver request"):
        Beaver.decode([7, 1, 5, 1, 5])
    dealer = Dealer(None, {0: AesCtrStream(bytes(16)), 1: AesCtrStream(bytes([1] * 16))}, kinds)
    ((_, corr),) = dealer.produce(reqs[0])
    assert set(corr) == {"c"}
    m = kinds["beaver"].material.of({"a": torch.zeros(1), "b": torch.zeros(1), **corr})
    assert isinstance(m, Triple) and m.c.shape == (1, 4, 8, 8)
    with pytest.raises(OfflineError, match="has no field z"):
        Triple.of({"a": m.a, "b": m.b, "c": m.c, "z": m.c})
