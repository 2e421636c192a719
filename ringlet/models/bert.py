"""A BERT-style encoder for sequence classification, written as Hugging Face writes BERT (summed
word, position and token-type embeddings, post-norm blocks with GELU, a tanh pooler on the first
token). It takes token ids; ringlet's client looks them up itself."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.query, self.key, self.value = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.dense = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, c = x.shape
        split = lambda t: t.view(b, n, self.heads, c // self.heads).transpose(1, 2)  # noqa: E731
        y = F.scaled_dot_product_attention(split(self.query(x)), split(self.key(x)), split(self.value(x)))
        return self.dense(y.transpose(1, 2).reshape(b, n, c))


class Layer(nn.Module):
    def __init__(self, dim: int, heads: int, intermediate: int):
        super().__init__()
        self.attention = SelfAttention(dim, heads)
        self.attention_norm = nn.LayerNorm(dim, eps=1e-12)
        self.intermediate = nn.Linear(dim, intermediate)
        self.output = nn.Linear(intermediate, dim)
        self.output_norm = nn.LayerNorm(dim, eps=1e-12)

    def forward(self, x):
        x = self.attention_norm(x + self.attention(x))
        return self.output_norm(x + self.output(F.gelu(self.intermediate(x))))


class BertClassifier(nn.Module):
    """``layers`` encoder layers of width ``dim`` over ``tokens`` token ids."""

    def __init__(self, vocab: int = 1000, tokens: int = 128, dim: int = 128, layers: int = 2,
                 heads: int = 2, intermediate: int = 512, num_classes: int = 2):
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab, dim)
        self.position_embeddings = nn.Parameter(torch.randn(1, tokens, dim) * 0.02)
        self.token_type_embeddings = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.embedding_norm = nn.LayerNorm(dim, eps=1e-12)
        self.layers = nn.Sequential(*(Layer(dim, heads, intermediate) for _ in range(layers)))
        self.pooler = nn.Linear(dim, dim)
        self.classifier = nn.Linear(dim, num_classes)

    def forward(self, ids):
        x = self.word_embeddings(ids) + self.position_embeddings + self.token_type_embeddings
        x = self.layers(self.embedding_norm(x))
        return self.classifier(torch.tanh(self.pooler(x[:, 0])))
