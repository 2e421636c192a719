"""ReLU sharing: the layer's definition, clustering, conversion, MPC equals plaintext, DReLU counts."""

import functools

import numpy as np
import pytest
import torch
from conftest import run

from ringlet.compiler.capture import compile_model
from ringlet.compiler.model import CompiledModel
from ringlet.grelu.cluster import cluster_groups, hamming_matrix, single_linkage
from ringlet.grelu.convert import SharingConfigError, convert
from ringlet.grelu.layers import GroupReLU, patch_groups
from ringlet.models import build_model
from ringlet.runtime.programs import client_program, server_program


def test_patches_tile_with_a_smaller_last_patch():
    g = patch_groups(28, 28, 3, 3)
    assert int(g.max()) + 1 == 100  # 28 = 9·3 + 1: 10 patches per side
    assert (g == 0).sum() == 9 and (g == 99).sum() == 1 and (g == 9).sum() == 3


def test_grelu_forward_equals_its_definition_on_a_hand_made_tensor():
    x = torch.tensor([[[[1.0, -2.0, 3.0], [-4.0, 5.0, -6.0], [7.0, -8.0, 9.0]]]])  # 1×1×3×3
    groups = patch_groups(3, 3, 2, 2).unsqueeze(0)  # patches {0,1,3,4}, {2,5}, {6,7}, {8}
    centre = GroupReLU(groups, "center").eval()
    # centres: (0,0)=1 → keep; (0,2)=3 → keep; (2,0)=7 → keep; (2,2)=9 → keep
    assert torch.equal(centre(x), x)
    mean = GroupReLU(groups, "mean").eval()
    # means: (1-2-4+5)/4=0 → keep (≥0); (3-6)/2<0 → zero; (7-8)/2<0 → zero; 9 → keep
    want = x.clone()
    want[0, 0, 0, 2] = want[0, 0, 1, 2] = want[0, 0, 2, 0] = want[0, 0, 2, 1] = 0
    assert torch.equal(mean(x), want)
    channel = GroupReLU(torch.zeros(1, 3, 3, dtype=torch.int64), "mean").eval()
    assert torch.equal(channel(x), x)  # total 5 > 0: the whole channel passes
    assert channel(-x).abs().sum() == 0


def test_fc_weights_learn_through_the_straight_through_step():
    layer = GroupReLU(patch_groups(4, 4, 2, 2).unsqueeze(0).expand(2, 4, 4).clone(), "fc").train()
    x = torch.randn(8, 2, 4, 4, generator=torch.Generator().manual_seed(0))  # test data only
    layer(x).sum().backward()
    assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0


def test_noise_flips_decisions_at_inference_only_when_asked():
    groups = patch_groups(8, 8, 8, 8).unsqueeze(0)
    x = torch.ones(1, 1, 8, 8)
    assert torch.equal(GroupReLU(groups, "mean", noise=0.3).eval()(x), x)
    noisy = GroupReLU(groups, "mean", noise=0.3, noise_at_inference=True).eval()
    out = noisy(x)
    assert 0 < int((out == 0).sum()) < 64 and torch.equal((out == 0)[0], noisy.flips.bool())


def test_clustering_groups_identical_patterns():
    rng = np.random.default_rng(0)  # test data only
    base = rng.integers(0, 2, (50, 3))  # three distinct patterns over 50 images
    patterns = base[:, [0, 1, 0, 2, 1, 0]]  # 6 positions, 3 distinct columns
    labels = single_linkage(hamming_matrix(patterns), 3)
    assert labels[0] == labels[2] == labels[5] and labels[1] == labels[4]
    assert len(set(labels.tolist())) == 3
    pre = torch.from_numpy(np.where(patterns, 1.0, -1.0).reshape(50, 1, 2, 3)).float()
    groups = cluster_groups(pre, 3)
    assert groups.shape == (1, 2, 3) and int(groups.max()) == 2
    assert int(cluster_groups(pre.repeat(1, 1, 2, 2), 2, window=3).max()) == 2 * 4 - 1


def test_conversion_errors_name_the_layer():
    model = build_model("fmnist-net", (1, 8, 8))
    with pytest.raises(SharingConfigError, match="'fc1' is not a ReLU"):
        convert(model, {"version": 1, "layers": {"fc1": {"patch": 2}}}, (1, 8, 8))
    with pytest.raises(SharingConfigError, match="either \"patch\" or \"clusters\""):
        convert(model, {"version": 1, "layers": {"features.1": {}}}, (1, 8, 8))


CONFIGS = {
    "center": {"variant": "center", "patch": 3},
    "mean-channel-noise": {"variant": "mean", "patch": "channel", "noise": 0.2, "noise_at_inference": True},
    "fc": {"variant": "fc", "patch": 4},
    "clusters": {"variant": "mean", "clusters": 5},
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_mpc_output_equals_plaintext_grelu_and_drelu_count_falls(name, parties):
    torch.manual_seed(1)  # test data only
    shape = (1, 10, 10)
    model = build_model("fmnist-net", shape)
    x = torch.randn(3, *shape)
    convert(model, {"version": 1, "layers": {"features.1": CONFIGS[name]}}, shape, images=torch.randn(64, *shape))
    model.eval()
    ref = model(x).double()
    compiled = CompiledModel(compile_model(model, shape))
    assert torch.allclose(compiled.run_plain(x), ref, atol=1e-6)
    server = functools.partial(server_program, model=compiled)
    client = functools.partial(client_program, images=x, batch=3, progress=False)
    res = run(server, parties, client=client)
    logits = res.client_result["logits"]
    assert torch.allclose(logits, ref, atol=2e-3) and torch.equal(logits.argmax(1), ref.argmax(1))
    layer = model.features[1]
    row = next(r for r in res.servers[0].result["per_layer"] if r["label"] == "features.1")
    decisions, activations = 3 * layer.decisions_per_sample, 3 * 32 * 100
    assert decisions < activations
    assert row["drelus"] == decisions  # the accounting shows one DReLU per group
    if parties == 2:  # DReLU bytes scale with the groups, select bytes with the activations
        words = -(-decisions // 64)  # each opened plane is padded to whole 64-bit words
        assert row["bytes_sent"] * 8 == 243 * 64 * words + 65 * activations
        assert row["rounds"] == 8
