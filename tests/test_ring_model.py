"""A user's model in a ring narrower than 64 bits: same answers, fewer bytes, refused when too small."""

import pytest
import torch
from torch import nn

import ringlet
from ringlet.compiler.config import ConfigError, ReluConfig
from ringlet.compiler.ranges import InputRangeError


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(x + self.bn2(self.conv2(out)))


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU())
        self.block = Block(6)
        self.pool = nn.MaxPool2d(2)
        self.head = nn.Linear(6, 5)

    def forward(self, x):
        x = self.pool(self.block(self.stem(x)))
        return self.head(x.mean((2, 3)))


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)  # test weights and data only
    net = TinyNet().eval()
    calib = torch.randn(32, 1, 8, 8)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_var.uniform_(0.5, 2.0)
                m.running_mean.uniform_(-0.2, 0.2)
    return net, calib


@pytest.mark.parametrize("ring_bits,frac_bits", [(40, 12), (36, 10)])
def test_a_narrow_ring_gives_the_64_bit_answers_with_fewer_bytes(model, ring_bits, frac_bits):
    net, calib = model
    x = torch.randn(4, 1, 8, 8).clamp(-3, 3)
    wide = ringlet.compile(net, calib, frac_bits=frac_bits, input_bound=4.0)
    narrow = ringlet.compile(net, calib, frac_bits=frac_bits, ring_bits=ring_bits, input_bound=4.0)
    a = wide.infer(x)
    b = narrow.infer(x)
    with torch.no_grad():
        want = net(x).double()
    for res in (a, b):
        assert (res.logits - want).abs().max() < 0.05
    assert torch.equal(a.logits.argmax(1), b.logits.argmax(1))
    assert b.report["ring_bits"] == ring_bits and a.report["ring_bits"] == 64
    online = lambda r: r.report["bytes_sent_per_image"]  # noqa: E731
    assert online(b) < 0.75 * online(a)
    assert narrow.fingerprint()["fixed_point"] != wide.fingerprint()["fixed_point"]
    assert b.report["input_range"]["ring_bits"] == ring_bits


def test_a_config_carries_its_ring_and_a_too_small_one_is_refused(model):
    net, calib = model
    pm = ringlet.compile(net, calib, frac_bits=12, input_bound=4.0)
    cfg = ReluConfig.from_dict({"version": 1, "ring_bits": 40, "frac_bits": 12})
    assert pm.compiled(cfg).fixed.ring_bits == 40
    assert pm.fingerprint(cfg) != pm.fingerprint()
    tiny = ReluConfig.from_dict({"version": 1, "ring_bits": 32, "frac_bits": 14})
    with pytest.raises(InputRangeError, match="32-bit ring"):
        pm.compiled(tiny)
    with pytest.raises(InputRangeError, match="32-bit ring"):
        pm.infer(torch.zeros(1, 1, 8, 8), tiny)
    with pytest.raises(ValueError, match="local truncation fails"):
        pm.compiled(cfg, truncation="local")
    with pytest.raises(ConfigError, match="ring_bits"):
        ReluConfig.from_dict({"version": 1, "ring_bits": 70})
    with pytest.raises(ValueError, match="k <= 40"):
        pm.compiled(ReluConfig.from_dict({"version": 1, "ring_bits": 40, "default": {"k": 48, "m": 8}}))


def test_a_saved_model_keeps_its_ring(model, tmp_path):
    net, calib = model
    pm = ringlet.compile(net, calib, frac_bits=12, ring_bits=44, input_bound=4.0)
    pm.save(tmp_path / "m")
    back = ringlet.load(tmp_path / "m")
    assert back.fixed == pm.fixed and back.fingerprint() == pm.fingerprint()


def test_the_dry_plan_is_the_plan_of_a_real_run(model):
    from ringlet.protocols.io import share_input
    from ringlet.runtime.launch import run_local
    net, calib = model
    cm = ringlet.compile(net, calib, frac_bits=12, ring_bits=40, input_bound=4.0).compiled()
    shape = (3, 1, 8, 8)

    def prog(sess):
        dry = cm.record_plan(sess, shape)
        sess.offline.go_online()
        sess.offline.plan = []
        zero = share_input(sess, torch.zeros(shape) if sess.rank == 0 else None, 0, shape)
        before = sess.stats.copy()
        cm.run(sess, zero)
        return dry, list(sess.offline.plan), sess.stats.minus(before).bytes_sent()
    res = run_local(prog, 2, frac_bits=12, ring_bits=40, master_seed=bytes(16), timeout=60)
    for dry, real, sent in res.results:
        assert dry == real and len(dry) > 10 and sent > 0


def test_eco_ring_search_finds_a_ring_that_runs_and_refuses_a_smaller_one(model):
    from ringlet.search import eco_ring
    net, calib = model
    pm = ringlet.compile(net, calib, input_bound=4.0)
    gen = torch.Generator().manual_seed(1)  # test data only
    vx = torch.randn(64, 1, 8, 8, generator=gen).clamp(-3, 3)
    with torch.no_grad():
        vy = net(vx).argmax(1)
    cfg = pm.search(vx, vy, mode="eco-ring")
    ring = cfg.report["eco_ring"]
    assert 32 <= cfg.ring_bits <= 64 and cfg.frac_bits <= 16
    assert (cfg.ring_bits, cfg.frac_bits) == (ring["ring_bits"], ring["frac_bits"])
    need, _ = eco_ring.needed_ring_bits(pm.graph, ringlet.compiler.ranges.calibrate(pm.graph, vx)["peaks"],
                                        cfg.frac_bits, pm.input_range.bound)
    assert cfg.ring_bits >= need
    res = pm.infer(vx[:8], cfg)
    assert res.report["ring_bits"] == cfg.ring_bits
    assert torch.equal(res.logits.argmax(1), vy[:8])
    assert "per_layer" in res.report["input_range"]
    # an emulation at too few fractional bits loses accuracy: the search stops above it
    assert ring["frac"] == "keep" and cfg.frac_bits == 16
    lower = pm.search(vx, vy, mode="eco-ring", ring_frac="search")
    seen = lower.report["eco_ring"]["emulated_validation"]
    assert lower.frac_bits <= 16 and all(seen[f]["agreement"] == 1.0 for f in seen if f >= lower.frac_bits)
    assert lower.ring_bits <= cfg.ring_bits
