"""ONNX files as a model source: one exported from torch, one written with onnx.helper; the
private run equals plaintext, from the API and from the CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

import ringlet
from ringlet.compiler.capture import CompileError

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402


class Small(nn.Module):
    def __init__(self):
        super().__init__()
        self.f = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
                               nn.Conv2d(4, 8, 3), nn.ReLU6())
        self.fc = nn.Linear(8 * 4 * 4, 10)

    def forward(self, x):
        x = self.f(x)
        return self.fc(x.view(x.size(0), -1))


def _small() -> nn.Module:
    torch.manual_seed(0)  # test weights, not a secret
    m = Small().eval()
    m.f[1].running_mean.uniform_(-0.5, 0.5)
    m.f[1].running_var.uniform_(0.5, 2)
    return m


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A file torch's exporter wrote (batch 1 fixed in the file), and its torch model."""
    m = _small()
    path = tmp_path_factory.mktemp("onnx") / "small.onnx"
    torch.onnx.export(m, (torch.randn(1, 1, 12, 12),), str(path), dynamo=False, input_names=["x"],
                      output_names=["logits"])
    return path, m


def test_a_torch_exported_file_runs_privately_as_plaintext(exported):
    path, m = exported
    x = torch.randn(4, 1, 12, 12)
    pm = ringlet.compile(str(path), x)
    ref = m(x).detach()
    assert torch.allclose(pm.plain(x).float(), ref, atol=1e-5)
    out = pm.infer(x).logits
    assert torch.equal(out.argmax(1), ref.argmax(1))
    assert float((out - ref).abs().max()) < 1e-3


def _helper_graph(path) -> tuple[nn.Module, str]:
    """Conv, BatchNormalization, Relu, MaxPool, Add, GlobalAveragePool, Flatten, Gemm written with
    onnx.helper, and the torch module that computes the same."""
    torch.manual_seed(1)
    conv, bn, fc = nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.Linear(6, 4)
    bn.running_mean.uniform_(-0.2, 0.2)
    bn.running_var.uniform_(0.5, 1.5)
    bn.weight.data.uniform_(0.5, 1.5)
    bn.eval()

    class Ref(nn.Module):
        def forward(self, x):
            y = torch.relu(bn(conv(x)))
            y = nn.functional.max_pool2d(y, 2) + 0.25
            return fc(torch.flatten(nn.functional.adaptive_avg_pool2d(y, 1), 1))

    def init(name, t):
        return numpy_helper.from_array(t.detach().numpy().astype(np.float32), name)
    inits = [init("W", conv.weight), init("B", conv.bias), init("s", bn.weight), init("b", bn.bias),
             init("m", bn.running_mean), init("v", bn.running_var), init("Wfc", fc.weight),
             init("Bfc", fc.bias), numpy_helper.from_array(np.array(0.25, dtype=np.float32), "q")]
    nodes = [
        helper.make_node("Conv", ["x", "W", "B"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c", "s", "b", "m", "v"], ["n"], epsilon=1e-5),
        helper.make_node("Relu", ["n"], ["r"]),
        helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Add", ["p", "q"], ["a"]),
        helper.make_node("GlobalAveragePool", ["a"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "Wfc", "Bfc"], ["y"], transB=1),
    ]
    graph = helper.make_graph(nodes, "helper", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                              ["N", 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return Ref().eval(), str(path)


def test_a_helper_written_graph_runs_privately_as_its_torch_twin(tmp_path):
    ref_model, path = _helper_graph(tmp_path / "helper.onnx")
    x = torch.randn(3, 3, 8, 8)
    pm = ringlet.compile(path, x)
    with torch.no_grad():
        ref = ref_model(x)
    assert torch.allclose(pm.plain(x).float(), ref, atol=1e-5)
    out = pm.infer(x).logits
    assert float((out - ref).abs().max()) < 1e-3 and torch.equal(out.argmax(1), ref.argmax(1))


def test_an_operator_ringlet_cannot_run_is_named(tmp_path):
    graph = helper.make_graph([helper.make_node("Erf", ["x"], ["y"], name="the_erf")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])])
    path = tmp_path / "erf.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    with pytest.raises(CompileError, match="node 'the_erf' is an ONNX Erf, which ringlet cannot run"):
        ringlet.compile(str(path), (4,))
    (tmp_path / "junk.onnx").write_bytes(b"\x00not a protobuf")
    with pytest.raises(CompileError, match="not a readable ONNX file"):
        ringlet.compile(str(tmp_path / "junk.onnx"), (4,))


def test_the_cli_runs_an_onnx_file_with_plaintext_argmax(exported, tmp_path):
    path, m = exported
    x = torch.randn(6, 1, 12, 12)
    np.save(tmp_path / "x.npy", x.numpy())
    out = subprocess.run([sys.executable, "-m", "ringlet.cli.main", "infer", "--model", str(path), "--input",
                          str(tmp_path / "x.npy"), "--input-bound", "6", "--json"],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["samples"] == 6 and report["argmax_agreement"] == 1.0, report
    assert report["max_abs_logit_error"] < 1e-3 and report["model"] == str(path)
    rows = [json.loads(line) for line in (tmp_path / report["results_path"]).read_text().splitlines()]
    predicted = [p for row in rows for p in row["predictions"]]
    assert predicted == m(x).argmax(1).tolist()  # the torch model the file was exported from
