"""gReLU: one ReLU decision for a whole group of activations (Helbitz & Avidan, "Reducing ReLU Count
for Privacy-Preserving CNN Speedup").

Every channel's H×W plane is cut into groups: non-overlapping k×k patches (the last patch smaller
where k does not divide the size: 28 = 9·3 + 1 gives 10 patches), the whole channel, or clusters found
on training data. Each group decides with the sign of a weighted sum of its activations:

  center  the activation at the patch centre (a one-hot weight vector)
  mean    the patch mean (weights 1/n)
  fc      a learned weight vector over the group (the paper's "FC" variant), initialised to the mean

gReLU(s_p) = s_p if v_gᵀ s_g ≥ 0 else 0 for p in group g. Noisy gReLU flips each activation's decision
with probability ``noise`` while training (the paper: 20 %), and at inference when asked.
Training uses a straight-through surrogate for the step so that ``fc`` weights learn.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def patch_groups(h: int, w: int, ph: int, pw: int) -> torch.Tensor:
    """Group index of every position of an h×w plane cut into ph×pw patches (row-major)."""
    rows = torch.arange(h) // ph
    cols = torch.arange(w) // pw
    return rows.view(h, 1) * math.ceil(w / pw) + cols.view(1, w)


def patch_centres(groups: torch.Tensor) -> torch.Tensor:
    """A one-hot map marking the centre of every group of a patch grouping (h×w)."""
    h, w = groups.shape
    centre = torch.zeros(h, w)
    for g in groups.unique().tolist():
        ys, xs = (groups == g).nonzero(as_tuple=True)
        r = int(ys.min()) + (int(ys.max()) - int(ys.min())) // 2
        c = int(xs.min()) + (int(xs.max()) - int(xs.min())) // 2
        centre[r, c] = 1.0
    return centre


class GroupReLU(nn.Module):
    """gReLU over fixed groups of one layer's C×H×W activations."""

    VARIANTS = ("center", "mean", "fc")

    # buffers (and the "fc" variant's parameter), registered in __init__
    groups: torch.Tensor
    weight: torch.Tensor
    flips: torch.Tensor

    def __init__(self, groups: torch.Tensor, variant: str = "mean", noise: float = 0.0,
                 noise_at_inference: bool = False, weights: torch.Tensor | None = None,
                 seed: int = 0):
        super().__init__()
        if variant not in self.VARIANTS:
            raise ValueError(f"unknown gReLU variant {variant!r}; use one of {self.VARIANTS}")
        if not 0.0 <= noise < 0.5:
            raise ValueError(f"noise must be in [0, 0.5), got {noise}")
        if groups.ndim != 3:
            raise ValueError(f"groups must be C×H×W group indices, got shape {tuple(groups.shape)}")
        self.variant = variant
        self.noise = float(noise)
        self.noise_at_inference = bool(noise_at_inference)
        self.register_buffer("groups", groups.to(torch.int64).contiguous())
        self.num_groups = int(groups.max()) + 1
        w = weights if weights is not None else self.default_weights()
        if variant == "fc":
            self.weight = nn.Parameter(w.float())
        else:
            self.register_buffer("weight", w.float())
        # inference noise: one fixed draw of flips per position, saved with the model, so that the
        # plaintext model and the secure run flip the same decisions (training draws fresh flips)
        gen = torch.Generator().manual_seed(seed)  # not secret: a model parameter
        draw = torch.rand(groups.shape, generator=gen)  # not secret: public flips, a model parameter
        self.register_buffer("flips", (draw < self.noise).to(torch.float32))

    def default_weights(self) -> torch.Tensor:
        c = self.groups.shape[0]
        flat = self.groups.view(c, -1)
        counts = torch.zeros(c, self.num_groups).scatter_add_(1, flat, torch.ones_like(flat, dtype=torch.float))
        if self.variant == "center":
            return torch.stack([patch_centres(self.groups[i]) if _is_patches(self.groups[i])
                                else _first_member(self.groups[i]) for i in range(c)])
        return (1.0 / counts.gather(1, flat)).view_as(self.groups)

    @property
    def decisions_per_sample(self) -> int:
        """DReLU evaluations per input sample (groups over all channels)."""
        return int(self.groups.shape[0] * self.num_groups)

    def group_values(self, x: torch.Tensor) -> torch.Tensor:
        """v_gᵀ s_g for every sample, channel and group: N×C×G."""
        n, c = x.shape[:2]
        flat = (x * self.weight).reshape(n, c, -1)
        idx = self.groups.view(1, c, -1).expand(n, c, -1)
        return torch.zeros(n, c, self.num_groups, dtype=x.dtype).scatter_add_(2, idx, flat)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[:2]
        z = self.group_values(x)
        hard = (z >= 0).to(x.dtype)
        if self.training:  # straight-through: a sigmoid surrogate carries gradients to the weights
            scale = z.detach().abs().mean() + 1e-6
            soft = torch.sigmoid(z / scale)
            hard = hard + soft - soft.detach()
        idx = self.groups.view(1, c, -1).expand(n, c, -1)
        keep = hard.gather(2, idx).view_as(x)
        if self.noise and self.training:
            flip = (torch.rand(x.shape) < self.noise).to(x.dtype)  # not secret: a training perturbation
            keep = keep + flip * (1 - 2 * keep)
        elif self.noise and self.noise_at_inference:
            keep = keep + self.flips * (1 - 2 * keep)
        return x * keep

    def extra_repr(self) -> str:
        return (f"variant={self.variant}, groups={self.num_groups}/channel, noise={self.noise}, "
                f"noise_at_inference={self.noise_at_inference}")


def _is_patches(groups: torch.Tensor) -> bool:
    """Whether every group of an h×w map is an axis-aligned rectangle."""
    for g in groups.unique().tolist():
        ys, xs = (groups == g).nonzero(as_tuple=True)
        if (int(ys.max()) - int(ys.min()) + 1) * (int(xs.max()) - int(xs.min()) + 1) != ys.numel():
            return False
    return True


def _first_member(groups: torch.Tensor) -> torch.Tensor:
    """One-hot: the first position (row-major) of every group (the representative of a cluster)."""
    flat = groups.reshape(-1)
    first = torch.full((int(flat.max()) + 1,), flat.numel(), dtype=torch.int64)
    first.scatter_reduce_(0, flat, torch.arange(flat.numel()), reduce="amin")
    out = torch.zeros(flat.numel())
    out[first] = 1.0
    return out.view_as(groups)
