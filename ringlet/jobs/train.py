"""Library entry points behind ``ringlet train`` and ``ringlet eval``."""

from __future__ import annotations

import time
from pathlib import Path

import torch
from torch import nn

from ringlet.compiler.config import as_config
from ringlet.grelu.convert import convert, load_sharing_config
from ringlet.models import build_model
from ringlet.poly.layers import convert_to_poly, fit_relu
from ringlet.poly.pillar import Pillar
from ringlet.sources import load_split, prepare
from ringlet.sources import resolve_model as resolve
from ringlet.train.checkpoint import checkpoint_stem, find_checkpoint, save_checkpoint
from ringlet.train.trainer import TrainConfig, fit


def resolve_model(name_or_path: str, input_shape=None, num_classes: int = 10,
                  seed: int = 0) -> tuple[nn.Module, dict]:
    """The module of a model spec and its metadata (:func:`ringlet.sources.resolve_model`)."""
    src = resolve(name_or_path, input_shape=input_shape, num_classes=num_classes, seed=seed)
    if src.module is None:
        raise ValueError(f"{name_or_path} is a saved PrivateModel folder, which holds no module")
    return src.module, src.meta


def train_zoo_model(*, model: str, dataset: str, epochs: int, out: Path, batch: int = 128,
                    lr: float = 0.1, momentum: float = 0.9, weight_decay: float = 5e-4,
                    optimizer: str = "sgd",
                    warmup_epochs: float = 0.0, augment: bool = True, seed: int = 0,
                    threads: int = 0, data_dir=None, train_samples: int | None = None,
                    progress: bool = True, command: str = "", sharing: str | None = None,
                    poly: dict | None = None, pillar: float | None = None,
                    name: str | None = None, weights: str | None = None, normalize: str | None = None,
                    image_size=None) -> dict:
    """Train (or, when ``model`` is a checkpoint, finetune) and write OUT/NAME.{safetensors,json}.

    ``sharing`` (a gReLU config file) or ``poly`` ({"degree", "range"}) convert the ReLUs first;
    ``pillar`` (the penalty coefficient) adds the PILLAR regulariser for polynomial layers.
    """
    cfg = TrainConfig(epochs=epochs, batch=batch, lr=lr, momentum=momentum, optimizer=optimizer,
                      weight_decay=weight_decay, warmup_epochs=warmup_epochs, augment=augment,
                      seed=seed, threads=threads)
    torch.manual_seed(seed)  # not secret: the initial weights of a model being trained
    ckpt = find_checkpoint(model)
    factory = ":" in model and ckpt is None
    base = {}
    if ckpt is not None or factory:
        src = resolve(model, weights=weights)
        if src.module is None:
            raise ValueError(f"--model {model}: a saved PrivateModel folder cannot be trained; train its "
                             f"module (--model package.module:factory)")
        net, base = src.module, src.meta
        zoo_name = base["model"]
    else:
        base = {}
        zoo_name = model
    train, _ = load_split(base, dataset, "train", data_dir, normalize, image_size)
    test, _ = load_split(base, dataset, "test", data_dir, normalize, image_size)
    if train_samples is not None:
        if train_samples < 1:
            raise ValueError(f"--train-samples must be at least 1, got {train_samples}")
        train = train.subset(torch.arange(min(train_samples, len(train))))
    if ckpt is None and not factory:
        net = build_model(model, train.input_shape, train.num_classes)
    meta_extra: dict = {}
    if sharing:
        conf = load_sharing_config(sharing)
        convert(net, conf, train.input_shape, images=train.tensors(min(2000, len(train)))[0])
        meta_extra["sharing"] = conf
    pillar_reg = None
    if poly:
        poly_fit = fit_relu(int(poly.get("degree", 4)), float(poly.get("range", 5.0)))
        poly = {**poly, "coeffs": poly_fit["coeffs"], "fit": poly_fit}
        convert_to_poly(net, poly)
        meta_extra["poly"] = poly
        if pillar:
            pillar_reg = Pillar(net, pillar)
    stem = name or (checkpoint_stem(zoo_name, dataset) if not factory else
                    checkpoint_stem(model.rpartition(":")[2], dataset))
    t0 = time.time()
    result = fit(net, train, test, cfg, resume_dir=out / f"{stem}.resume", progress=progress,
                 extra_loss=pillar_reg.loss if pillar_reg else None,
                 on_epoch_end=pillar_reg.end_epoch if pillar_reg else None)
    meta = {"model": zoo_name, "dataset": dataset, "input_shape": list(train.input_shape),
            "num_classes": train.num_classes, "classes": list(train.classes) if train.classes else None,
            "normalization": {"mean": list(train.mean), "std": list(train.std)},
            "accuracy": result["test_accuracy"], "test_samples": len(test),
            "train_samples": len(train), "train_config": result["config"],
            "history": result["history"], "train_seconds": round(time.time() - t0, 1),
            "command": command, **meta_extra}
    if factory:
        meta["factory"] = model
        if weights:
            meta["base_weights"] = str(weights)
    if ckpt is not None:
        meta["base_checkpoint"] = str(ckpt)
        meta["base_accuracy"] = base.get("accuracy")
    if pillar_reg:
        meta["pillar"] = {"coefficient": pillar, "schedule": list(pillar_reg.schedule),
                          "history": pillar_reg.history, "test": pillar_reg.measure(test)}
    path = save_checkpoint(out / stem, net, meta)
    return {"checkpoint": str(path), "test_accuracy": result["test_accuracy"],
            "history": result["history"], "images_per_second": result["images_per_second"],
            **({"pillar_test": meta["pillar"]["test"]} if pillar_reg else {})}


def evaluate_model(model: str, dataset: str | None = None, samples: int | None = None, batch: int = 256,
                   data_dir=None, *, weights: str | None = None, input_path: str | None = None,
                   labels_path: str | None = None, normalize: str | None = None, image_size=None,
                   relu_config: str | None = None, parties: int = 2, frac_bits: int | None = None,
                   smooth: str | None = None, input_bound: float | None = None,
                   ring_bits: int | None = None) -> dict:
    """Test accuracy (the ``ringlet eval`` JSON): plaintext, or with ``relu_config`` the share-level
    simulator's — the figure a private run with that config is compared to."""
    config = as_config(relu_config) if relu_config else None
    pm, _, inputs = prepare(model, weights=weights, dataset=dataset, samples=samples,
                            input_path=input_path, labels_path=labels_path, data_dir=data_dir,
                            normalize=normalize, image_size=image_size, frac_bits=frac_bits,
                            smooth=smooth, input_bound=input_bound, ring_bits=ring_bits, local=True)
    if inputs.y is None:
        raise ValueError("eval needs labels: give --labels with --input")
    acc = pm.evaluate(inputs.x, inputs.y, config, parties=parties, batch=batch)
    out = {"accuracy": acc, "samples": int(inputs.x.shape[0]), "model": model, **inputs.info}
    if relu_config:
        out.update(relu_config=relu_config, parties=parties, simulated=True)
    return out
