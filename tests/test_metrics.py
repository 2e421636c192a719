"""ServeMetrics (per-instance registry, text exposition, snapshot) and HealthServer over HTTP."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
from prometheus_client import CONTENT_TYPE_LATEST

from ringlet.serve.metrics import HealthServer, ServeMetrics


def _get(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.headers["Content-Type"], r.read()
    except urllib.error.HTTPError as e:
        with e:
            return e.code, e.headers["Content-Type"], e.read()


def test_counters_render_and_snapshot():
    m = ServeMetrics("server-0")
    for _ in range(3):
        m.query()
    m.answered(0.02)
    m.answered(1.5)
    m.error("busy")
    m.error("timeout")
    m.error("timeout")
    m.batch(4)
    m.pool(8, 3)
    m.pool("16", 1)
    m.add_bytes("sent", "server-1", 1000)
    m.add_bytes("received", "dealer", 24)
    m.set_up(True)

    text = m.render().decode()
    assert 'ringlet_queries_total{party="server-0"} 3.0' in text
    assert 'ringlet_answered_total{party="server-0"} 2.0' in text
    assert 'ringlet_errors_total{kind="timeout",party="server-0"} 2.0' in text
    assert 'ringlet_errors_total{kind="internal",party="server-0"} 0.0' in text
    assert 'ringlet_batch_size_bucket{le="4.0",party="server-0"} 1.0' in text
    assert 'ringlet_latency_seconds_count{party="server-0"} 2.0' in text
    assert 'ringlet_pool_depth{party="server-0",shape="8"} 3.0' in text
    assert ('ringlet_bytes_total{direction="sent",link="server-1",party="server-0"} 1000.0'
            in text)
    assert 'ringlet_up{party="server-0"} 1.0' in text
    assert 'ringlet_draining{party="server-0"} 0.0' in text

    s = m.snapshot()
    assert s["queries"] == 3 and s["answered"] == 2
    assert s["errors"]["busy"] == 1 and s["errors"]["timeout"] == 2 and s["errors"]["internal"] == 0
    assert s["pool_depth"] == {"8": 3, "16": 1}
    assert s["bytes"] == {"sent:server-1": 1000, "received:dealer": 24}
    assert s["up"] is True and s["draining"] is False
    json.dumps(s)  # plain numbers only

    m.set_up(False)
    m.set_draining(True)
    m.pool(8, 0)
    s = m.snapshot()
    assert s["up"] is False and s["draining"] is True and s["pool_depth"]["8"] == 0


def test_bad_direction():
    with pytest.raises(ValueError):
        ServeMetrics("server-0").add_bytes("sideways", "dealer", 1)


def test_instances_do_not_share_values():
    a, b = ServeMetrics("server-0"), ServeMetrics("server-0")
    a.query()
    a.error("bad_input")
    a.set_up(True)
    assert a.snapshot()["queries"] == 1
    assert b.snapshot()["queries"] == 0
    assert b.snapshot()["errors"]["bad_input"] == 0 and b.snapshot()["up"] is False
    assert 'ringlet_queries_total{party="server-0"} 0.0' in b.render().decode()


def test_http_metrics_healthz_and_404():
    m = ServeMetrics("server-1")
    m.query()
    state = {"ok": True, "queue": 0}
    with HealthServer("127.0.0.1", 0, m, health=lambda: dict(state)) as hs:
        assert hs.port > 0
        base = f"http://127.0.0.1:{hs.port}"

        code, ctype, body = _get(base + "/metrics")
        assert code == 200 and ctype == CONTENT_TYPE_LATEST
        assert 'ringlet_queries_total{party="server-1"} 1.0' in body.decode()

        code, ctype, body = _get(base + "/healthz")
        assert code == 200 and ctype == "application/json"
        assert json.loads(body) == {"status": "ok", "ok": True, "queue": 0}

        state["ok"] = False
        code, _, body = _get(base + "/healthz")
        assert code == 503
        assert json.loads(body)["ok"] is False and json.loads(body)["queue"] == 0

        assert _get(base + "/nope")[0] == 404
    hs.stop()  # idempotent


def test_default_health_follows_up_and_draining():
    m = ServeMetrics("server-0")
    hs = HealthServer("127.0.0.1", 0, m).start()
    try:
        url = f"http://127.0.0.1:{hs.port}/healthz"
        assert _get(url)[0] == 503
        m.set_up(True)
        assert _get(url)[0] == 200
        m.set_draining(True)
        assert _get(url)[0] == 503
    finally:
        hs.stop()
        hs.stop()


def test_host_required_and_unstarted_stop():
    with pytest.raises(ValueError):
        HealthServer("", 0, ServeMetrics("server-0"))
    hs = HealthServer("127.0.0.1", 0, ServeMetrics("server-0"))
    hs.stop()  # never started: no-op
    with pytest.raises(RuntimeError):
        hs.start()
