"""Shared test helpers: run a program on p in-process (or TCP) parties with a fixed master seed."""

from __future__ import annotations

import pytest
import torch

from ringlet.runtime.launch import run_local

MASTER = bytes(range(16))


class SteppingClock:
    """A stand-in for ``time.monotonic`` that moves ``step`` seconds ahead at every read.

    A test patches it into a module to see a timeout of ``timeout`` seconds fire without waiting
    for it on the wall clock: the deadline is a few reads away. ``elapsed`` is the virtual time
    between the first and the last read. Read more than ``overrun`` times past ``timeout`` after
    the first read, it raises AssertionError: code that ignores its deadline fails the test
    instead of hanging it.
    """

    def __init__(self, step: float, timeout: float, overrun: int = 3):
        self.step, self.timeout, self.overrun = step, timeout, overrun
        self.reads: list[float] = []

    def __call__(self) -> float:
        now = (len(self.reads) + 1) * self.step
        if self.reads and now - self.reads[0] > self.timeout + self.overrun * self.step:
            raise AssertionError(f"still waiting {now - self.reads[0]:g} s (virtual) after the first "
                                 f"read, past the timeout of {self.timeout:g} s")
        self.reads.append(now)
        return now

    @property
    def elapsed(self) -> float:
        return self.reads[-1] - self.reads[0] if self.reads else 0.0


def run(program, parties=2, transport="local", **kwargs):
    kwargs.setdefault("master_seed", MASTER)
    kwargs.setdefault("timeout", 30.0)
    return run_local(program, parties, transport=transport, **kwargs)


@pytest.fixture(params=[2, 3], ids=lambda p: f"p{p}")
def parties(request):
    return request.param


@pytest.fixture(autouse=True, scope="session")
def _backend_cache(tmp_path_factory):
    # the measured linear-backend choices (SecureOptions(backend="auto")) go to a temporary
    # folder, not the user's ~/.cache/ringlet
    import os
    old = os.environ.get("RINGLET_CACHE_DIR")
    os.environ["RINGLET_CACHE_DIR"] = str(tmp_path_factory.mktemp("ringlet-cache"))
    yield
    if old is None:
        os.environ.pop("RINGLET_CACHE_DIR", None)
    else:
        os.environ["RINGLET_CACHE_DIR"] = old


@pytest.fixture(autouse=True)
def _small_threads():
    # parties run as threads on 2 cores: keep torch from oversubscribing them
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def secure_logits(compiled, x, parties=2, transport="local", batch=None):
    """A private inference of ``compiled`` on ``x``: (logits, per-layer rows of server 0)."""
    import functools

    from ringlet.runtime.programs import client_program, server_program
    server = functools.partial(server_program, model=compiled)
    client = functools.partial(client_program, images=x, batch=batch or x.shape[0], progress=False)
    res = run(server, parties, client=client, transport=transport)
    return res.client_result["logits"], res.servers[0].result["per_layer"]


def record_received(sess, received: list) -> None:
    """Append every int64 tensor this party receives (flattened) to ``received``: what a server
    sees, for the tests that no secret reaches it in the clear."""
    orig = sess.comm.recv

    def recv(src, step=""):
        out = orig(src, step)
        received.extend(t.reshape(-1) for t in out if t.dtype == torch.int64)
        return out
    sess.comm.recv = recv
