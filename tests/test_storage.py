"""Saving and loading compiled graphs (JSON + safetensors), their fingerprints, and refused files."""

import copy
import json
import os
import pickle
import re
import struct
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ringlet.compiler.capture import compile_model
from ringlet.compiler.interpret import PlainInterpreter
from ringlet.compiler.storage import StorageError, fingerprint, load_graph, save_graph
from ringlet.grelu.layers import GroupReLU, patch_groups
from ringlet.poly.layers import PolyAct


def _randomise_bn(model: nn.Module) -> nn.Module:
    """Give every BatchNorm non-trivial statistics, so that folding changes the weights."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return model


class ResidualNet(nn.Module):
    """conv+BN, a residual add, max-pooling with ceil_mode, a final softmax."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(8)
        self.pool = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.fc = nn.Linear(8 * 4 * 4, 5)

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(y + self.bn2(self.conv2(y)))
        y = self.pool(y).flatten(1)
        return torch.softmax(self.fc(y), dim=1)


class PermuteNet(nn.Module):
    """A strided conv, a permute and slice (a gather), a sigmoid (a smooth node), an affine map,
    average pooling with ceil_mode (a spatial map), a final log-softmax."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, stride=2, padding=1)
        self.act = nn.Sigmoid()
        self.fc = nn.Linear(4 * 2 * 3, 3)

    def forward(self, x):
        y = self.conv(x).permute(0, 1, 3, 2)[:, :, 1:, :]
        y = self.act(y) * 0.5 + 0.1
        y = F.avg_pool2d(y, 2, ceil_mode=True).flatten(1)
        return F.log_softmax(self.fc(y), dim=1)


class GroupNet(nn.Module):
    """A conv, a noisy learned gReLU (int64 groups, float32 flips), a polynomial activation."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        groups = patch_groups(6, 6, 2, 2).unsqueeze(0).expand(2, 6, 6).clone()
        self.grelu = GroupReLU(groups, "fc", noise=0.2, noise_at_inference=True, seed=3)
        self.poly = PolyAct([0.1, 0.5, 0.2])
        self.fc = nn.Linear(2 * 6 * 6, 4)

    def forward(self, x):
        return self.fc(self.poly(self.grelu(self.conv(x))).flatten(1))


# model, per-sample input shape, node kinds its graph must hold
CASES = {
    "residual": (ResidualNet, (3, 9, 9), {"conv", "add", "relu", "maxpool", "linear"}),
    "permute": (PermuteNet, (2, 9, 7), {"conv", "gather", "smooth", "affine", "spatialmap"}),
    "grelu": (GroupNet, (1, 6, 6), {"conv", "grelu", "poly", "linear"}),
}


def _compiled(case: str, seed: int = 0):
    cls, shape, kinds = CASES[case]
    torch.manual_seed(seed)
    graph = compile_model(_randomise_bn(cls()), shape)
    assert kinds <= {n.kind for n in graph.nodes}
    return graph, shape


def _assert_same(a, b, where="value"):
    """Equal values of equal types; tensors bit-equal with equal dtypes; floats bit-equal."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert type(b) is dict and list(a) == list(b), where
        for k in a:
            _assert_same(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, (list, tuple)):
        assert type(b) is (tuple if isinstance(a, tuple) else list) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}/{i}")
    elif isinstance(a, float):
        assert type(b) is float and struct.pack("<d", a) == struct.pack("<d", b), where
    else:
        assert type(a) is type(b) and a == b, where


def _assert_same_graph(g, h):
    assert tuple(g.input_shape) == h.input_shape and g.postprocess == h.postprocess
    assert [n.name for n in g.nodes] == [n.name for n in h.nodes]
    for n, m in zip(g.nodes, h.nodes):
        assert (n.kind, n.inputs, n.label) == (m.kind, m.inputs, m.label)
        assert tuple(n.out_shape) == m.out_shape and type(m.out_shape) is tuple
        _assert_same(n.params, m.params, n.name)


@pytest.mark.parametrize("case", list(CASES))
def test_round_trip_runs_the_same(case, tmp_path):
    graph, shape = _compiled(case)
    x = torch.randn(3, *shape, generator=torch.Generator().manual_seed(1))
    before = PlainInterpreter(graph).run(x)
    save_graph(graph, tmp_path / "new" / "folder", stem="model")
    loaded = load_graph(tmp_path / "new" / "folder", stem="model")
    assert torch.equal(PlainInterpreter(loaded).run(x), before)
    assert torch.equal(loaded.finish(before), graph.finish(before))
    _assert_same_graph(graph, loaded)
    assert fingerprint(loaded) == fingerprint(graph)


def test_tuples_stay_tuples_and_tensors_keep_dtypes(tmp_path):
    graph, _ = _compiled("grelu")
    save_graph(graph, tmp_path)
    nodes = {n.kind: n for n in load_graph(tmp_path).nodes}
    assert type(nodes["conv"].params["stride"]) is tuple
    assert nodes["grelu"].params["groups"].dtype == torch.int64
    assert nodes["grelu"].params["flips"].dtype == torch.float32
    assert nodes["conv"].params["weight"].dtype == torch.float64
    doc = json.loads((tmp_path / "graph.json").read_text())
    conv = next(n for n in doc["nodes"] if n["kind"] == "conv")
    assert conv["params"]["weight"] == {"tensor": f"{conv['name']}/weight"}
    assert conv["params"]["stride"] == {"tuple": [1, 1]}


def test_json_floats_round_trip_float64_exactly():
    tricky = [0.1, 0.1 + 0.2, -0.0, 5e-324, 2.2250738585072014e-308, 1.7976931348623157e308,
              1 / 3, 2.0 ** 53 + 2, float.fromhex("0x1.fffffffffffffp-1")]
    values = tricky + torch.randn(2000, dtype=torch.float64).mul(1e3).tolist()
    back = json.loads(json.dumps(values))
    assert [struct.pack("<d", v) for v in back] == [struct.pack("<d", v) for v in values]


def test_odd_params_round_trip(tmp_path):
    """Dicts that look like tags, nested tensors, tensors sharing memory, bool/uint8/0-d tensors."""
    graph, _ = _compiled("permute")
    w = torch.arange(6, dtype=torch.float64)
    graph.nodes[1].params.update(
        like_a_tag={"tuple": [1, 2]}, like_a_tensor={"tensor": "conv/weight"},
        nested={"a": [torch.tensor([True, False]), (torch.arange(3, dtype=torch.uint8), None)],
                "b": {"dict": {"x": 1.5}}},
        view_a=w[:3], view_b=w.view(2, 3), scalar=torch.tensor(-1.0, dtype=torch.float64),
        empty=torch.zeros(0, 2), flags=(True, False), text="é", big=2 ** 62, list_of_tuples=[(1,), ()])
    save_graph(graph, tmp_path)
    _assert_same_graph(graph, load_graph(tmp_path))


def test_non_finite_floats_are_refused(tmp_path):
    graph, _ = _compiled("permute")
    smooth = next(n for n in graph.nodes if n.kind == "smooth")
    smooth.params["spec"]["lo"] = float("nan")
    with pytest.raises(StorageError, match=re.escape(f"'{smooth.name}/spec/lo' = nan") + ".*non-finite"):
        save_graph(graph, tmp_path)
    smooth.params["spec"]["lo"] = float("-inf")
    with pytest.raises(StorageError, match="non-finite"):
        fingerprint(graph)


def test_fingerprint_tracks_weights_strides_and_labels():
    graph, _ = _compiled("residual")
    base = fingerprint(graph)
    assert set(base) == {"graph", "weights"} and all(re.fullmatch("[0-9a-f]{64}", v) for v in base.values())
    conv = next(i for i, n in enumerate(graph.nodes) if n.kind == "conv")

    ulp = copy.deepcopy(graph)
    w = ulp.nodes[conv].params["weight"].view(-1)
    w[5] = torch.nextafter(w[5], torch.tensor(float("inf"), dtype=w.dtype))
    fp = fingerprint(ulp)
    assert fp["weights"] != base["weights"] and fp["graph"] == base["graph"]

    for key, value in (("stride", (2, 1)), ("padding", (0, 0)), ("stride", [1, 1])):
        changed = copy.deepcopy(graph)
        changed.nodes[conv].params[key] = value
        fp = fingerprint(changed)
        assert fp["graph"] != base["graph"] and fp["weights"] == base["weights"], (key, value)

    relabelled = copy.deepcopy(graph)
    relabelled.nodes[conv].label += "'"
    assert fingerprint(relabelled)["graph"] != base["graph"]

    reordered = copy.deepcopy(graph)
    for node in reordered.nodes:
        node.params = dict(reversed(node.params.items()))
    assert fingerprint(reordered) == base


def test_fingerprint_ignores_dict_order_of_a_nested_spec():
    graph, _ = _compiled("permute")
    base = fingerprint(graph)
    smooth = next(n for n in graph.nodes if n.kind == "smooth")
    smooth.params["spec"] = dict(reversed(smooth.params["spec"].items()))
    assert fingerprint(graph) == base
    smooth.params["spec"]["degree"] += 1
    assert fingerprint(graph)["graph"] != base["graph"]


def test_fingerprint_is_the_same_in_another_process(tmp_path):
    graph, _ = _compiled("permute")
    save_graph(graph, tmp_path)
    code = ("import json, sys; from ringlet.compiler.storage import fingerprint, load_graph; "
            "print(json.dumps(fingerprint(load_graph(sys.argv[1]))))")
    env = dict(os.environ, PYTHONHASHSEED="12345")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], env=env, capture_output=True,
                         text=True, check=True, timeout=60)
    assert json.loads(out.stdout) == fingerprint(graph)


def test_loading_never_unpickles(tmp_path, monkeypatch):
    graph, _ = _compiled("grelu")
    save_graph(graph, tmp_path)

    def boom(*args, **kwargs):
        raise AssertionError("pickle or torch.load used")
    for obj, name in ((torch, "load"), (pickle, "load"), (pickle, "loads"), (pickle, "Unpickler")):
        monkeypatch.setattr(obj, name, boom)
    _assert_same_graph(graph, load_graph(tmp_path))


# -- refused files ---------------------------------------------------------------------------------
@pytest.fixture
def saved(tmp_path):
    graph, _ = _compiled("permute")
    save_graph(graph, tmp_path)
    return tmp_path


def _edit(folder, change) -> None:
    path = folder / "graph.json"
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))


def _tensor_refs(doc):
    return [(n, k) for n in doc["nodes"] for k, v in n["params"].items()
            if isinstance(v, dict) and set(v) == {"tensor"}]


def test_a_corrupted_tensors_file_is_refused(saved):
    path = saved / "graph.safetensors"
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(StorageError, match=re.escape(str(path)) + ": sha256 .*corrupted"):
        load_graph(saved)


def test_a_swapped_tensors_file_is_refused(saved, tmp_path_factory):
    other = tmp_path_factory.mktemp("other")
    save_graph(_compiled("permute", seed=7)[0], other)
    (saved / "graph.safetensors").write_bytes((other / "graph.safetensors").read_bytes())
    with pytest.raises(StorageError, match="graph.safetensors: sha256 .*not the one saved"):
        load_graph(saved)


def test_another_format_is_refused(saved):
    (saved / "graph.json").write_text(json.dumps({"format": "onnx", "version": 1}))
    with pytest.raises(StorageError, match=r"graph.json: not a saved ringlet graph \(format 'onnx'"):
        load_graph(saved)
    (saved / "graph.json").write_text("[1, 2]")
    with pytest.raises(StorageError, match="not a saved ringlet graph"):
        load_graph(saved)
    (saved / "graph.json").write_text("{not json")
    with pytest.raises(StorageError, match="graph.json: not valid JSON"):
        load_graph(saved)


def test_a_wrong_version_is_refused(saved):
    _edit(saved, lambda d: d.update(version=2))
    with pytest.raises(StorageError, match="graph.json: ringlet-graph version 2; this ringlet reads "
                                           "version 1"):
        load_graph(saved)


def test_an_unknown_kind_is_refused(saved):
    def change(doc):
        doc["nodes"][2]["kind"] = "teleport"
    _edit(saved, change)
    name = json.loads((saved / "graph.json").read_text())["nodes"][2]["name"]
    with pytest.raises(StorageError, match=f"node '{name}' has unknown kind 'teleport'"):
        load_graph(saved)


def test_a_missing_tensor_is_refused(saved):
    def change(doc):
        node, key = _tensor_refs(doc)[0]
        node["params"][key] = {"tensor": "nowhere/weight"}
    _edit(saved, change)
    with pytest.raises(StorageError, match="references tensor 'nowhere/weight', which .*graph.safetensors "
                                           "does not hold"):
        load_graph(saved)


def test_an_unreferenced_tensor_is_refused(saved):
    def change(doc):
        node, key = _tensor_refs(doc)[-1]
        node["params"][key] = None
    _edit(saved, change)
    with pytest.raises(StorageError, match=r"graph.safetensors: tensors \['.*'\] are referenced by no node"):
        load_graph(saved)


def test_an_input_naming_a_later_node_is_refused(saved):
    def change(doc):
        doc["nodes"][1]["inputs"] = [doc["nodes"][3]["name"]]
    _edit(saved, change)
    doc = json.loads((saved / "graph.json").read_text())
    first, later = doc["nodes"][1]["name"], doc["nodes"][3]["name"]
    with pytest.raises(StorageError, match=f"node '{first}' reads '{later}', which is not an earlier node"):
        load_graph(saved)


def test_a_tensor_outside_node_params_is_refused(saved):
    _edit(saved, lambda d: d.update(postprocess={"op": {"tensor": "conv/weight"}}))
    with pytest.raises(StorageError, match="'postprocess/op': tensors are only allowed in node params"):
        load_graph(saved)


def test_non_finite_json_is_refused(saved):
    path = saved / "graph.json"
    path.write_text(path.read_text().replace('"lo": 0.0', '"lo": NaN', 1))
    with pytest.raises(StorageError, match="graph.json: holds NaN"):
        load_graph(saved)
