"""The parts of ``ringlet serve`` alone, no processes: the query book, the pool, frame limits."""

from __future__ import annotations

import socket
import struct
import threading
import time

import pytest
import torch

from ringlet.comm.base import ProtocolMismatchError
from ringlet.comm.channel import Channel, FrameTooLargeError
from ringlet.serve import wire
from ringlet.serve.book import Query, QueryBook
from ringlet.serve.pool import MaterialPool


def _q(qid, rows=1, nbytes=512, client="client", deadline=3600.0):
    now = time.monotonic()
    return Query(qid, rows, nbytes, torch.zeros(rows, 1, 8, 8, dtype=torch.int64), None, client,
                 now, now + deadline)


def test_a_follower_claims_only_queries_whose_halves_agree():
    book = QueryBook(8)
    for q in (_q("a"), _q("b", rows=2, nbytes=1024), _q("c")):
        assert book.add(q) is None
    mine, missing, bad = book.claim([("a", 1, 512), ("b", 1, 512), ("c", 1, 256), ("z", 1, 512)],
                                    "server-1")
    assert [q.id for q in mine] == ["a", "b", "c"] and missing == ["z"]
    assert bad == {"b": "rows: 1 at server-0, 2 at server-1",
                   "c": "share bytes: 256 at server-0, 512 at server-1"}
    assert book.claim([("a", 1, 512)], "server-1")[1] == ["a"]  # ordered once only


def test_the_book_limits_each_client_and_refuses_a_pending_id():
    book = QueryBook(2)
    assert book.add(_q("a")) is None and book.add(_q("b")) is None
    assert book.add(_q("c"))[0] == "limit"
    assert book.add(_q("d", client="other")) is None
    assert book.add(_q("a", client="other"))[0] == "bad_input"
    book.remove([book.get("a")])
    assert book.add(_q("c")) is None


def test_expired_queries_leave_with_their_reason_and_ordered_ones_stay():
    book = QueryBook(8)
    for q in (_q("late", deadline=-1.0), _q("ordered", deadline=-1.0), _q("fresh")):
        book.add(q)  # the first two are past their deadline when added
    book.get("late").why = ("busy", "no material")
    book.claim([("ordered", 1, 512)], "server-1")
    late = book.expired()
    assert [(q.id, q.why) for q in late] == [("late", ("busy", "no material"))]
    assert len(book) == 2 and book.rows_waiting() == 1


def test_gather_takes_rows_in_arrival_order_and_skips_a_backed_off_query():
    book = QueryBook(8)
    for q in (_q("a", rows=2), _q("b", rows=2), _q("c", rows=1)):
        book.add(q)
    before = time.monotonic()
    a = book.get("a")
    book.release([a], lacked=True)  # a follower lacked it: offered again later
    assert a.tries == 1 and a.not_before > before  # backed off
    assert book.rows_waiting() == 3  # and it is no backlog for the dealer
    a.not_before = time.monotonic() + 3600  # the back-off lasts through the next two gathers
    got = book.gather(5, 0.0, lambda: False)  # room for all three: "a" is left out for its back-off
    assert [q.id for q in got] == ["b", "c"]
    assert book.gather(4, 0.0, lambda: False) == []  # only "a" waits, and it is backed off
    a.not_before = time.monotonic() - 1  # its back-off is over
    assert [q.id for q in book.gather(4, 0.0, lambda: False)] == ["a"]


def test_server_0_uses_only_confirmed_entries_and_a_returned_one_stays_usable():
    pool = MaterialPool([1, 4], needs_confirmation=True)
    pool.put(1, ("e", 0), [])
    pool.put(1, ("e", 1), [])
    assert pool.take_ready(1) is None and pool.depths() == {1: 0, 4: 0}
    pool.confirm([[1, ["e", 1]]])
    key, queue = pool.take_ready(1)
    assert key == ("e", 1) and pool.depth(1) == 0
    pool.put(1, key, queue, first=True)
    assert pool.take_ready(1)[0] == ("e", 1)


def test_a_follower_drops_an_entry_it_was_asked_for_before_it_arrived():
    pool = MaterialPool([1])
    assert pool.take(1, ("e", 5)) is None
    assert pool.put(1, ("e", 5), []) is False and pool.held() == {1: []}
    assert pool.put(1, ("e", 6), []) is True


def test_keep_only_reconciles_to_the_common_keys():
    pool = MaterialPool([1, 4], needs_confirmation=True)
    for key in (("a", 0), ("a", 1), ("b", 0)):
        pool.put(1, key, [])
    assert pool.keep_only({"1": [["a", 1], ["b", 0]], "4": []}) == 1
    assert pool.held() == {1: [["a", 1], ["b", 0]], 4: []} and pool.depth(1) == 2


def _pair():
    with socket.create_server(("127.0.0.1", 0)) as srv:
        a = socket.create_connection(srv.getsockname()[:2])
        b, _ = srv.accept()
    return Channel(a, "left"), Channel(b, "right")


def test_an_oversized_announcement_fails_before_anything_is_allocated():
    left, right = _pair()
    try:
        left._write(struct.pack("<I", 0xFFFFFFFF))
        with pytest.raises(FrameTooLargeError, match="4294967295 bytes"):
            right.recv_frame(time.monotonic() + 5, "a hello", limit=1 << 16)
    finally:
        left.close()
        right.close()


def test_a_large_frame_arrives_whole_through_growing_buffers():
    left, right = _pair()
    data = bytes(range(256)) * (3 * (1 << 14) + 7)  # 12 MB and a bit: several doublings
    try:
        threading.Thread(target=left.send, args=(data,)).start()
        got = right.recv_frame(time.monotonic() + 30, "data", limit=len(data))
        assert bytes(got) == data
    finally:
        left.close()
        right.close()


def test_a_frame_slower_than_its_frame_timeout_is_cut():
    from ringlet.comm.base import PeerTimeoutError
    left, right = _pair()
    try:
        left._write(struct.pack("<I", 100) + b"x")
        with pytest.raises(PeerTimeoutError):
            right.recv_frame(time.monotonic() + 30, "a header", limit=1000, frame_timeout=0.3)
    finally:
        left.close()
        right.close()


@pytest.mark.parametrize("frame, why", [(b"[" * 20000, "nested too deeply"),
                                        (b"[1, 2]", "not an object"), (b"\xff", "garbled")])
def test_headers_that_are_not_objects_are_protocol_errors(frame, why):
    left, right = _pair()
    try:
        left.send(frame)
        with pytest.raises(ProtocolMismatchError, match=why):
            wire.recv(right, 5, "a query")
    finally:
        left.close()
        right.close()


def test_rows_and_ids_are_typed_strictly():
    assert wire.rows_of({"rows": True}, 4) is None and wire.rows_of({"rows": 1.0}, 4) is None
    assert wire.rows_of({"rows": 5}, 4) is None and wire.rows_of({"rows": 3}, 4) == 3
    assert wire.query_id({"id": 7}) is None and wire.query_id({"id": "x" * 65}) is None
    assert wire.query_id({"id": "abc"}) == "abc"


def test_the_entry_shape_is_chosen_from_the_queries_that_run():
    from ringlet.serve.batches import BatchPolicy
    policy = BatchPolicy(32, 0.01, (1, 4, 8, 32))
    qs = [_q("a", rows=2), _q("b", rows=3), _q("c", rows=1)]
    assert policy.fit(qs, {1, 8, 32}) == (qs, 8)  # the smallest shape that holds all six rows
    assert policy.fit(qs, {32}) == ([], None)  # only a shape larger than six rows need
    assert policy.fit(qs, {1, 4}) == (qs[:1], 4)  # the first queries that the largest shape holds
    assert policy.fit(qs[2:], {4}) == ([], None)  # never a larger shape than one row needs
    assert policy.fit(qs[2:], {1, 4}) == (qs[2:], 1)
    assert policy.fit(qs, {1}) == ([], None)  # the first query does not fit any: nothing runs
    assert policy.fit([], {1, 4}) == ([], None)
    lacked = _q("d", rows=20)
    lacked.tries = 1  # a share another server lacked does not make the batch's shape larger
    assert policy.want(qs + [lacked]) == 8 and policy.candidates(8) == [1, 4, 8]


def test_small_refusals_name_what_is_wrong(tmp_path):
    from ringlet.comm.mesh import Listener
    from ringlet.compiler.graph import apply_postprocess
    from ringlet.ring import FixedPoint, FixedPointError
    from ringlet.train.checkpoint import CheckpointError, file_inside, read_safetensors
    with pytest.raises(ValueError, match="op must be one of"):
        apply_postprocess({"op": "sotfmax", "dim": 1}, torch.zeros(1, 3))
    with pytest.raises(FixedPointError, match="imaginary part"):
        FixedPoint(16, 64).encode(torch.zeros(2, dtype=torch.complex64))
    (tmp_path / "m").mkdir()
    with pytest.raises(CheckpointError, match="outside"):
        file_inside(tmp_path / "m", "../secret.safetensors", "model.json")
    assert file_inside(tmp_path / "m", "w.safetensors", "model.json").parent == (tmp_path / "m").resolve()
    torch.save({"w": torch.zeros(1)}, tmp_path / "pickle.safetensors")  # a pickle, renamed
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        read_safetensors(tmp_path / "pickle.safetensors", "--weights")
    with socket.create_server(("127.0.0.1", 0)) as taken:
        with pytest.raises(ConnectionError, match="cannot listen on 127.0.0.1"):
            Listener(taken.getsockname()[:2], None, lambda *a: None, lambda *a: None, name="server-0")
