"""Prometheus metrics and a tiny /metrics + /healthz HTTP endpoint for ``ringlet serve``.

Each server process builds one :class:`ServeMetrics` with its own ``CollectorRegistry`` (never
the global one: parties in one process or test never share values) and a :class:`HealthServer`.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from ringlet.serve.wire import ERROR_KINDS

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
# what ends a link early: an oversized or garbled frame, a timeout (idle, or slow inside a frame),
# a link over its certificate's limit, a refused join, anything unexpected
LINK_ERROR_KINDS = ("oversized", "garbled", "timeout", "limit", "refused", "internal")
DIRECTIONS = ("sent", "received")


class ServeMetrics:
    """The metrics of one serving party (label ``party``, e.g. ``"server-0"``)."""

    def __init__(self, party: str) -> None:
        self.party, self.registry = party, CollectorRegistry()
        r, p = self.registry, ("party",)
        # single-series metrics are kept bound to this party; the others get more labels per call
        self._queries = Counter("ringlet_queries_total", "Queries accepted", p,
                                registry=r).labels(party)
        self._answered = Counter("ringlet_answered_total", "Queries answered", p,
                                 registry=r).labels(party)
        self._errors = Counter("ringlet_errors_total", "Queries failed, by kind", p + ("kind",),
                               registry=r)
        self._batch = Histogram("ringlet_batch_size", "Input rows per evaluated batch (before padding to its shape)", p,
                                buckets=BATCH_BUCKETS, registry=r).labels(party)
        self._latency = Histogram("ringlet_latency_seconds", "Query accepted to answer sent", p,
                                  buckets=LATENCY_BUCKETS, registry=r).labels(party)
        self._pool = Gauge("ringlet_pool_depth", "Preprocessed batches ready, by batch bucket",
                           p + ("shape",), registry=r)
        self._bytes = Counter("ringlet_bytes_total", "Bytes on the wire", p + ("direction", "link"),
                              registry=r)
        self._up = Gauge("ringlet_up", "1 when the peer link works and queries are served", p,
                         registry=r).labels(party)
        self._draining = Gauge("ringlet_draining", "1 while draining before shutdown", p,
                               registry=r).labels(party)
        self._link_errors = Counter("ringlet_link_errors_total", "Links ended early, by cause",
                                    p + ("kind",), registry=r)
        for kind in ERROR_KINDS:  # export zeros so rate() works before the first error
            self._errors.labels(party, kind)
        for kind in LINK_ERROR_KINDS:
            self._link_errors.labels(party, kind)

    def query(self) -> None:
        self._queries.inc()

    def answered(self, seconds: float) -> None:
        self._answered.inc()
        self._latency.observe(seconds)

    def error(self, kind: str) -> None:
        self._errors.labels(self.party, kind).inc()

    def link_error(self, kind: str) -> None:
        if kind not in LINK_ERROR_KINDS:
            raise ValueError(f"link error kind must be one of {LINK_ERROR_KINDS}, not {kind!r}")
        self._link_errors.labels(self.party, kind).inc()

    def batch(self, n: int) -> None:
        self._batch.observe(n)

    def pool(self, shape: int | str, depth: int) -> None:
        self._pool.labels(self.party, str(shape)).set(depth)

    def add_bytes(self, direction: str, link: str, n: int) -> None:
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, not {direction!r}")
        self._bytes.labels(self.party, direction, link).inc(n)

    def set_up(self, up: bool) -> None:
        self._up.set(1 if up else 0)

    def set_draining(self, draining: bool) -> None:
        self._draining.set(1 if draining else 0)

    def render(self) -> bytes:
        """The Prometheus text exposition of this instance's registry."""
        return generate_latest(self.registry)

    def _by_label(self, sample_name: str, *labels: str) -> dict[str, int]:
        return {":".join(s.labels[k] for k in labels): int(s.value)
                for m in self.registry.collect() for s in m.samples
                if s.name == sample_name and s.labels.get("party") == self.party}

    def _value(self, sample_name: str) -> float:
        v = self.registry.get_sample_value(sample_name, {"party": self.party})
        return 0.0 if v is None else v

    def snapshot(self) -> dict[str, Any]:
        """Plain numbers for JSON reports and tests."""
        return {
            "party": self.party,
            "queries": int(self._value("ringlet_queries_total")),
            "answered": int(self._value("ringlet_answered_total")),
            "errors": self._by_label("ringlet_errors_total", "kind"),
            "pool_depth": self._by_label("ringlet_pool_depth", "shape"),
            "bytes": self._by_label("ringlet_bytes_total", "direction", "link"),  # "sent:dealer"
            "up": bool(self._value("ringlet_up")),
            "draining": bool(self._value("ringlet_draining")),
        }


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, host: str, port: int, metrics: ServeMetrics,
                 health: Callable[[], dict]) -> None:
        self.metrics, self.health = metrics, health
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        super().__init__((host, port), _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._reply(200, CONTENT_TYPE_LATEST, self.server.metrics.render())
        elif path == "/healthz":
            try:
                h = dict(self.server.health())
            except Exception as e:  # a broken callback means unhealthy, not a dead endpoint
                h = {"ok": False, "error": f"{type(e).__name__}: {e}"}
            ok = h.get("ok") is True
            body = {"status": "ok" if ok else "unavailable", **h}
            self._reply(200 if ok else 503, "application/json",
                        json.dumps(body, default=str).encode())
        else:
            self._reply(404, "text/plain; charset=utf-8", b"not found\n")

    def _reply(self, code: int, ctype: str, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (base signature)
        pass


class HealthServer:
    """``GET /metrics`` and ``GET /healthz`` on ``host:port`` (port 0: any free one, see ``.port``).

    ``health()`` returns a dict: ``"ok": True`` gives 200, else 503 (default: up and not draining).
    """

    def __init__(self, host: str, port: int, metrics: ServeMetrics,
                 health: Callable[[], dict] | None = None) -> None:
        if not host:
            raise ValueError("host is required (an empty host would bind every interface)")
        self.host, self._port, self.metrics = host, port, metrics
        self.health = health or self._default_health
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._lock, self._stopped = threading.Lock(), False

    def _default_health(self) -> dict:
        s = self.metrics.snapshot()
        return {"ok": s["up"] and not s["draining"], "up": s["up"], "draining": s["draining"]}

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("HealthServer is not started")
        return self._server.server_address[1]

    def start(self) -> HealthServer:
        with self._lock:
            if self._stopped:
                raise RuntimeError("HealthServer was stopped; make a new one")
            if self._server is None:
                self._server = _Server(self.host, self._port, self.metrics, self.health)
                self._thread = threading.Thread(target=self._server.serve_forever,
                                                name=f"health-{self.metrics.party}", daemon=True)
                self._thread.start()
        return self

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            server, thread, self._thread = self._server, self._thread, None
            if server is None or thread is None:
                return
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)

    def __enter__(self) -> HealthServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
