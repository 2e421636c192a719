"""Honest clients of a loopback deployment and the scoring of their answers (``bench serve``)."""

from __future__ import annotations

import time
from concurrent.futures import FIRST_COMPLETED, Future, wait
from typing import Any

import numpy as np
import torch

from ringlet.serve.client import Client

LOGIT_TOLERANCE = 0.05


def run_client(d, xs: list, window: int, timeout: float, records: list, on_answer,
               until: float | None = None, backoff: float = 0.0) -> None:
    """One client: submit its queries (at most ``window`` in flight); one record per query. With
    ``until`` (a time.perf_counter() value) it cycles through ``xs`` until then; after an error it
    waits ``backoff`` seconds (a client's back-off, not a flood while a party restarts)."""

    client = Client(d)
    inflight: dict[Future[Any], dict[str, Any]] = {}  # future -> its query record

    def more() -> bool:
        return nxt < len(xs) if until is None else time.perf_counter() < until

    def failed(rec, exc) -> None:
        rec.update(error=getattr(exc, "kind", None) or type(exc).__name__, message=str(exc))
        time.sleep(backoff)
    try:
        nxt = 0
        while more() or inflight:
            while more() and len(inflight) < window:
                index, x = xs[nxt % len(xs)]
                nxt += 1
                rec: dict[str, Any] = dict(index=index, t0=time.perf_counter(), t1=None, result=None,
                                           error=None, message=None)
                records.append(rec)
                try:
                    fut = client.submit(x)
                except (RuntimeError, ValueError) as exc:  # QueryError (unavailable), input range
                    failed(rec, exc)
                    continue

                # a def, not a lambda: mypy cannot type a lambda with a default argument
                def stamp(_: Future[Any], rec: dict[str, Any] = rec) -> None:
                    rec.update(t1=time.perf_counter())
                fut.add_done_callback(stamp)
                inflight[fut] = rec
            if not inflight:
                continue
            first = min(r["t0"] for r in inflight.values()) + timeout
            if until is not None and more():
                first = min(first, until)
            done, _ = wait(list(inflight), max(0.0, first - time.perf_counter()) + 0.001,
                           FIRST_COMPLETED)
            for fut in done:
                rec = inflight.pop(fut)
                err = fut.exception()
                if err is None:
                    rec["result"] = fut.result()
                    on_answer()
                else:
                    failed(rec, err)
            now = time.perf_counter()
            for fut in [f for f, r in inflight.items() if now >= r["t0"] + timeout]:
                inflight.pop(fut)  # lost: neither a result nor an error in time
    finally:
        client.close()


def score(records: list, reference: torch.Tensor, rows: int) -> dict:
    """answered / wrong / lost / errors / latencies of the query records."""
    answered, wrong, lost, worst = 0, 0, 0, 0.0
    errors: dict[str, int] = {}
    latencies: list[float] = []
    for rec in records:
        if rec["result"] is not None:
            answered += 1
            latencies.append((rec["t1"] - rec["t0"]) * 1000.0)
            ref = reference[rec["index"] * rows:(rec["index"] + 1) * rows]
            got = rec["result"].to(torch.float64).reshape(ref.shape)
            err = float((got - ref).abs().max())
            worst = max(worst, err)
            if err > LOGIT_TOLERANCE or not torch.equal(got.argmax(-1), ref.argmax(-1)):
                wrong += 1
        elif rec["error"] is not None:
            errors[rec["error"]] = errors.get(rec["error"], 0) + 1
        else:
            lost += 1
    ends = [r["t1"] for r in records if r["result"] is not None]
    wall = max(ends) - min(r["t0"] for r in records) if ends else 0.0
    p50, p99 = np.percentile(latencies, [50, 99]).tolist() if latencies else (None, None)
    return {"answered": answered, "wrong": wrong, "lost": lost, "errors": errors,
            "throughput": answered * rows / wall if wall > 0 else None,
            "p50_ms": p50, "p99_ms": p99, "max_abs_logit_error": worst if answered else None}
