"""One options object: the command line's flags, a deployment's [model] keys and API keywords all
come from (and go back to) the fields of SecureOptions."""

from __future__ import annotations

import dataclasses

import pytest

from ringlet.cli.main import build_parser
from ringlet.compiler.options import SecureOptions


def _flags(command: str) -> set[str]:
    sub = build_parser()._subparsers._group_actions[0].choices[command]
    return {flag for action in sub._actions for flag in action.option_strings}


@pytest.mark.parametrize("command", ["infer", "party"])
def test_every_option_is_a_flag_of_the_private_run_commands(command):
    flags = _flags(command)
    for f in dataclasses.fields(SecureOptions):
        assert set(f.metadata["flags"]) <= flags, (command, f.name)
    argv = {"infer": ["infer", "--model", "m"],
            "party": ["party", "--role", "server", "--world-size", "2"]}[command]
    args = build_parser().parse_args(argv)
    assert SecureOptions.from_args(args) == SecureOptions()  # the flags' defaults are the fields'


def test_flags_dicts_and_keywords_give_the_same_options():
    args = build_parser().parse_args(["infer", "--model", "m", "--relu-protocol", "fss",
                                      "--linear-backend", "int64", "--private-weights",
                                      "--adder", "kogge-stone", "--auto-link", "wan"])
    from_flags = SecureOptions.from_args(args)
    from_keys = SecureOptions.from_dict({"relu_protocol": "fss", "linear_backend": "int64",
                                         "private_weights": True, "adder": "kogge-stone",
                                         "auto_link": "wan"})
    assert from_flags == from_keys == SecureOptions().replace(
        relu_protocol="fss", backend="int64", private_weights=True, adder="kogge-stone", auto_link="wan")
    assert SecureOptions.from_dict(from_keys.to_dict()) == from_keys
    assert from_keys.replace(adder=None).adder == "kogge-stone"  # None keeps the value


def test_bad_options_are_refused_naming_the_key_and_the_choices():
    with pytest.raises(ValueError, match="the deployment: unknown option 'speed' .*relu_protocol"):
        SecureOptions.from_dict({"speed": 1}, "the deployment")
    with pytest.raises(ValueError, match="relu_protocol 'bogus': use one of gmw, fss, auto"):
        SecureOptions(relu_protocol="bogus")
    with pytest.raises(ValueError, match="adder 'ripple': use one of carry-tree, kogge-stone, fss"):
        SecureOptions.from_dict({"adder": "ripple"})
    with pytest.raises(ValueError, match="wan-fast"):
        SecureOptions(auto_link="wan-fast")


def test_a_deployment_model_section_takes_every_option_and_refuses_a_bad_one(tmp_path):
    from ringlet import deploy
    raw = {"version": 1, "name": "d", "tls": {"enabled": False},
           "parties": {"server-0": {"address": "127.0.0.1:7000"},
                       "server-1": {"address": "127.0.0.1:7001"}, "dealer": {}},
           "model": {"source": "resnet20-fmnist", "relu_protocol": "fss", "linear_backend": "int64",
                     "adder": "kogge-stone", "poly_method": "horner"}}
    d = deploy.from_dict(raw, tmp_path / "d.toml")
    options = SecureOptions.from_dict({k: v for k, v in d.model.items() if k in SecureOptions.keys()})
    assert (options.relu_protocol, options.backend, options.adder, options.poly_method) == (
        "fss", "int64", "kogge-stone", "horner")
    raw["model"]["select"] = "crypten"
    with pytest.raises(deploy.DeploymentError, match=r"d.toml: \[model\] select 'crypten'"):
        deploy.from_dict(raw, tmp_path / "d.toml")
