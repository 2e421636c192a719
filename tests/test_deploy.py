"""The deployment file: what it reads, and errors that name the file, section and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from ringlet import deploy

ROOT = Path(__file__).resolve().parents[1]


def _raw(**over):
    raw = {"version": 1, "name": "t",
           "parties": {"server-0": {"address": "127.0.0.1:7000"}, "server-1": {"address": "[::1]:7001"},
                       "dealer": {}},
           "model": {"source": "m.safetensors", "weights": "w.safetensors"}}
    raw.update(over)
    return raw


def test_the_shipped_deployment_loads():
    d = deploy.load(ROOT / "deploy" / "fmnist.toml")
    assert [p.name for p in d.servers] == ["server-0", "server-1"]
    assert d.server(0).address == ("127.0.0.1", 7300) and d.server(0).metrics == ("127.0.0.1", 9300)
    assert d.tls and d.ca == ROOT / "deploy" / "certs" / "ca.pem"
    assert d.sizes == (1, 8, 32) and d.bucket(9) == 32 and d.bucket(1) == 1
    assert d.model["source"] == "resnet20-fmnist"  # a shipped stem, not a path beside the file


def test_defaults_paths_and_round_trip(tmp_path):
    path = deploy.write(tmp_path / "d.toml", _raw())
    d = deploy.load(path)
    assert d.server(1).address == ("::1", 7001)
    assert d.model["weights"] == str(tmp_path / "w.safetensors")
    assert d.parties["dealer"].cert == tmp_path / "certs" / "dealer.pem"
    assert d.sizes == (1, 8, 32) and d.pool_depth == 2 and d.query_timeout == 60
    assert deploy.load(deploy.write(tmp_path / "d.json", _raw())).sizes == d.sizes


@pytest.mark.parametrize("over, match", [
    ({"version": 2}, "version = 2; this ringlet reads version 1"),
    ({"colour": 1}, r"unknown top-level keys \['colour'\]"),
    ({"batching": {"max_batch": 8, "size": [1]}}, r"\[batching\] has unknown keys \['size'\]"),
    ({"batching": {"max_batch": 8, "sizes": [16]}}, r"sizes \[8, 16\] must lie in 1..max_batch 8"),
    ({"pool": {"depth": 0}}, r"\[pool\] depth: 0 must be a positive int"),
    ({"timeouts": {"query": "soon"}}, r"\[timeouts\] query: 'soon' is not a number"),
    ({"parties": {"server-0": {"address": "nowhere"}, "server-1": {"address": "h:1"}, "dealer": {}}},
     r"\[parties.server-0\] address: 'nowhere' is not HOST:PORT"),
    ({"parties": {"server-0": {"address": "h:1"}, "dealer": {}}}, "needs server-0, server-1"),
    ({"parties": {"server-0": {"address": "h:1"}, "server-1": {"address": "h:2"}}}, r"\[parties.dealer\] is missing"),
    ({"parties": {"server-0": {"address": "h:1"}, "server-1": {}, "dealer": {}}}, "needs an address"),
    ({"model": {}}, r"\[model\] needs source"),
])
def test_errors_name_what_is_wrong(tmp_path, over, match):
    with pytest.raises(deploy.DeploymentError, match=match):
        deploy.from_dict(_raw(**over), tmp_path / "d.toml")


def test_a_missing_or_malformed_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="deployment file"):
        deploy.load(tmp_path / "none.toml")
    (tmp_path / "bad.toml").write_text("version = = 1")
    with pytest.raises(deploy.DeploymentError, match="not valid TOML"):
        deploy.load(tmp_path / "bad.toml")


def test_transport_choices_of_the_cli_are_the_transports():
    from ringlet.cli.common import TRANSPORT_CHOICES
    from ringlet.comm.transport import TRANSPORTS
    assert TRANSPORT_CHOICES == TRANSPORTS
