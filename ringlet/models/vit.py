"""A small Vision Transformer, written as timm writes one (fused qkv, scaled dot-product attention,
pre-norm blocks, a class token and learned position embeddings)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(b, n, c))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    """Patch embedding (a strided convolution), class token, position embeddings, ``depth`` blocks,
    a final LayerNorm and a linear head on the class token."""

    def __init__(self, input_shape, num_classes: int = 10, patch: int = 4, dim: int = 128,
                 depth: int = 4, heads: int = 4, mlp_ratio: int = 2):
        super().__init__()
        c, h, w = input_shape
        if h % patch or w % patch:
            raise ValueError(f"ViT: the input {h}×{w} is not a whole number of {patch}×{patch} patches")
        tokens = (h // patch) * (w // patch) + 1
        self.patch_embed = nn.Conv2d(c, dim, patch, patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, tokens, dim) * 0.02)
        self.blocks = nn.Sequential(*(Block(dim, heads, mlp_ratio) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x):
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        x = self.norm(self.blocks(x))
        return self.head(x[:, 0])


def vit(input_shape, num_classes: int = 10) -> ViT:
    """The zoo's ViT: patch 4, width 128, 4 blocks of 4 heads, MLP ratio 2 (0.54 M parameters)."""
    return ViT(input_shape, num_classes)


def vit2(input_shape, num_classes: int = 10) -> ViT:
    """2 blocks × 128 (the field's comparison size: 65 tokens on 32×32 inputs)."""
    return ViT(input_shape, num_classes, depth=2)
