"""``ringlet bench sharing``: the ReLU-sharing paper's Tables 5, 6 and 8 and its Figure 3, here.

Fashion-MNIST (the paper's Table 4 net, accuracy and cost): each variant's first ReLU layer becomes a
gReLU, the shipped checkpoint is finetuned with it, and a private inference measures accuracy, the
DReLU count, bytes, rounds and online time per image. MiniONN (CIFAR-shaped synthetic inputs, cost
only): the same variants on its first two ReLU layers. Total variation per ReLU layer (Figure 3).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ringlet.compiler.calibrate import calibrate_batchnorm
from ringlet.compiler.capture import compile_model
from ringlet.data import load_dataset
from ringlet.grelu.convert import convert
from ringlet.jobs.infer import run_inference
from ringlet.jobs.train import train_zoo_model
from ringlet.models import build_model
from ringlet.train.checkpoint import is_checkpoint, load_checkpoint, save_checkpoint, shipped_models_dir

# name → (first-layer spec, noise at inference), the paper's rows (Table 6, Fashion-MNIST)
FMNIST_VARIANTS: dict[str, dict[str, Any]] = {
    "uniform-3x3": {"variant": "fc", "patch": 3},
    "uniform-4x4": {"variant": "fc", "patch": 4},
    "uniform-channel": {"variant": "fc", "patch": "channel"},
    "mean-3x3": {"variant": "mean", "patch": 3},
    "noise": {"variant": "center", "patch": "channel", "noise": 0.2, "noise_at_inference": True},
    "fc-noise": {"variant": "fc", "patch": "channel", "noise": 0.2, "noise_at_inference": True},
    "clusters-8": {"variant": "mean", "clusters": 8, "window": 7},
}
MINIONN_LAYERS = ("features.1", "features.3")
MINIONN_VARIANTS = {
    "uniform-3x3": ({"variant": "fc", "patch": 3}, MINIONN_LAYERS),
    "uniform-4x4": ({"variant": "fc", "patch": 4}, MINIONN_LAYERS),
    "uniform-32x32": ({"variant": "fc", "patch": "channel"}, MINIONN_LAYERS),
    "layer-1-only": ({"variant": "center", "patch": "channel"}, MINIONN_LAYERS[:1]),
    "layer-2-only": ({"variant": "center", "patch": "channel"}, MINIONN_LAYERS[1:]),
    "noise": ({"variant": "center", "patch": "channel", "noise": 0.2, "noise_at_inference": True},
              MINIONN_LAYERS),
    "fc-noise": ({"variant": "fc", "patch": "channel", "noise": 0.2, "noise_at_inference": True},
                 MINIONN_LAYERS),
}


def total_variation(model, images: torch.Tensor) -> list[dict]:
    """Mean total variation of every ReLU layer's output maps, normalised by the mean |activation|
    (the sum of absolute spatial gradients per pixel: scale-free, comparable across layers)."""
    rows, hooks = [], []
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.ReLU):
            def hook(m, i, o, name=name):
                if o.ndim == 4:
                    tv = (o[:, :, 1:] - o[:, :, :-1]).abs().mean() + (o[:, :, :, 1:] - o[:, :, :, :-1]).abs().mean()
                    rows.append({"layer": name, "tv": float(tv),
                                 "tv_normalised": float(tv / (o.abs().mean() + 1e-12))})
            hooks.append(mod.register_forward_hook(hook))
    model.eval()
    try:
        with torch.no_grad():
            model(images)
    finally:
        for h in hooks:
            h.remove()
    return rows


def _ensure_variant(base: str, name: str, spec: dict, epochs: int, log, lr: float = 0.01) -> str:
    stem = f"{base}-grelu-{name}"
    if is_checkpoint(shipped_models_dir() / stem):
        return stem
    cfg = Path(shipped_models_dir()) / f"{stem}.sharing.json"
    cfg.write_text(json.dumps({"version": 1, "layers": {"features.1": spec}}, indent=1) + "\n")
    if log:
        log(f"finetuning {stem} for {epochs} epochs")
    import shutil
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        train_zoo_model(model=base, dataset="fashion-mnist", epochs=epochs, out=Path(tmp), lr=lr,
                        sharing=str(cfg), name=stem, progress=False,
                        command=f"ringlet train --model {base} --dataset fashion-mnist --epochs "
                                f"{epochs} --lr {lr} --sharing-config models/{cfg.name} --name {stem}")
        for ext in ("safetensors", "json"):
            shutil.copy(Path(tmp) / f"{stem}.{ext}", shipped_models_dir())
    return stem


def _cost_row(model: str, samples: int, dataset: str) -> dict:
    rep, _ = run_inference(model, dataset=dataset, samples=samples, batch=samples, progress=False)
    layers = {r["label"]: r for r in rep["per_layer"] if r["kind"] in ("relu", "grelu")}
    per = 1.0 / samples
    return {"accuracy": rep.get("accuracy"), "plaintext_accuracy": rep.get("plaintext_accuracy"),
            "bytes_per_image": rep["bytes_sent_per_party"] * per, "rounds": rep["rounds"],
            "seconds_per_image": rep["seconds_online"] * per,
            "layer_bytes": {k: v["bytes_sent"] * per for k, v in layers.items()},
            "layer_drelus": {k: v["drelus"] * per for k, v in layers.items()}}


def run_sharing(epochs: int = 5, samples: int = 64, minionn_samples: int = 2, log=print,
                command: str = "", variants=None, lr: float = 0.01) -> dict:
    base = "fmnist-net-fmnist"
    test = load_dataset("fashion-mnist", "test")
    out: dict[str, Any] = {"command": command, "samples": samples, "fashion_mnist": [], "minionn": [],
           "total_variation": {}}
    chosen = FMNIST_VARIANTS if not variants else {v: FMNIST_VARIANTS[v] for v in variants}
    rows = [("original", base, None)] + [(n, None, s) for n, s in chosen.items()]
    for name, stem, spec in rows:
        if not stem:  # a variant: finetuned on first use
            assert spec is not None
            stem = _ensure_variant(base, name, spec, epochs, log, lr)
        model, meta = load_checkpoint(shipped_models_dir() / stem)
        graph = compile_model(model, (1, 28, 28))
        layer = next(n for n in graph.nodes if n.label == "features.1")
        decisions = (layer.params["num_groups"] * 32) if layer.kind == "grelu" else 28 * 28 * 32
        row = {"variant": name, "checkpoint": stem, "spec": spec, "test_accuracy": meta["accuracy"],
               "finetune_epochs": meta.get("train_config", {}).get("epochs") if spec else None,
               "finetune_lr": meta.get("train_config", {}).get("lr") if spec else None,
               "first_layer_drelus_per_image": decisions,
               "relus_per_channel": decisions // 32,
               **_cost_row(str(shipped_models_dir() / stem), samples, "fashion-mnist")}
        out["fashion_mnist"].append(row)
        if log:
            log(f"fmnist {name:16s} acc {row['test_accuracy']:.4f} drelus/ch {row['relus_per_channel']:4d} "
                f"{row['bytes_per_image'] / 1e6:.2f} MB {row['rounds']} rounds")
    out["minionn"] = _minionn_rows(minionn_samples, log)
    model, _ = load_checkpoint(shipped_models_dir() / base)
    x, _ = test.tensors(256)
    out["total_variation"][base] = total_variation(model, x)
    resnet = shipped_models_dir() / "resnet20-fmnist"
    if is_checkpoint(resnet):
        model, _ = load_checkpoint(resnet)
        out["total_variation"]["resnet20-fmnist"] = total_variation(model, x)
    out["markdown"] = markdown(out)
    return out


def _minionn_rows(samples: int, log) -> list[dict]:
    import tempfile

    rows = []
    synth = load_dataset("synthetic-cifar", "test").tensors(samples)[0]
    with tempfile.TemporaryDirectory() as tmp:
        for name, entry in [("original", None)] + list(MINIONN_VARIANTS.items()):
            torch.manual_seed(0)  # not secret: random weights for a cost-only measurement
            model = build_model("minionn", (3, 32, 32))
            meta = {"model": "minionn", "input_shape": [3, 32, 32], "num_classes": 10,
                    "dataset": "synthetic-cifar"}
            if entry:
                spec, layers = entry
                conf = {"version": 1, "layers": {lname: spec for lname in layers}}
                convert(model, conf, (3, 32, 32), images=synth)
                meta["sharing"] = conf
            calibrate_batchnorm(model, synth)
            path = Path(tmp) / f"minionn-{name}"
            save_checkpoint(path, model, meta)
            row = {"variant": name, **_cost_row(str(path), samples, "synthetic-cifar")}
            graph = compile_model(model, (3, 32, 32))
            row["relus_per_channel"] = [
                (n.params["num_groups"] if n.kind == "grelu" else 32 * 32)
                for n in graph.nodes if n.label in MINIONN_LAYERS]
            rows.append(row)
            if log:
                log(f"minionn {name:14s} relus/ch {row['relus_per_channel']} "
                    f"{row['bytes_per_image'] / 1e6:.2f} MB {row['rounds']} rounds "
                    f"{row['seconds_per_image']:.2f} s")
    return rows


def markdown(out: dict) -> str:
    lines = ["## ReLU sharing (gReLU)", "", f"Produced by: `{out['command']}`", "",
             "Fashion-MNIST net (the paper's Table 4), first ReLU layer shared; finetuned from the "
             "shipped model; private inference on real test images (per image, 2 servers):", "",
             f"| variant | finetune epochs | #ReLU / channel (layer 1) | test accuracy (10k) | secure accuracy "
             f"({out.get('samples', 64)}) | plaintext accuracy (same images) | MB | layer-1 DReLUs | layer-1 MB "
             "| rounds | online s |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in out["fashion_mnist"]:
        lines.append(f"| {r['variant']} | {r.get('finetune_epochs') or '—'} | {r['relus_per_channel']} | "
                     f"{r['test_accuracy']:.4f} | "
                     f"{r['accuracy']:.4f} | {r['plaintext_accuracy']:.4f} | {r['bytes_per_image'] / 1e6:.2f} | "
                     f"{r.get('layer_drelus', {}).get('features.1', 0):.0f} | "
                     f"{r['layer_bytes'].get('features.1', 0) / 1e6:.3f} | {r['rounds']} | "
                     f"{r['seconds_per_image']:.3f} |")
    lines += ["", "Layer-1 bytes per image = 243 bits per DReLU (exact, each opened plane padded to "
              "64-element words) + 65 bits per activation for the select (25,088 activations): the DReLU "
              "part falls with the number of groups, the select part stays (asserted in tests/test_grelu.py)."]
    lines += ["", "MiniONN (the paper's Table 2) on synthetic CIFAR-shaped inputs, cost only, layers 1 "
              "and 2 (per image):", "", "| variant | #ReLU / channel (layers 1, 2) | MB | rounds | online s |",
              "|---|---|---|---|---|"]
    for r in out["minionn"]:
        lines.append(f"| {r['variant']} | {r['relus_per_channel']} | {r['bytes_per_image'] / 1e6:.2f} | "
                     f"{r['rounds']} | {r['seconds_per_image']:.3f} |")
    for model, rows in out["total_variation"].items():
        lines += ["", f"Total variation per ReLU layer, {model} (Figure 3; normalised by mean |activation|):",
                  "", "| layer | TV | TV / mean |x| |", "|---|---|---|"]
        lines += [f"| {r['layer']} | {r['tv']:.4f} | {r['tv_normalised']:.3f} |" for r in rows]
    return "\n".join(lines)
