"""Turn a model's ReLUs into gReLUs from a sharing configuration.

Format (JSON)::

    {"version": 1,
     "layers": {"features.1": {"variant": "center" | "mean" | "fc",
                               "patch": 3 | [3, 3] | "channel",       # or:
                               "clusters": 8, "window": 8,            # data-dependent groups
                               "noise": 0.2, "noise_at_inference": false}}}

Every layer not named keeps its ReLU, so "layer 1 only" and the mixed settings of the paper's
Table 5 are expressible. ``clusters`` needs training images (pre-ReLU activations are recorded).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn

from ringlet.grelu.cluster import cluster_groups
from ringlet.grelu.layers import GroupReLU, patch_groups

VERSION = 1
_KEYS = {"variant", "patch", "clusters", "window", "noise", "noise_at_inference"}


class SharingConfigError(ValueError):
    """A malformed sharing configuration, or one that does not fit the model."""


def load_sharing_config(source) -> dict:
    """Read and check a sharing configuration (path or dict)."""
    if isinstance(source, (str, os.PathLike)):
        try:
            data = json.loads(Path(source).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise SharingConfigError(f"sharing config {source}: {exc}") from None
    else:
        data = source
    if not isinstance(data, dict) or data.get("version") != VERSION:
        raise SharingConfigError(f"sharing config: expected {{\"version\": {VERSION}, \"layers\": ...}}")
    layers = data.get("layers", {})
    for name, spec in layers.items():
        where = f"sharing config: layers[{name!r}]"
        if not isinstance(spec, dict) or set(spec) - _KEYS:
            raise SharingConfigError(f"{where}: keys must be among {sorted(_KEYS)}")
        if spec.get("variant", "mean") not in GroupReLU.VARIANTS:
            raise SharingConfigError(f"{where}: unknown variant {spec.get('variant')!r}")
        if ("patch" in spec) == ("clusters" in spec):
            raise SharingConfigError(f"{where}: give either \"patch\" or \"clusters\"")
        patch = spec.get("patch")
        if patch is not None and patch != "channel" and not (
                isinstance(patch, int) and patch > 0 or isinstance(patch, list) and len(patch) == 2):
            raise SharingConfigError(f"{where}: patch is a size, [h, w] or \"channel\", got {patch!r}")
    return {"version": VERSION, "layers": dict(layers)}


def _relu_inputs(model: nn.Module, names: list[str], images: torch.Tensor) -> dict[str, torch.Tensor]:
    """The inputs the named ReLU modules see on ``images`` (eval mode)."""
    seen: dict[str, list] = {n: [] for n in names}
    mods = dict(model.named_modules())
    hooks = [mods[n].register_forward_hook(lambda m, i, o, n=n: seen[n].append(i[0].detach()))
             for n in names]
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, images.shape[0], 256):
                model(images[start:start + 256])
    finally:
        model.train(was)
        for h in hooks:
            h.remove()
    return {n: torch.cat(v) for n, v in seen.items()}


def _groups_for(spec: dict, shape: tuple, pre: torch.Tensor | None) -> torch.Tensor:
    c, h, w = shape
    if "clusters" in spec:
        if pre is None:
            raise SharingConfigError("clustered groups need training images")
        return cluster_groups(pre, int(spec["clusters"]), spec.get("window"))
    patch = spec["patch"]
    ph, pw = (h, w) if patch == "channel" else ((patch, patch) if isinstance(patch, int) else patch)
    return patch_groups(h, w, ph, pw).unsqueeze(0).expand(c, h, w).clone()


def convert(model: nn.Module, config: dict, input_shape, images: torch.Tensor | None = None,
            state: dict | None = None) -> dict[str, GroupReLU]:
    """Replace the configured ReLU modules of ``model`` by gReLUs (in place).

    Groups come from ``state`` (a checkpoint's tensors, when loading) or are built here (patches, or
    clusters of the pre-ReLU activations of ``images``). Returns the new modules by name.
    """
    config = load_sharing_config(config)
    mods = dict(model.named_modules())
    names = list(config["layers"])
    for name in names:
        if name not in mods or not isinstance(mods[name], nn.ReLU):
            raise SharingConfigError(f"sharing config: {name!r} is not a ReLU module of the model")
    shapes = {n: tuple(t.shape[1:]) for n, t in _relu_inputs(model, names, torch.zeros(1, *input_shape)).items()}
    needs_data = [n for n in names if "clusters" in config["layers"][n] and state is None]
    # without images, _groups_for says that clustered groups need them
    pre = _relu_inputs(model, needs_data, images) if needs_data and images is not None else {}
    new = {}
    for name in names:
        spec = config["layers"][name]
        if len(shapes[name]) != 3:
            raise SharingConfigError(f"{name}: gReLU needs C×H×W activations, got {shapes[name]}")
        groups = state[f"{name}.groups"] if state is not None else _groups_for(spec, shapes[name], pre.get(name))
        layer = GroupReLU(groups, spec.get("variant", "mean"), spec.get("noise", 0.0),
                          spec.get("noise_at_inference", False))
        parent, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, attr, layer)
        new[name] = layer
    return new
