"""Data-dependent groups: agglomerative clustering of ReLU patterns by Hamming distance.

For one channel, every position p has a binary vector y(p) — its ReLU decision on each of N training
images. Clustering repeatedly unites the two positions at the smallest Hamming distance until k
clusters remain (single linkage, as the paper describes). That is exactly cutting the k − 1 heaviest
edges of a minimum spanning tree of the positions, which is how it is computed here (Prim's
algorithm on the full distance matrix, vectorised).
"""

from __future__ import annotations

import numpy as np
import torch


def hamming_matrix(patterns: np.ndarray) -> np.ndarray:
    """Pairwise Hamming distances between the columns of an N×P 0/1 matrix."""
    signed = patterns.astype(np.float32) * 2 - 1
    n = patterns.shape[0]
    return np.rint((n - signed.T @ signed) / 2).astype(np.int64)


def single_linkage(dist: np.ndarray, k: int) -> np.ndarray:
    """Cluster labels 0..k−1 (in order of first appearance) from a P×P distance matrix."""
    p = dist.shape[0]
    k = max(1, min(k, p))
    in_tree = np.zeros(p, dtype=bool)
    best = np.full(p, np.iinfo(np.int64).max)
    parent = np.full(p, -1)
    edges = []  # (weight, node, parent) of the spanning tree
    node = 0
    for _ in range(p):
        in_tree[node] = True
        if parent[node] >= 0:
            edges.append((best[node], node, parent[node]))
        closer = (~in_tree) & (dist[node] < best)
        best[closer] = dist[node][closer]
        parent[closer] = node
        if in_tree.all():
            break
        candidates = np.where(in_tree, np.iinfo(np.int64).max, best)
        node = int(np.argmin(candidates))
    # keep the p − k lightest tree edges (stable order: ties broken by position)
    edges.sort(key=lambda e: (e[0], e[1]))
    root = np.arange(p)

    def find(i):
        while root[i] != i:
            root[i] = root[root[i]]
            i = root[i]
        return i

    for _, a, b in edges[:p - k]:
        root[find(a)] = find(b)
    labels = np.array([find(i) for i in range(p)])
    _, first = np.unique(labels, return_index=True)
    order = {labels[i]: rank for rank, i in enumerate(sorted(first))}
    return np.array([order[v] for v in labels])


def cluster_groups(pre_activations: torch.Tensor, k: int, window: int | None = None) -> torch.Tensor:
    """C×H×W group indices from N×C×H×W pre-ReLU activations of training images.

    Each channel (or each ``window``×``window`` tile of it) is clustered into ``k`` groups by the
    Hamming distance of its positions' ReLU patterns; group indices are unique within a channel.
    """
    on = (pre_activations >= 0).numpy()
    n, c, h, w = on.shape
    win = window or max(h, w)
    out = np.zeros((c, h, w), dtype=np.int64)
    for ch in range(c):
        offset = 0
        for r0 in range(0, h, win):
            for c0 in range(0, w, win):
                tile = on[:, ch, r0:r0 + win, c0:c0 + win]
                th, tw = tile.shape[1:]
                labels = single_linkage(hamming_matrix(tile.reshape(n, -1)), k)
                out[ch, r0:r0 + th, c0:c0 + tw] = labels.reshape(th, tw) + offset
                offset += int(labels.max()) + 1
    return torch.from_numpy(out)
