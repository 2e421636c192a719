"""Library entry points behind ``ringlet train`` and ``ringlet eval``; model lookup by name or path."""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch
from torch import nn

from ringlet.data import load_dataset, dataset_info
from ringlet.models import MODEL_NAMES, build_model
from ringlet.train.checkpoint import (checkpoint_stem, is_checkpoint, load_checkpoint,
                                      save_checkpoint)
from ringlet.train.trainer import TrainConfig, evaluate, fit


def shipped_models_dir() -> Path:
    """Where shipped checkpoints live: $RINGLET_MODELS, else the repository's ``models/``."""
    env = os.environ.get("RINGLET_MODELS")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "models"


def find_checkpoint(name_or_path: str) -> Path | None:
    """A checkpoint path for ``name_or_path`` (a path, or a shipped stem like resnet20-fmnist)."""
    if is_checkpoint(name_or_path):
        return Path(name_or_path)
    shipped = shipped_models_dir() / name_or_path
    if is_checkpoint(shipped):
        return shipped
    return None


def resolve_model(name_or_path: str, input_shape=None, num_classes: int = 10,
                  seed: int = 0) -> tuple[nn.Module, dict]:
    """Load a checkpoint, or build a zoo model with seeded random weights; returns (model, meta).

    ``meta`` for a zoo name has ``"checkpoint": None`` and the input shape used.
    """
    ckpt = find_checkpoint(name_or_path)
    if ckpt is not None:
        model, meta = load_checkpoint(ckpt)
        return model, {**meta, "checkpoint": str(ckpt)}
    if name_or_path in MODEL_NAMES:
        if input_shape is None:
            raise ValueError(f"zoo model {name_or_path!r} needs an input shape (give --dataset or --input)")
        torch.manual_seed(seed)
        model = build_model(name_or_path, input_shape, num_classes).eval()
        return model, {"model": name_or_path, "input_shape": list(input_shape),
                       "num_classes": num_classes, "checkpoint": None}
    raise ValueError(f"--model {name_or_path!r}: neither a checkpoint (NAME.safetensors + NAME.json) "
                     f"nor a zoo model ({', '.join(MODEL_NAMES)})")


def train_zoo_model(*, model: str, dataset: str, epochs: int, out: Path, batch: int = 128,
                    lr: float = 0.1, momentum: float = 0.9, weight_decay: float = 5e-4,
                    warmup_epochs: float = 0.0, augment: bool = True, seed: int = 0,
                    threads: int = 0, data_dir=None, train_samples: int | None = None,
                    progress: bool = True, command: str = "", sharing: str | None = None,
                    poly: dict | None = None, pillar: float | None = None,
                    name: str | None = None) -> dict:
    """Train (or, when ``model`` is a checkpoint, finetune) and write OUT/NAME.{safetensors,json}.

    ``sharing`` (a gReLU config file) or ``poly`` ({"degree", "range"}) convert the ReLUs first;
    ``pillar`` (the penalty coefficient) adds the PILLAR regulariser for polynomial layers.
    """
    cfg = TrainConfig(epochs=epochs, batch=batch, lr=lr, momentum=momentum,
                      weight_decay=weight_decay, warmup_epochs=warmup_epochs, augment=augment,
                      seed=seed, threads=threads)
    train = load_dataset(dataset, "train", data_dir)
    test = load_dataset(dataset, "test", data_dir)
    if train_samples is not None:
        train = train.subset(torch.arange(min(train_samples, len(train))))
    torch.manual_seed(seed)
    ckpt = find_checkpoint(model)
    base = {}
    if ckpt is not None:
        net, base = resolve_model(model)
        zoo_name = base["model"]
    else:
        net = build_model(model, train.input_shape, train.num_classes)
        zoo_name = model
    meta_extra: dict = {}
    if sharing:
        from ringlet.grelu.convert import convert, load_sharing_config
        conf = load_sharing_config(sharing)
        convert(net, conf, train.input_shape, images=train.tensors(min(2000, len(train)))[0])
        meta_extra["sharing"] = conf
    pillar_reg = None
    if poly:
        from ringlet.poly.layers import convert_to_poly, fit_relu
        from ringlet.poly.pillar import Pillar
        poly_fit = fit_relu(int(poly.get("degree", 4)), float(poly.get("range", 5.0)))
        poly = {**poly, "coeffs": poly_fit["coeffs"], "fit": poly_fit}
        convert_to_poly(net, poly)
        meta_extra["poly"] = poly
        if pillar:
            pillar_reg = Pillar(net, pillar)
    stem = name or checkpoint_stem(zoo_name, dataset)
    t0 = time.time()
    result = fit(net, train, test, cfg, resume_dir=out / f"{stem}.resume", progress=progress,
                 extra_loss=pillar_reg.loss if pillar_reg else None,
                 on_epoch_end=pillar_reg.end_epoch if pillar_reg else None)
    info = dataset_info(dataset)
    meta = {"model": zoo_name, "dataset": dataset, "input_shape": list(train.input_shape),
            "num_classes": train.num_classes,
            "normalization": {"mean": info["mean"], "std": info["std"]},
            "accuracy": result["test_accuracy"], "test_samples": len(test),
            "train_samples": len(train), "train_config": result["config"],
            "history": result["history"], "train_seconds": round(time.time() - t0, 1),
            "command": command, **meta_extra}
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


def load_test_split(dataset: str, samples: int | None, data_dir=None):
    """A dataset's test split and how many of its first images to use (all unless ``samples``)."""
    test = load_dataset(dataset, "test", data_dir)
    n = len(test) if samples is None else samples
    if n < 1 or n > len(test):
        raise ValueError(f"--samples {n}: the {dataset} test split has {len(test)} images")
    return test, n


def evaluate_model(model: str, dataset: str, samples: int | None = None, batch: int = 256,
                   data_dir=None) -> dict:
    """Plaintext test accuracy of a checkpoint or zoo model (the ``ringlet eval`` JSON)."""
    test, n = load_test_split(dataset, samples, data_dir)
    net, meta = resolve_model(model, test.input_shape, test.num_classes)
    if tuple(meta["input_shape"]) != test.input_shape:
        raise ValueError(f"model {model} expects input {tuple(meta['input_shape'])}, dataset "
                         f"{dataset} has {test.input_shape}")
    acc = evaluate(net, test, n, batch)
    return {"accuracy": acc, "samples": n, "dataset": dataset, "model": model}
