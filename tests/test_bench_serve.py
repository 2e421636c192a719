"""``ringlet bench serve`` on the tiny serving model: every query answered, right, with every key."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from serving import save_weights

from ringlet.cli import bench_serve

HERE = Path(__file__).parent
KEYS = ("command", "model", "clients", "queries", "rows_per_query", "answered", "wrong", "lost",
        "errors", "throughput", "p50_ms", "p99_ms", "mean_batch", "pool_depth", "infer_throughput",
        "infer_seconds_online", "throughput_ratio", "transport", "max_batch", "sizes",
        "pool_depth_setting", "max_abs_logit_error", "seconds")


def test_bench_serve_tiny(tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(HERE))  # servezoo, for this process and (via sys.path) the servers
    weights = save_weights(tmp_path / "tiny.safetensors")
    parser = argparse.ArgumentParser()
    bench_serve.add_parser(parser.add_subparsers(), "serve")
    out = tmp_path / "serve.json"
    argv = ["serve", "--model", "servezoo:tiny_net", "--weights", str(weights), "--input-shape", "1,8,8",
            "--input-bound", "4", "--clients", "2", "--queries", "3", "--max-batch", "4",
            "--sizes", "1,4", "--out", str(out)]
    monkeypatch.setattr(sys, "argv", ["ringlet", "bench", *argv])
    args = parser.parse_args(argv)
    assert args.run(args) == 0
    result = json.loads(capsys.readouterr().out)
    assert json.loads(out.read_text()) == result
    assert [k for k in KEYS if k not in result] == []
    assert (result["answered"], result["wrong"], result["lost"]) == (6, 0, 0), result
    assert result["queries"] == 6 and result["errors"] == {}
    assert result["transport"] == "tls" and result["sizes"] == [1, 4]
    assert result["max_abs_logit_error"] <= 0.05
    assert result["throughput"] > 0 and result["infer_throughput"] > 0
    assert result["p50_ms"] <= result["p99_ms"]
    assert 1 <= result["mean_batch"] <= 4
    assert result["pool_depth"] and {"t", "server-0", "server-1"} <= set(result["pool_depth"][0])
    assert result["command"].startswith("ringlet bench serve")


def test_bench_serve_hostile_tiny(tmp_path, monkeypatch, capsys):
    """Honest clients beside a hostile client and a kill-and-restart of every party: no wrong or
    lost answer; every error names a party; both phases and every kill are in the report."""
    monkeypatch.syspath_prepend(str(HERE))
    weights = save_weights(tmp_path / "tiny.safetensors")
    parser = argparse.ArgumentParser()
    bench_serve.add_parser(parser.add_subparsers(), "serve")
    argv = ["serve", "--model", "servezoo:tiny_net", "--weights", str(weights), "--input-shape",
            "1,8,8", "--input-bound", "4", "--clients", "2", "--queries", "4", "--max-batch", "4",
            "--sizes", "1,4", "--window", "2", "--hostile", "10"]
    monkeypatch.setattr(sys, "argv", ["ringlet", "bench", *argv])
    args = parser.parse_args(argv)
    assert args.run(args) == 0
    h = json.loads(capsys.readouterr().out)["hostile"]
    for phase in ("clean", "attacked"):
        assert h[phase]["wrong"] == 0 and h[phase]["lost"] == 0, h[phase]
        assert h[phase]["answered"] > 0
    assert h["clean"]["errors"] == {}
    errors = sum(h["attacked"]["errors"].values())
    assert h["attacked"]["errors_naming_a_party"] == errors, h["attacked"]
    # a share that reached one server just before the other was killed times out, naming it
    assert set(h["attacked"]["errors"]) <= {"peer_failed", "unavailable", "busy", "timeout"}, h["attacked"]
    assert [k["party"] for k in h["kills"]] == ["server-1", "dealer", "server-0"]
    assert all(k["serving_again_after_s"] is not None for k in h["kills"]), h["kills"]
    assert all(h["attacks"].get(a, 0) >= 1 for a in ("rows_mismatch", "lone_share_0",
                                                      "lone_share_1", "oversized", "nested_hello"))
    assert h["honest_ratio"] > 0
