"""Clients of a deployment: ``ringlet.Client(deploy).query(x) -> logits``, and an asyncio variant.

The client encodes its input in the servers' fixed point, checks it against the model's input range,
splits it into additive shares (p−1 drawn from a fresh AES-CTR stream, the last the remainder), sends
each server only its share with a fresh random query id, and adds the servers' output shares. It
gets its own logits or an error (:class:`~ringlet.serve.wire.QueryError` naming the server) —
never silence: every wait is bounded by the deployment's query timeout.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from concurrent.futures import Future

import torch

from ringlet import deploy as deployment
from ringlet.comm.base import CommError
from ringlet.comm.channel import Channel
from ringlet.comm.mesh import dial
from ringlet.compiler.graph import apply_postprocess
from ringlet.compiler.ranges import InputRange, check_input
from ringlet.prng import AesCtrStream, new_seed
from ringlet.ring import FixedPoint
from ringlet.serve import wire
from ringlet.serve.wire import QueryError, QueryTimeout


class _Pending:
    def __init__(self, rows: int, servers: int):
        self.future: Future = Future()
        self.rows, self.servers = rows, servers
        self.parts: dict[int, torch.Tensor] = {}  # server -> its share of the output rows
        self.t0 = time.monotonic()


def _address(d: deployment.Deployment, r: int) -> tuple[str, int]:
    """Where server ``r`` listens (a loaded deployment names an address for every server)."""
    address = d.server(r).address
    if address is None:
        raise deployment.DeploymentError(f"{d.path}: [parties.server-{r}] needs an address (servers listen)")
    return address


class Client:
    """A client of the deployment ``deploy`` (a path or a loaded :class:`~ringlet.deploy.Deployment`)."""

    def __init__(self, deploy, name: str = "client", timeout: float | None = None):
        self.d = deployment.load(deploy) if not hasattr(deploy, "servers") else deploy
        self.name = name
        self.p = len(self.d.servers)
        self.timeout = float(timeout or self.d.query_timeout)
        self.ctx = self.d.tls_files().contexts(name)[1] if self.d.tls else None
        self._lock = threading.Lock()
        self._links: dict[int, Channel] = {}
        self._pending: dict[str, _Pending] = {}
        self._readers: list[threading.Thread] = []
        self.info: dict | None = None

    # links --------------------------------------------------------------------------------------
    def _link(self, r: int) -> Channel:
        ch = self._links.get(r)
        if ch is not None:
            return ch
        hello = {"rank": -1, "name": self.name, "deployment": self.d.name}
        try:
            ch = dial(_address(self.d, r), self.ctx, f"server-{r}", hello,
                      time.monotonic() + self.d.connect_timeout)
        except CommError as exc:
            raise QueryError("unavailable", f"server-{r}: cannot connect ({exc})") from None
        try:
            wire.send(ch, {"op": "info"})
            header, _ = wire.recv(ch, self.d.connect_timeout, "the model's facts")
            self._check_info(r, header)
        except BaseException:
            ch.close()
            raise
        self._links[r] = ch
        reader = threading.Thread(target=self._reader, args=(r, ch), daemon=True,
                                  name=f"ringlet-client-server-{r}")
        self._readers.append(reader)
        reader.start()
        return ch

    def _check_info(self, r: int, info: dict) -> None:
        if info.get("op") == "error":
            raise QueryError(str(info.get("kind", "internal")), str(info.get("message", "")))
        if info.get("op") != "info":
            raise QueryError("internal", f"server-{r} answered {info.get('op')!r} to info")
        if self.info is None:
            self.info = info
            return
        differ = [k for k in ("fingerprint", "input_shape", "output_shape", "output_frac", "input_frac",
                              "ring_bits", "input_range") if info.get(k) != self.info.get(k)]
        if differ:
            raise QueryError("internal", f"server-{r} runs another model than server-0 "
                                         f"({', '.join(differ)} differ)")

    def _reader(self, r: int, ch) -> None:
        try:
            while True:
                header, payload = wire.recv(ch, 24 * 3600.0, "answers",
                                            payload_limit=self._answer_limit,
                                            frame_timeout=self.d.message_timeout)
                with self._lock:
                    pend = self._pending.get(header.get("id"))
                if pend is None:
                    continue  # an answer to a query this client gave up on
                if header.get("op") == "error":
                    self._finish(header["id"], error=QueryError(header.get("kind", "internal"),
                                                                header.get("message", ""), header["id"]))
                elif header.get("op") == "result":
                    try:
                        self._part(header["id"], r, payload)
                    except (ValueError, TypeError) as exc:
                        self._finish(header["id"], error=QueryError(
                            "internal", f"server-{r} sent an answer that does not fit: {exc}"))
        except CommError as exc:
            with self._lock:
                if self._links.get(r) is ch:
                    del self._links[r]
                ids = list(self._pending)
            for qid in ids:
                self._finish(qid, error=QueryError("peer_failed", f"server-{r} is gone ({exc})", qid))

    def _answer_limit(self, header: dict) -> int:
        facts = self._facts()
        rows = wire.rows_of(header, facts["max_batch"]) or facts["max_batch"]
        return self._ring().wire_bytes(rows * int(torch.Size(facts["output_shape"]).numel()))

    def _part(self, qid: str, r: int, payload) -> None:
        ring, facts = self._ring(), self._facts()
        with self._lock:
            pend = self._pending.get(qid)
            if pend is None:
                return
            shape = (pend.rows, *facts["output_shape"])
            t = torch.frombuffer(bytearray(payload), dtype=torch.uint8)
            if ring.bits == 64:
                t = t.view(torch.int64)
            pend.parts[r] = ring.unwire(t, shape)
            done = len(pend.parts) == pend.servers
        if done:
            acc = ring.reduce(sum(pend.parts.values()))
            y = acc.to(torch.float64) / (1 << facts["output_frac"])
            self._finish(qid, result=apply_postprocess(facts["postprocess"], y))

    def _finish(self, qid: str, result=None, error=None) -> None:
        with self._lock:
            pend = self._pending.pop(qid, None)
        if pend is None or pend.future.done():
            return
        if error is not None:
            pend.future.set_exception(error)
        else:
            pend.future.set_result(result)

    def _ring(self):
        facts = self._facts()
        return FixedPoint(facts["input_frac"], facts["ring_bits"]).ring

    def _facts(self) -> dict:
        """The model's facts (``info``), which the first linked server gave."""
        if self.info is None:
            raise QueryError("internal", "the model's facts are not known before a server is linked")
        return self.info

    def status(self) -> list[dict]:
        """Every server's current facts (``serving``, pool depths, …), asked on a fresh link."""
        out = []
        for r in range(self.p):
            hello = {"rank": -1, "name": self.name, "deployment": self.d.name}
            ch = dial(_address(self.d, r), self.ctx, f"server-{r}", hello,
                      time.monotonic() + self.d.connect_timeout)
            try:
                wire.send(ch, {"op": "info"})
                out.append(wire.recv(ch, self.d.connect_timeout, "the server's status")[0])
            finally:
                ch.close()
        return out

    def wait_ready(self, timeout: float = 60.0, pool: int | bool = True) -> None:
        """Wait until every server serves and holds ``pool`` ready entries of every batch shape
        (True: one; False: none needed)."""
        need = int(pool)
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            try:
                st = self.status()
                if all(s.get("serving") and all(n >= need for n in s.get("pool", {}).values())
                       for s in st):
                    return
                last = "; ".join(f"server-{s['server']}: serving={s.get('serving')} pool={s.get('pool')}"
                                 for s in st)
            except CommError as exc:
                last = str(exc)
            time.sleep(0.2)
        raise TimeoutError(f"the deployment is not ready after {timeout:g} s ({last})")

    # queries ------------------------------------------------------------------------------------
    def submit(self, x: torch.Tensor) -> Future:
        """Send one query (an input, or a batch of inputs as rows) and return its future logits."""
        with self._lock:
            for r in range(self.p):
                self._link(r)
        facts = self._facts()
        x = torch.as_tensor(x)
        if x.is_complex() or not (x.is_floating_point() or x.dtype in (
                torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)):
            raise ValueError(f"query of dtype {x.dtype}: the model takes real numbers")
        x = x.to(torch.float64)
        shape = tuple(facts["input_shape"])
        if tuple(x.shape) == shape:
            x = x.unsqueeze(0)
        if tuple(x.shape[1:]) != shape:
            raise ValueError(f"query of shape {tuple(x.shape)}: the model takes {shape} "
                             f"(or N×{shape})")
        if not 1 <= x.shape[0] <= facts["max_batch"]:
            raise ValueError(f"a query holds 1..{facts['max_batch']} inputs, got {x.shape[0]}")
        check_input(x, InputRange.from_dict(facts["input_range"]))
        fixed = FixedPoint(facts["input_frac"], facts["ring_bits"])
        enc = fixed.encode(x, what="query")
        stream = AesCtrStream(new_seed())
        shares = [fixed.ring.reduce(stream.int64(enc.shape)) for _ in range(self.p - 1)]
        shares.append(fixed.ring.reduce(enc - sum(shares)) if shares else enc)
        qid = secrets.token_hex(16)
        pend = _Pending(int(x.shape[0]), self.p)
        with self._lock:
            self._pending[qid] = pend
        for r, share in enumerate(shares):
            try:
                wire.send(self._links[r], {"op": "query", "id": qid, "rows": pend.rows},
                          fixed.ring.wire(share).numpy())
            except (CommError, KeyError) as exc:
                self._finish(qid, error=QueryError("peer_failed", f"server-{r} is gone ({exc})", qid))
        return pend.future

    def query(self, x: torch.Tensor, timeout: float | None = None) -> torch.Tensor:
        """The logits of ``x`` (one input or rows of inputs); raises QueryError or TimeoutError."""
        fut = self.submit(x)
        return self._result(fut, timeout)

    def _result(self, fut: Future, timeout: float | None):
        wait = timeout or self.timeout + 5.0
        try:
            return fut.result(wait)
        except TimeoutError:
            raise self._late(fut, wait) from None

    def _late(self, fut: Future, wait: float) -> QueryTimeout:
        """The error of a query with no complete answer: which servers did not answer."""
        with self._lock:
            qid, pend = next(((i, p) for i, p in self._pending.items() if p.future is fut),
                             (None, None))
        if qid is None or pend is None:
            return QueryTimeout(f"no answer from the servers within {wait:g} s")
        silent = [f"server-{r}" for r in range(self.p) if r not in pend.parts]
        done = [f"server-{r}" for r in sorted(pend.parts)]
        self._finish(qid, error=QueryTimeout("", qid))  # its future is given up on
        said = f" ({', '.join(done)} did)" if done else ""
        return QueryTimeout(f"query {qid}: {', '.join(silent)} did not answer within "
                            f"{wait:g} s{said}", qid)

    def query_many(self, xs, timeout: float | None = None) -> list[torch.Tensor]:
        futures = [self.submit(x) for x in xs]
        return [self._result(f, timeout) for f in futures]

    def close(self) -> None:
        with self._lock:
            links, self._links = dict(self._links), {}
        for ch in links.values():
            ch.close()
        for t in self._readers:
            t.join(2.0)
        self._readers = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class AsyncClient:
    """``await AsyncClient(deploy).query(x)``: the same client for asyncio programs."""

    def __init__(self, deploy, name: str = "client", timeout: float | None = None):
        self.client = Client(deploy, name, timeout)

    async def query(self, x: torch.Tensor) -> torch.Tensor:
        loop = asyncio.get_running_loop()
        fut = await loop.run_in_executor(None, self.client.submit, x)
        wait = self.client.timeout + 5.0
        try:
            return await asyncio.wait_for(asyncio.wrap_future(fut), wait)
        except TimeoutError:
            raise self.client._late(fut, wait) from None

    def close(self) -> None:
        self.client.close()
