"""Direct links (plain and TLS 1.3): who may join, and how a missing party is named."""

from __future__ import annotations

import threading
import time
import types

import pytest
import torch
from conftest import SteppingClock

from ringlet.comm.base import PeerFailedError, PeerTimeoutError
from ringlet.comm.mesh import HandshakeError, MeshCommunicator
from ringlet.comm.transport import TlsFiles, TransportSpec, connect_mesh, free_port, party_name
from ringlet.session import World


def _spec(tmp_path, world, kind="tls", deployment="t"):
    from ringlet.comm.certs import make_dev_certs
    names = [party_name(world, r) for r in range(world.size)]
    if kind == "tls" and not (tmp_path / "certs" / "ca.pem").exists():
        make_dev_certs(tmp_path / "certs", names)
    tls = TlsFiles.in_folder(tmp_path / "certs", names) if kind == "tls" else None
    return TransportSpec(kind, addresses={r: ("127.0.0.1", free_port()) for r in world.servers},
                         tls=tls, deployment=deployment)


def _join_all(spec, world, ranks, timeout=10.0):
    out, errors = {}, {}

    def body(r):
        try:
            out[r] = connect_mesh(spec, r, world, timeout)
        except Exception as exc:  # noqa: BLE001 - collected for the test
            errors[r] = exc
    threads = [threading.Thread(target=body, args=(r,)) for r in ranks]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout + 5)
    return out, errors


@pytest.mark.parametrize("kind", ["socket", "tls"])
def test_a_party_that_never_starts_is_named_within_the_connect_timeout(tmp_path, kind, monkeypatch):
    world = World(2)
    spec = _spec(tmp_path, world, kind)
    # connect_mesh's deadline on a virtual clock: its 600 s pass in a few of its half-second
    # waits, and it must give up once they have passed (not before; a wait past them fails)
    from ringlet.comm import transport
    clock = SteppingClock(step=200.0, timeout=600.0)
    monkeypatch.setattr(transport, "time", types.SimpleNamespace(monotonic=clock))
    named = r"server-1, dealer did not connect to 127\.0\.0\.1:\d+ within 600 s"
    with pytest.raises(PeerTimeoutError, match=named):
        connect_mesh(spec, 0, world, 600.0)
    assert clock.elapsed >= 600.0, clock.reads
    monkeypatch.undo()
    with pytest.raises(PeerTimeoutError, match="server-0 at 127.0.0.1"):  # the dialer names it too
        connect_mesh(spec, 2, world, 1.0)


def test_the_mesh_carries_messages_and_counts_tls_apart(tmp_path):
    world = World(2)
    spec = _spec(tmp_path, world)
    chans, errors = _join_all(spec, world, range(3))
    assert not errors, errors
    comms = {r: MeshCommunicator(r, 3, chans[r], 10.0) for r in range(3)}
    x = torch.arange(1000, dtype=torch.int64)
    got = {}
    t = threading.Thread(target=lambda: got.update(comms[1].round("other", {0: [("other", x + 1)]}, [0])))
    t.start()
    back = comms[0].round("other", {1: [("other", x)]}, [1])
    t.join(10)
    assert torch.equal(back[1][0], x + 1) and torch.equal(got[0][0], x)
    assert comms[0].stats.bytes_sent() == comms[0].stats.bytes_received() == 8000
    assert comms[0].tls_overhead_bytes() > 0
    for c in comms.values():
        c.close()


def test_an_impostor_is_rejected_and_the_mesh_it_tried_to_join_completes(tmp_path):
    from ringlet.comm.certs import client_context, make_self_signed
    from ringlet.comm.mesh import dial
    world = World(2)
    spec = _spec(tmp_path, world)
    result = {}
    t = threading.Thread(target=lambda: result.update(zero=connect_mesh(spec, 0, world, 20.0)))
    t.start()
    cert, key = make_self_signed(tmp_path / "impostor", "server-1")
    hello = {"rank": 1, "name": "server-1", "world": 3, "deployment": "t"}
    with pytest.raises(PeerFailedError):
        ch = dial(spec.addresses[0], client_context(tmp_path / "certs" / "ca.pem", cert, key),
                  "server-0", hello, time.monotonic() + 5)
        ch.recv_frame(time.monotonic() + 5, "anything")
    # a party of the deployment with the wrong name (the dealer's certificate claiming rank 1)
    dealer_ctx = spec.tls.contexts("dealer")[1]
    with pytest.raises(HandshakeError, match="certificate is for 'dealer'"):
        dial(spec.addresses[0], dealer_ctx, "server-0", {**hello, "name": "server-1"}, time.monotonic() + 5)
    others, errors = _join_all(spec, world, [1, 2])
    t.join(25)
    assert not errors, errors
    assert set(result["zero"]) == {1, 2} and set(others[1]) == {0, 2}


def test_a_world_size_or_deployment_mismatch_is_refused_by_name(tmp_path):
    world, bigger = World(2), World(2, has_client=True)
    spec = _spec(tmp_path, world, "socket")
    threading.Thread(target=lambda: _join_all(spec, world, [0], timeout=3), daemon=True).start()
    with pytest.raises(HandshakeError, match="world of 4 parties, server-0 is in a world of 3"):
        connect_mesh(spec, 1, bigger, 3.0)
    other = TransportSpec("socket", addresses=spec.addresses, deployment="another")
    with pytest.raises(HandshakeError, match="another deployment"):
        connect_mesh(other, 1, world, 3.0)
