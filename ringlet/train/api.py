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
                    progress: bool = True, command: str = "") -> dict:
    """Train a zoo model from scratch; writes OUT/NAME-DATASET.{safetensors,json}."""
    cfg = TrainConfig(epochs=epochs, batch=batch, lr=lr, momentum=momentum,
                      weight_decay=weight_decay, warmup_epochs=warmup_epochs, augment=augment,
                      seed=seed, threads=threads)
    train = load_dataset(dataset, "train", data_dir)
    test = load_dataset(dataset, "test", data_dir)
    if train_samples is not None:
        train = train.subset(torch.arange(min(train_samples, len(train))))
    torch.manual_seed(seed)
    net = build_model(model, train.input_shape, train.num_classes)
    stem = checkpoint_stem(model, dataset)
    t0 = time.time()
    result = fit(net, train, test, cfg, resume_dir=out / f"{stem}.resume", progress=progress)
    info = dataset_info(dataset)
    meta = {"model": model, "dataset": dataset, "input_shape": list(train.input_shape),
            "num_classes": train.num_classes,
            "normalization": {"mean": info["mean"], "std": info["std"]},
            "accuracy": result["test_accuracy"], "test_samples": len(test),
            "train_samples": len(train), "train_config": result["config"],
            "history": result["history"], "train_seconds": round(time.time() - t0, 1),
            "command": command}
    path = save_checkpoint(out / stem, net, meta)
    return {"checkpoint": str(path), "test_accuracy": result["test_accuracy"],
            "history": result["history"], "images_per_second": result["images_per_second"]}


def evaluate_model(model: str, dataset: str, samples: int | None = None, batch: int = 256,
                   data_dir=None) -> dict:
    """Plaintext test accuracy of a checkpoint or zoo model (the ``ringlet eval`` JSON)."""
    test = load_dataset(dataset, "test", data_dir)
    net, meta = resolve_model(model, test.input_shape, test.num_classes)
    if tuple(meta["input_shape"]) != test.input_shape:
        raise ValueError(f"model {model} expects input {tuple(meta['input_shape'])}, dataset "
                         f"{dataset} has {test.input_shape}")
    n = len(test) if samples is None else samples
    if n < 1 or n > len(test):
        raise ValueError(f"--samples {n}: the {dataset} test split has {len(test)} images")
    acc = evaluate(net, test, n, batch)
    return {"accuracy": acc, "samples": n, "dataset": dataset, "model": model}
