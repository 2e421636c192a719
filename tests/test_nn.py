"""Compiler and private inference: every supported layer against plaintext, errors, privacy."""

import functools
import json

import pytest
import torch
import torch.nn.functional as F
from conftest import run
from torch import nn

from ringlet.compiler.calibrate import calibrate_batchnorm
from ringlet.compiler.capture import CompileError, compile_model
from ringlet.compiler.config import ConfigError, ReluConfig
from ringlet.compiler.model import CompiledModel, SecureOptions
from ringlet.models import build_model
from ringlet.runtime.programs import client_program, server_program


class EveryLayer(nn.Module):
    """One of each supported layer kind."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)              # folded into conv
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.bn_alone = nn.BatchNorm2d(4)        # after an add: a public affine map
        self.pool = nn.AvgPool2d(2)
        self.mpool = nn.MaxPool2d(2)
        self.apool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(0.3)
        self.ident = nn.Identity()
        self.flat = nn.Flatten()
        self.fc = nn.Linear(4 + 4 * 2 * 2, 6)
        self.bn1d = nn.BatchNorm1d(6)
        self.fc2 = nn.Linear(6, 3)

    def forward(self, x):
        y = self.relu(self.bn(self.conv(x)))
        z = self.conv2(y) + y * 0.5               # residual add and a scale
        z = F.relu(self.bn_alone(z))
        a = self.pool(z)                          # 8 -> 4
        m = self.mpool(a).view(a.size(0), -1)     # 4 -> 2, view with size()
        g = torch.flatten(self.apool(a), 1)
        h = torch.cat([self.drop(g), self.ident(m)], dim=1)
        h = self.bn1d(self.fc(h)).relu()
        return self.fc2(torch.relu(h) + 1.0)


def _setup(model, x, **opts):
    calibrate_batchnorm(model, x)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):  # make folded parameters non-trivial
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    graph = compile_model(model, x.shape[1:])
    return CompiledModel(graph, options=SecureOptions(**opts)), model(x).double()


def _infer(compiled, x, parties=2, transport="local", pregenerate=True):
    server = functools.partial(server_program, model=compiled, pregenerate=pregenerate)
    client = functools.partial(client_program, images=x, batch=3, progress=False)
    res = run(server, parties, client=client, transport=transport)
    return res, res.client_result["logits"]


def test_every_supported_layer_matches_plaintext(parties):
    torch.manual_seed(0)  # test data only
    x = torch.randn(5, 2, 8, 8)
    compiled, ref = _setup(EveryLayer(), x)
    assert torch.allclose(compiled.run_plain(x), ref, atol=1e-9)  # folding and graph are exact
    kinds = {n.kind for n in compiled.graph.nodes}
    assert {"conv", "affine", "relu", "add", "avgpool", "maxpool", "mean", "cat",
            "reshape", "linear"} <= kinds
    assert sum(n.kind == "conv" and "folded" in n.params for n in compiled.graph.nodes) == 1
    _, logits = _infer(compiled, x, parties)
    assert torch.allclose(logits, ref, atol=2e-3)
    assert torch.equal(logits.argmax(1), ref.argmax(1))


def test_private_weights_residual_network():
    torch.manual_seed(1)  # test data only
    x = torch.randn(4, 1, 12, 12)
    compiled, ref = _setup(build_model("resnet20", (1, 12, 12)), x, private_weights=True)
    res, logits = _infer(compiled, x)
    assert torch.allclose(logits, ref, atol=2e-3) and torch.equal(logits.argmax(1), ref.argmax(1))
    # secret weights cost Beaver openings; public weights cost none
    public, _ = _setup(build_model("resnet20", (1, 12, 12)), x)
    res_pub, _ = _infer(public, x)
    bytes_of = lambda r: max(s.result["online"].bytes_sent(tags=("mult",)) for s in r.servers)  # noqa
    assert bytes_of(res) > 0 and bytes_of(res_pub) == 0


def test_relu_counts_and_exact_costs_per_layer():
    torch.manual_seed(2)  # test data only
    x = torch.randn(2, 1, 8, 8)
    model = build_model("fmnist-net", (1, 8, 8))
    compiled, _ = _setup(model, x)
    counts = compiled.graph.relu_elements()
    assert counts == {"features.1": 32 * 64, "features.4": 64 * 16, "relu": 128}
    res, _ = _infer(compiled, x)
    for row in res.servers[0].result["per_layer"]:
        if row["kind"] == "relu":  # 308 bits per element and 8 rounds per batch, exactly
            n = counts[row["label"]]
            assert row["bytes_sent"] * 8 == 308 * n * 2, row  # 2 images in one batch
            assert row["rounds"] == 8 and row["drelus"] == 2 * n
            assert sum(row["by_tag"].values()) == row["bytes_sent"]


@pytest.mark.parametrize("protocol", ["gmw", "fss"])
def test_servers_never_see_the_input_or_the_output(protocol):
    """Nothing a server receives (shares, masked openings x + r of the FSS ReLUs, dealer material)
    agrees with the input or the output."""
    torch.manual_seed(3)  # test data only
    x = torch.randn(3, 1, 16, 16) * 2
    compiled, ref = _setup(build_model("svhn-net", (1, 16, 16)), x, relu_protocol=protocol)
    received = {0: [], 1: []}

    def spy(sess, **kw):
        orig = sess.comm.recv

        def recv(src, step=""):
            out = orig(src, step)
            received[sess.rank].extend(t for t in out if t.dtype == torch.int64)
            return out
        sess.comm.recv = recv
        return server_program(sess, **kw)

    server = functools.partial(spy, model=compiled)
    client = functools.partial(client_program, images=x, batch=3, progress=False)
    res = run(server, 2, client=client)
    logits = res.client_result["logits"]
    assert torch.allclose(logits, ref, atol=2e-3)
    secret_in = compiled.fixed.encode(x).reshape(-1)
    secret_out = torch.round(ref * 2 ** compiled.output_frac).to(torch.int64).reshape(-1)
    for _rank, tensors in received.items():
        assert tensors, "the spy saw nothing"
        for t in tensors:
            flat = t.reshape(-1)
            for secret in (secret_in, secret_out):
                if flat.numel() >= secret.numel():
                    window = flat[:secret.numel()]
                    # a share or masked value agrees with the secret on (almost) no element
                    assert (window == secret).double().mean() < 0.05
                    assert ((window - secret).abs() < 2 ** 20).double().mean() < 0.05


def test_config_validation_names_the_entry():
    names = ["a.relu", "b.relu"]
    cfg = ReluConfig.from_dict({"version": 1, "default": {"k": 20, "m": 0},
                                "groups": {"g": ["b.relu"]}, "layers": {"g": "identity", "a.relu": "exact"}})
    assert cfg.resolve(names) == {"a.relu": (64, 0), "b.relu": (0, 0)}
    bad = [({"version": 3}, "unknown version 3"),
           ({"version": 1, "layers": {"c.relu": "exact"}}, "layers names 'c.relu'"),
           ({"version": 1, "layers": {"a.relu": {"k": 3, "m": 5}}}, r"layers\['a.relu'\]: k = 3 < m = 5"),
           ({"version": 1, "default": {"k": 65, "m": 0}}, "default: k = 65 > 64"),
           ({"version": 1, "groups": {"g": ["nope"]}}, "group 'g' names 'nope'"),
           ({"default": "exact"}, "missing \"version\""),
           ({"version": 1, "default": "fast"}, "default: a setting is")]
    for data, msg in bad:
        with pytest.raises(ConfigError, match=msg):
            ReluConfig.from_dict(data, "cfg.json").resolve(names, "cfg.json")


class Unsupported(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)

    def forward(self, x):
        return torch.exp(self.conv(x))


def test_unsupported_node_error_names_node_op_and_line():
    with pytest.raises(CompileError) as err:
        compile_model(Unsupported(), (1, 6, 6))
    msg = str(err.value)
    assert "node 'exp'" in msg and "call_function" in msg and "test_nn.py" in msg
    assert "no cheap secure form" in msg


def test_reduced_bits_config_runs_and_counts(tmp_path):
    torch.manual_seed(4)  # test data only
    x = torch.randn(2, 1, 8, 8)
    model = build_model("fmnist-net", (1, 8, 8))
    calibrate_batchnorm(model, x)
    graph = compile_model(model, (1, 8, 8))
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"version": 1, "default": {"k": 24, "m": 4}, "layers": {"relu": "identity"}}))
    bits = ReluConfig.load(path).resolve(graph.relu_names)
    compiled = CompiledModel(graph, bits)
    res, logits = _infer(compiled, x)
    rows = {r["label"]: r for r in res.servers[0].result["per_layer"] if r["kind"] == "relu"}
    assert rows["relu"]["bytes_sent"] == 0 and rows["relu"]["rounds"] == 0  # identity
    w = 20  # 4w - 7 - L + 65 with L = ceil(log2(19)) = 5
    assert rows["features.1"]["bytes_sent"] * 8 == (4 * w - 7 - 5 + 65) * 32 * 64 * 2


@pytest.mark.slow
def test_inference_over_tcp_processes():
    torch.manual_seed(5)  # test data only
    x = torch.randn(3, 1, 16, 16)
    compiled, ref = _setup(build_model("svhn-net", (1, 16, 16)), x)
    res, logits = _infer(compiled, x, transport="tcp")
    assert torch.allclose(logits, ref, atol=2e-3)


def test_infer_command_streams_results_by_default(tmp_path, monkeypatch, capsys):
    from ringlet.cli.main import main
    monkeypatch.chdir(tmp_path)
    assert main(["infer", "--model", "fmnist-net", "--dataset", "synthetic-cifar", "--samples", "3",
                 "--batch", "2", "--no-progress", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    for key in ("accuracy", "plaintext_accuracy", "argmax_agreement", "max_abs_logit_error",
                "bytes_sent_per_party", "rounds", "offline_bytes", "seconds_online", "seconds_offline",
                "images_per_second", "per_layer", "by_tag"):
        assert key in report, key
    assert report["argmax_agreement"] == 1.0
    streamed = (tmp_path / report["results_path"]).read_text().splitlines()
    assert len(streamed) == 2  # one line per finished batch (2 + 1 images)
    assert main(["infer", "--model", "fmnist-net", "--dataset", "synthetic-cifar", "--samples", "1",
                 "--no-progress", "--no-results", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["results_path"] is None
