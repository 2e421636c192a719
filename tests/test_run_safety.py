"""Runs that cannot go silently wrong: inputs out of range, parties that disagree, input privacy,
and the small failures of the command line, each with its message asserted."""

import functools
import json

import numpy as np
import pytest
import torch
from conftest import run
from torch import nn

import ringlet
from ringlet.runtime.launch import PartyError
from ringlet.runtime.programs import client_program, server_program


class Small(nn.Module):
    def __init__(self, width=4):
        super().__init__()
        self.conv = nn.Conv2d(1, width, 3, padding=1)
        self.bn = nn.BatchNorm2d(width)
        self.fc = nn.Linear(width, 3)

    def forward(self, x):
        x = torch.relu(self.bn(self.conv(x)))
        return self.fc(x.mean((2, 3)))


def _pm(seed=0, width=4, **kw):
    x = torch.randn(8, 1, 6, 6, generator=torch.Generator().manual_seed(100))  # test data only
    torch.manual_seed(seed)  # test weights only
    return ringlet.compile(Small(width).eval(), x, input_bound=8.0, **kw), x


def test_an_input_outside_the_range_is_refused_naming_the_element():
    pm, x = _pm()
    assert pm.input_range.method == "user" and pm.input_range.bound == 8.0
    calibrated = ringlet.compile(pm.module, x)
    assert calibrated.input_range.method == "calibration"
    assert calibrated.input_range.bound == pytest.approx(2 * float(x.abs().max()))
    bad = x[:2].clone()
    bad[1, 0, 2, 3] = 1e10
    with pytest.raises(ringlet.InputRangeError, match=r"element \(1, 0, 2, 3\) = 1e\+10 is outside .*±"):
        pm.infer(bad)
    with pytest.raises(ringlet.InputRangeError, match=r"element \(0, 0, 0, 0\) = nan"):
        pm.infer(torch.full((1, 1, 6, 6), float("nan")))


def test_the_client_checks_the_servers_range_before_any_share_leaves_it():
    pm, x = _pm()
    bad = x[:2] * 1e6
    server = functools.partial(server_program, model=pm.compiled())
    client = functools.partial(client_program, images=bad, batch=2, progress=False)
    with pytest.raises(PartyError, match="client 3: InputRangeError: input element .* outside the model's"):
        run(server, 2, client=client)


def test_the_servers_learn_nothing_of_an_input_the_client_refuses():
    pm, x = _pm()
    bad = x[:2].clone()
    bad[0, 0, 3, 4] = 3.14159e7
    sent = []

    def spying_client(sess, **kw):
        orig = sess.comm.send

        def send(dst, items, step=""):
            sent.extend(bytes(t.tolist()) for _, t in items if t.dtype == torch.uint8)
            return orig(dst, items, step)
        sess.comm.send = send
        return client_program(sess, **kw)

    server = functools.partial(server_program, model=pm.compiled())
    client = functools.partial(spying_client, images=bad, batch=2, progress=False)
    with pytest.raises(PartyError, match="3.14159e"):  # the client itself knows which element
        run(server, 2, client=client)
    told = b" ".join(sent)
    assert b"outside the model's range" in told
    assert b"3.14" not in told and b"(0, 0, 3, 4)" not in told


def test_a_saved_model_refuses_options_it_was_not_compiled_with(tmp_path):
    from ringlet.jobs.infer import run_inference
    pm, x = _pm()
    folder = pm.save(tmp_path / "saved")
    np.save(tmp_path / "x.npy", x[:2].numpy())
    with pytest.raises(ValueError, match="compiled with --frac-bits 16; --frac-bits 12 needs"):
        run_inference(str(folder), input_path=str(tmp_path / "x.npy"), frac_bits=12, progress=False)
    with pytest.raises(ValueError, match="compiled with --input-bound 8.0; --input-bound 1.0"):
        run_inference(str(folder), input_path=str(tmp_path / "x.npy"), input_bound=1.0, progress=False)


def _mixed_servers(models, x):
    def server(sess):
        return server_program(sess, models[sess.rank])
    client = functools.partial(client_program, images=x, batch=2, progress=False)
    return run(server, len(models), client=client)


def test_servers_with_other_weights_refuse_to_run_naming_what_differs():
    (a, x), (b, _) = _pm(0), _pm(1)
    with pytest.raises(PartyError, match=r"server 0: server 1 runs a different model — weights differ"):
        _mixed_servers([a.compiled(), b.compiled()], x[:2])
    wide, _ = _pm(0, width=6)
    with pytest.raises(PartyError, match=r"graph, weights differ"):
        _mixed_servers([a.compiled(), wide.compiled()], x[:2])
    config = {"version": 1, "default": {"k": 20, "m": 0}}
    with pytest.raises(PartyError, match=r"activations differ"):
        _mixed_servers([a.compiled(), a.compiled(config)], x[:2])
    res = _mixed_servers([a.compiled(), a.compiled()], x[:2])  # the same model runs
    assert torch.allclose(res.client_result["logits"], a.plain(x[:2]), atol=2e-3)


def test_parties_with_another_fixed_point_refuse_to_run():
    pm, x = _pm()
    compiled = pm.compiled()
    server = functools.partial(server_program, model=compiled)
    client = functools.partial(client_program, images=x[:2], batch=2, progress=False)
    with pytest.raises(PartyError, match="server 0: .*the session encodes with 12 fractional bits in "
                                         "a 64-bit ring, the model was compiled for 16"):
        run(server, 2, client=client, frac_bits=12)


def _infer_json(capsys, *argv):
    from ringlet.cli.main import main
    assert main(["infer", *argv, "--no-progress", "--no-results", "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_a_zoo_models_public_weights_do_not_depend_on_the_clients_input(tmp_path, capsys):
    rng = np.random.default_rng(0)  # test data only
    reports = []
    for i in range(2):
        path = tmp_path / f"x{i}.npy"
        np.save(path, rng.normal(size=(2, 1, 12, 12)).astype(np.float32) * (i + 1))
        reports.append(_infer_json(capsys, "--model", "resnet20", "--input", str(path),
                                   "--input-bound", "10"))
    assert reports[0]["fingerprint"] == reports[1]["fingerprint"]  # graph and weights alike
    assert reports[0]["batchnorm_calibrated_on"] == "generated N(0, 1) inputs"
    on_data = _infer_json(capsys, "--model", "resnet20", "--dataset", "fashion-mnist", "--samples", "2")
    assert on_data["batchnorm_calibrated_on"] == "fashion-mnist training split (256 images)"


def _fails(capsys, argv, message):
    from ringlet.cli.main import main
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert message in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


def test_command_line_mistakes_fail_at_once_with_one_clear_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    x = tmp_path / "x.npy"
    np.save(x, np.zeros((3, 1, 28, 28), dtype=np.float32))
    _fails(capsys, ["search", "--model", "fmnist-net-fmnist", "--mode", "eco", "--out",
                    str(tmp_path / "missing" / "c.json"), "--no-progress"], "does not exist")
    _fails(capsys, ["infer", "--model", "fmnist-net-fmnist", "--relu-config", str(tmp_path),
                    "--samples", "1", "--no-progress"], "is a directory")
    _fails(capsys, ["infer", "--model", "fmnist-net-fmnist", "--input", str(x), "--samples", "-1",
                    "--no-progress"], "--samples must be at least 1, got -1")
    _fails(capsys, ["infer", "--model", "fmnist-net-fmnist", "--samples", "1", "--timeout", "0",
                    "--no-progress"], "--timeout must be positive")
    _fails(capsys, ["infer", "--model", "no-such-model", "--samples", "1"], "not a saved model folder")
    assert not (tmp_path / "runs").exists()  # nothing was created for a run that could not start
    big = tmp_path / "big.npy"
    data = np.zeros((2, 1, 28, 28), dtype=np.float32)
    data[1, 0, 5, 6] = 1e12
    np.save(big, data)
    _fails(capsys, ["infer", "--model", "fmnist-net-fmnist", "--input", str(big), "--no-progress",
                    "--no-results"], "element (1, 0, 5, 6) = 1e+12 is outside the model's input range")
    _fails(capsys, ["infer", "--model", "fmnist-net-fmnist", "--input", str(big), "--no-progress",
                    "--no-results"], "--input-bound B")  # the way out is named


def test_a_white_pixel_is_inside_the_bound_its_normalisation_gives():
    """The bound is computed in float64, pixels are normalised in float32: a white pixel lands a
    few ulps beyond it and is accepted; 1e-5 beyond is refused, naming --input-bound."""
    from ringlet.compiler.ranges import InputRangeError
    mean, std = 0.1307, 0.3081
    pm = ringlet.compile(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), (1, 2, 2),
                         normalization=((mean,), (std,)))
    white = (torch.ones(1, 1, 2, 2, dtype=torch.float32) - torch.tensor(mean, dtype=torch.float32)) / \
        torch.tensor(std, dtype=torch.float32)
    assert float(white[0, 0, 0, 0]) > pm.input_range.bound  # the float32 rounding this is about
    pm.check_input(white)
    with pytest.raises(InputRangeError, match="--input-bound B"):
        pm.check_input(white * (1 + 1e-5))


def test_infer_takes_one_sample_without_a_batch_axis_as_the_cli_does():
    pm, x = _pm()
    one = pm.infer(x[0])
    both = pm.infer(x[:1])
    assert one.logits.shape == both.logits.shape[1:]  # the same answer (the shares differ: to 1e-3)
    assert torch.allclose(one.logits, both.logits[0], atol=1e-3)


def test_relu_config_help_states_the_version_search_writes(capsys):
    from ringlet.cli.main import main
    from ringlet.compiler.config import VERSION
    with pytest.raises(SystemExit):
        main(["infer", "--help"])
    assert f"version {VERSION}" in " ".join(capsys.readouterr().out.split())


def test_parties_in_another_ring_refuse_to_run():
    pm, x = _pm()
    server = functools.partial(server_program, model=pm.compiled())
    client = functools.partial(client_program, images=x[:2], batch=2, progress=False)
    with pytest.raises(PartyError, match="server 0: .*16 fractional bits in a 40-bit ring, the "
                                         "model was compiled for 16 in a 64-bit ring"):
        run(server, 2, client=client, ring_bits=40)


def test_the_command_line_runs_a_narrow_ring_and_refuses_one_too_small(capsys):
    from ringlet.cli.main import main
    out = _infer_json(capsys, "--model", "resnet20-fmnist", "--dataset", "fashion-mnist", "--samples",
                      "2", "--ring-bits", "44", "--linear-backend", "limbs")
    assert (out["ring_bits"], out["linear_backend"]) == (44, "limbs")
    assert out["fingerprint"]["fixed_point"] == "f=16,l=44" and out["argmax_agreement"] == 1.0
    assert main(["infer", "--model", "resnet20-fmnist", "--dataset", "fashion-mnist", "--samples", "2",
                 "--ring-bits", "32", "--no-progress", "--no-results"]) != 0
    assert "32-bit ring" in capsys.readouterr().err
