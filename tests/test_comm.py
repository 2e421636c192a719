import re
import time
import types

import pytest
import torch
from conftest import SteppingClock, run

from ringlet.comm.base import PeerTimeoutError, ProtocolMismatchError
from ringlet.comm.local import LocalHub
from ringlet.runtime.launch import PartyError


def test_round_accounting_is_exact():
    hub = LocalHub(2)
    a, b = hub.communicator(0), hub.communicator(1)
    x = torch.zeros(10, dtype=torch.int64)
    y = torch.zeros(3, dtype=torch.uint8)
    a.send(1, [("mult", x), ("circuit", y)], "s")
    got = b.recv(0, "s")
    assert [t.shape for t in got] == [x.shape, y.shape]
    assert a.stats.bytes_sent() == 83 and b.stats.bytes_received() == 83
    assert a.stats.by_tag()["mult"]["bytes_sent"] == 80
    assert b.stats.by_tag()["circuit"]["bytes_received"] == 3
    # a round counts only for the party that waits
    a.round("open", {1: [("open", x)]}, [])
    b.round("open", {}, [0])
    assert a.stats.total_rounds() == 0 and b.stats.total_rounds() == 1


def test_sent_tensors_are_copied():
    hub = LocalHub(2)
    a, b = hub.communicator(0), hub.communicator(1)
    x = torch.zeros(4, dtype=torch.int64)
    a.send(1, [("other", x)], "s")
    x += 5
    assert torch.equal(b.recv(0, "s")[0], torch.zeros(4, dtype=torch.int64))


def test_timeout_names_peer_and_step(monkeypatch):
    # a virtual clock: the 60 s timeout passes in a few polls, and the wait is seen to end only
    # once it has passed (a wait that ignored it would make the clock fail the test)
    import ringlet.comm.base
    import ringlet.comm.local
    clock = SteppingClock(step=20.0, timeout=60.0)
    fake = types.SimpleNamespace(monotonic=clock, perf_counter=time.perf_counter)
    monkeypatch.setattr(ringlet.comm.base, "time", fake)
    monkeypatch.setattr(ringlet.comm.local, "time", fake)
    hub = LocalHub(2)
    b = hub.communicator(1, timeout=60.0, names={0: "server"})
    with pytest.raises(PeerTimeoutError, match=r"party 0 \(server\) in step 'relu/level3' within 60 s"):
        b.recv(0, "relu/level3")
    assert clock.elapsed >= 60.0, clock.reads  # not before its deadline


def test_step_mismatch_is_detected():
    hub = LocalHub(2)
    a, b = hub.communicator(0), hub.communicator(1)
    a.send(1, [("other", torch.zeros(1))], "alpha")
    with pytest.raises(ProtocolMismatchError, match="expected step 'beta'"):
        b.recv(0, "beta")


def test_invalid_peer():
    with pytest.raises(ValueError, match="invalid peer"):
        LocalHub(2).communicator(0).send(5, [], "x")


def _dies(sess):
    if sess.rank == 1:
        raise RuntimeError("boom on server 1")
    sess.comm.recv(1, "never")


def _failed_parties(err: PartyError) -> list[str]:
    """The parties a PartyError blames: every party whose error was not a PeerFailedError, that
    is, not the failure of another party that it observed (a PeerTimeoutError is listed)."""
    return re.findall(r"(?:^|; )((?:server|dealer|client) \d+): ", str(err))


def test_failed_party_makes_others_fail_fast_local():
    # the others wait up to 30 s; each must see server 1's failure (PeerFailedError, not listed)
    # rather than give up at that timeout (PeerTimeoutError, listed as a failure of its own)
    with pytest.raises(PartyError, match="server 1: RuntimeError: boom on server 1") as err:
        run(_dies, 2, timeout=30)
    assert _failed_parties(err.value) == ["server 1"], str(err.value)


def _exits(sess):
    import os
    if sess.rank == 1:
        os._exit(3)  # a crash without any goodbye
    sess.comm.round("other", {1: [("other", torch.zeros(1))]}, [1], "wait-for-1")


@pytest.mark.slow
@pytest.mark.parametrize("transport", ["tcp", "tls", "gloo"])
def test_killed_process_makes_others_fail_fast(transport):
    # server 0 and the dealer wait up to 30 s: both must see that server 1's link is gone
    # (PeerFailedError), not time out (PeerTimeoutError, which the error would list)
    with pytest.raises(PartyError) as err:
        run(_exits, 2, transport=transport, timeout=30)
    assert str(err.value) == "server 1: process exited with code 3 without a report", str(err.value)


def _sender_only(sess):
    """Party 0 sends 200 messages and never waits for a reply, flushing as the dealer does."""
    if sess.rank == 0:
        most = 0
        for i in range(200):
            if i % 10 == 0:
                sess.comm.flush()
            sess.comm.send(1, [("other", torch.full((1000,), i))], "s")
            most = max(most, len(sess.comm._pending))
        return most
    for _ in range(200):
        sess.comm.recv(0, "s")
    return 0


def test_a_party_that_only_sends_holds_only_what_it_sent_since_its_last_flush_gloo():
    most, _ = run(_sender_only, 2, transport="gloo", timeout=30).results
    assert most <= 20  # a header and a payload per message; without the flushes all 400 stay


def test_the_dealer_flushes_before_each_requests_material():
    """The dealer sends one request's material only once the previous one has left."""
    from ringlet.offline.core import Trunc
    from ringlet.offline.dealer import Dealer
    from ringlet.offline.request import STOP, Request
    from ringlet.prng import AesCtrStream
    from ringlet.protocols.catalog import material_kinds
    from ringlet.protocols.fss.keys import FssRelu
    events = []
    reqs = [Request(Trunc(16, (8,)), (0, 1)), Request(FssRelu(8, 64, 0, 16), (0, 1))]

    class Fake:
        def recv(self, src, step):
            values = [v for r in reqs for v in material_kinds().encode(r)]
            events.append("recv")
            return [torch.tensor(values if events.count("recv") == 1 else [STOP])]

        def send(self, dst, items, step):
            events.append(f"send{dst}")

        def flush(self):
            events.append("flush")
    Dealer(Fake(), {0: AesCtrStream(bytes(16)), 1: AesCtrStream(bytes([1] * 16))},
           material_kinds()).serve()
    assert events == ["recv", "flush", "send1", "flush", "send0", "send1", "send1", "recv"]
