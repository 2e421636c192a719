"""Transformers through the front door: attention written by hand and by
F.scaled_dot_product_attention (masks included), the zoo's ViT, timm's ViT and Hugging Face BERT /
ViT compile as written and run privately as torch; the client looks its token ids up itself."""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from zoo_models import timm

import ringlet
from ringlet.compiler.capture import CompileError
from ringlet.models import build_model


class Attn(nn.Module):
    """timm's way (fused qkv, the batch axis moved by permute and brought back by unbind)."""

    def __init__(self, d=16, heads=2, how="sdpa", mask=None, causal=False):
        super().__init__()
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.heads, self.how, self.causal = heads, how, causal
        self.register_buffer("mask", mask)

    def forward(self, x):
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        if self.how == "sdpa":
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=self.mask, is_causal=self.causal)
        else:
            y = torch.softmax(q @ k.transpose(-2, -1) * (c // self.heads) ** -0.5, dim=-1) @ v
        return self.proj(y.transpose(1, 2).reshape(b, n, c)).mean(1)


@pytest.mark.parametrize("how,mask,causal,frontend", [
    ("sdpa", None, False, "fx"), ("sdpa", None, False, "export"), ("explicit", None, False, "fx"),
    ("sdpa", None, True, "fx"),
    ("sdpa", torch.tensor([[True] * 5 + [False] * 2]), False, "fx"),  # padding: two keys masked
    ("sdpa", torch.where(torch.arange(7) < 6, 0.0, float("-inf"))[None], False, "export"),  # additive
])
def test_attention_runs_privately_as_torch(how, mask, causal, frontend):
    torch.manual_seed(0)  # test weights and data only
    model = Attn(how=how, mask=mask, causal=causal).eval()
    x = torch.randn(3, 7, 16)
    pm = ringlet.compile(model, x, frontend=frontend)
    soft = [n for n in pm.graph.nodes if n.kind == "softmax"]
    assert len(soft) == 1 and (soft[0].params["keep"] is None) == (mask is None and not causal)
    res = pm.infer(x)
    with torch.no_grad():
        ref = model(x).double()
    assert float((res.logits - ref).abs().max()) < 2e-3


def test_attention_refusals_name_the_way_out():
    class Mixed(nn.Module):
        def __init__(self):
            super().__init__()  # one mask per sample of the example batch: not a public constant
            self.register_buffer("m", torch.stack([torch.ones(4, 4, dtype=torch.bool).tril(),
                                                   torch.ones(4, 4, dtype=torch.bool)]))

        def forward(self, x):
            return F.scaled_dot_product_attention(x, x, x, attn_mask=self.m)
    with pytest.raises(CompileError, match="differs between samples"):
        ringlet.compile(Mixed(), torch.randn(2, 4, 8))

    class LogInside(nn.Module):
        def forward(self, x):
            return torch.log_softmax(x, -1) * 2
    with pytest.raises(CompileError, match="log-softmax inside the model"):
        ringlet.compile(LogInside(), torch.randn(2, 4))


def test_the_zoo_vit_compiles_and_searches_its_softmax_bits():
    torch.manual_seed(0)
    model = build_model("vit2", (1, 28, 28)).eval()
    x = torch.randn(2, 1, 28, 28)
    pm = ringlet.compile(model, x)
    kinds = [n.kind for n in pm.graph.nodes]
    assert kinds.count("softmax") == 2 and kinds.count("layernorm") == 5 and kinds.count("smooth") == 2
    # the softmax's comparisons and GELU's are what the search and finetuning act on
    assert [n.kind for n in pm.graph.relus] == ["softmax", "smooth"] * 2
    res = pm.infer(x[:1])
    with torch.no_grad():
        ref = model(x[:1]).double()
    assert float((res.logits - ref).abs().max()) < 2e-3


def test_timm_vit_tiny_compiles_as_written():
    """timm's vit_tiny_patch16_224 at img_size 32, patch 4 (65 tokens, 12 blocks × 192): compiled
    as written and run privately on one image."""
    tm = timm()
    torch.manual_seed(0)
    model = tm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=4,
                            num_classes=10, depth=2).eval()
    x = torch.randn(1, 3, 32, 32)
    pm = ringlet.compile(model, x)
    assert [n.kind for n in pm.graph.nodes].count("softmax") == 2
    with torch.no_grad():
        ref = model(x).double()
    assert float((pm.infer(x).logits - ref).abs().max()) < 2e-3


@functools.cache
def _transformers():
    timm()  # the torchvision schemas transformers' import needs
    return pytest.importorskip("transformers")


def test_hf_bert_compiles_as_written_and_the_ids_stay_on_the_client():
    tr = _transformers()
    cfg = tr.BertConfig(vocab_size=500, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=128, max_position_embeddings=32, num_labels=3)
    torch.manual_seed(0)
    model = tr.BertForSequenceClassification(cfg).eval()
    ids = torch.randint(0, 500, (4, 16))
    pm = ringlet.compile(model, ids)
    assert pm.graph.preprocess is not None and pm.input_shape == (16, 64)
    assert pm.graph.client_input_shape == (16,)
    res = pm.infer(ids)
    with torch.no_grad():
        ref = model(input_ids=ids).logits.double()
    assert torch.equal(res.logits.argmax(1), ref.argmax(1))
    assert float((res.logits - ref).abs().max()) < 1e-3
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, 500\)"):
        pm.infer(ids + 1000)


def test_hf_vit_compiles_as_written():
    tr = _transformers()
    cfg = tr.ViTConfig(image_size=32, patch_size=4, num_channels=3, hidden_size=64, num_hidden_layers=2,
                       num_attention_heads=2, intermediate_size=128, num_labels=10)
    torch.manual_seed(0)
    model = tr.ViTForImageClassification(cfg).eval()
    x = torch.randn(1, 3, 32, 32)

    pm = ringlet.compile(model, x)
    with torch.no_grad():
        ref = model(pixel_values=x).logits.double()
    assert float((pm.infer(x).logits - ref).abs().max()) < 2e-3


def test_transformer_bench_reports_shares_per_operator_kind():
    from ringlet.bench.transformer import transformer_bench
    out = transformer_bench(("bert",), layers=1, width=64, tokens=16, transport="local")
    row = out["models"]["bert"]
    assert row["argmax_agreement"] == 1.0 and row["max_abs_logit_error"] < 1e-3
    kinds = row["by_kind"]
    assert {"softmax", "layernorm", "matmul", "smooth"} <= set(kinds)
    assert abs(sum(k["bytes_share"] for k in kinds.values()) - 1) < 1e-3
    assert row["speedup_vs_spu"] == row["field"]["spu"]["seconds"] / row["seconds_online_per_input"]


def test_token_ids_are_read_by_their_embedding_only():
    class Peek(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(10, 4)

        def forward(self, ids):
            return self.emb(ids).mean(1) + ids[:, :1]
    with pytest.raises(CompileError, match="only looked up in an embedding"):
        ringlet.compile(Peek(), torch.randint(0, 10, (2, 5)))


def test_hf_bert_with_padding_masks_the_padded_keys():
    """A padded batch: the attention mask is public (the same padding for every sample), HF turns
    it into an additive finfo.min mask, ringlet's softmax gives the padded keys exactly 0."""
    tr = _transformers()
    cfg = tr.BertConfig(vocab_size=300, hidden_size=64, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=128, max_position_embeddings=32, num_labels=2)
    torch.manual_seed(1)
    bert = tr.BertForSequenceClassification(cfg).eval()

    class Padded(nn.Module):
        def __init__(self):
            super().__init__()
            self.bert = bert
            self.register_buffer("mask", torch.tensor([[1] * 12 + [0] * 4]))

        def forward(self, ids):
            return self.bert(input_ids=ids, attention_mask=self.mask.expand(ids.shape[0], -1)).logits
    model = Padded().eval()
    ids = torch.randint(0, 300, (3, 16))
    pm = ringlet.compile(model, ids)
    keep = [n.params["keep"] for n in pm.graph.nodes if n.kind == "softmax"]
    assert len(keep) == 1 and keep[0].shape[-1] == 16 and not bool(keep[0][..., 12:].any())
    with torch.no_grad():
        ref = model(ids).double()
        other = ids.clone()
        other[:, 12:] = 7  # what sits under the padding changes nothing
        assert torch.allclose(model(other).double(), ref, atol=1e-5)
    res = pm.infer(ids)
    assert float((res.logits - ref).abs().max()) < 1e-3


def test_the_eco_ring_of_a_transformer_is_what_its_protocols_need():
    """LayerNorm and softmax run in the 64-bit ring only: the eco ring says so, beside what the
    values alone would need."""
    from ringlet.search.eco_ring import choose_ring
    torch.manual_seed(0)
    model = build_model("vit2", (1, 28, 28)).eval()
    x = torch.randn(16, 1, 28, 28)
    pm = ringlet.compile(model, x[:4])
    fixed, report = choose_ring(pm, x, model(x).argmax(1).detach())
    assert fixed.ring_bits == 64
    needed = report["ring_bits_needed_by_protocols"]
    assert set(needed.values()) == {64} and len(needed) == 2 + 5  # 2 softmax, 5 LayerNorm
    assert max(report["needed_bits_per_layer"].values()) < 64  # the values alone fit a smaller ring
