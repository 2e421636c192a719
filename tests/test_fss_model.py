"""FSS ReLUs in a whole model: a user's own CNN, the protocol per layer from a config or the command
line, exact rounds, auto's choice, and the two-server rule naming the layer."""

import json

import pytest
import torch
from torch import nn

import ringlet
from ringlet.compiler.config import ReluConfig


class SmallNet(nn.Module):
    """conv-bn-relu, max-pool, conv-relu, global average, linear: written the way users write."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(6)
        self.act1 = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(6, 8, 3, padding=1)
        self.act2 = nn.ReLU(inplace=True)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        x = self.pool(self.act1(self.bn1(self.conv1(x))))
        x = self.act2(self.conv2(x))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)  # test data only
    net = SmallNet().eval()
    x = torch.randn(16, 1, 12, 12)
    return ringlet.compile(net, x), x[:4]


def _rounds_by_node(report):
    return {row["label"]: row["rounds"] for row in report.get("layers", [])}


def test_exact_fss_matches_plaintext_with_one_round_per_relu(model):
    pm, x = model
    gmw = pm.infer(x, batch=4).report
    fss = pm.infer(x, batch=4, relu_protocol="fss").report
    # the max-pool is a searchable comparison too: it has its protocol like the ReLUs
    assert fss["relu_protocols"] == {"act1": "fss", "pool": "fss", "act2": "fss"}
    assert fss["argmax_agreement"] == 1.0 and fss["max_abs_logit_error"] < 1e-3
    # two ReLUs: 8 rounds each under gmw (exact, carry tree); 1 each under fss; the max-pool's
    # 2 tournament levels take 1 round each under fss instead of 8
    assert gmw["rounds"] - fss["rounds"] == 2 * (8 - 1) + 2 * (8 - 1)
    assert fss["bytes_sent_per_party"] < gmw["bytes_sent_per_party"]


def test_config_names_the_protocol_per_layer_and_the_command_line_overrides_it(model, tmp_path):
    pm, x = model
    cfg = {"version": 2, "default": "exact", "layers": {"act2": {"k": 20, "m": 4, "protocol": "fss"}}}
    path = tmp_path / "c.json"
    path.write_text(json.dumps(cfg))
    rep = pm.infer(x, str(path), batch=4).report
    assert rep["relu_protocols"] == {"act1": "gmw", "pool": "gmw", "act2": "fss"}
    assert pm.infer(x, str(path), batch=4, relu_protocol="gmw").report["relu_protocols"] == {
        "act1": "gmw", "pool": "gmw", "act2": "gmw"}
    assert ReluConfig.load(path).resolve(["act1", "act2"]) == {"act1": (64, 0), "act2": (20, 4)}


def test_fss_with_three_servers_names_the_layer(model):
    pm, x = model
    with pytest.raises(ValueError, match=r"activation 'act1': fss is a two-server protocol"):
        pm.infer(x, parties=3, batch=4, relu_protocol="fss")


def test_auto_prints_its_choice_and_keeps_gmw_with_three_servers(model, capsys):
    pm, x = model
    rep = pm.infer(x, batch=4, relu_protocol="auto", auto_link="wan-rtt").report
    err = capsys.readouterr().err
    assert "relu-protocol auto: act1" in err and "→" in err
    # on a 50 ms link one round against eight decides for fss
    assert rep["relu_protocols"] == {"act1": "fss", "pool": "fss", "act2": "fss"}
    three = pm.infer(x, parties=3, batch=4, relu_protocol="auto").report
    assert three["relu_protocols"] == {"act1": "gmw", "pool": "gmw", "act2": "gmw"}


@pytest.mark.parametrize("config", ["exact", "eco", "8/64"])
def test_resnet20_fss_over_tcp(config):
    """The shipped ResNet-20 with its shipped configurations, every ReLU by fss, two servers and
    a dealer as processes over TCP: the same argmax as plaintext, one round per ReLU layer."""
    from ringlet.bench.suite import config_setup
    from ringlet.jobs.infer import run_inference
    setup = config_setup("resnet20-fmnist", f"{config}-fss")
    model = setup.pop("model", "resnet20-fmnist")
    report, _ = run_inference(model, dataset="fashion-mnist", samples=2, batch=2, transport="tcp",
                              progress=False, **setup)
    assert set(report["relu_protocols"].values()) == {"fss"}
    assert report["argmax_agreement"] == 1.0
    relus = len(report["relu_protocols"])
    # one round per ReLU layer, the input and output, and the dealer truncations left (the
    # residual adds and the pooling before the classifier)
    assert report["rounds"] <= 25 and report["rounds"] >= relus
    if config == "exact":
        assert report["bytes_sent_per_image"] <= 1.25e6


def test_grelu_model_with_fss_sign(tmp_path):
    """A shared-ReLU model: one FSS sign per group, then the fused select (2 rounds a layer)."""
    from ringlet.jobs.infer import run_inference
    gmw, _ = run_inference("fmnist-net-fmnist-grelu-clusters-8", dataset="fashion-mnist", samples=4,
                           batch=4, progress=False)
    fss, _ = run_inference("fmnist-net-fmnist-grelu-clusters-8", dataset="fashion-mnist", samples=4,
                           batch=4, progress=False, relu_protocol="fss")
    assert fss["argmax_agreement"] == gmw["argmax_agreement"] == 1.0
    assert fss["rounds"] < gmw["rounds"]


def test_a_batch_whose_keys_do_not_fit_is_refused_naming_one_that_does(model):
    from ringlet.compiler.model import KeyMemoryError
    pm, _ = model
    compiled = pm.compiled(relu_protocol="fss")
    protocols = compiled.protocols_for(8, 2)
    per_server = compiled.key_bytes(8, protocols)
    assert per_server == 2 * compiled.key_bytes(4, protocols) > 0
    compiled.check_key_memory(8, protocols, 2, available=4 * per_server)  # fits: no error
    with pytest.raises(KeyMemoryError, match=r"use --batch 4 ") as err:
        compiled.check_key_memory(8, protocols, 2, available=2 * per_server)
    assert err.value.fits == 4


def test_suite_configurations_take_a_protocol_suffix():
    from ringlet.bench.suite import CONFIGS, config_setup
    assert {"exact-fss", "eco-fss", "8/64-fss"} <= set(CONFIGS)
    assert config_setup("resnet20-fmnist", "exact-fss") == {"relu_protocol": "fss"}
    eco = config_setup("resnet20-fmnist", "eco-auto")
    assert eco["relu_protocol"] == "auto" and eco["relu_config"].endswith("resnet20-fmnist.eco.json")
    for bad in ("exact-crypten-fss", "nope-fss"):
        with pytest.raises(ValueError, match="unknown configuration"):
            config_setup("resnet20-fmnist", bad)
