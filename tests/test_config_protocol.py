"""The ReLU config's version 2: a per-layer ReLU protocol next to the bits; version 1 still loads."""

import json

import pytest

from ringlet.compiler.config import (
    VERSION,
    ConfigError,
    ReluConfig,
    parse_entry,
    parse_setting,
    setting_of,
    uniform,
)

NAMES = ["a.relu", "b.relu", "c.relu", "d.relu"]
V1 = {"version": 1, "default": {"k": 20, "m": 0}, "groups": {"g": ["b.relu", "c.relu"]},
      "layers": {"g": "identity", "c.relu": {"k": 30, "m": 4}, "a.relu": "exact"},
      "search": {"model": "m"}}
V1_BITS = {"a.relu": (64, 0), "b.relu": (0, 0), "c.relu": (30, 4), "d.relu": (20, 0)}


def test_version_1_still_loads_and_resolves_the_same(tmp_path):
    path = tmp_path / "v1.json"
    path.write_text(json.dumps(V1))
    cfg = ReluConfig.load(path)
    assert cfg.resolve(NAMES) == V1_BITS
    assert cfg.resolve_protocols(NAMES) == dict.fromkeys(NAMES)  # nothing sets a protocol
    assert cfg.protocol is None and cfg.extra == {"search": {"model": "m"}}
    # saved as version 2 with the same meaning
    out = tmp_path / "v2.json"
    cfg.save(out)
    data = json.loads(out.read_text())
    assert VERSION == 2 and data["version"] == 2 and "protocol" not in data
    again = ReluConfig.load(out)
    assert again == cfg and again.resolve(NAMES) == V1_BITS


def test_protocol_at_each_level_with_precedence():
    cfg = ReluConfig.from_dict({
        "version": 2, "protocol": "gmw", "default": {"k": 24, "m": 2},
        "groups": {"g": ["b.relu", "c.relu"], "h": ["d.relu"]},
        "layers": {"g": {"k": 40, "m": 8, "protocol": "fss"},  # group: bits and protocol
                   "c.relu": {"protocol": "gmw"},               # layer: protocol only
                   "h": {"bits": "identity"},                   # group: bits only
                   "a.relu": {"k": 50, "m": 0, "protocol": "fss"}}})
    assert cfg.protocol == "gmw" and "protocol" not in cfg.extra
    assert cfg.resolve(NAMES) == {"a.relu": (50, 0), "b.relu": (40, 8), "c.relu": (40, 8), "d.relu": (0, 0)}
    assert cfg.resolve_protocols(NAMES) == {"a.relu": "fss", "b.relu": "fss", "c.relu": "gmw",
                                            "d.relu": "gmw"}


def test_protocol_only_entries_keep_the_lower_bits():
    cfg = ReluConfig.from_dict({"version": 2, "default": {"k": 24, "m": 2},
                                "groups": {"g": ["b.relu", "c.relu"]},
                                "layers": {"g": {"protocol": "fss"}, "c.relu": {"k": 30, "m": 4},
                                           "d.relu": {"protocol": "gmw"}}})
    assert cfg.resolve(NAMES) == {"a.relu": (24, 2), "b.relu": (24, 2), "c.relu": (30, 4), "d.relu": (24, 2)}
    # c.relu's layer entry sets only bits: it keeps its group's protocol
    assert cfg.resolve_protocols(NAMES) == {"a.relu": None, "b.relu": "fss", "c.relu": "fss", "d.relu": "gmw"}
    # a protocol-only default keeps the bits "exact"
    only = ReluConfig.from_dict({"version": 2, "default": {"protocol": "fss"}})
    assert only.resolve(NAMES) == dict.fromkeys(NAMES, (64, 0))
    assert only.resolve_protocols(NAMES) == dict.fromkeys(NAMES, "fss")


def test_parse_entry_and_parse_setting():
    from ringlet.protocols.catalog import relu_protocols
    assert relu_protocols().names() == ("gmw", "fss")  # what a config may name
    assert parse_entry("exact", "w") == ((64, 0), None)
    assert parse_entry({"k": 9, "m": 1, "protocol": "fss"}, "w") == ((9, 1), "fss")
    assert parse_entry({"protocol": "gmw"}, "w") == (None, "gmw")
    assert parse_entry({"bits": "identity", "protocol": "fss"}, "w") == ((0, 0), "fss")
    assert parse_setting({"k": 9, "m": 1, "protocol": "fss"}, "w") == (9, 1)
    assert parse_setting("identity", "w") == (0, 0)
    with pytest.raises(ConfigError, match="w: .* sets only a protocol, no bits"):
        parse_setting({"protocol": "fss"}, "w")
    for bad in ({}, {"m": 3}, {"bits": "exact", "k": 3}, {"k": 3, "speed": 1}):
        with pytest.raises(ConfigError, match="^w: a bit setting is"):
            parse_entry(bad, "w")
    with pytest.raises(ConfigError, match="w: \"bits\" is \"exact\" or \"identity\""):
        parse_entry({"bits": {"k": 3}}, "w")
    assert setting_of(64, 0) == "exact" and setting_of(9, 1) == {"k": 9, "m": 1}
    assert setting_of(9, 1, "fss") == {"k": 9, "m": 1, "protocol": "fss"}
    assert setting_of(5, 5, "gmw") == {"bits": "identity", "protocol": "gmw"}
    for k, m, p in ((64, 0, "fss"), (0, 0, "gmw"), (12, 3, "fss"), (12, 3, None)):
        assert parse_entry(setting_of(k, m, p), "w") == ((k, m) if k != m else (0, 0), p)


@pytest.mark.parametrize("data, msg", [
    ({"version": 2, "layers": {"layer1.0.relu1": {"k": 20, "protocol": "xyz"}}},
     r"^config: layers\['layer1.0.relu1'\]: unknown protocol 'xyz'; use one of gmw, fss$"),
    ({"version": 2, "protocol": "GMW"}, r"^config: \"protocol\": unknown protocol 'GMW'; use one of gmw, fss$"),
    ({"version": 2, "protocol": None}, r"^config: \"protocol\": unknown protocol None"),
    ({"version": 2, "default": {"protocol": 3}}, r"^config: default: unknown protocol 3"),
    ({"version": 2, "groups": {"g": ["a.relu"]}, "layers": {"g": {"protocol": "tls"}}},
     r"^config: layers\['g'\]: unknown protocol 'tls'"),
    ({"version": 1, "layers": {"a.relu": {"k": 20, "m": 0, "protocol": "fss"}}},
     r"^config: layers\['a.relu'\]: a protocol needs version 2"),
    ({"version": 1, "default": {"protocol": "gmw"}}, r"^config: default: a protocol needs version 2"),
    ({"version": 1, "protocol": "fss"}, r"^config: \"protocol\": a protocol needs version 2"),
    ({"version": 3}, r"^config: unknown version 3 \(this ringlet reads versions 1, 2\)$"),
    ({"version": "2"}, r"^config: unknown version '2' \(this ringlet reads versions 1, 2\)$"),
    ({"version": True}, r"unknown version True"),
    ({"default": "exact"}, r"^config: missing \"version\" \(this ringlet reads versions 1, 2\)$"),
    ({"version": 2, "protocol": "gmw", "default": {"k": 20, "protocol": "fss"}},
     r"^config: default sets protocol 'fss' and \"protocol\" sets 'gmw'"),
    ({"version": 2, "layers": {"a.relu": {"protocol": "fss", "k": 3, "m": 5}}},
     r"^config: layers\['a.relu'\]: k = 3 < m = 5$"),
])
def test_errors_name_the_entry(data, msg):
    with pytest.raises(ConfigError, match=msg):
        ReluConfig.from_dict(data)


def test_resolve_checks_names_and_code_built_configs():
    cfg = ReluConfig.from_dict({"version": 2, "layers": {"e.relu": {"protocol": "fss"}}})
    for resolve in (cfg.resolve, cfg.resolve_protocols):
        with pytest.raises(ConfigError, match="layers names 'e.relu'"):
            resolve(NAMES, "cfg.json")
    with pytest.raises(ConfigError, match=r"^cfg.json: \"protocol\": unknown protocol 'xyz'"):
        ReluConfig(protocol="xyz").resolve_protocols(NAMES, "cfg.json")
    with pytest.raises(ConfigError, match=r"^cfg.json: layers\['a.relu'\]: unknown protocol 'x'"):
        ReluConfig(layers={"a.relu": {"protocol": "x"}}).resolve(NAMES, "cfg.json")
    u = uniform(20, 4)
    assert u.resolve(NAMES) == dict.fromkeys(NAMES, (20, 4))
    assert u.resolve_protocols(NAMES) == dict.fromkeys(NAMES)
    assert uniform(20, 4, "fss").resolve_protocols(NAMES) == dict.fromkeys(NAMES, "fss")
    # a positional construction (as the search does) still works and has no protocol
    pos = ReluConfig(u.default, u.groups, u.layers, u.version, {"search": {}})
    assert pos.protocol is None and pos.to_dict() == {"version": 2, "default": {"k": 20, "m": 4},
                                                      "search": {}}


def test_save_load_round_trip(tmp_path):
    data = {"version": 2, "protocol": "fss", "default": {"k": 48, "m": 8},
            "groups": {"g": ["b.relu", "c.relu"]},
            "layers": {"g": {"protocol": "gmw"}, "a.relu": {"bits": "identity", "protocol": "gmw"},
                       "c.relu": {"k": 30, "m": 4}},
            "ring_bits": 48, "frac_bits": 12, "search": {"model": "m", "budget": 0.5}}
    cfg = ReluConfig.from_dict(data)
    path = tmp_path / "c.json"
    cfg.save(path)
    text = path.read_text()
    assert text.count('"protocol": "fss"') == 1  # the top-level protocol is written once
    saved = json.loads(text)
    assert saved == data
    again = ReluConfig.load(path)
    assert again == cfg and again.ring_bits == 48 and again.frac_bits == 12
    assert again.resolve(NAMES) == {"a.relu": (0, 0), "b.relu": (48, 8), "c.relu": (30, 4), "d.relu": (48, 8)}
    assert again.resolve_protocols(NAMES) == {"a.relu": "gmw", "b.relu": "gmw", "c.relu": "gmw",
                                              "d.relu": "fss"}
    # an "protocol" in extra (built in code) is not written twice nor over the field
    odd = ReluConfig(protocol="gmw", extra={"protocol": "fss", "note": 1})
    assert odd.to_dict() == {"version": 2, "default": "exact", "protocol": "gmw", "note": 1}
