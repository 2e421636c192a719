"""Every operator a PyTorch user writes: compiled, run on shares against plaintext, costs asserted.

Each case is a small module written the way users write them; the compiled graph must equal the
module in plaintext, the private run must match within fixed-point error, and the nodes the
operator lowers to must cost what their docstrings say (0 bytes and 0 rounds when local).
"""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import secure_logits
from torch import nn

from ringlet.compiler.capture import CompileError, compile_model
from ringlet.compiler.model import CompiledModel

pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")


class Lambda(nn.Module):
    """A conv, then the operation under test, then a small head (so the op sees real activations)."""

    def __init__(self, fn, channels=3, **mods):
        super().__init__()
        self.conv = nn.Conv2d(2, channels, 3, padding=1)
        self.fn = fn
        for k, v in mods.items():
            setattr(self, k, v)

    def forward(self, x):
        return self.fn(self, self.conv(x))

    def _iadd(self, x):
        y = x * 1.0
        y += x  # torchvision's out += identity, then y read again
        return y + x * 0.5


class Buffers(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.tensor([0.1, -0.2]).view(2, 1, 1))
        self.register_buffer("std", torch.tensor([0.5, 2.0]).view(2, 1, 1))
        self.gamma = nn.Parameter(torch.tensor(1.5))
        self.conv = nn.Conv2d(2, 3, 3)

    def forward(self, x):
        x = (x - self.mean) / self.std           # normalisation inside the model
        return self.conv(x) * self.gamma + 1.0


LOCAL = {"conv", "linear", "affine", "add", "reshape", "gather", "cat", "spatialmap", "mean",
         "avgpool", "output"}

CASES = {
    # arithmetic by constants, every spelling
    "sub-div": (lambda s, x: (x - 0.5) / 4.0, {"affine"}),
    "c*x+d": (lambda s, x: 3.0 * x + 2.0, {"affine"}),
    "rsub-neg": (lambda s, x: 1.0 - (-x), {"affine"}),
    "torch-ops": (lambda s, x: torch.add(torch.mul(torch.sub(x, 0.25), 2), 1, alpha=3), {"affine"}),
    "methods": (lambda s, x: x.sub(1).div(3).mul(2).add(0.5).neg(), {"affine"}),
    "x-y": (lambda s, x: x - x.flip(3), {"add", "gather"}),
    "x*y": (lambda s, x: x * x.mean((2, 3), keepdim=True), {"mul", "mean"}),
    "layernorm": (lambda s, x: s.ln(x) + F.layer_norm(x * 3, (8,), eps=1e-6), {"layernorm", "affine"},
                  {"ln": nn.LayerNorm(8)}),
    "rmsnorm": (lambda s, x: s.rms(x) + F.rms_norm(x * 2, (8,), eps=1e-5), {"layernorm"},
                {"rms": nn.RMSNorm(8, eps=1e-5)}),
    "x@y": (lambda s, x: (x @ x.flip(3).transpose(-2, -1)) / 8 + torch.matmul(x, x), {"matmul"}),
    "softmax": (lambda s, x: torch.softmax(x, -1) + F.softmax(x * 2, dim=3) + s.sm(x).mean(-1, keepdim=True)
                + F.scaled_dot_product_attention(x, x, x, is_causal=True), {"softmax", "matmul"},
                {"sm": nn.Softmax(dim=-1)}),
    # shapes
    "mean-dims": (lambda s, x: torch.cat([x.mean(dim=(2, 3)), torch.mean(x, [2, 3]),
                                          x.mean(-1).mean(-1), x.sum(2).sum(2) / 64], 1), {"mean"}),
    "mean-keepdim": (lambda s, x: x - torch.mean(x, dim=1, keepdim=True), {"mean", "add"}),
    "reshape-size": (lambda s, x: x.reshape(x.shape[0], -1) + x.view(x.size(0), x.size(1) * x.size(2)
                                                                    * x.size(3)), {"reshape"}),
    "permute": (lambda s, x: x.permute(0, 2, 3, 1).contiguous().transpose(1, 2).flatten(1), {"gather"}),
    "slice-chunk": (lambda s, x: torch.cat([x.chunk(3, dim=1)[2], torch.split(x, 1, 1)[0],
                                            x[:, 1:2, 2:, ::2].repeat(1, 1, 1, 2)], 2), {"gather", "cat"}),
    "stack-flip-roll": (lambda s, x: torch.stack([x.flip(2), torch.roll(x, 1, 3)], 1).flatten(1, 2),
                        {"gather", "cat"}),
    "dropout2d": (lambda s, x: s.drop(x), set(), {"drop": nn.Dropout2d(0.5)}),
    # convolutions
    "same-odd": (lambda s, x: s.c(x), {"conv"}, {"c": nn.Conv2d(3, 4, 3, padding="same")}),
    "same-even": (lambda s, x: s.c(x), {"conv", "gather"}, {"c": nn.Conv2d(3, 4, 4, padding="same",
                                                                          dilation=1)}),
    "reflect": (lambda s, x: s.c(x), {"conv", "gather"}, {"c": nn.Conv2d(3, 4, 3, padding=2,
                                                                        padding_mode="reflect")}),
    "replicate": (lambda s, x: s.c(x), {"conv", "gather"}, {"c": nn.Conv2d(3, 4, 3, padding=1,
                                                                          padding_mode="replicate")}),
    "circular": (lambda s, x: s.c(x), {"conv", "gather"}, {"c": nn.Conv2d(3, 4, 3, padding=1,
                                                                         padding_mode="circular")}),
    "conv-transpose": (lambda s, x: s.c(x), {"conv", "gather"},
                       {"c": nn.ConvTranspose2d(3, 4, 3, stride=2, padding=1, output_padding=1)}),
    "conv-transpose-groups": (lambda s, x: s.c(x), {"conv", "gather"},
                              {"c": nn.ConvTranspose2d(3, 6, 2, stride=2, groups=3, bias=False)}),
    "pad-functional": (lambda s, x: F.pad(x, (1, 2, 0, 1)) + 0.0, {"gather", "affine"}),
    "functional-conv": (lambda s, x: F.linear(F.conv2d(x, s.w, s.b, padding=1).flatten(1), s.lw),
                        {"conv", "linear", "reshape"},
                        {"w": nn.Parameter(torch.randn(2, 3, 3, 3) * 0.3), "b": nn.Parameter(torch.randn(2)),
                         "lw": nn.Parameter(torch.randn(5, 128) * 0.1)}),
    # activations computed from sign decisions (exact up to fixed point)
    "leaky": (lambda s, x: s.act(x) + F.leaky_relu(x, 2.0), {"leaky"}, {"act": nn.LeakyReLU(0.1)}),
    "abs": (lambda s, x: x.abs() + torch.abs(x - 0.5), {"abs"}),
    "relu6-hardtanh": (lambda s, x: s.r6(x * 4) + F.hardtanh(x, -0.5, 0.25), {"clamp"},
                       {"r6": nn.ReLU6()}),
    "clamp-clip": (lambda s, x: x.clamp(-0.3, 0.2) + torch.clip(x, max=0.1) + x.clamp(min=-0.1),
                   {"clamp"}),
    "clamp-min-0-is-relu": (lambda s, x: x.clamp(min=0), {"relu"}),
    # keyword operands, in-place operations, public tensors shaped like a secret one
    "other-keyword": (lambda s, x: torch.add(x, other=1.0) + x.add(other=2 * x) + torch.mul(x, other=2.)
                      + torch.div(x, other=4.) + torch.sub(x, other=0.5), {"affine", "add"}),
    "relu_-then-read": (lambda s, x: torch.relu_(x * 1.0) + x, {"relu", "add"}),
    "inplace-module": (lambda s, x: s.act(x) + x, {"relu", "add"}, {"act": nn.ReLU(inplace=True)}),
    "iadd-then-read": (lambda s, x: s._iadd(x), {"add"}),
    "type-as": (lambda s, x: x * s.m.type_as(x) + x * s.m.to(x) + x.view_as(x), {"affine", "add"},
                {"m": nn.Parameter(torch.tensor([0.5, -1.0, 2.0]).view(3, 1, 1))}),
    "zeros-like": (lambda s, x: x + torch.zeros_like(x) + torch.ones_like(x), {"affine"}),
    "bn-through-alias": (lambda s, x: s.bn(s.drop(x)) + s.bn(x.contiguous()) + x, {"affine", "add"},
                         {"bn": nn.BatchNorm2d(3), "drop": nn.Dropout(0.2)}),
    "cat-split": (lambda s, x: torch.cat(torch.split(x, 2, 1), dim=1) + torch.stack(x.unbind(1), 1)
                  + torch.cat([x[:, :1], x[:, 1:]], axis=1), {"gather", "add"}),
    "narrow-select": (lambda s, x: x.narrow(3, 1, 4).select(1, 0) + torch.index_select(
        x, 3, torch.tensor([0, 2, 4, 6]))[:, 1], {"gather"}),
    "pow-square": (lambda s, x: x ** 2 + torch.square(x) + x.pow(3) + x.pow(4), {"mul"}),
    "max-min": (lambda s, x: torch.maximum(x, x.flip(2)) - torch.minimum(x, x.flip(3)), {"maximum"}),
    "amax-amin": (lambda s, x: x.amax((2, 3)) + torch.amin(x, dim=(-2, -1), keepdim=True).flatten(1),
                  {"maxpool"}),
    "clamp-min-max": (lambda s, x: x.clamp_min(-0.2) + torch.clamp_max(x, 0.3), {"clamp"}),
    "gelu-tanh": (lambda s, x: F.gelu(x, approximate="tanh") * 0 + x, {"smooth"}),
    # pools
    "maxpool-ceil": (lambda s, x: s.p(x), {"maxpool"}, {"p": nn.MaxPool2d(3, 2, ceil_mode=True)}),
    "maxpool-stem": (lambda s, x: s.p(x), {"maxpool"}, {"p": nn.MaxPool2d(3, 2, 1)}),
    "maxpool-dilation": (lambda s, x: F.max_pool2d(x, 2, 1, 0, 2), {"maxpool"}),
    "adaptive-max": (lambda s, x: s.p(x), {"maxpool"}, {"p": nn.AdaptiveMaxPool2d((3, 3))}),
    "avgpool-ceil": (lambda s, x: s.p(x), {"spatialmap"},
                     {"p": nn.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False)}),
    "adaptive-avg": (lambda s, x: s.p(x), {"spatialmap"}, {"p": nn.AdaptiveAvgPool2d((3, 5))}),
    "avgpool": (lambda s, x: s.p(x), {"avgpool"}, {"p": nn.AvgPool2d(2)}),
    "upsample": (lambda s, x: s.up(x) + F.interpolate(x, size=(16, 16)), {"gather", "add"},
                 {"up": nn.Upsample(scale_factor=2)}),
    "bilinear": (lambda s, x: F.interpolate(x, scale_factor=0.75, mode="bilinear"), {"spatialmap"}),
}


def _case(name):
    fn, kinds, *mods = CASES[name]
    torch.manual_seed(0)  # test weights and data only
    return Lambda(fn, **(mods[0] if mods else {})), kinds


@pytest.mark.parametrize("name", list(CASES))
def test_operator_matches_plaintext_and_costs_nothing(name):
    model, kinds = _case(name)
    x = torch.randn(3, 2, 8, 8)
    with torch.no_grad():
        ref = copy.deepcopy(model).double().eval()(x.double())
    graph = compile_model(model, x)
    compiled = CompiledModel(graph)
    assert kinds <= {n.kind for n in graph.nodes}, [n.kind for n in graph.nodes]
    assert torch.allclose(compiled.run_plain(x), ref, atol=1e-9)
    logits, rows = secure_logits(compiled, x)
    scale = max(1.0, float(ref.abs().max()))
    assert torch.allclose(logits, ref, atol=2e-3 * scale), float((logits - ref).abs().max())
    for row in rows:
        if row["kind"] in LOCAL:
            assert row["bytes_sent"] == 0 and row["rounds"] == 0, row


SMOOTH = {"sigmoid": nn.Sigmoid(), "tanh": nn.Tanh(), "silu": nn.SiLU(), "gelu": nn.GELU(),
          "hardswish": nn.Hardswish(), "hardsigmoid": nn.Hardsigmoid()}


@pytest.mark.parametrize("method", ["accurate", "piecewise", "poly"])
@pytest.mark.parametrize("name", list(SMOOTH))
def test_smooth_activations_within_their_stated_error(name, method):
    torch.manual_seed(3)  # test weights and data only
    model = Lambda(lambda s, x: s.act(x * 2), act=SMOOTH[name]).eval()
    x = torch.randn(2, 2, 8, 8)
    graph = compile_model(model, x, smooth=method)
    (node,) = [n for n in graph.nodes if n.kind in ("smooth", "smoothpoly")]
    spec = node.params["spec"]
    assert node.params["name"] == name and node.params["method"] == method
    with torch.no_grad():
        ref = copy.deepcopy(model).double()(x.double())
        pre = (model.conv(x) * 2).double()
    inside = pre.abs() < spec.get("range", 0)
    if method == "poly":  # garbage beyond the range: compare inside it only
        assert inside.float().mean() > 0.5
    logits, rows = secure_logits(CompiledModel(graph), x)
    err = (logits - ref).abs()
    err = err[inside] if method == "poly" else err
    assert float(err.max()) <= spec["max_error"] + 1e-3, (float(err.max()), spec["max_error"])
    (row,) = [r for r in rows if r["kind"] in ("smooth", "smoothpoly")]
    breaks = len(spec.get("breaks", [0, 0])) if method != "poly" else 0  # a DReLU per breakpoint
    assert row["drelus"] == breaks * x.shape[0] * 3 * 8 * 8
    if method == "accurate":
        assert spec["max_error"] < 1e-3


def test_batchnorm_without_running_statistics_is_refused():
    with pytest.raises(CompileError, match=r"track_running_stats=False.*depend on the secret inputs"):
        compile_model(Lambda(lambda s, x: s.bn(x), bn=nn.BatchNorm2d(3, track_running_stats=False)),
                      (2, 6, 6))


def test_buffers_and_parameters_in_forward_are_public_constants():
    torch.manual_seed(1)  # test weights and data only
    model = Buffers().eval()
    x = torch.randn(2, 2, 6, 6)
    graph = compile_model(model, x)
    assert [n.kind for n in graph.nodes].count("affine") == 2  # (x − m)/s merged; γ·y + 1 merged
    logits, _ = secure_logits(CompiledModel(graph), x)
    assert torch.allclose(logits, model(x).double(), atol=2e-3)


def test_maxpool_with_ceil_mode_costs_k_minus_one_relus():
    model, _ = _case("maxpool-ceil")
    x = torch.randn(1, 2, 8, 8)
    compiled = CompiledModel(compile_model(model, x))
    _, rows = secure_logits(compiled, x)
    (row,) = [r for r in rows if r["kind"] == "maxpool"]
    outputs = 3 * 4 * 4  # 8 → ceil((8 − 3) / 2) + 1 = 4 with ceil_mode
    assert row["drelus"] == outputs * 8  # K − 1 = 8 maxima per output
    # the tournament's levels compare 4, 2, 1, 1 pairs per output; a max of n elements sends 243
    # circuit bits and the 1-bit select plane per element in whole 64-bit words, and 64 bits each
    words = lambda n: -(-n // 64) * 64  # noqa: E731
    levels = [4 * outputs, 2 * outputs, outputs, outputs]
    assert row["bytes_sent"] * 8 == sum(244 * words(n) + 64 * n for n in levels)
    assert row["rounds"] == 4 * 8  # ⌈log2 9⌉ = 4 rounds of an 8-round max


class Head(nn.Module):
    def __init__(self, last):
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.last = last

    def forward(self, x):
        return self.last(self.fc(x))


@pytest.mark.parametrize("last,name", [(nn.Softmax(dim=1), "softmax"), (nn.LogSoftmax(1), "log_softmax"),
                                       (lambda t: F.softmax(t, dim=-1), "softmax")])
def test_a_final_softmax_is_stripped_and_applied_by_the_client(last, name):
    torch.manual_seed(2)  # test weights and data only
    model = Head(last).eval()
    x = torch.randn(4, 4)
    graph = compile_model(model, x)
    assert graph.postprocess == {"op": name, "dim": 1}
    assert "softmax" not in {n.kind for n in graph.nodes}
    logits, _ = secure_logits(CompiledModel(graph), x)  # the client applies the softmax
    assert torch.allclose(logits, model(x).double(), atol=2e-3)
    assert torch.allclose(graph.finish(CompiledModel(graph).run_plain(x)), model(x).double(), atol=1e-6)


def test_a_reused_relu_module_gets_one_name_per_call_site():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.conv2 = nn.Conv2d(1, 2, 3, padding=1), nn.Conv2d(2, 2, 3, padding=1)
            self.relu = nn.ReLU(inplace=True)

        def forward(self, x):
            return self.relu(self.conv2(self.relu(self.conv1(x))) + x)

    graph = compile_model(Block(), (1, 6, 6))
    assert graph.relu_names == ["relu", "relu#1"]


class TwoInputs(nn.Module):
    def forward(self, x, y):
        return x + y


class Embed(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(10, 4)

    def forward(self, x):
        return self.emb(x)


class Norm(nn.Module):
    def __init__(self):
        super().__init__()
        self.ln = nn.GroupNorm(2, 4)  # LayerNorm over the last axis runs; GroupNorm does not

    def forward(self, x):
        return self.ln(x)


class Branchy(nn.Module):
    def forward(self, x):
        if x.sum() > 0:
            return x
        return -x


class SecretDivide(nn.Module):
    def forward(self, x):
        return x / (x.mean(1, keepdim=True) + 1)


class InnerSoftmax(nn.Module):
    def forward(self, x):
        return torch.log_softmax(x, 1) * 2


@pytest.mark.parametrize("model,shape,message", [
    (TwoInputs(), (4,), r"takes 2 inputs \(x, y\).*wrap it so that forward takes one tensor"),
    (Embed(), (4,), r"give the example input as integer token ids"),
    (Norm(), (4,), r"node 'ln'.*GroupNorm is not supported: .*use BatchNorm"),
    (Branchy(), (4,), r"cannot be used as inputs to control flow.*torch.where"),
    (SecretDivide(), (4,), r"division by a secret value"),
    (InnerSoftmax(), (4,), r"a log-softmax inside the model"),
])
def test_unsupported_models_fail_before_any_party_with_a_way_out(model, shape, message):
    with pytest.raises(CompileError, match=message):
        compile_model(model, shape)


def test_a_reshape_that_mixes_samples_is_refused():
    class Mix(nn.Module):
        def forward(self, x):
            return x.reshape(-1, 2)

    with pytest.raises(CompileError, match="mixes the batch axis"):
        compile_model(Mix(), (4,))
    with pytest.raises(CompileError, match="mixes the samples of a batch"):
        compile_model(Lambda(lambda s, x: x.transpose(0, 1)), (2, 4, 4))


class _Attention(nn.Module):
    """Attention without its softmax (the next issue's): heads, Q·Kᵀ, scores·V, as written."""

    def __init__(self, d=8, heads=2):
        super().__init__()
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.heads = heads

    def forward(self, x):  # x: N × T × d
        n, t, d = x.shape
        split = lambda z: z.reshape(n, t, self.heads, d // self.heads).transpose(1, 2)  # noqa: E731
        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        scores = q @ k.transpose(-2, -1) * (d // self.heads) ** -0.5
        out = torch.matmul(scores, v).transpose(1, 2).reshape(n, t, d)
        return self.o(out).mean(1)


def test_secret_matrix_products_match_plaintext_with_their_stated_cost():
    """Q·Kᵀ and scores·V of secret tensors: Beaver matrix triples, 1 round and 64·(|x| + |y|) bits
    per server each (2 servers), within fixed-point error of torch."""
    torch.manual_seed(0)  # test weights and data only
    model = _Attention().eval()
    x = torch.randn(3, 5, 8)
    graph = compile_model(model, x)
    products = [n for n in graph.nodes if n.kind == "matmul"]
    assert len(products) == 2
    with torch.no_grad():
        ref = model(x).double()
    logits, rows = secure_logits(CompiledModel(graph), x)
    assert float((logits - ref).abs().max()) < 1e-3
    by_name = {r["name"]: r for r in rows}
    for node in products:
        a, b = (next(n for n in graph.nodes if n.name == i).out_shape for i in node.inputs)
        elements = x.shape[0] * (math.prod(a) + math.prod(b))
        assert by_name[node.name]["bytes_sent"] == 8 * elements and by_name[node.name]["rounds"] == 1


def test_servers_never_see_the_operands_of_a_secret_matrix_product():
    """What the servers receive while multiplying Q by Kᵀ (openings of x − a, y − b; dealer
    corrections) agrees with neither operand, at either fixed-point scale."""
    import functools

    from conftest import record_received, run

    from ringlet.runtime.programs import client_program, server_program
    torch.manual_seed(1)  # test weights and data only
    model = _Attention().eval()
    x = torch.randn(2, 5, 8)
    compiled = CompiledModel(compile_model(model, x))
    with torch.no_grad():
        n, t, d = x.shape
        q = model.q(x).reshape(n, t, 2, 4).transpose(1, 2)
        k = model.k(x).reshape(n, t, 2, 4).transpose(1, 2).transpose(-2, -1)
    secrets = [torch.round(v * 2 ** f).to(torch.int64).reshape(-1) for v in (q, k) for f in (16, 32)]
    received: list = []

    def spy(sess, **kw):
        record_received(sess, received)
        return server_program(sess, **kw)
    run(functools.partial(spy, model=compiled), 2,
        client=functools.partial(client_program, images=x, batch=2, progress=False))
    assert received
    for flat in received:
        for secret in secrets:
            if flat.numel() >= secret.numel():
                window = flat[:secret.numel()]
                assert ((window - secret).abs() < 2 ** 12).double().mean() < 0.05
