"""Exact public-weight linear layers: every backend equals int64 bit for bit modulo 2^ℓ; the fewest
limbs the weights allow; the measured auto choice and its on-disk cache; a model run with auto."""

import json
import warnings

import pytest
import torch
from conftest import run
from torch import nn

from ringlet.compiler.capture import compile_model
from ringlet.compiler.model import CompiledModel, SecureOptions
from ringlet.protocols.io import share_input
from ringlet.protocols.kernels.backends import (
    BACKENDS,
    exact_conv2d,
    exact_linear,
    limb_plan,
    split_limbs,
)
from ringlet.protocols.tuning import linear as linear_auto
from ringlet.protocols.tuning.linear import CHOICES, BackendCache, choose_backend
from ringlet.ring import Ring
from ringlet.sharing import ShareError

LO, HI = -2 ** 63, 2 ** 63 - 1
RINGS = [32, 40, 64]
# (in, out, size, kernel, stride, padding, dilation, groups)
CONVS = [(3, 8, 9, 3, 1, 1, 1, 1), (6, 8, 8, 3, 1, 1, 1, 1), (8, 16, 9, 3, 2, 1, 1, 1),
         (8, 8, 8, 3, 1, 2, 2, 4), (6, 6, 7, 3, 2, 1, 1, 6), (8, 12, 8, 1, 2, 0, 1, 1),
         (16, 4, 5, 1, 1, 0, 1, 1), (4, 4, 6, 2, (2, 1), (0, 1), (1, 2), 2)]


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("RINGLET_CACHE_DIR", str(tmp_path / "cache"))


def _shares(shape, seed):
    gen = torch.Generator().manual_seed(seed)  # test data only
    return torch.randint(LO, HI, shape, dtype=torch.int64, generator=gen)


def _weights(shape, seed, scale=3000):
    gen = torch.Generator().manual_seed(seed)  # test data only
    return torch.randint(-scale, scale + 1, shape, dtype=torch.int64, generator=gen)


def _same(a, b, ring):
    return torch.equal(Ring(ring).reduce(a), Ring(ring).reduce(b))


@pytest.mark.parametrize("ring", RINGS)
@pytest.mark.parametrize("conv", CONVS, ids=lambda c: "x".join(map(str, c[:4])) + f"-s{c[4]}g{c[7]}")
def test_every_conv_backend_equals_int64(conv, ring):
    cin, cout, size, k, stride, pad, dil, groups = conv
    x = _shares((3, cin, size, size), cin + size)
    w = _weights((cout, cin // groups, k, k), cout + k)
    ref = exact_conv2d(x, w, stride, pad, dil, groups)
    for backend in BACKENDS[1:]:
        y = exact_conv2d(x, w, stride, pad, dil, groups, backend, ring_bits=ring)
        assert y.dtype == torch.int64 and y.shape == ref.shape and y.is_contiguous()
        assert _same(y, ref, ring), backend


@pytest.mark.parametrize("ring", RINGS)
@pytest.mark.parametrize("shape", [(5, 20), (2, 3, 20), (20,)])
def test_every_linear_backend_equals_int64(shape, ring):
    x, w = _shares(shape, len(shape)), _weights((7, 20), 3)
    ref = exact_linear(x, w)
    for backend in BACKENDS[1:]:
        y = exact_linear(x, w, backend, ring_bits=ring)
        assert y.shape == ref.shape and _same(y, ref, ring), backend


def _extreme_inputs(shape, b):
    """Inputs whose limbs sit at the bounds: all −2^(b−1) below a top limb at ±its bound."""
    half = 2 ** (b - 1)
    vals = torch.tensor([HI - half + 1, LO, LO + half, -half, half - 1, HI, -1], dtype=torch.int64)
    return vals[torch.arange(torch.Size(shape).numel()) % len(vals)].view(shape)


def _same_sign_weights(shape, l1):
    """Non-negative integer weights with per-output L1 norm exactly ``l1``."""
    fan = torch.Size(shape[1:]).numel()
    w = torch.full((shape[0], fan), l1 // fan, dtype=torch.int64)
    w[:, 0] += l1 - (l1 // fan) * fan
    return w.view(shape)


@pytest.mark.parametrize("n, l1", [(2, 2 ** 22 - 1), (3, 2 ** 32 - 1)], ids=["2limbs", "3limbs"])
def test_worst_case_weights_stay_exact(n, l1):
    w = _same_sign_weights((4, 3, 3, 3), l1)
    assert limb_plan(w, 64) == (n, {2: 32, 3: 22}[n])
    b = limb_plan(w, 64)[1]
    x = _extreme_inputs((2, 3, 6, 6), b)
    limbs = split_limbs(x, b)
    assert max(int(t.abs().max()) for t in limbs) == 2 ** (b - 1)  # the bound is attained
    for xi in (x, -x, _shares((2, 3, 6, 6), 5)):
        ref = exact_conv2d(xi, w, 1, 1)
        for backend in BACKENDS[1:]:
            assert torch.equal(exact_conv2d(xi, w, 1, 1, backend=backend), ref), backend
        for sign in (1, -1):
            wl = sign * w.view(4, -1)
            assert torch.equal(exact_linear(xi.view(-1, 27), wl, "limbs"), xi.view(-1, 27) @ wl.t())
    w_over = _same_sign_weights((4, 3, 3, 3), 2 ** 22)  # one more: 3 limbs at 64 bits
    assert limb_plan(w_over, 64)[0] == 3 and limb_plan(w_over, 32) == (2, 16)


def test_fewest_limbs_per_ring_width():
    w = _weights((8, 4, 3, 3), 1)
    assert limb_plan(w, 32) == (1, 32) and limb_plan(w, 40) == (2, 20) and limb_plan(w, 64) == (2, 32)
    assert len(split_limbs(_shares((2, 3), 1), 32, 32)) == 1
    assert limb_plan(torch.zeros(3, 4, dtype=torch.int64), 64) == (1, 64)
    x = _shares((2, 4, 6, 6), 2)
    ref = exact_conv2d(x, w, 1, 1)
    assert _same(exact_conv2d(x, w, 1, 1, backend="limbs-cl", ring_bits=32), ref, 32)
    with pytest.raises(ShareError, match="L1 norm"):  # a forced width wider than exact
        limb_plan(w, 64, bits=40)


def test_too_large_weights_name_the_l1_norm():
    w = torch.zeros(2, 5, dtype=torch.int64)
    w[1, 0] = 2 ** 46
    with pytest.raises(ShareError, match=r"L1 norm 7\.03687e\+13"):
        exact_linear(_shares((3, 5), 1), w, "limbs")
    assert choose_backend("linear", (3, 5), w) == "int64"  # auto falls back without timing
    w[1, 0] = 2 ** 46 - 1
    assert limb_plan(w, 64) == (8, 8)


def _counting(monkeypatch):
    """One entry per candidate timed."""
    calls = []
    real = linear_auto.measure_interleaved

    def measure_interleaved(fns, *args, **kwargs):
        calls.extend([1] * len(fns))
        return real(fns, *args, **kwargs)
    monkeypatch.setattr(linear_auto, "measure_interleaved", measure_interleaved)
    return calls


def test_candidates_are_timed_interleaved_in_rotating_order():
    order = []
    fns = {name: (lambda name=name: order.append(name)) for name in "abc"}
    times = linear_auto.measure_interleaved(fns, repeats=3)
    assert order == list("abc") + list("abc") + list("bca") + list("cab")  # warm-ups, then rounds
    assert all(len(t) == 3 for t in times.values())


def test_a_cached_choice_that_drifts_is_measured_again(tmp_path, monkeypatch):
    calls = _counting(monkeypatch)
    w = _weights((8, 4, 3, 3), 2)
    args = ("conv", (2, 4, 8, 8), w, 1, 1, 1, 1)
    first = choose_backend(*args)
    assert len(calls) == 4
    path = tmp_path / "cache" / "linear-backends.json"
    (entry,) = json.loads(path.read_text())["machines"][linear_auto.machine_key()].values()
    recorded = entry["ms"][first]
    kw = {"stride": 1, "padding": 1, "dilation": 1, "groups": 1}
    # within DRIFT of the record (or under the floor): kept
    assert not linear_auto.check_drift("conv", (2, 4, 8, 8), w, first, recorded * 1.5, **kw)
    assert not linear_auto.check_drift("conv", (2, 4, 8, 8), w, first, 0.5, **kw)
    assert choose_backend(*args) == first and len(calls) == 4
    slow = max(recorded * 3, 2.0)
    assert linear_auto.check_drift("conv", (2, 4, 8, 8), w, first, slow, **kw)
    choose_backend(*args)
    assert len(calls) == 8  # measured again


def test_auto_choice_is_cached_on_disk(tmp_path, monkeypatch):
    calls = _counting(monkeypatch)
    w = _weights((8, 4, 3, 3), 2)
    args = ("conv", (2, 4, 8, 8), w, 1, 1, 1, 1)
    record = {}
    first = choose_backend(*args, record=record)
    assert first in BACKENDS and len(calls) == 4 and record["cached"] is False
    path = tmp_path / "cache" / "linear-backends.json"
    data = json.loads(path.read_text())
    entries = data["machines"][linear_auto.machine_key()]
    (key, entry), = entries.items()
    assert "limbs=2" in key and entry["backend"] == first and set(entry["ms"]) == set(BACKENDS)
    record = {}
    assert choose_backend(*args, record=record) == first and len(calls) == 4  # no timing
    assert record["cached"] is True
    # another shape or limb count is another entry; a grouped conv never gets limbs-unfold
    assert choose_backend("conv", (2, 4, 8, 8), w, 1, 1, 1, 1, ring_bits=32) in BACKENDS
    entries = json.loads(path.read_text())["machines"][linear_auto.machine_key()]
    assert len(entries) == 2 and len(calls) == 8
    wg = _weights((8, 2, 3, 3), 3)
    gkey = linear_auto.shape_key("conv", (2, 4, 8, 8), wg.shape, 1, 1, 1, 2, 2)
    BackendCache(path).put(linear_auto.machine_key(), gkey, {"backend": "limbs-unfold"})
    assert choose_backend("conv", (2, 4, 8, 8), wg, 1, 1, 1, 2) in ("int64", "limbs", "limbs-cl")
    assert choose_backend("linear", (3, 20), _weights((5, 20), 4), cache=False) in ("int64", "limbs")


@pytest.mark.parametrize("junk", ["{not json", '{"version": 1, "machines": []}', "\udcff\x00"])
def test_corrupt_cache_is_recovered(tmp_path, junk):
    path = tmp_path / "cache" / "linear-backends.json"
    path.parent.mkdir(parents=True)
    path.write_bytes(junk.encode("utf-8", "surrogateescape"))
    w = _weights((6, 5), 1)
    with pytest.warns(UserWarning, match="corrupt linear-backend cache"):
        choice = choose_backend("linear", (4, 5), w)
    data = json.loads(path.read_text())  # rewritten, valid
    assert data["version"] == 1 and next(iter(data["machines"].values()))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert choose_backend("linear", (4, 5), w) == choice


def test_options_validate_the_backend():
    assert SecureOptions().backend == "auto" and CHOICES == BACKENDS + ("auto",)
    with pytest.raises(ValueError, match="int64, limbs, limbs-cl, limbs-unfold, auto"):
        SecureOptions(backend="fast")
    from ringlet.cli.main import build_parser
    args = build_parser().parse_args(["infer", "--model", "m", "--linear-backend", "limbs-cl"])
    assert args.linear_backend == "limbs-cl"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["infer", "--model", "m", "--linear-backend", "fast"])


class Small(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 8, 3, stride=2, padding=2, dilation=2, groups=2)
        self.c3 = nn.Conv2d(8, 6, 1, stride=2)
        self.pool = nn.AdaptiveAvgPool2d(2)  # 3×3 → 2×2: a spatialmap node
        self.fc = nn.Linear(24, 5)

    def forward(self, x):
        y = torch.relu(self.c2(torch.relu(self.c1(x))))
        return self.fc(torch.flatten(self.pool(self.c3(y)), 1))


def _output_shares(compiled, img):
    def prog(sess):
        x = share_input(sess, img if sess.rank == 0 else None, 0, tuple(img.shape))
        y = compiled.run(sess, x)
        return y.data, y.frac
    return [r for r in run(prog, 2).results]


def test_model_gives_the_same_shares_with_every_backend(monkeypatch):
    torch.manual_seed(0)  # test data only
    model, img = Small().eval(), torch.randn(2, 3, 12, 12)
    graph = compile_model(model, (3, 12, 12))
    kinds = {n.name: n.kind for n in graph.nodes}
    ref_model = CompiledModel(graph, options=SecureOptions(backend="int64"))
    ref = _output_shares(ref_model, img)
    assert ref_model.linear_backends(2) == {n: "int64" for n, k in kinds.items()
                                            if k in ("conv", "linear", "spatialmap")}
    assert "spatialmap" in kinds.values()
    for backend in BACKENDS[1:]:
        got = _output_shares(CompiledModel(graph, options=SecureOptions(backend=backend)), img)
        assert all(torch.equal(a[0], b[0]) and a[1] == b[1] for a, b in zip(got, ref)), backend
    # auto: measured per node (here: a fixed pick per kind so that limbs variants run)
    order = ["limbs-cl", "limbs-unfold", "limbs-unfold", "limbs", "limbs"]  # graph order
    picks = iter(order)
    seen = []

    def choose(kind, x_shape, w, *args, **kwargs):
        seen.append((kind, tuple(x_shape)))
        return next(picks)
    monkeypatch.setattr(linear_auto, "choose_backend", choose)
    auto = CompiledModel(graph)
    got = _output_shares(auto, img)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(got, ref))
    assert list(auto.linear_backends(2).values()) == order
    assert len(seen) == 5 and ("conv", (2, 3, 12, 12)) in seen  # resolved once for both servers
    assert ("linear", (2 * 6, 9)) in seen  # the spatialmap's flattened planes
    assert auto.fingerprint() == ref_model.fingerprint()


def test_model_auto_choice_measures_and_caches(tmp_path):
    torch.manual_seed(1)  # test data only
    graph = compile_model(Small().eval(), (3, 12, 12))
    img = torch.randn(3, 3, 12, 12)
    ref = _output_shares(CompiledModel(graph, options=SecureOptions(backend="int64")), img)
    auto = CompiledModel(graph)
    got = _output_shares(auto, img)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(got, ref))
    assert set(auto.linear_backends(3).values()) <= set(BACKENDS)
    data = json.loads((tmp_path / "cache" / "linear-backends.json").read_text())
    assert len(data["machines"][linear_auto.machine_key()]) == 5
